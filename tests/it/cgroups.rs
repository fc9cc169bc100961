//! Issue 15: a plain user's own cgroups on this cgroup v1 hybrid host,
//! through the admin's grant (`/etc/davit/cgroups`) and the setuid
//! `davit-cgroup`, and what the same user is told without the grant.
//!
//! The grant file lives in a directory of the test's own, bound over
//! `/etc/davit` in a private mount namespace that each davit command runs
//! in (`unshare -m`); the host's `/etc/davit` is never written. The helper
//! is a setuid-root copy of the freshly built `davit-cgroup` in the same
//! directory, named through `DAVIT_CGROUP_HELPER`.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::common::*;

/// The test's `/etc/davit` and setuid helper.
pub struct Grant {
    pub dir: tempfile::TempDir,
}

impl Grant {
    /// `lines` is the content of the grant file.
    pub fn new(tag: &str, lines: &str) -> Grant {
        let dir = tempfile::Builder::new()
            .prefix(&format!("davit-it-{tag}-"))
            .tempdir_in("/tmp")
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let etc = dir.path().join("etc");
        std::fs::create_dir(&etc).unwrap();
        std::fs::set_permissions(&etc, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(etc.join("cgroups"), lines).unwrap();
        let h = dir.path().join("davit-cgroup");
        std::fs::copy(davit_bin().with_file_name("davit-cgroup"), &h).unwrap();
        nix::unistd::chown(
            &h,
            Some(nix::unistd::Uid::from_raw(0)),
            Some(nix::unistd::Gid::from_raw(0)),
        )
        .unwrap();
        std::fs::set_permissions(&h, std::fs::Permissions::from_mode(0o4755)).unwrap();
        // The mount point for the bind; an empty directory if it was not there.
        std::fs::create_dir_all("/etc/davit").unwrap();
        Grant { dir }
    }

    pub fn helper(&self) -> PathBuf {
        self.dir.path().join("davit-cgroup")
    }

    /// `inner` (a `setpriv … davit …` command) run in a private mount
    /// namespace where `/etc/davit` is this test's.
    pub fn wrap(&self, inner: &Command) -> Command {
        self.wrap_after(inner, "true")
    }

    /// [`Grant::wrap`], with the shell commands `pre` run first in the
    /// same private mount namespace.
    pub fn wrap_after(&self, inner: &Command, pre: &str) -> Command {
        let mut c = Command::new("unshare");
        c.args(["-m", "--propagation", "private", "--", "sh", "-c"])
            .arg(format!(
                "{pre} && mount --bind {} /etc/davit && exec \"$@\"",
                self.dir.path().join("etc").display()
            ))
            .arg("sh")
            .arg(inner.get_program())
            .args(inner.get_args())
            .env_clear()
            .stdin(std::process::Stdio::null());
        for (k, v) in inner.get_envs() {
            if let Some(v) = v {
                c.env(k, v);
            }
        }
        c.env("DAVIT_CGROUP_HELPER", self.helper());
        c
    }
}

/// Every v1 and v2 mount point of this host's cgroups.
fn mounts() -> Vec<PathBuf> {
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    mi.lines()
        .filter(|l| l.contains(" - cgroup ") || l.contains(" - cgroup2 "))
        .filter_map(|l| l.split_whitespace().nth(4).map(PathBuf::from))
        .collect()
}

/// `name`'s tree below `/user` in every hierarchy, children first; what
/// `davit-cgroup` made stays until the admin removes it, the test does.
fn remove_user_tree(user: &str) {
    fn walk(d: &Path, out: &mut Vec<PathBuf>) {
        if let Ok(rd) = std::fs::read_dir(d) {
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    walk(&e.path(), out);
                    out.push(e.path());
                }
            }
        }
    }
    for m in mounts() {
        let top = m.join("user").join(user);
        let mut v = Vec::new();
        walk(&top, &mut v);
        v.push(top);
        v.push(m.join("user"));
        for d in v {
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// One granted test at a time per user: both make and remove the user's
/// `/user/NAME` tree, and a removal must not race another test's start.
fn tree_lock() -> davit_testkit::Lock {
    davit_testkit::lock(Path::new("/run/davit-test-usertree.lock"))
}

/// Number after `key ` in a cgroup's keyed file (`oom_kill 1`), 0 if none.
fn keyed(file: &Path, key: &str) -> u64 {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// Container `name` started with `--memory 64M --pids 64`, its leaves
/// `mem` and `pids` on the host: 200 MiB inside is OOM-killed by that
/// cgroup's OOM killer, a fork bomb is held at 64 (the bombing subshell
/// dies of a failed fork; the rest reads the count with a builtin, then
/// `kill` ends the sleepers), and the container is RUNNING after each.
fn limits_hold(
    sh_in: &dyn Fn(&str, &str, &str) -> Output,
    state: &dyn Fn() -> String,
    name: &str,
    shell: &str,
    kill: &str,
    mem: &Path,
    pids: &Path,
) {
    let o = sh_in(
        name,
        shell,
        "dd if=/dev/zero of=/dev/null bs=200M count=1 2>&1; echo rc=$?",
    );
    assert!(stdout(&o).contains("rc=137"), "killed: {}", out_text(&o));
    let kills = keyed(&mem.join("memory.oom_control"), "oom_kill");
    assert!(kills > 0, "the kill was this cgroup's OOM killer");
    assert_eq!(
        state(),
        "\"RUNNING\"",
        "the container outlives the OOM kill"
    );
    let o = sh_in(
        name,
        shell,
        &format!("(while :; do sleep 30 & done) 2>/dev/null; read n < /sys/fs/cgroup/pids/pids.current; echo current=$n; {kill}; echo END"),
    );
    let t = stdout(&o);
    assert!(t.contains("END"), "{}", out_text(&o));
    let current: u64 = t
        .lines()
        .find_map(|l| l.strip_prefix("current="))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!((48..=64).contains(&current), "held at 64: {t}");
    let refused = keyed(&pids.join("pids.events"), "max");
    assert!(refused > 0, "forks refused at the limit");
    assert_eq!(state(), "\"RUNNING\"", "the container outlives the bomb");
}

struct TreeGuard(String);
impl Drop for TreeGuard {
    fn drop(&mut self) {
        remove_user_tree(&self.0);
    }
}

fn cgroup_dirs_named(name: &str, user: &str) -> Vec<PathBuf> {
    mounts()
        .into_iter()
        .map(|m| m.join("user").join(user).join("davit").join(name))
        .filter(|p| p.exists())
        .collect()
}

fn out_text(o: &Output) -> String {
    format!("status {:?}\n{}\n{}", o.status, stdout(o), stderr(o))
}

#[test]
fn a_granted_plain_user_gets_cgroups_limits_and_stats_on_v1_and_leaves_none() {
    if !require_root("a_granted_plain_user_gets_cgroups_limits_and_stats_on_v1_and_leaves_none") {
        return;
    }
    let u = plain_user();
    let _lock = tree_lock();
    let _tree = TreeGuard(u.name.clone());
    let us = UserSetup::new("ucg");
    let out = us.create("g1", &["--storage", "dir"]);
    assert!(out.status.success(), "{}", out_text(&out));
    let grant = Grant::new("grant", &format!("# test grant\n{}\n", u.name));
    let d = |args: &[&str]| grant.wrap(&us.davit(args));
    let sh_in =
        |name: &str, sh: &str, script: &str| run(&mut d(&["attach", name, "--", sh, "-c", script]));

    let o = run(&mut d(&[
        "start", "-d", "g1", "--memory", "64M", "--pids", "64", "--cpus", "0.5",
    ]));
    assert!(o.status.success(), "{}", out_text(&o));
    assert!(
        !stderr(&o).contains("without resource limits"),
        "{}",
        out_text(&o)
    );
    let v = json(&ok(&mut d(&["info", "g1", "--json"])));
    assert_eq!(v["state"], "RUNNING", "{v}");
    assert_eq!(v["no_limits_reason"], serde_json::Value::Null, "{v}");
    let pid = v["pid"].as_i64().unwrap();
    assert!(
        v["memory_bytes"].as_u64().unwrap_or(0) > 0,
        "memory use shown: {v}"
    );
    assert!(v["cpu_ns"].as_u64().unwrap_or(0) > 0, "CPU use shown: {v}");
    assert!(v["blkio_bytes"].is_u64(), "block I/O use shown: {v}");
    let c = stdout(&ok(&mut d(&["check", "--json"])));
    assert!(c.contains("granted in /etc/davit/cgroups"), "{c}");
    // On the host: the container's cgroup in every hierarchy, below the
    // user's granted tree, handed to container root, with the limits.
    let dirs = cgroup_dirs_named("g1", &u.name);
    assert_eq!(dirs.len(), mounts().len(), "{dirs:?}");
    for dir in &dirs {
        let m = std::fs::metadata(dir).unwrap();
        assert_eq!(
            (m.uid(), m.mode() & 0o777),
            (u.subuid, 0o775),
            "{}",
            dir.display()
        );
        let procs = std::fs::metadata(dir.join("cgroup.procs")).unwrap();
        assert_eq!((procs.uid(), procs.mode() & 0o777), (u.subuid, 0o664));
        let tasks = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap();
        assert!(
            tasks.lines().any(|l| l == pid.to_string()),
            "init {pid} in {}: {tasks}",
            dir.display()
        );
    }
    let mem = dirs
        .iter()
        .find(|d| d.starts_with("/sys/fs/cgroup/memory"))
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(mem.join("memory.limit_in_bytes"))
            .unwrap()
            .trim(),
        (64u64 << 20).to_string()
    );
    // Limit files stay the user's (who made them), never container root's.
    assert_eq!(
        std::fs::metadata(mem.join("memory.limit_in_bytes"))
            .unwrap()
            .uid(),
        u.uid
    );
    let pids = dirs
        .iter()
        .find(|d| d.starts_with("/sys/fs/cgroup/pids"))
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(pids.join("pids.max"))
            .unwrap()
            .trim(),
        "64"
    );
    let cpu = dirs
        .iter()
        .find(|d| d.starts_with("/sys/fs/cgroup/cpu/"))
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(cpu.join("cpu.cfs_quota_us"))
            .unwrap()
            .trim(),
        "50000",
        "--cpus 0.5 over the 100 ms period"
    );
    // A live change by the user: its own leaf's limit file.
    ok(&mut d(&["set", "g1", "--memory", "96M"]));
    assert_eq!(
        std::fs::read_to_string(mem.join("memory.limit_in_bytes"))
            .unwrap()
            .trim(),
        (96u64 << 20).to_string()
    );
    ok(&mut d(&["set", "g1", "--memory", "64M"]));
    // The user's own tree: theirs, its limit files root's.
    let base = Path::new("/sys/fs/cgroup/memory/user").join(&u.name);
    assert_eq!(std::fs::metadata(&base).unwrap().uid(), u.uid);
    assert_eq!(
        std::fs::metadata(base.join("memory.limit_in_bytes"))
            .unwrap()
            .uid(),
        0
    );
    assert_eq!(
        std::fs::metadata("/sys/fs/cgroup/memory/user")
            .unwrap()
            .uid(),
        0
    );

    // Inside: container root may make cgroups in name=systemd (systemd
    // does), not in a controller hierarchy (read-only, CVE-2022-0492).
    let o = sh_in("g1", "sh", "mkdir /sys/fs/cgroup/systemd/inner && echo $$ > /sys/fs/cgroup/systemd/inner/cgroup.procs && cat /proc/self/cgroup && echo MOVED; mkdir /sys/fs/cgroup/memory/x 2>&1; echo END");
    let t = stdout(&o);
    assert!(t.contains("MOVED"), "{}", out_text(&o));
    assert!(t.contains("name=systemd:/inner"), "{t}");
    assert!(t.contains("Read-only file system"), "{t}");
    limits_hold(
        &sh_in,
        &|| json(&ok(&mut d(&["info", "g1", "--json"])))["state"].to_string(),
        "g1",
        "sh",
        "kill -9 -1",
        mem,
        pids,
    );

    ok(&mut d(&["stop", "g1", "-t", "10"]));
    assert!(
        wait_for(Duration::from_secs(5), || cgroup_dirs_named("g1", &u.name)
            .is_empty()),
        "left behind: {:?}",
        cgroup_dirs_named("g1", &u.name)
    );
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
    for m in mounts() {
        assert!(
            !m.join("user").join(&u.name).join("davit").exists(),
            "{}",
            m.display()
        );
    }
}

#[test]
fn without_the_grant_the_user_is_told_the_admin_line() {
    if !require_root("without_the_grant_the_user_is_told_the_admin_line") {
        return;
    }
    let u = plain_user();
    // The helper's refusal at the end leaves the user's tree in the
    // hierarchies it did before pids.
    let _lock = tree_lock();
    let _tree = TreeGuard(u.name.clone());
    let us = UserSetup::new("ucgno");
    let out = us.create("n1", &["--storage", "dir"]);
    assert!(out.status.success(), "{}", out_text(&out));
    let grant = Grant::new("nogrant", "# nobody\nsomeone-else\n");
    let d = |args: &[&str]| grant.wrap(&us.davit(args));
    let o = ok(&mut d(&["start", "-d", "n1"]));
    let line = format!("echo {} >> /etc/davit/cgroups", u.name);
    assert!(
        stderr(&o).contains("without resource limits"),
        "{}",
        out_text(&o)
    );
    assert!(stderr(&o).contains(&line), "{}", out_text(&o));
    let o = run(&mut d(&["check", "--json"]));
    assert!(stdout(&o).contains(&line), "{}", out_text(&o));
    ok(&mut d(&["stop", "n1", "-t", "5"]));
    // Granted, but the helper is not setuid: said so.
    let h = grant.helper();
    std::fs::set_permissions(&h, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        grant.dir.path().join("etc/cgroups"),
        format!("{}\n", u.name),
    )
    .unwrap();
    let o = ok(&mut d(&["start", "-d", "n1"]));
    assert!(
        stderr(&o).contains("is not installed setuid root"),
        "{}",
        out_text(&o)
    );
    ok(&mut d(&["stop", "n1", "-t", "5"]));

    // Granted and setuid, but a hierarchy's mount shows a sub-cgroup, not
    // its root (set up in the command's own mount namespace only: a bind of
    // a child moved over the pids mount there). The helper refuses, and a
    // detached start shows its reason, which it wrote to the ready pipe.
    nix::unistd::chown(
        &h,
        Some(nix::unistd::Uid::from_raw(0)),
        Some(nix::unistd::Gid::from_raw(0)),
    )
    .unwrap();
    std::fs::set_permissions(&h, std::fs::Permissions::from_mode(0o4755)).unwrap();
    let sub =
        Path::new("/sys/fs/cgroup/pids").join(format!("davit-it-bindroot-{}", std::process::id()));
    std::fs::create_dir(&sub).unwrap();
    struct Rmdir(PathBuf);
    impl Drop for Rmdir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir(&self.0);
        }
    }
    let _sub = Rmdir(sub.clone());
    let mnt = grant.dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let pre = format!(
        "mount --bind {sub} {mnt} && umount -l /sys/fs/cgroup/pids && mount --move {mnt} /sys/fs/cgroup/pids",
        sub = sub.display(),
        mnt = mnt.display()
    );
    let o = run(&mut grant.wrap_after(&us.davit(&["start", "-d", "n1"]), &pre));
    assert!(!o.status.success(), "{}", out_text(&o));
    assert!(
        stderr(&o).contains(&format!(
            "/sys/fs/cgroup/pids shows /{} of its hierarchy, not the root",
            sub.file_name().unwrap().to_str().unwrap()
        )),
        "{}",
        out_text(&o)
    );
    assert_eq!(
        json(&ok(&mut d(&["info", "n1", "--json"])))["state"],
        "STOPPED"
    );
}

/// The Debian image (`images/debian`, cached tarball) published into a
/// tree the plain user can read, with the fixture's key beside it.
fn debian_tree_for_user(us: &UserSetup) -> PathBuf {
    let tar = us.t.path().join("debian.tar");
    let script = repo().join("images/debian/build.sh");
    let o = run(Command::new("bash")
        .arg(&script)
        .arg("--cache")
        .arg(davit_testkit::debian_cache())
        .arg("--tarball-only")
        .arg(&tar));
    assert!(o.status.success(), "{}: {}", script.display(), stderr(&o));
    let tree = us.t.path().join("debian-tree");
    // The fastest xz: this test is about cgroups, not the archive.
    publish_tarball(
        &tar,
        "debian",
        &fixture().key,
        &tree,
        &["--xz-preset".as_ref(), "0".as_ref()],
    );
    std::fs::remove_file(&tar).unwrap();
    ok(Command::new("chmod").args(["-R", "a+rX"]).arg(us.t.path()));
    tree
}

fn create_debian(us: &UserSetup, tree: &Path, name: &str) {
    let o = run(&mut us.davit(&[
        "create",
        name,
        "debian",
        "1",
        "amd64",
        "--network",
        "none",
        "--storage",
        "dir",
        "--server",
        &format!("file://{}", tree.display()),
        "--keyring",
        us.key.to_str().unwrap(),
    ]));
    assert!(o.status.success(), "{}", out_text(&o));
}

/// The issue's headline flow on this v1 hybrid host: a plain user, granted
/// cgroups by the admin's line, boots Debian with systemd to `running`
/// (not degraded), reads its memory use in `info`, has an allocation
/// OOM-killed inside at `--memory 64M` while the container lives, is held
/// at `--pids 64` by a fork bomb, and leaves no cgroup, process or mount
/// after `stop`. Without the grant, systemd cannot start and `start -d`
/// says so with its status and the log's tail.
#[test]
fn a_granted_plain_user_boots_debian_with_systemd_to_running_on_v1() {
    if !require_root("a_granted_plain_user_boots_debian_with_systemd_to_running_on_v1") {
        return;
    }
    let u = plain_user();
    let _lock = tree_lock();
    let _tree = TreeGuard(u.name.clone());
    let us = UserSetup::new("udeb");
    let tree = debian_tree_for_user(&us);
    let t = std::time::Instant::now();
    create_debian(&us, &tree, "deb");
    eprintln!("create as {} {:.1}s", u.name, t.elapsed().as_secs_f64());

    // Not granted: systemd dies at once, and start -d says so.
    let nogrant = Grant::new("udebno", "");
    let o = run(&mut nogrant.wrap(&us.davit(&["start", "-d", "deb"])));
    assert!(!o.status.success(), "{}", out_text(&o));
    let e = stderr(&o);
    assert!(
        e.contains(&format!("echo {} >> /etc/davit/cgroups", u.name)),
        "{e}"
    );
    assert!(e.contains("deb: init exited with status"), "{e}");
    assert!(e.contains("davit console deb --log"), "{e}");
    let v = json(&ok(&mut nogrant.wrap(&us.davit(&["info", "deb", "--json"]))));
    assert_eq!(v["state"], "STOPPED", "{v}");

    // Granted.
    let grant = Grant::new("udeb", &format!("{}\n", u.name));
    let d = |args: &[&str]| grant.wrap(&us.davit(args));
    let sh_in =
        |name: &str, sh: &str, script: &str| run(&mut d(&["attach", name, "--", sh, "-c", script]));
    let t = std::time::Instant::now();
    let o = run(&mut d(&[
        "start", "-d", "deb", "--memory", "64M", "--pids", "64",
    ]));
    assert!(o.status.success(), "{}", out_text(&o));
    assert!(!stderr(&o).contains("warning"), "{}", out_text(&o));
    let o = run(&mut d(&[
        "attach",
        "deb",
        "--",
        "systemctl",
        "is-system-running",
        "--wait",
    ]));
    let state = stdout(&o).trim().to_owned();
    eprintln!(
        "systemd {state} {:.1}s after start",
        t.elapsed().as_secs_f64()
    );
    if state != "running" {
        let failed = run(&mut d(&[
            "attach",
            "deb",
            "--",
            "systemctl",
            "--failed",
            "--no-pager",
        ]));
        let log = run(&mut d(&["console", "deb", "--log"]));
        panic!(
            "systemd is {state:?}, not running\n{}\n{}",
            stdout(&failed),
            stdout(&log)
        );
    }
    let v = json(&ok(&mut d(&["info", "deb", "--json"])));
    assert_eq!(v["state"], "RUNNING", "{v}");
    let pid = v["pid"].as_i64().unwrap();
    let used = v["memory_bytes"].as_u64().unwrap_or(0);
    assert!(used > 1 << 20, "memory use shown: {v}");
    let text = stdout(&ok(&mut d(&["info", "deb"])));
    assert!(text.contains("Memory use:"), "{text}");
    // systemd made its own cgroups below the container's.
    let sysd = Path::new("/sys/fs/cgroup/systemd/user")
        .join(&u.name)
        .join("davit/deb");
    assert!(sysd.join("init.scope").is_dir(), "{}", sysd.display());
    let leaf = |h: &str| {
        Path::new("/sys/fs/cgroup")
            .join(h)
            .join("user")
            .join(&u.name)
            .join("davit/deb")
    };
    // Only the sleepers go: systemd's own services must live on.
    limits_hold(
        &sh_in,
        &|| json(&ok(&mut d(&["info", "deb", "--json"])))["state"].to_string(),
        "deb",
        "bash",
        "pkill -9 -x sleep",
        &leaf("memory"),
        &leaf("pids"),
    );
    assert_eq!(
        stdout(&ok(&mut d(&[
            "attach",
            "deb",
            "--",
            "systemctl",
            "is-system-running"
        ])))
        .trim(),
        "running"
    );

    let pidns = std::fs::metadata(format!("/proc/{pid}/ns/pid"))
        .unwrap()
        .ino();
    ok(&mut d(&["stop", "deb", "-t", "30"]));
    assert!(
        wait_for(Duration::from_secs(5), || cgroup_dirs_named("deb", &u.name)
            .is_empty()),
        "left behind: {:?}",
        cgroup_dirs_named("deb", &u.name)
    );
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
    let rootfs = us.home.join("data/davit/containers/deb/rootfs");
    let after = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!after.contains(rootfs.to_str().unwrap()), "{after}");
    // No process of the container is left: none in its pid namespace
    // (other tests run containers in the same subordinate range at once).
    let left: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.parse::<u32>().is_ok())
        })
        .filter(|e| std::fs::metadata(e.path().join("ns/pid")).is_ok_and(|m| m.ino() == pidns))
        .map(|e| e.path().display().to_string())
        .collect();
    assert!(
        left.is_empty(),
        "left in the container's pid namespace: {left:?}"
    );
}

/// A user of the helper's attack tests alone, so that what they remove
/// and count is theirs only.
fn attack_user() -> davit_testkit::TestUser {
    davit_testkit::ensure_user(&davit_testkit::UserSpec {
        name: "davit-cg",
        create_home: false,
        system: true,
        shell: "/usr/sbin/nologin",
        subids: davit_testkit::Subids::KeepOrAfterAll,
    })
}

/// `sh -c SCRIPT` as `u` in the grant's mount namespace; the script runs
/// the helper as `"$H"`.
fn as_user(grant: &Grant, u: &davit_testkit::TestUser, script: &str) -> Output {
    let mut inner = Command::new("setpriv");
    inner
        .args([
            "--reuid",
            &u.uid.to_string(),
            "--regid",
            &u.gid.to_string(),
            "--init-groups",
            "--",
            "/bin/sh",
            "-c",
            script,
        ])
        .env("PATH", "/usr/bin:/bin:/usr/sbin:/sbin")
        .env("H", grant.helper());
    run(&mut grant.wrap(&inner))
}

fn user_tree_exists(user: &str) -> Vec<PathBuf> {
    mounts()
        .into_iter()
        .map(|m| m.join("user").join(user))
        .filter(|p| p.exists())
        .collect()
}

/// The helper's attack tests (as `davit-usernet`'s): no grant, a hostile
/// argument, a user namespace of the caller's own (no real root there),
/// and many callers at once; what it runs has only the caller's ids and
/// environment, and the trees are exactly the documented ones.
#[test]
fn the_cgroup_helper_refuses_hostile_callers_and_runs_programs_as_the_caller() {
    if !require_root("the_cgroup_helper_refuses_hostile_callers_and_runs_programs_as_the_caller") {
        return;
    }
    let u = attack_user();
    let _lock = tree_lock();
    let _tree = TreeGuard(u.name.clone());
    remove_user_tree(&u.name);
    let group = nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(u.gid))
        .unwrap()
        .unwrap()
        .name;

    // Not granted (another user, a group it is not in): one message, exit 3,
    // nothing made, the program never runs.
    let grant = Grant::new("cgatk", "someone-else\n@no-such-group-x\n");
    let o = as_user(&grant, &u, "\"$H\" enter -- /bin/echo RAN");
    assert_eq!(o.status.code(), Some(3), "{}", out_text(&o));
    assert!(
        stderr(&o).contains(&format!("{} is not granted cgroups", u.name)),
        "{}",
        out_text(&o)
    );
    assert!(!stdout(&o).contains("RAN"));
    assert!(
        user_tree_exists(&u.name).is_empty(),
        "{:?}",
        user_tree_exists(&u.name)
    );

    // Bad command lines: usage, exit 2, nothing made.
    std::fs::write(grant.dir.path().join("etc/cgroups"), format!("@{group}\n")).unwrap();
    for bad in [
        "\"$H\"",
        "\"$H\" enter",
        "\"$H\" enter /bin/true",
        "\"$H\" enter -- ''",
        "\"$H\" give -- /bin/true",
    ] {
        let o = as_user(&grant, &u, bad);
        assert_eq!(o.status.code(), Some(2), "{bad}: {}", out_text(&o));
        assert!(
            stderr(&o).contains("usage: davit-cgroup enter"),
            "{}",
            out_text(&o)
        );
    }
    assert!(user_tree_exists(&u.name).is_empty());

    // The caller's own user namespace, where it is "root": the setuid bit
    // means nothing there, and neither does that root on the host's
    // cgroups.
    // Even with `root` granted, the helper refuses there.
    std::fs::write(
        grant.dir.path().join("etc/cgroups"),
        format!("@{group}\nroot\n"),
    )
    .unwrap();
    let o = as_user(&grant, &u, "unshare -r \"$H\" enter -- /bin/echo RAN");
    assert_eq!(o.status.code(), Some(1), "{}", out_text(&o));
    assert!(
        stderr(&o).contains("not in the initial user namespace"),
        "{}",
        out_text(&o)
    );
    assert!(!stdout(&o).contains("RAN"));
    assert!(
        user_tree_exists(&u.name).is_empty(),
        "{:?}",
        user_tree_exists(&u.name)
    );

    // Granted through its group: the program runs with every id the
    // caller's, no capability, the caller's environment and umask, in
    // /user/NAME/0 everywhere.
    let o = as_user(
        &grant,
        &u,
        "umask 027; export FOO='b a r'; \"$H\" enter -- /bin/sh -c 'grep -E \"^(Uid|Gid|CapPrm|CapEff|CapAmb):\" /proc/self/status; umask; echo FOO=$FOO; cat /proc/self/cgroup'",
    );
    assert!(o.status.success(), "{}", out_text(&o));
    let t = stdout(&o);
    let ids = |k: &str, v: u32| format!("{k}:\t{v}\t{v}\t{v}\t{v}");
    assert!(t.contains(&ids("Uid", u.uid)), "{t}");
    assert!(t.contains(&ids("Gid", u.gid)), "{t}");
    for cap in ["CapPrm", "CapEff", "CapAmb"] {
        assert!(t.contains(&format!("{cap}:\t0000000000000000")), "{t}");
    }
    assert!(t.contains("0027"), "umask back: {t}");
    assert!(t.contains("FOO=b a r"), "environment back: {t}");
    let leaf = format!("/user/{}/0", u.name);
    let lines: Vec<&str> = t
        .lines()
        .filter(|l| {
            l.contains("::") || l.matches(':').count() == 2 && l.starts_with(char::is_numeric)
        })
        .collect();
    assert_eq!(lines.len(), mounts().len(), "{t}");
    for l in lines {
        assert!(l.ends_with(&leaf), "{l} in {t}");
    }
    for m in mounts() {
        let users = m.join("user");
        let mine = users.join(&u.name);
        let md = |p: &Path| std::fs::metadata(p).unwrap();
        assert_eq!(
            (md(&users).uid(), md(&users).mode() & 0o7777),
            (0, 0o755),
            "{}",
            users.display()
        );
        assert_eq!(md(&mine).uid(), u.uid, "{}", mine.display());
        assert_eq!(md(&mine.join("cgroup.procs")).uid(), u.uid);
        assert_eq!(md(&mine.join("0")).uid(), u.uid);
        // Limits on the user's tree stay root's: the admin's to set.
        for f in [
            "memory.limit_in_bytes",
            "pids.max",
            "cpu.shares",
            "cpuset.cpus",
        ] {
            if mine.join(f).exists() {
                assert_eq!(md(&mine.join(f)).uid(), 0, "{}", mine.join(f).display());
            }
        }
        if m.ends_with("cpuset") {
            let cpus = std::fs::read_to_string(mine.join("0/cpuset.cpus")).unwrap();
            assert!(!cpus.trim().is_empty(), "cpuset copied down");
        }
    }

    // A program that does not exist: said after the drop, exit 1.
    let o = as_user(&grant, &u, "\"$H\" enter -- /nonexistent/prog");
    assert_eq!(o.status.code(), Some(1), "{}", out_text(&o));
    assert!(
        stderr(&o).contains("cannot run /nonexistent/prog"),
        "{}",
        out_text(&o)
    );

    // Eight callers at once: all enter, the tree stays as documented.
    let o = as_user(
        &grant,
        &u,
        "for i in 1 2 3 4 5 6 7 8; do \"$H\" enter -- /bin/sh -c 'grep -q \"/user/'\"$(id -un)\"'/0$\" /proc/self/cgroup && echo OK' & done; wait",
    );
    assert_eq!(stdout(&o).matches("OK").count(), 8, "{}", out_text(&o));
    for m in mounts() {
        assert_eq!(
            std::fs::metadata(m.join("user").join(&u.name))
                .unwrap()
                .uid(),
            u.uid
        );
    }
}
