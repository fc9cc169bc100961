//! `davit create`, `unpack`, `start`, `attach`, `info`, `list`, `stop`,
//! `destroy` end to end, as root and as a plain user with /etc/subuid
//! ranges. See: issues 3 and 4.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::common::*;

/// Everything a container test needs in its own directories, with a
/// unique cgroup prefix; removes what it made on drop.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub prefix: String,
}

impl Env {
    pub fn new(tag: &str) -> Env {
        let dir = tempfile::Builder::new()
            .prefix(&format!("davit-it-{tag}-"))
            .tempdir_in("/tmp")
            .unwrap();
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        // Root's own subordinate range, for this test only.
        std::fs::write(dir.path().join("subuid"), "root:1000000:65536\n").unwrap();
        std::fs::write(dir.path().join("subgid"), "root:1000000:65536\n").unwrap();
        let prefix = format!(
            "davit-it-{}",
            dir.path()
                .file_name()
                .unwrap()
                .to_string_lossy()
                .rsplit('-')
                .next()
                .unwrap()
        );
        Env { dir, prefix }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn davit(&self) -> Command {
        let mut c = davit();
        c.env("DAVIT_CONTAINERS_DIR", self.path().join("containers"))
            .env("DAVIT_BASES_DIR", self.path().join("bases"))
            .env("DAVIT_RUNTIME_DIR", self.path().join("run"))
            .env("DAVIT_CACHE_DIR", self.path().join("cache"))
            .env("DAVIT_CGROUP_PREFIX", &self.prefix)
            .env("DAVIT_SUBUID", self.path().join("subuid"))
            .env("DAVIT_SUBGID", self.path().join("subgid"));
        c
    }

    /// [`Env::davit`], run in the network stand-in `s`'s host namespace
    /// (through `nsenter --net`, so `/sys/fs/cgroup` stays) with the host
    /// network config `net_config`; stdin closed.
    pub fn davit_in(
        &self,
        s: &davit_testkit::standin::StandIn,
        net_config: &Path,
        args: &[&str],
    ) -> Command {
        let base = self.davit();
        let mut c = s.in_host(base.get_program());
        for (k, v) in base.get_envs() {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        c.env("DAVIT_NET_CONFIG", net_config)
            .stdin(std::process::Stdio::null())
            .args(args);
        c
    }

    /// `davit create NAME DIST 1 amd64` from the file:// server `tree`
    /// (see `publish_tarball`), trusting the fixture's key, plus `extra`.
    pub fn create_from(&self, name: &str, dist: &str, tree: &Path, extra: &[&str]) -> Output {
        run(self
            .davit()
            .args(["create", name, dist, "1", "amd64", "--network", "none"])
            .args(extra)
            .arg("--server")
            .arg(format!("file://{}", tree.display()))
            .arg("--keyring")
            .arg(&fixture().key.public))
    }

    pub fn create(&self, name: &str, extra: &[&str]) -> Output {
        let f = fixture();
        let server = format!("file://{}", f.tree_a.display());
        run(self
            .davit()
            .args(busybox_create_args(name, &server, &f.key.public))
            .args(extra))
    }

    /// Cgroup directories under this test's prefix, in every hierarchy.
    pub fn cgroups(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for h in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
            let p = h.path().join(&self.prefix);
            if p.exists() {
                out.extend(walk(&p).into_iter().filter(|p| p.is_dir()));
                out.push(p);
            }
        }
        out
    }

    pub fn mounts_under(&self) -> Vec<String> {
        let root = self.path().display().to_string();
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter(|l| l.contains(&root))
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // Stop whatever a failed test left running, then its cgroups.
        if let Ok(rd) = std::fs::read_dir(self.path().join("containers")) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !name.starts_with('.') {
                    let _ = self.davit().args(["stop", "-k", &name]).output();
                }
            }
        }
        for p in self.cgroups().into_iter().rev() {
            let _ = std::fs::remove_dir(p);
        }
    }
}

fn attach(env: &Env, name: &str, cmd: &[&str]) -> Output {
    let mut c = env.davit();
    c.args(["attach", name, "--"]).args(cmd);
    run(&mut c)
}

#[test]
fn root_lifecycle_create_start_attach_info_stop_destroy() {
    if !require_root("root_lifecycle_create_start_attach_info_stop_destroy") {
        return;
    }
    let env = Env::new("life");
    let out = env.create("c1", &["--pids", "64", "--storage", "dir"]);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    assert!(
        stdout(&out).contains("You just created a busybox 1.36 container"),
        "{}",
        stdout(&out)
    );
    let ct = env.path().join("containers/c1");
    let cfg = read_to_string(&ct.join("config.toml"));
    assert!(cfg.contains("host = 1000000"), "{cfg}");
    // Files belong to the shifted range; LXC_NAME was substituted.
    let md = std::fs::symlink_metadata(ct.join("rootfs/bin/busybox")).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&md), 1000000);
    assert_eq!(read_to_string(&ct.join("rootfs/etc/hostname")).trim(), "c1");
    assert!(read_to_string(&ct.join("rootfs/etc/hosts")).contains("127.0.1.1\tc1"));
    assert!(ct.join("rootfs/dev/pts").is_dir());

    ok(env.davit().args(["start", "-d", "c1"]));
    let v = json(&ok(env.davit().args(["info", "c1", "--json"])));
    assert_eq!(v["state"], "RUNNING", "{v}");
    let pid = v["pid"].as_i64().unwrap();
    let text = stdout(&ok(env.davit().args(["info", "c1"])));
    assert!(
        text.contains("State:      RUNNING") && text.contains(&format!("PID:        {pid}")),
        "{text}"
    );
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert_eq!(
        uid_line.split_whitespace().nth(1),
        Some("1000000"),
        "the host sees init as the mapped uid: {uid_line}"
    );

    assert_eq!(stdout(&attach(&env, "c1", &["id", "-u"])).trim(), "0");
    assert_eq!(stdout(&attach(&env, "c1", &["hostname"])).trim(), "c1");
    let cmdline = stdout(&attach(&env, "c1", &["cat", "/proc/1/cmdline"]));
    // busybox init renames itself "init".
    assert!(
        cmdline.starts_with("/sbin/init\0") || cmdline.starts_with("init\0"),
        "{cmdline:?}"
    );
    let ps = stdout(&attach(&env, "c1", &["ps", "-o", "pid,comm"]));
    assert!(ps.lines().count() <= 6, "ps sees host processes: {ps}");
    // Only the container's own mount points: no host mount is visible.
    let mounts = stdout(&attach(&env, "c1", &["cat", "/proc/self/mountinfo"]));
    let points: Vec<&str> = mounts.lines().filter_map(|l| l.split(' ').nth(4)).collect();
    assert!(
        points
            .iter()
            .all(|p| *p == "/" || ["/proc", "/sys", "/dev"].iter().any(|k| p.starts_with(k))),
        "host mounts visible: {points:?}"
    );
    let out = attach(&env, "c1", &["sh", "-c", "exit 3"]);
    assert_eq!(out.status.code(), Some(3));

    let l = json(&ok(env.davit().args(["list", "--json"])));
    assert_eq!(l[0]["name"], "c1");
    assert_eq!(l[0]["state"], "RUNNING");
    assert_eq!(l[0]["unprivileged"], true);

    // A running container cannot be started twice or destroyed without -f.
    let out = run(env.davit().args(["start", "-d", "c1"]));
    assert!(
        !out.status.success() && stderr(&out).contains("running"),
        "{}",
        stderr(&out)
    );
    let out = run(env.davit().args(["destroy", "c1"]));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));

    ok(env.davit().args(["stop", "c1", "-t", "5"]));
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "init survived stop"
    );
    assert!(
        env.cgroups().is_empty(),
        "cgroups left: {:?}",
        env.cgroups()
    );
    assert!(
        env.mounts_under().is_empty(),
        "mounts left: {:?}",
        env.mounts_under()
    );
    let out = run(env.davit().args(["stop", "c1"]));
    assert_eq!(
        out.status.code(),
        Some(2),
        "stop of a stopped container: {}",
        stderr(&out)
    );

    // In place of init: the exit code comes back.
    let out = run(env
        .davit()
        .args(["start", "c1", "--", "/bin/sh", "-c", "exit 7"]));
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert!(env.cgroups().is_empty());

    ok(env.davit().args(["destroy", "c1"]));
    assert!(!ct.exists());
    assert!(!env.path().join("run/c1").exists());
}

#[test]
fn root_limits_are_enforced_and_destroy_f_stops_first() {
    if !require_root("root_limits_are_enforced_and_destroy_f_stops_first") {
        return;
    }
    let env = Env::new("limits");
    let out = env.create("lim", &["--memory", "32M", "--pids", "32"]);
    assert!(out.status.success(), "{}", stderr(&out));
    ok(env.davit().args(["start", "-d", "lim"]));
    // Memory: the allocation is killed inside; the container and host go on.
    let out = attach(
        &env,
        "lim",
        &[
            "sh",
            "-c",
            "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(137),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(!stdout(&out).contains("survived"));
    assert_eq!(
        stdout(&attach(&env, "lim", &["echo", "alive"])).trim(),
        "alive"
    );
    // Pids: a fork bomb is contained.
    let _ = attach(
        &env,
        "lim",
        &["sh", "-c", "b() { b | b & }; b 2>/dev/null; sleep 1"],
    );
    let leaf = Path::new("/sys/fs/cgroup/pids")
        .join(&env.prefix)
        .join("lim");
    let events = read_to_string(&leaf.join("pids.events"));
    let hits: u64 = events.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(hits > 0, "the bomb never hit pids.max: {events}");
    assert!(
        read_to_string(&leaf.join("pids.current"))
            .trim()
            .parse::<u64>()
            .unwrap()
            <= 32
    );
    assert!(
        Command::new("/bin/true").status().unwrap().success(),
        "the host can still fork"
    );
    // Limits on `start` apply to that run only.
    ok(env.davit().args(["stop", "-k", "lim"]));
    ok(env.davit().args(["start", "-d", "lim", "--pids", "12"]));
    let leaf = Path::new("/sys/fs/cgroup/pids")
        .join(&env.prefix)
        .join("lim");
    assert_eq!(read_to_string(&leaf.join("pids.max")).trim(), "12");
    assert!(read_to_string(&env.path().join("containers/lim/config.toml")).contains("pids = 32"));
    ok(env.davit().args(["destroy", "-f", "lim"]));
    assert!(env.cgroups().is_empty(), "{:?}", env.cgroups());
    assert!(!env.path().join("containers/lim").exists());
}

#[test]
fn create_refuses_bad_names_and_existing_ones_and_force_replaces() {
    if !require_root("create_refuses_bad_names_and_existing_ones_and_force_replaces") {
        return;
    }
    let env = Env::new("names");
    for bad in ["../x", ".hidden", "-dash", "a/b", &"x".repeat(65)] {
        let out = env.create(bad, &[]);
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", stderr(&out));
    }
    assert!(env.create("dup", &["--storage", "dir"]).status.success());
    let out = env.create("dup", &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("already exists") && stderr(&out).contains("--force"),
        "{}",
        stderr(&out)
    );
    std::fs::write(env.path().join("containers/dup/rootfs/marker"), "old").unwrap();
    let out = env.create("dup", &["--force"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!env.path().join("containers/dup/rootfs/marker").exists());
}

#[test]
fn failed_create_leaves_nothing_and_the_next_create_works() {
    if !require_root("failed_create_leaves_nothing_and_the_next_create_works") {
        return;
    }
    let f = fixture();
    let env = Env::new("fail");
    // A signed image whose rootfs tries to escape with `../`.
    let evil = env.path().join("evil.tar");
    ok(Command::new("python3")
        .args([
            "-c",
            "import tarfile,io,sys\nt=tarfile.open(sys.argv[1],'w',format=tarfile.PAX_FORMAT)\n\
         for n,d in [('./bin/',None),('./../escaped','x')]:\n\
         \ti=tarfile.TarInfo(n)\n\
         \tif d is None: i.type=tarfile.DIRTYPE; t.addfile(i)\n\
         \telse: b=d.encode(); i.size=len(b); t.addfile(i,io.BytesIO(b))\n\
         t.close()",
        ])
        .arg(&evil));
    let tree = env.path().join("tree");
    publish_tarball(&evil, "evil", &f.key, &tree, &[]);
    let out = env.create_from("bad", "evil", &tree, &[]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("escaped") || stderr(&out).contains(".."),
        "{}",
        stderr(&out)
    );
    assert!(
        !env.path().join("escaped").exists() && !env.path().join("containers/escaped").exists()
    );
    let left: Vec<_> = std::fs::read_dir(env.path().join("containers"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| !n.to_string_lossy().ends_with(".lock"))
        .collect();
    assert!(left.is_empty(), "a failed create left {left:?}");
    assert!(env.create("bad", &[]).status.success());
}

#[test]
fn unpack_command_shifts_ids_and_reports_json() {
    if !require_root("unpack_command_shifts_ids_and_reports_json") {
        return;
    }
    let f = fixture();
    let env = Env::new("unpack");
    let tarball = build_dir(&f.tree_a, BUILD_A).join("rootfs.tar.xz");
    let dest = env.path().join("out");
    let v = json(&ok(env
        .davit()
        .arg("unpack")
        .arg(&tarball)
        .arg(&dest)
        .args(["--map", "b:0:2000000:65536", "--json"])));
    assert!(v["entries"].as_u64().unwrap() > 300, "{v}");
    let md = std::fs::symlink_metadata(dest.join("etc/passwd")).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&md), 2000000);
    // As root, device nodes are real.
    let md = std::fs::symlink_metadata(dest.join("dev/null")).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_char_device(
        &md.file_type()
    ));
    // Not into a non-empty directory.
    let out = run(env.davit().arg("unpack").arg(&tarball).arg(&dest));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    // Not through a symlink planted at the destination: it led root to
    // unpack into, and chown, the victim directory.
    let victim = env.path().join("victim");
    std::fs::create_dir(&victim).unwrap();
    let link = env.path().join("link");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let out = run(env
        .davit()
        .arg("unpack")
        .arg(&tarball)
        .arg(&link)
        .args(["--map", "b:0:2000000:65536"]));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is a symbolic link"),
        "{}",
        stderr(&out)
    );
    let md = std::fs::metadata(&victim).unwrap();
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&md),
        0,
        "the link's target was chowned"
    );
    assert_eq!(
        std::fs::read_dir(&victim).unwrap().count(),
        0,
        "unpacked through the link"
    );
}

/// Issue 17: `davit unpack` into an existing empty directory is as all or
/// nothing as into a new one (a corrupt xz stream left 44 of 46 entries
/// behind), an id outside the map has its own exit code (7, not the usage
/// error 2) and names the entry, and `--max-file-size` caps a member.
#[test]
fn unpack_command_is_all_or_nothing_and_names_what_is_wrong() {
    if !require_root("unpack_command_is_all_or_nothing_and_names_what_is_wrong") {
        return;
    }
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let f = fixture();
    let env = Env::new("unpack-atomic");
    let good = build_dir(&f.tree_a, BUILD_A).join("rootfs.tar.xz");
    let bad = env.path().join("bad.tar.xz");
    std::fs::copy(&good, &bad).unwrap();
    let len = std::fs::metadata(&bad).unwrap().len() as usize;
    flip_byte(&bad, len * 3 / 4);
    let leftovers = |dir: &Path| -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("davit-unpack"))
            .collect()
    };
    let map = ["--map", "b:0:2000000:65536"];

    // Into an existing empty directory, and into a new one.
    let pre = env.path().join("pre");
    std::fs::create_dir(&pre).unwrap();
    std::fs::set_permissions(&pre, std::fs::Permissions::from_mode(0o750)).unwrap();
    let out = run(env.davit().arg("unpack").arg(&bad).arg(&pre).args(map));
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(stderr(&out).contains("bad.tar.xz"), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_dir(&pre).unwrap().count(),
        0,
        "entries left behind"
    );
    assert_eq!(std::fs::metadata(&pre).unwrap().mode() & 0o7777, 0o750);
    let new = env.path().join("new");
    let out = run(env.davit().arg("unpack").arg(&bad).arg(&new).args(map));
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(!new.exists());
    assert!(
        leftovers(env.path()).is_empty(),
        "{:?}",
        leftovers(env.path())
    );

    // A good archive into the existing empty directory.
    ok(env.davit().arg("unpack").arg(&good).arg(&pre).args(map));
    assert_eq!(
        std::fs::symlink_metadata(pre.join("etc/passwd"))
            .unwrap()
            .uid(),
        2000000
    );
    assert!(
        leftovers(env.path()).is_empty(),
        "{:?}",
        leftovers(env.path())
    );

    // An id outside the map: exit 7, the entry named, nothing left.
    std::fs::create_dir(env.path().join("src")).unwrap();
    std::fs::write(env.path().join("src/high"), b"x").unwrap();
    let high = env.path().join("high.tar");
    ok(Command::new("tar")
        .args(["--owner=70000", "--group=70000", "--numeric-owner", "-cf"])
        .arg(&high)
        .arg("-C")
        .arg(env.path().join("src"))
        .arg("."));
    let small = env.path().join("small");
    let out = run(env.davit().arg("unpack").arg(&high).arg(&small).args(map));
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    let e = stderr(&out);
    assert!(
        e.contains("uid 70000 of entry ./ is outside the id map") && e.contains("--map"),
        "{e}"
    );
    assert!(!small.exists() && leftovers(env.path()).is_empty());

    // A member over the cap.
    let capped = env.path().join("capped");
    let out = run(env
        .davit()
        .args(["--max-file-size", "1K", "unpack"])
        .arg(&good)
        .arg(&capped)
        .args(map));
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("over the cap of 1024 (raise it with --max-file-size)"),
        "{}",
        stderr(&out)
    );
    assert!(!capped.exists() && leftovers(env.path()).is_empty());

    // A plain user (into the directory itself, emptied on failure).
    let u = plain_user();
    let home = user_readable_tree("unpack-atomic");
    let upre = home.path().join("pre");
    std::fs::create_dir(&upre).unwrap();
    std::os::unix::fs::chown(&upre, Some(u.uid), Some(u.gid)).unwrap();
    std::fs::copy(&bad, home.path().join("bad.tar.xz")).unwrap();
    std::fs::set_permissions(
        home.path().join("bad.tar.xz"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let out = run(u
        .davit(&home.path().join("xdg"))
        .arg("unpack")
        .arg(home.path().join("bad.tar.xz"))
        .arg(&upre));
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_dir(&upre).unwrap().count(),
        0,
        "entries left behind"
    );
}

/// Issue 18: `attach --user`, `--cwd`, `--env` and `--clear-env`, in a
/// real container. The user switch leaves no capability and keeps
/// no_new_privs; the group and HOME come from the container's own passwd;
/// a `--cwd` through a link that points up and out stays in the container.
#[test]
fn attach_runs_as_a_user_in_a_directory_with_an_environment() {
    if !require_root("attach_runs_as_a_user_in_a_directory_with_an_environment") {
        return;
    }
    let env = Env::new("attach-opts");
    let out = env.create("c1", &["--storage", "dir"]);
    assert!(out.status.success(), "{}", stderr(&out));
    ok(env.davit().args(["start", "-d", "c1"]));
    let a = |args: &[&str]| {
        let mut c = env.davit();
        c.args(["attach", "c1"]).args(args);
        run(&mut c)
    };
    let out_of = |args: &[&str]| {
        let o = a(args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        stdout(&o).trim().to_owned()
    };
    // Set up the container's side as its root would.
    out_of(&[
        "--",
        "sh",
        "-c",
        "echo app:x:1234:4321:App:/home/app:/bin/sh >> /etc/passwd && mkdir -p /home/app /data && ln -s ../../../../../.. /data/up",
    ]);
    assert_eq!(out_of(&["--user", "1000:1001", "--", "id", "-u"]), "1000");
    assert_eq!(out_of(&["--user", "1000:1001", "--", "id", "-G"]), "1001");
    assert_eq!(
        out_of(&["--user", "1234", "--", "sh", "-c", "id -g; echo $HOME"]),
        "4321\n/home/app"
    );
    assert_eq!(
        out_of(&["-u", "1000", "--", "sh", "-c", "id -g; echo $HOME"]),
        "1000\n/"
    );
    let status = out_of(&["--user", "1234", "--", "cat", "/proc/self/status"]);
    for want in [
        "CapEff:\t0000000000000000",
        "CapPrm:\t0000000000000000",
        "NoNewPrivs:\t1",
    ] {
        assert!(status.contains(want), "{want} in {status}");
    }
    // A uid outside the container's map cannot be switched to.
    let o = a(&["--user", "70000", "--", "true"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--user"), "{}", stderr(&o));

    // Container root makes /etc/passwd a fifo (an open would block the
    // attach for ever), then a link (to a file with the entry): neither is
    // read, so the group is the uid's and HOME is /.
    let as_app = || {
        let mut child = env
            .davit()
            .args([
                "attach",
                "c1",
                "--user",
                "1234",
                "--",
                "sh",
                "-c",
                "id -g; echo $HOME",
            ])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while child.try_wait().unwrap().is_none() {
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("attach hung on the container's /etc/passwd");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let o = child.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        stdout(&o).trim().to_owned()
    };
    out_of(&[
        "--",
        "sh",
        "-c",
        "mv /etc/passwd /etc/passwd.real && mkfifo /etc/passwd",
    ]);
    assert_eq!(as_app(), "1234\n/", "a fifo is no passwd");
    out_of(&[
        "--",
        "sh",
        "-c",
        "rm /etc/passwd && ln -s passwd.real /etc/passwd",
    ]);
    assert_eq!(as_app(), "1234\n/", "a linked passwd is no passwd");
    out_of(&["--", "rm", "/etc/passwd"]);
    out_of(&["--", "mv", "/etc/passwd.real", "/etc/passwd"]);

    assert_eq!(out_of(&["--cwd", "/home/app", "--", "pwd"]), "/home/app");
    assert_eq!(
        out_of(&["--cwd", "/data/up", "--", "pwd"]),
        "/",
        "the link stops at the container's root"
    );
    assert!(out_of(&["--cwd", "/data/up", "--", "ls"]).contains("home"));
    let o = a(&["--cwd", "/nowhere", "--", "pwd"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--cwd"), "{}", stderr(&o));
    let o = a(&["--cwd", "relative", "--", "pwd"]);
    assert!(
        !o.status.success() && stderr(&o).contains("relative"),
        "{}",
        stderr(&o)
    );

    assert_eq!(
        out_of(&["--env", "FOO=bar baz", "--", "sh", "-c", "echo $FOO"]),
        "bar baz"
    );
    assert_eq!(
        out_of(&["-e", "PATH=/bin", "--", "sh", "-c", "echo $PATH"]),
        "/bin"
    );
    let mut vars: Vec<String> = out_of(&["--clear-env", "-e", "A=1", "--", "env"])
        .lines()
        .map(str::to_owned)
        .collect();
    vars.sort();
    assert_eq!(vars, ["A=1", "container=davit"]);
    // No command: the user's login shell from the container's passwd,
    // run as login(1) runs it (argv[0] "-ash", /etc/profile read); a shell
    // that is not there gives /bin/sh.
    out_of(&[
        "--",
        "sh",
        "-c",
        "ln -sf /bin/busybox /bin/ash && sed -i 's#^app:.*#app:x:1234:4321:App:/home/app:/bin/ash#' /etc/passwd && echo 'export PROFILE_READ=yes' >> /etc/profile",
    ]);
    let shell = |args: &[&str]| -> String {
        use std::io::Write;
        let mut child = env
            .davit()
            .args(["attach", "c1"])
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"echo $0 $PROFILE_READ $(id -u)\n")
            .unwrap();
        let o = child.wait_with_output().unwrap();
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        stdout(&o).trim().to_owned()
    };
    assert_eq!(shell(&["--user", "1234"]), "-ash yes 1234");
    assert_eq!(shell(&[]), "-sh yes 0");
    out_of(&["--", "sed", "-i", "s#/bin/ash$#/bin/nosuch#", "/etc/passwd"]);
    assert_eq!(shell(&["--user", "1234"]), "-sh yes 1234");

    // The host's environment never reaches the container.
    let mut c = env.davit();
    c.env("HOST_SECRET", "s3cret")
        .args(["attach", "c1", "--", "env"]);
    let o = run(&mut c);
    assert!(
        o.status.success() && !stdout(&o).contains("s3cret") && stdout(&o).contains("PATH="),
        "{}",
        stdout(&o)
    );
    ok(env.davit().args(["stop", "-k", "c1"]));
}

/// Issue 18: shell completions and man pages come from the clap
/// definitions, so a new flag is in them at once.
#[test]
fn completions_and_man_pages_come_from_the_cli() {
    let bash = stdout(&ok(davit().args(["completions", "bash"])));
    let mut check = Command::new("bash")
        .arg("-n")
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        check
            .stdin
            .take()
            .unwrap()
            .write_all(bash.as_bytes())
            .unwrap();
    }
    assert!(
        check.wait().unwrap().success(),
        "bash -n on the completions"
    );
    for shell in ["bash", "zsh", "fish"] {
        let text = stdout(&ok(davit().args(["completions", shell])));
        for word in ["attach", "--clear-env", "--max-file-size", "unpack"] {
            // fish names long options without their dashes (`-l clear-env`).
            let word = if shell == "fish" {
                word.trim_start_matches('-')
            } else {
                word
            };
            assert!(text.contains(word), "{shell}: {word} missing");
        }
    }
    let out = run(davit().args(["completions", "tcsh"]));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));

    let dir = tempfile::tempdir().unwrap();
    ok(davit().arg("man").arg(dir.path()));
    let mut pages: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    pages.sort();
    for want in [
        "davit.1",
        "davit-attach.1",
        "davit-unpack.1",
        "davit-start.1",
    ] {
        assert!(pages.iter().any(|p| p == want), "{want} in {pages:?}");
    }
    let render = |page: &str| {
        let o = ok(Command::new("man")
            .env("MANWIDTH", "120")
            .arg("-l")
            .arg(dir.path().join(page)));
        stdout(&o)
    };
    let attach = render("davit-attach.1");
    assert!(
        attach.contains("--clear-env") && attach.contains("--cwd <DIR>"),
        "{attach}"
    );
    assert!(
        render("davit.1").contains("--max-file-size"),
        "the global flags"
    );
}

/// Issue 18: `davit wait` returns when another process starts or stops
/// the container, at once if it is already there, exits 1 on `--timeout`,
/// and does not poll while it waits (its CPU time stays flat).
#[test]
fn wait_returns_on_the_state_without_polling() {
    if !require_root("wait_returns_on_the_state_without_polling") {
        return;
    }
    let env = Env::new("wait");
    let out = env.create("c1", &["--storage", "dir"]);
    assert!(out.status.success(), "{}", stderr(&out));
    ok(env.davit().args(["wait", "c1", "--state", "STOPPED"]));
    let waiter = |state: &str| {
        env.davit()
            .args(["wait", "c1", "--state", state, "--timeout", "60"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let finish = |mut w: std::process::Child, what: &str| {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(st) = w.try_wait().unwrap() {
                assert!(st.success(), "{what}: {st}");
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{what}: still waiting"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let mut w = waiter("running");
    std::thread::sleep(Duration::from_millis(500));
    assert!(w.try_wait().unwrap().is_none(), "returned before the start");
    ok(env.davit().args(["start", "-d", "c1"]));
    finish(w, "wait --state running");
    ok(env.davit().args(["wait", "c1", "--state", "running"]));

    let out = run(env
        .davit()
        .args(["wait", "c1", "--state", "stopped", "--timeout", "0.5"]));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("timed out after 0.5s waiting for c1 to be STOPPED"),
        "{}",
        stderr(&out)
    );

    let mut w = waiter("STOPPED");
    std::thread::sleep(Duration::from_millis(300));
    let ticks = |pid: u32| -> u64 {
        let st = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let f: Vec<&str> = st.rsplit_once(") ").unwrap().1.split(' ').collect();
        f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
    };
    let before = ticks(w.id());
    std::thread::sleep(Duration::from_secs(2));
    let after = ticks(w.id());
    assert!(
        after - before <= 2,
        "the waiter used {} ticks in 2 s: it polls",
        after - before
    );
    assert!(w.try_wait().unwrap().is_none());
    ok(env.davit().args(["stop", "c1"]));
    finish(w, "wait --state stopped");

    let out = run(env.davit().args(["wait", "nosuch", "--state", "running"]));
    assert!(
        !out.status.success() && stderr(&out).contains("nosuch"),
        "{}",
        stderr(&out)
    );
}

/// Issue 18: `freeze` stops a busy loop's CPU time from growing (the
/// cgroup freezer, v1 on this host), `info` and `list` show FROZEN, attach
/// is refused while frozen, `unfreeze` resumes the loop, and a frozen
/// container still stops.
#[test]
fn freeze_stops_a_busy_loop_and_unfreeze_resumes_it() {
    if !require_root("freeze_stops_a_busy_loop_and_unfreeze_resumes_it") {
        return;
    }
    let env = Env::new("freeze");
    let out = env.create("c1", &["--storage", "dir"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(env.davit().args(["freeze", "c1"]));
    assert_eq!(out.status.code(), Some(2), "not running: {}", stderr(&out));
    ok(env.davit().args(["start", "-d", "c1"]));
    ok(env.davit().args([
        "attach",
        "c1",
        "--",
        "sh",
        "-c",
        "sh -c 'while :; do :; done' </dev/null >/dev/null 2>&1 &",
    ]));
    let cpu = || -> (String, u64) {
        let v = json(&ok(env.davit().args(["info", "c1", "--json"])));
        (
            v["state"].as_str().unwrap().to_owned(),
            v["cpu_ns"].as_u64().unwrap_or(0),
        )
    };
    let busy = || {
        let (_, a) = cpu();
        std::thread::sleep(Duration::from_secs(1));
        let (state, b) = cpu();
        (state, b - a)
    };
    let (state, used) = busy();
    assert_eq!(state, "RUNNING");
    assert!(used > 300_000_000, "the loop runs: {used} ns in 1 s");

    ok(env.davit().args(["freeze", "c1"]));
    let (state, used) = busy();
    assert_eq!(state, "FROZEN");
    assert!(used < 30_000_000, "frozen, yet {used} ns in 1 s");
    let l = json(&ok(env.davit().args(["list", "--json"])));
    assert_eq!(l[0]["state"], "FROZEN", "{l}");
    let t = std::time::Instant::now();
    let out = run(env.davit().args(["attach", "c1", "--", "true"]));
    assert!(
        !out.status.success() && stderr(&out).contains("davit unfreeze c1"),
        "{}",
        stderr(&out)
    );
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "attach hung on the frozen cgroup"
    );

    ok(env.davit().args(["unfreeze", "c1"]));
    let (state, used) = busy();
    assert_eq!(state, "RUNNING");
    assert!(used > 300_000_000, "thawed: {used} ns in 1 s");

    ok(env.davit().args(["freeze", "c1"]));
    let t = std::time::Instant::now();
    ok(env.davit().args(["stop", "-t", "10", "c1"]));
    assert!(t.elapsed() < Duration::from_secs(15));
    assert_eq!(cpu().0, "STOPPED");
}

#[test]
fn plain_user_lifecycle_through_newuidmap() {
    if !require_root("plain_user_lifecycle_through_newuidmap") {
        return;
    }
    let u = plain_user();
    let us = UserSetup::new("user");
    let home = &us.home;
    let d = |args: &[&str]| us.davit(args);
    let out = us.create("u1", &["--storage", "dir", "--json"]);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let v = json(&out);
    // Device nodes cannot be made unprivileged: skipped and reported.
    assert!(
        v["unpack"]["skipped"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["path"].as_str().unwrap().contains("dev/null")),
        "{v}"
    );
    let rootfs = home.join("data/davit/containers/u1/rootfs");
    let md = std::fs::symlink_metadata(rootfs.join("bin/busybox")).unwrap();
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&md),
        u.subuid,
        "owned by the user's subordinate root"
    );
    let out = ok(&mut d(&["start", "-d", "u1"]));
    assert!(
        stderr(&out).contains("without resource limits"),
        "the user is told why there are no limits: {}",
        stderr(&out)
    );
    let v = json(&ok(&mut d(&["info", "u1", "--json"])));
    assert_eq!(v["state"], "RUNNING");
    let pid = v["pid"].as_i64().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(
        status.lines().any(|l| l.starts_with("Uid:")
            && l.split_whitespace().nth(1) == Some(u.subuid.to_string().as_str())),
        "{status}"
    );
    assert_eq!(
        stdout(&ok(&mut d(&["attach", "u1", "--", "id", "-u"]))).trim(),
        "0"
    );
    // `--user` and `--cwd` through a plain user's attach (issue 18).
    assert_eq!(
        stdout(&ok(&mut d(&[
            "attach",
            "u1",
            "--user",
            "1000:1000",
            "--cwd",
            "/tmp",
            "--",
            "sh",
            "-c",
            "id -u; pwd; grep CapEff /proc/self/status"
        ])))
        .trim(),
        "1000\n/tmp\nCapEff:\t0000000000000000"
    );
    assert_eq!(
        stdout(&ok(&mut d(&[
            "attach",
            "u1",
            "--",
            "cat",
            "/proc/self/uid_map"
        ])))
        .split_whitespace()
        .collect::<Vec<_>>(),
        ["0", u.subuid.to_string().as_str(), "65536"]
    );
    // Without a cgroup of its own (no delegation here) the container sees
    // no cgroup tree at all, not the host's (issue 13).
    let cg = stdout(&ok(&mut d(&[
        "attach",
        "u1",
        "--",
        "sh",
        "-c",
        "ls -A /sys/fs/cgroup; echo END",
    ])));
    assert_eq!(cg.trim(), "END", "the host's cgroup tree is visible: {cg}");
    ok(&mut d(&["stop", "u1", "-t", "5"]));
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
    // With `-- CMD` pid 1 is davit's shim, which is not dumpable: the
    // user's attach joins CMD's namespaces instead (the same ones).
    ok(&mut d(&[
        "start",
        "-d",
        "u1",
        "--",
        "/bin/sh",
        "-c",
        "while :; do sleep 1; done",
    ]));
    let shim = stdout(&ok(&mut d(&[
        "attach",
        "u1",
        "--",
        "cat",
        "/proc/1/cmdline",
    ])));
    assert!(shim.starts_with("davit-shim"), "{shim:?}");
    // Container root cannot ptrace the shim or read its memory under the
    // plain user's monitor either (issue 13, row 6; before, pid 1 was
    // made dumpable for this user's attach, and both worked).
    let probe = us.home.join("ptrace1");
    let cc = Command::new("gcc")
        .args(["-static", "-O", "-o"])
        .arg(&probe)
        .arg(repo().join("tests/it/probes/ptrace1.c"))
        .output()
        .expect("gcc (build-essential)");
    assert!(cc.status.success(), "{}", stderr(&cc));
    std::fs::copy(&probe, rootfs.join("bin/ptrace1")).unwrap();
    let o = stdout(&ok(&mut d(&["attach", "u1", "--", "/bin/ptrace1"])));
    assert!(
        o.contains("ATTACH-DENIED") && o.contains("MEM-DENIED"),
        "container root reached into pid 1: {o}"
    );
    ok(&mut d(&["stop", "u1", "-k"]));
    // `rename` (issue 18): the hostname files belong to the user's
    // subordinate root and are rewritten inside the user namespace.
    ok(&mut d(&["rename", "u1", "u2"]));
    let renamed = home.join("data/davit/containers/u2/rootfs");
    assert_eq!(read_to_string(&renamed.join("etc/hostname")).trim(), "u2");
    let md = std::fs::symlink_metadata(renamed.join("etc/hostname")).unwrap();
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&md),
        u.subuid,
        "owner kept"
    );
    ok(&mut d(&["start", "-d", "u2"]));
    assert_eq!(
        stdout(&ok(&mut d(&["attach", "u2", "--", "hostname"]))).trim(),
        "u2"
    );
    ok(&mut d(&["stop", "u2", "-k"]));
    ok(&mut d(&["destroy", "u2"]));
    assert!(
        !renamed.exists() && !rootfs.exists(),
        "the shifted rootfs was removed inside the user namespace"
    );
}

#[test]
fn foreground_start_passes_signals_and_exit_codes() {
    if !require_root("foreground_start_passes_signals_and_exit_codes") {
        return;
    }
    let env = Env::new("fg");
    assert!(env.create("fg", &[]).status.success());
    // Off a terminal: `kill -INT davit` reaches CMD (pid 2 under davit's pid 1).
    for (sig, script, want) in [
        (
            nix::sys::signal::Signal::SIGINT,
            "trap 'exit 42' INT; echo ready; while :; do sleep 0.1; done",
            42,
        ),
        (
            nix::sys::signal::Signal::SIGTERM,
            "echo ready; exec sleep 60",
            143,
        ),
    ] {
        let mut child = env
            .davit()
            .args(["start", "fg", "--", "/bin/sh", "-c", script])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
            &mut line,
        )
        .unwrap();
        assert_eq!(line.trim(), "ready");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig).unwrap();
        let st = child.wait().unwrap();
        assert_eq!(st.code(), Some(want), "{sig:?}");
    }
    // On a terminal: a pseudo-terminal of its own, Ctrl-C interrupts the
    // foreground job, and the shell's exit code comes back.
    let driver = env.path().join("tty_driver.py");
    std::fs::write(
        &driver,
        r#"import os, pty, sys, time, select
pid, fd = pty.fork()
if pid == 0:
    os.execvp(sys.argv[1], sys.argv[1:])
out = b''
def pump(t):
    global out
    end = time.time() + t
    while time.time() < end:
        r, _, _ = select.select([fd], [], [], 0.1)
        if r:
            try: out += os.read(fd, 4096)
            except OSError: return
pump(1.5)
os.write(fd, b'[ -t 0 ] && echo "tty""-yes"\n'); pump(1)
os.write(fd, b'sleep 30\n'); pump(0.5)
os.write(fd, b'\x03'); pump(1)
os.write(fd, b'echo "after""-ctrl-c"; exit 5\n'); pump(2)
for _ in range(50):
    p, st = os.waitpid(pid, os.WNOHANG)
    if p:
        sys.stdout.write(out.decode(errors='replace')); print("EXIT", os.waitstatus_to_exitcode(st)); sys.exit(0)
    time.sleep(0.1)
os.kill(pid, 9); sys.stdout.write(out.decode(errors='replace')); print("EXIT hung"); sys.exit(1)
"#,
    )
    .unwrap();
    let mut c = Command::new("python3");
    c.arg(&driver)
        .arg(davit_bin())
        .args(["start", "fg", "--", "/bin/sh"]);
    for (k, v) in env.davit().get_envs() {
        if let Some(v) = v {
            c.env(k, v);
        }
    }
    let out = run(&mut c);
    let text = stdout(&out);
    assert!(
        text.contains("tty-yes") && text.contains("after-ctrl-c"),
        "{text}\n{}",
        stderr(&out)
    );
    assert!(text.trim_end().ends_with("EXIT 5"), "{text}");
    assert!(env.cgroups().is_empty());
}

#[test]
fn check_reports_every_item_and_how_to_fix_what_is_missing() {
    let env = Env::new("check");
    let v = json(&ok(env.davit().args(["check", "--json"])));
    let items = v.as_array().unwrap();
    let names: Vec<&str> = items.iter().map(|i| i["item"].as_str().unwrap()).collect();
    for want in [
        "namespace: user",
        "namespace: cgroup",
        "cgroup version",
        "newuidmap",
        "newgidmap",
        "clone3",
        "openat2",
        "pidfd",
        "idmapped mounts",
        "gpg (signature checks)",
        "storage",
    ] {
        assert!(
            names.iter().any(|n| n.starts_with(want)),
            "{want} missing from {names:?}"
        );
    }
    // As root on this host (overlayfs, an idmappable ext4 under /tmp): the
    // backend `create` would pick.
    let storage = items.iter().find(|i| i["item"] == "storage").unwrap();
    if nix::unistd::geteuid().is_root() {
        assert_eq!(storage["ok"], true, "{storage}");
        assert!(
            storage["detail"]
                .as_str()
                .unwrap()
                .contains("idmapped lower layer"),
            "{storage}"
        );
    }
    for i in items {
        if i["ok"] == false {
            assert!(
                i["fix"].as_str().is_some_and(|f| !f.is_empty()),
                "a missing item says how to fix it: {i}"
            );
        }
    }
    let text = stdout(&ok(env.davit().arg("check")));
    assert!(
        text.lines()
            .all(|l| l.contains(" OK ") || l.contains("MISSING") || l.contains("fix:")),
        "{text}"
    );
}

/// A test-only bridge and subnet for `--network bridge`; deleted on drop.
struct TestBridge {
    name: String,
    config: PathBuf,
}

impl TestBridge {
    fn new(env: &Env) -> TestBridge {
        let routes = stdout(&ok(
            Command::new("ip").args(["-4", "route", "show", "table", "all"])
        ));
        let third = (20..250)
            .find(|t| !routes.contains(&format!("10.214.{t}.")))
            .expect("a free test subnet");
        let name = format!("dvtc{:06x}", std::process::id() & 0xff_ffff);
        let config = env.path().join("net.toml");
        std::fs::write(
            &config,
            format!(
                // nat, dhcp and ipv6 off: this runs in the real host's
                // namespace, where no ip_forward, nft table or dnsmasq of
                // davit's may appear.
                "[network]\nbridge = \"{name}\"\nsubnet = \"10.214.{third}.0/24\"\nnat = false\nlease_dir = \"{}\"\nnameservers = [\"10.214.{third}.1\"]\ndhcp = false\nipv6 = false\n",
                env.path().join("leases").display()
            ),
        )
        .unwrap();
        TestBridge { name, config }
    }
}

impl Drop for TestBridge {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.name])
            .output();
    }
}

#[test]
fn bridge_network_through_the_cli() {
    if !require_root("bridge_network_through_the_cli") {
        return;
    }
    let env = Env::new("net");
    let br = TestBridge::new(&env);
    let d = |args: &[&str]| {
        let mut c = env.davit();
        c.env("DAVIT_NET_CONFIG", &br.config).args(args);
        c
    };
    let f = fixture();
    for n in ["na", "nb"] {
        let mut c = d(&[
            "create",
            n,
            "busybox",
            "1.36",
            "amd64",
            "--network",
            "bridge",
            "--server",
            &format!("file://{}", f.tree_a.display()),
            "--keyring",
        ]);
        ok(c.arg(&f.key.public));
        ok(&mut d(&["start", "-d", n]));
    }
    let info = |n: &str| json(&ok(&mut d(&["info", n, "--json"])));
    let a = info("na");
    let ip_a = a["ips"][0].as_str().expect("an address").to_string();
    assert!(ip_a.starts_with("10.214."), "{a}");
    let link = a["link"].as_str().unwrap().to_string();
    assert!(link.starts_with("veth"), "{a}");
    let master = stdout(&ok(Command::new("ip").args(["-o", "link", "show", &link])));
    assert!(master.contains(&format!("master {}", br.name)), "{master}");
    // B talks TCP to A with busybox nc; the host reaches A too.
    // The listeners' input stays open: busybox `nc -l` with `</dev/null`
    // hangs up as soon as it accepts, so bytes that arrive a moment after
    // the connection (a loaded machine) were lost, and this test failed
    // now and then.
    ok(&mut d(&["attach", "na", "--", "sh", "-c", "sleep 60 </dev/null 2>/dev/null | nc -l -p 5000 >/tmp/from-b 2>/dev/null & sleep 60 </dev/null 2>/dev/null | nc -l -p 5001 >/tmp/from-host 2>/dev/null &"]));
    // Connect only once both listen (ports 5000 and 5001 are 1388 and 1389
    // in /proc/net/tcp or tcp6, state 0A): a fixed sleep lost the race on
    // a loaded machine, and B's single connection was refused.
    let listening = wait_for(std::time::Duration::from_secs(10), || {
        run(&mut d(&[
            "attach",
            "na",
            "--",
            "sh",
            "-c",
            "for p in 1388 1389; do grep -qsE \":$p 0+:0000 0A\" /proc/net/tcp /proc/net/tcp6 || exit 1; done",
        ]))
        .status
        .success()
    });
    assert!(listening, "nc in na never listened on 5000 and 5001");
    ok(&mut d(&[
        "attach",
        "nb",
        "--",
        "sh",
        "-c",
        // A refused or timed-out try does not use up the listener: retry.
        &format!("for i in 1 2 3 4 5; do echo hello-from-b | nc -w 2 {ip_a} 5000 && exit 0; sleep 0.5; done; exit 1"),
    ]));
    ok(Command::new("bash").args([
        "-c",
        &format!("for i in 1 2 3 4 5; do echo hello-from-host > /dev/tcp/{ip_a}/5001 && exit 0; sleep 0.5; done; exit 1"),
    ]));
    // nc writes its file when the connection closes: poll, under load too.
    for (file, want) in [
        ("/tmp/from-b", "hello-from-b"),
        ("/tmp/from-host", "hello-from-host"),
    ] {
        let mut got = String::new();
        let arrived = wait_for(std::time::Duration::from_secs(10), || {
            got = stdout(&run(&mut d(&["attach", "na", "--", "cat", file])))
                .trim()
                .to_string();
            got == want
        });
        assert!(arrived, "{file}: {got:?}");
    }
    let a2 = info("na");
    assert!(
        a2["rx_bytes"].as_u64().unwrap() > 0 && a2["tx_bytes"].as_u64().unwrap() > 0,
        "{a2}"
    );
    let text = stdout(&ok(&mut d(&["info", "na"])));
    assert!(
        text.contains(&format!("IP:         {ip_a}"))
            && text.contains(&format!("Link:       {link}")),
        "{text}"
    );
    let list = stdout(&ok(&mut d(&["list"])));
    assert!(list.contains(&ip_a), "{list}");
    for n in ["na", "nb"] {
        ok(&mut d(&["stop", n, "-k"]));
        ok(&mut d(&["destroy", n]));
    }
    let links = stdout(&ok(Command::new("ip").args(["-o", "link", "show"])));
    assert!(!links.contains(&link), "veth left after stop: {links}");
    let ports = stdout(&ok(
        Command::new("ip").args(["-o", "link", "show", "master", &br.name])
    ));
    assert!(ports.trim().is_empty(), "bridge ports left: {ports}");
}

/// Without `XDG_RUNTIME_DIR` a plain user's runtime state falls back to
/// `$TMPDIR/davit-UID`. Another user (root plays them here) who made that
/// directory first, with a forged state naming one of the victim's own
/// processes, must not get the victim's `davit stop` to kill it.
#[test]
fn runtime_dir_made_by_someone_else_in_tmpdir_is_refused() {
    if !require_root("runtime_dir_made_by_someone_else_in_tmpdir_is_refused") {
        return;
    }
    let u = plain_user();
    let us = UserSetup::new("tmprt");
    // The victim's container: `stop` only needs its config to exist.
    let cdir = us.home.join("data/davit/containers/web");
    std::fs::create_dir_all(&cdir).unwrap();
    std::fs::write(cdir.join("config.toml"), "").unwrap();
    let owner = format!("{}:{}", u.uid, u.gid);
    ok(Command::new("chown")
        .args(["-R", &owner])
        .arg(us.home.join("data")));
    // A shared, sticky temp dir, as /tmp is.
    let tmp = us.t.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o1777)).unwrap();
    // One of the victim's own processes.
    let mut victim = Command::new("setpriv")
        .args([
            "--reuid",
            &u.uid.to_string(),
            "--regid",
            &u.gid.to_string(),
            "--clear-groups",
            "sleep",
            "60",
        ])
        .spawn()
        .unwrap();
    let pid = victim.id();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let start: u64 = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .nth(19)
        .unwrap()
        .parse()
        .unwrap();
    // The attacker's directory and forged state.
    let rt = tmp.join(format!("davit-{}", u.uid));
    std::fs::create_dir_all(rt.join("web")).unwrap();
    // Open to everyone, so the victim's davit can take its lock there.
    for d in [rt.clone(), rt.join("web")] {
        std::fs::set_permissions(&d, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    }
    std::fs::write(
        rt.join("web/state.json"),
        format!(r#"{{"name":"web","status":"running","init":{{"pid":{pid},"start_time":{start}}},"monitor":null}}"#),
    )
    .unwrap();
    let stop = || {
        let mut c = us.davit(&["stop", "web", "-k"]);
        c.env_remove("XDG_RUNTIME_DIR").env("TMPDIR", &tmp);
        run(&mut c)
    };
    let out = stop();
    let alive = victim.try_wait().unwrap().is_none();
    let _ = victim.kill();
    let _ = victim.wait();
    assert!(
        alive,
        "a forged state in {} made stop kill the user's process",
        rt.display()
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "will not trust the runtime state in {}",
            rt.display()
        )) && err.contains("belongs to uid 0"),
        "{err}"
    );
    // Without the attacker's directory the fallback is the user's own, 0700.
    std::fs::remove_dir_all(&rt).unwrap();
    let out = stop();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let md = std::fs::symlink_metadata(&rt).unwrap();
    assert_eq!(
        (
            std::os::unix::fs::MetadataExt::uid(&md),
            std::os::unix::fs::MetadataExt::mode(&md) & 0o7777
        ),
        (u.uid, 0o700)
    );
}

/// No host user but the owner may reach into a container's tree: a rootfs
/// holds setuid programs (setuid root in a `--privileged` container) and
/// device nodes. The containers directory is made 0700, one left 0755 by
/// an older davit is tightened by the next create, and containers still
/// start (init opens its rootfs before it takes the container's ids).
#[test]
fn other_users_cannot_reach_into_containers() {
    if !require_root("other_users_cannot_reach_into_containers") {
        return;
    }
    let env = Env::new("priv");
    let u = plain_user();
    let root = env.path().join("containers");
    let mode = || {
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&root).unwrap().permissions())
            & 0o7777
    };
    // Another host user tries to stat the privileged container's setuid-root
    // capable busybox.
    let other_user_reaches = |p: &Path| {
        let o = run(Command::new("setpriv")
            .args([
                "--reuid",
                &u.uid.to_string(),
                "--regid",
                &u.gid.to_string(),
                "--clear-groups",
                "stat",
            ])
            .arg(p));
        assert!(
            o.status.success() || stderr(&o).contains("Permission denied"),
            "{}",
            stderr(&o)
        );
        o.status.success()
    };
    let out = env.create("p1", &["--storage", "dir", "--privileged"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(mode(), 0o700);
    let busybox = root.join("p1/rootfs/bin/busybox");
    assert!(
        !other_user_reaches(&busybox),
        "another user reached {}",
        busybox.display()
    );

    // The probe can succeed: with the old 0755 it does.
    std::fs::set_permissions(&root, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    assert!(other_user_reaches(&busybox));
    for (name, storage) in [("p2", "dir"), ("p3", "overlay")] {
        let out = env.create(name, &["--storage", storage]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(mode(), 0o700, "not tightened by the create of {name}");
        let out =
            run(env
                .davit()
                .args(["start", name, "--", "/bin/sh", "-c", "test -x /bin/busybox"]));
        assert_eq!(out.status.code(), Some(0), "{name}: {}", stderr(&out));
    }
    assert!(!other_user_reaches(&busybox));
    for name in ["p1", "p2", "p3"] {
        ok(env.davit().args(["destroy", name]));
    }
}

/// A signed but hostile image whose LXC config binds the host's `/` into the
/// container (`lxc.mount.entry = / host none rbind,create=dir 0 0`) and a
/// host block device: `create` refuses both and says so, keeps the image's
/// tmpfs mount, and inside the container `/host` holds nothing of the host.
#[test]
fn image_config_cannot_mount_host_paths() {
    if !require_root("image_config_cannot_mount_host_paths") {
        return;
    }
    let f = fixture();
    let env = Env::new("imgmnt");
    let tree = env.path().join("tree");
    let config = env.path().join("config");
    std::fs::write(
        &config,
        "lxc.arch = x86_64\n\
         lxc.mount.entry = / host none rbind,create=dir 0 0\n\
         lxc.mount.entry = /dev/vda disk ext4 rw,create=dir 0 0\n\
         lxc.mount.entry = tmpfs scratch tmpfs size=1m,create=dir 0 0\n",
    )
    .unwrap();
    publish_busybox(
        &tree,
        &f.key,
        BUILD_A,
        &["--config", config.to_str().unwrap()],
    );
    let server = format!("file://{}", tree.display());
    let out = run(env
        .davit()
        .args(busybox_create_args("m1", &server, &f.key.public))
        .args(["--storage", "dir"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("refused these mounts of the image's LXC config")
            && err.contains("binds the host path /")
            && err.contains("ext4 filesystem from /dev/vda"),
        "{err}"
    );
    let cfg = std::fs::read_to_string(env.path().join("containers/m1/config.toml")).unwrap();
    assert!(!cfg.contains("/host") && !cfg.contains("/dev/vda"), "{cfg}");
    assert!(
        cfg.contains("tmpfs"),
        "the image's tmpfs mount was dropped: {cfg}"
    );
    // Inside: no host tree at /host (the host's /proc/1 would be there), the
    // tmpfs is mounted.
    let out = run(env.davit().args([
        "start",
        "m1",
        "--",
        "/bin/sh",
        "-c",
        "ls -A /host 2>/dev/null | wc -l; grep -c ' /scratch tmpfs ' /proc/self/mounts",
    ]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out).split_whitespace().collect::<Vec<_>>(),
        ["0", "1"],
        "{}",
        stdout(&out)
    );
    let out = run(env
        .davit()
        .args(busybox_create_args("m2", &server, &f.key.public))
        .args(["--storage", "dir", "--json"]));
    let v = json(&out);
    assert_eq!(
        v["refused_lxc_mounts"].as_array().map(Vec::len),
        Some(2),
        "{v}"
    );
    for n in ["m1", "m2"] {
        ok(env.davit().args(["destroy", n]));
    }
}

/// An image whose template file (`/etc/hostname`) is a device node, kept as
/// a node in a `--privileged` container: `create` must not open it (as host
/// root) to look. The node is of the misc major with a minor no driver
/// answers, so opening it gives ENODEV, which `create` reported as a
/// failure: proof that it opened the node. Now it is skipped, as a template
/// that is not a regular file always was.
#[test]
fn template_that_is_a_device_node_is_never_opened() {
    if !require_root("template_that_is_a_device_node_is_never_opened") {
        return;
    }
    let f = fixture();
    let env = Env::new("tpldev");
    let tar = env.path().join("dev.tar");
    ok(Command::new("python3")
        .args([
            "-c",
            "import tarfile,sys\nt=tarfile.open(sys.argv[1],'w',format=tarfile.PAX_FORMAT)\n\
             for n in ['./', './etc/', './bin/']:\n\
             \ti=tarfile.TarInfo(n); i.type=tarfile.DIRTYPE; i.mode=0o755; t.addfile(i)\n\
             i=tarfile.TarInfo('./etc/hostname'); i.type=tarfile.CHRTYPE; i.devmajor=10; i.devminor=249; i.mode=0o666; t.addfile(i)\n\
             t.close()",
        ])
        .arg(&tar));
    let tree = env.path().join("tree");
    publish_tarball(&tar, "devtpl", &f.key, &tree, &[]);
    let out = env.create_from("dt", "devtpl", &tree, &["--storage", "dir", "--privileged"]);
    assert!(
        out.status.success(),
        "create opened the device node: {}",
        stderr(&out)
    );
    let md =
        std::fs::symlink_metadata(env.path().join("containers/dt/rootfs/etc/hostname")).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_char_device(
        &md.file_type()
    ));
    ok(env.davit().args(["destroy", "dt"]));
}

/// Text that an image controls reaches the terminal escaped: a
/// create-message that sets the window title and clears the screen, and
/// an error that quotes an archive entry whose name holds an escape
/// sequence and a right-to-left override. Before, the bytes went out raw.
#[test]
fn terminal_escapes_in_image_text_are_shown_not_obeyed() {
    if !require_root("terminal_escapes_in_image_text_are_shown_not_obeyed") {
        return;
    }
    let f = fixture();
    let env = Env::new("esc");
    let tar = env.path().join("esc.tar");
    // A good image (one dir), and a bad one whose entry escapes the root.
    ok(Command::new("python3")
        .args([
            "-c",
            "import tarfile,io,sys\n\
             for path, names in [(sys.argv[1], ['./', './bin/']), (sys.argv[2], ['./', './../\\x1b[2J\\u202eevil'])]:\n\
             \tt=tarfile.open(path,'w',format=tarfile.PAX_FORMAT)\n\
             \tfor n in names:\n\
             \t\ti=tarfile.TarInfo(n); i.type=tarfile.DIRTYPE; i.mode=0o755; t.addfile(i)\n\
             \tt.close()",
        ])
        .arg(&tar)
        .arg(env.path().join("bad.tar")));
    let msg = env.path().join("message");
    std::fs::write(&msg, "hello\x1b]0;pwned\x07\x1b[2J\u{202e}olleh\n").unwrap();
    let tree = env.path().join("tree");
    for (t, dist) in [(tar.clone(), "esc"), (env.path().join("bad.tar"), "bad")] {
        publish_tarball(
            &t,
            dist,
            &f.key,
            &tree,
            &["--create-message".as_ref(), msg.as_os_str()],
        );
    }
    let create = |name: &str, dist: &str| env.create_from(name, dist, &tree, &["--storage", "dir"]);
    let out = create("e1", "esc");
    assert!(out.status.success(), "{}", stderr(&out));
    let s = stdout(&out);
    assert!(
        s.contains("hello\\x1b]0;pwned\\x07\\x1b[2J\\u{202e}olleh"),
        "{s:?}"
    );
    assert!(
        !s.contains('\x1b') && !s.contains('\u{202e}'),
        "raw escapes reached the terminal: {s:?}"
    );
    let out = create("e2", "bad");
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        !err.contains('\x1b') && !err.contains('\u{202e}'),
        "raw escapes in the error: {err:?}"
    );
    assert!(err.contains("\\x1b[2J\\u{202e}evil"), "{err:?}");
    ok(env.davit().args(["destroy", "e1"]));
}

/// No container can empty the host's pid table by default (and the
/// seccomp filter in force is shown next to the limits): `create` without
/// `--pids` (and an image that sets none) gives DEFAULT_PIDS, enforced in
/// the cgroup and shown by `info`; `--pids 0` asks for none.
#[test]
fn a_default_pids_limit_is_applied_and_shown() {
    if !require_root("a_default_pids_limit_is_applied_and_shown") {
        return;
    }
    let env = Env::new("dpids");
    let out = env.create("dp", &["--storage", "dir", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(json(&out)["limits"]["pids"], 4096);
    ok(env.davit().args(["start", "-d", "dp"]));
    let v = json(&ok(env.davit().args(["info", "dp", "--json"])));
    assert_eq!(v["limits"]["pids"], 4096, "{v}");
    let text = stdout(&ok(env.davit().args(["info", "dp"])));
    assert!(text.contains("Limits:     pids 4096"), "{text}");
    // The seccomp filter in force is shown too (issue 13).
    assert!(text.contains("Seccomp:    default (12 rules)"), "{text}");
    let rules = v["seccomp"]["rules"].as_array().unwrap();
    assert!(rules.iter().any(|r| r == "open_by_handle_at"), "{v}");
    let max = read_to_string(
        &Path::new("/sys/fs/cgroup/pids")
            .join(&env.prefix)
            .join("dp")
            .join("pids.max"),
    );
    assert_eq!(max.trim(), "4096");
    ok(env.davit().args(["stop", "dp", "-k"]));
    let out = env.create("dn", &["--storage", "dir", "--pids", "0", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        json(&out)["limits"].get("pids").is_none(),
        "{}",
        stdout(&out)
    );
    for n in ["dp", "dn"] {
        ok(env.davit().args(["destroy", n]));
    }
}

/// Root's range equal to another user's let that user write root's
/// containers' files: `check` and `create` now name the overlap, and a range
/// of root's own passes.
#[test]
fn overlapping_subordinate_ranges_are_reported_by_check_and_create() {
    if !require_root("overlapping_subordinate_ranges_are_reported_by_check_and_create") {
        return;
    }
    let env = Env::new("overlap");
    let item = || {
        let v = json(&ok(env.davit().args(["check", "--json"])));
        v.as_array()
            .unwrap()
            .iter()
            .find(|i| i["item"] == "subordinate ids")
            .cloned()
            .expect("a subordinate ids item")
    };
    let own = item();
    assert_eq!(own["ok"], true, "{own}");
    // Another user is given root's uids.
    std::fs::write(
        env.path().join("subuid"),
        "root:1000000:65536\nmallory:1030000:100\n",
    )
    .unwrap();
    let bad = item();
    assert_eq!(bad["ok"], false, "{bad}");
    assert!(
        bad["detail"]
            .as_str()
            .unwrap()
            .contains("gives mallory ids 1030000-1030099 too"),
        "{bad}"
    );
    let out = env.create("ov", &["--storage", "dir"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("someone else can act as this container's ids")
            && stderr(&out).contains("mallory"),
        "{}",
        stderr(&out)
    );
    ok(env.davit().args(["destroy", "ov"]));
}

/// Issue 19: a detached start returns once every process in the container
/// is asleep, long before its `--settle` window ends; a container that
/// keeps running is watched for the whole window, and one that runs for a
/// while and then fails is caught, however long it ran.
#[test]
fn detached_start_returns_once_the_container_is_quiet() {
    if !require_root("detached_start_returns_once_the_container_is_quiet") {
        return;
    }
    let env = Env::new("quiet");
    let out = env.create("c1", &["--storage", "dir"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let started = |settle: &str, script: &str| {
        let t = std::time::Instant::now();
        let out = run(env.davit().args([
            "start", "-d", "c1", "--settle", settle, "--", "/bin/sh", "-c", script,
        ]));
        (out, t.elapsed())
    };
    // sh waiting for its sleep: asleep at once.
    let (out, took) = started("20000", "sleep 1000 & wait");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        took < Duration::from_secs(10),
        "a quiet start took {took:?}"
    );
    let v = json(&ok(env.davit().args(["info", "c1", "--json"])));
    assert_eq!(v["state"], "RUNNING", "{v}");
    ok(env.davit().args(["stop", "-k", "c1"]));
    // A busy loop never sleeps: the whole window.
    let (out, took) = started("1500", "while :; do :; done");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        took >= Duration::from_millis(1500),
        "a busy start took only {took:?}"
    );
    ok(env.davit().args(["stop", "-k", "c1"]));
    // Busy, then a failure: never quiet, so caught.
    let (out, _) = started(
        "20000",
        "i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done; echo gave up; exit 9",
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(9), "{err}");
    assert!(
        err.contains("c1: init exited with status 9") && err.contains("gave up"),
        "{err}"
    );
}

/// Issue 15: a detached start whose init dies in its first moments fails
/// with init's status and the last lines of its console log (escaped),
/// instead of "running" and exit 0; `info` names the log.
#[test]
fn detached_start_that_dies_at_once_says_so_with_the_log_tail() {
    if !require_root("detached_start_that_dies_at_once_says_so_with_the_log_tail") {
        return;
    }
    let env = Env::new("settle");
    let out = env.create("c1", &["--storage", "dir"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(env.davit().args([
        "start",
        "-d",
        "c1",
        "--",
        "/bin/sh",
        "-c",
        "echo first line; printf 'cannot mount cgroup\\033[2J\\n'; exit 7",
    ]));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(7), "{err}");
    assert!(err.contains("c1: init exited with status 7"), "{err}");
    assert!(
        err.contains("first line") && err.contains("cannot mount cgroup\\x1b[2J"),
        "{err}"
    );
    assert!(
        !err.contains('\u{1b}'),
        "raw escape reached the terminal: {err:?}"
    );
    assert!(err.contains("davit console c1 --log"), "{err}");
    let v = json(&ok(env.davit().args(["info", "c1", "--json"])));
    assert_eq!(v["state"], "STOPPED", "{v}");
    assert_eq!(v["exit_status"], 7, "{v}");
    let log = PathBuf::from(v["console_log"].as_str().expect("console_log"));
    assert!(read_to_string(&log).contains("first line"));
    assert!(stdout(&ok(env.davit().args(["info", "c1"]))).contains("Console log:"));
    assert!(env.cgroups().is_empty(), "{:?}", env.cgroups());

    // Without the wait (--settle 0) the same start returns 0 at once: the
    // check above is what caught it.
    ok(env.davit().args([
        "start", "-d", "c1", "--settle", "0", "--", "/bin/sh", "-c", "exit 7",
    ]));
    ok(env
        .davit()
        .args(["wait", "c1", "--state", "stopped", "--timeout", "10"]));
    // An init that is done at once with status 0 is no failure: the start
    // says it stopped.
    let out = ok(env
        .davit()
        .args(["start", "-d", "c1", "--json", "--", "/bin/true"]));
    assert_eq!(json(&out)["state"], "STOPPED", "{}", stdout(&out));
    // An init that lives through the window is running.
    ok(env.davit().args(["start", "-d", "c1"]));
    let v = json(&ok(env.davit().args(["info", "c1", "--json"])));
    assert_eq!(v["state"], "RUNNING", "{v}");
    ok(env.davit().args(["stop", "-k", "c1"]));
}
