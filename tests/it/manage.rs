//! Issue 18's day-two commands: `set` (live limits), `rename` and
//! `autostart`, on real containers.

use std::path::Path;
use std::time::Duration;

use crate::common::*;
use crate::run::Env;

/// The container's cgroup directory in the v1 hierarchy of `controller`.
fn v1_dir(env: &Env, controller: &str) -> std::path::PathBuf {
    let d = Path::new("/sys/fs/cgroup")
        .join(controller)
        .join(&env.prefix);
    walk(&d)
        .into_iter()
        .find(|p| p.join("cgroup.procs").exists() && p.ends_with("c1"))
        .unwrap_or_else(|| panic!("no {controller} cgroup for c1 under {}", d.display()))
}

/// `set --memory` on a running container: an allocation over the new
/// limit fails inside at once, without a restart; `--memory 0` lifts it;
/// config.toml follows; a limit the kernel refuses leaves config.toml as
/// it was; a stopped container gets it at its next start.
#[test]
fn set_changes_a_running_containers_limits_now() {
    if !require_root("set_changes_a_running_containers_limits_now") {
        return;
    }
    let env = Env::new("set");
    let out = env.create("c1", &["--storage", "dir"]);
    assert!(out.status.success(), "{}", stderr(&out));
    ok(env.davit().args(["start", "-d", "c1"]));
    let alloc = || {
        run(env.davit().args([
            "attach",
            "c1",
            "--",
            "dd",
            "if=/dev/zero",
            "of=/dev/null",
            "bs=96M",
            "count=1",
        ]))
    };
    let o = alloc();
    assert!(o.status.success(), "96 MiB without a limit: {}", stderr(&o));
    let cfgp = env.path().join("containers/c1/config.toml");

    let o = ok(env
        .davit()
        .args(["set", "c1", "--memory", "48M", "--pids", "100", "--json"]));
    assert_eq!(json(&o)["applied_now"], true, "{}", stdout(&o));
    let mem = v1_dir(&env, "memory");
    assert_eq!(
        read_to_string(&mem.join("memory.limit_in_bytes")).trim(),
        "50331648"
    );
    assert_eq!(
        read_to_string(&v1_dir(&env, "pids").join("pids.max")).trim(),
        "100"
    );
    let cfg = read_to_string(&cfgp);
    assert!(
        cfg.contains("memory = 50331648") && cfg.contains("pids = 100"),
        "{cfg}"
    );
    let o = alloc();
    assert!(
        !o.status.success(),
        "96 MiB under a 48 MiB limit: {}",
        stdout(&o)
    );
    // The container lives on: only the allocation failed.
    assert_eq!(
        stdout(&ok(env.davit().args(["attach", "c1", "--", "echo", "up"]))).trim(),
        "up"
    );

    // Lower than what it holds: on v1 the kernel refuses (EBUSY) what it
    // cannot reclaim; config.toml stays as it was.
    ok(env.davit().args([
        "attach", "c1", "--", "sh", "-c",
        "mkdir -p /m && mount -t tmpfs -o size=40M tmpfs /m && dd if=/dev/zero of=/m/f bs=1M count=30 2>/dev/null",
    ]));
    let o = run(env.davit().args(["set", "c1", "--memory", "4M"]));
    assert!(!o.status.success(), "{}", stdout(&o));
    assert!(
        stderr(&o).contains("memory.limit_in_bytes"),
        "names the file: {}",
        stderr(&o)
    );
    assert!(
        read_to_string(&cfgp).contains("memory = 50331648"),
        "config kept"
    );
    ok(env
        .davit()
        .args(["attach", "c1", "--", "sh", "-c", "rm /m/f && umount /m"]));

    let o = ok(env
        .davit()
        .args(["set", "c1", "--memory", "none", "--json"]));
    assert_eq!(json(&o)["applied_now"], true);
    let o = alloc();
    assert!(o.status.success(), "limit lifted: {}", stderr(&o));
    assert!(
        !read_to_string(&cfgp).contains("memory ="),
        "lifted in config.toml too"
    );

    let o = run(env.davit().args(["set", "c1"]));
    assert_eq!(o.status.code(), Some(2), "nothing to set: {}", stderr(&o));
    let o = run(env.davit().args(["set", "c1", "--cpus", "-1"]));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));

    ok(env.davit().args(["stop", "-k", "c1"]));
    let o = ok(env.davit().args(["set", "c1", "--memory", "48M", "--json"]));
    assert_eq!(json(&o)["applied_now"], false, "stopped: {}", stdout(&o));
    ok(env.davit().args(["start", "-d", "c1"]));
    assert!(
        !alloc().status.success(),
        "the saved limit applies at start"
    );
    ok(env.davit().args(["stop", "-k", "c1"]));
}

/// `rename` moves a stopped container (dir and overlay), its hostname
/// files and its base reference; refuses a running one and a taken name;
/// a rename cut short after the directory moved is finished by the next
/// command.
#[test]
fn rename_moves_a_stopped_container_and_its_hostname() {
    if !require_root("rename_moves_a_stopped_container_and_its_hostname") {
        return;
    }
    let env = Env::new("rename");
    for (name, storage) in [("c1", "dir"), ("o1", "overlay")] {
        let out = env.create(name, &["--storage", storage]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let cts = env.path().join("containers");
    ok(env.davit().args(["start", "-d", "c1"]));
    let o = run(env.davit().args(["rename", "c1", "r1"]));
    assert_eq!(o.status.code(), Some(2), "running: {}", stderr(&o));
    assert!(stderr(&o).contains("stop it first"), "{}", stderr(&o));
    ok(env.davit().args(["stop", "-k", "c1"]));
    let o = run(env.davit().args(["rename", "c1", "o1"]));
    assert_eq!(o.status.code(), Some(2), "taken: {}", stderr(&o));
    let o = run(env.davit().args(["rename", "c1", "../x"]));
    assert_eq!(o.status.code(), Some(2), "bad name: {}", stderr(&o));

    for (old, new) in [("c1", "r1"), ("o1", "r2")] {
        ok(env.davit().args(["rename", old, new]));
        assert!(!cts.join(old).exists(), "{old} is gone");
        let cfg = read_to_string(&cts.join(new).join("config.toml"));
        assert!(cfg.contains(&format!("name = \"{new}\"")), "{cfg}");
        assert!(
            !cfg.contains(&format!("/{old}/")),
            "no path of the old name: {cfg}"
        );
        ok(env.davit().args(["start", "-d", new]));
        let inside = |cmd: &[&str]| {
            let mut c = env.davit();
            c.args(["attach", new, "--"]).args(cmd);
            stdout(&ok(&mut c)).trim().to_owned()
        };
        assert_eq!(inside(&["hostname"]), new);
        assert_eq!(inside(&["cat", "/etc/hostname"]), new);
        assert!(inside(&["cat", "/etc/hosts"]).contains(&format!("\t{new}")));
        ok(env.davit().args(["stop", "-k", new]));
    }
    let names: Vec<String> = json(&ok(env.davit().args(["list", "--json"])))
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["r1", "r2"]);
    // The overlay container's base is still referenced: prune keeps it.
    ok(env.davit().args(["cache", "prune"]));
    ok(env.davit().args(["start", "-d", "r2"]));
    ok(env.davit().args(["stop", "-k", "r2"]));

    // Killed after the directory moved, before the new config took its
    // place: the next command finishes the rename.
    let d = cts.join("r1");
    let cfg = read_to_string(&d.join("config.toml"));
    std::fs::write(d.join(".config.toml.rename"), &cfg).unwrap();
    std::fs::write(
        d.join("config.toml"),
        cfg.replace("name = \"r1\"", "name = \"c1\"")
            .replace("/containers/r1/", "/containers/c1/"),
    )
    .unwrap();
    ok(env.davit().args(["start", "-d", "r1"]));
    assert!(read_to_string(&d.join("config.toml")).contains("name = \"r1\""));
    assert!(!d.join(".config.toml.rename").exists());
    ok(env.davit().args(["stop", "-k", "r1"]));
}

/// `autostart`: three containers with different orders and a delay start
/// in order (by their own init's clock), are skipped when not marked, and
/// `--stop` stops them in reverse order.
#[test]
fn autostart_starts_in_order_with_delays_and_stops_in_reverse() {
    if !require_root("autostart_starts_in_order_with_delays_and_stops_in_reverse") {
        return;
    }
    let env = Env::new("autostart");
    let cts = env.path().join("containers");
    // Each init notes when it started and when it was told to halt, by the
    // kernel's uptime (one clock for all of them).
    let init = r#"init = ["/bin/sh", "-c", "cat /proc/uptime > /started; trap 'cat /proc/uptime > /halted; exit 0' PWR TERM; while :; do sleep 0.05; done"]"#;
    for (name, order, delay) in [
        ("a", "2", "0"),
        ("b", "-1", "2"),
        ("c", "5", "0"),
        ("off", "0", "0"),
    ] {
        // c is marked at create, the others with `set`.
        let marked = ["--autostart", "--autostart-order", order];
        let extra: &[&str] = if name == "c" { &marked } else { &[] };
        let out = env.create(name, &[&["--storage", "dir"], extra].concat());
        assert!(out.status.success(), "{}", stderr(&out));
        let p = cts.join(name).join("config.toml");
        let cfg = read_to_string(&p);
        let cfg: String = cfg
            .lines()
            .map(|l| if l.starts_with("init = ") { init } else { l })
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(&p, cfg + "\n").unwrap();
        if name != "off" && name != "c" {
            ok(env.davit().args([
                "set",
                name,
                "--autostart",
                "--autostart-order",
                order,
                "--autostart-delay",
                delay,
            ]));
        }
    }
    let l = json(&ok(env.davit().args(["autostart", "--list", "--json"])));
    let order: Vec<&str> = l
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(order, ["b", "a", "c"]);
    ok(env.davit().args(["autostart"]));
    let uptime = |name: &str, file: &str| -> f64 {
        let p = cts.join(name).join("rootfs").join(file);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(t) = std::fs::read_to_string(&p) {
                if let Some(v) = t.split_whitespace().next().and_then(|v| v.parse().ok()) {
                    return v;
                }
            }
            assert!(std::time::Instant::now() < deadline, "no {}", p.display());
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let (b, a, c) = (
        uptime("b", "started"),
        uptime("a", "started"),
        uptime("c", "started"),
    );
    assert!(b < a && a < c, "start order b, a, c: {b} {a} {c}");
    assert!(a - b >= 2.0, "b's delay of 2 s: {b} then {a}");
    assert!(c - a < 2.0, "a has no delay: {a} then {c}");
    let v = json(&ok(env.davit().args(["info", "off", "--json"])));
    assert_eq!(v["state"], "STOPPED", "not marked: {v}");
    // Already running: a second autostart leaves them be.
    ok(env.davit().args(["autostart"]));

    ok(env.davit().args(["autostart", "--stop", "-t", "10"]));
    let (b, a, c) = (
        uptime("b", "halted"),
        uptime("a", "halted"),
        uptime("c", "halted"),
    );
    assert!(c < a && a < b, "stop order c, a, b: {c} {a} {b}");
    for n in ["a", "b", "c"] {
        let v = json(&ok(env.davit().args(["info", n, "--json"])));
        assert_eq!(v["state"], "STOPPED", "{v}");
    }
}

/// The shipped systemd unit runs `davit autostart` at boot and
/// `autostart --stop` at shutdown, and systemd accepts it.
#[test]
fn the_systemd_unit_runs_autostart() {
    let unit =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/systemd/davit-autostart.service");
    let text = read_to_string(&unit);
    assert!(
        text.contains("ExecStart=/usr/local/bin/davit autostart\n"),
        "{text}"
    );
    assert!(
        text.contains("ExecStop=/usr/local/bin/davit autostart --stop"),
        "{text}"
    );
    assert!(text.contains("WantedBy=multi-user.target"), "{text}");
    // systemd-analyze checks the unit against a davit that exists.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("davit-autostart.service");
    std::fs::write(
        &copy,
        text.replace("/usr/local/bin/davit", env!("CARGO_BIN_EXE_davit")),
    )
    .unwrap();
    let o = run(std::process::Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&copy));
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(
        !stderr(&o).contains("davit-autostart.service:"),
        "systemd finds fault with the unit: {}",
        stderr(&o)
    );
}

fn chown(p: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(p, Some(uid), Some(gid)).unwrap();
}

fn owner(p: &Path) -> (u32, u32) {
    let md = std::fs::symlink_metadata(p).unwrap();
    (
        std::os::unix::fs::MetadataExt::uid(&md),
        std::os::unix::fs::MetadataExt::gid(&md),
    )
}

/// `create --mount` as root: an idmapped bind (host uid 1000 is 1000
/// inside, container root writes as host root), `:ro` enforced, a target
/// that is a link in the image pointing out of the rootfs binds inside it,
/// a missing host path is refused before anything is unpacked, and on a
/// filesystem without idmapped mounts (ramfs, in a mount namespace of the
/// test's own) the start says so and binds plainly.
#[test]
fn mount_binds_host_directories_idmapped_read_only_and_inside_the_rootfs() {
    if !require_root("mount_binds_host_directories_idmapped_read_only_and_inside_the_rootfs") {
        return;
    }
    let env = Env::new("mount");
    let share = env.path().join("share");
    let rodir = env.path().join("rodir");
    // A name the host's /tmp does not have: where an escape would land.
    let canary = Path::new("/tmp").join(format!("{}-escaped", env.prefix));
    for d in [&share, &rodir] {
        std::fs::create_dir(d).unwrap();
    }
    std::fs::write(share.join("owned"), "by 1000\n").unwrap();
    chown(&share, 1000, 1000);
    chown(&share.join("owned"), 1000, 1000);
    std::fs::write(rodir.join("keep"), "keep\n").unwrap();

    let m = |host: &Path, rest: &str| format!("{}:{rest}", host.display());
    let o = run(env
        .davit()
        .args(["create", "bad"])
        .args(["--mount", &m(&env.path().join("nowhere"), "/x")]));
    assert_eq!(o.status.code(), Some(6), "{}", stderr(&o));
    assert!(stderr(&o).contains("nowhere"), "{}", stderr(&o));
    assert!(!env.path().join("containers/bad").exists());
    let o = run(env
        .davit()
        .args(["create", "bad", "--mount", "/tmp:relative"]));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));

    let out = env.create(
        "c1",
        &[
            "--storage",
            "dir",
            "--mount",
            &m(&share, "/data"),
            "--mount",
            &m(&rodir, "/ro:ro"),
            "--mount",
            &m(
                &share,
                &format!("/escape/{}", canary.file_name().unwrap().to_str().unwrap()),
            ),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // The image's /escape points up and out, at the host's /tmp.
    let rootfs = env.path().join("containers/c1/rootfs");
    std::os::unix::fs::symlink("../../../../../../../../tmp", rootfs.join("escape")).unwrap();
    let cfg = read_to_string(&env.path().join("containers/c1/config.toml"));
    assert!(cfg.contains("options = \"idmap,nosuid,nodev,ro\""), "{cfg}");

    ok(env.davit().args(["start", "-d", "c1"]));
    let inside = |cmd: &str| {
        let o = run(env.davit().args(["attach", "c1", "--", "sh", "-c", cmd]));
        (o.status.success(), stdout(&o).trim().to_owned(), stderr(&o))
    };
    let (okk, out, err) = inside("stat -c %u:%g /data/owned && cat /data/owned");
    assert!(okk, "{err}");
    assert_eq!(out, "1000:1000\nby 1000", "host uid 1000 is 1000 inside");
    let (okk, _, err) = inside("echo hi > /data/by-root && chown 1000:1000 /data/owned && touch /data/u && chown 1234:1234 /data/u");
    assert!(okk, "{err}");
    assert_eq!(
        owner(&share.join("by-root")),
        (0, 0),
        "container root writes as host root"
    );
    assert_eq!(owner(&share.join("u")), (1234, 1234));
    assert_eq!(read_to_string(&share.join("by-root")), "hi\n");

    let (okk, _, _) = inside("echo x > /ro/new");
    assert!(!okk, "ro is enforced");
    assert!(!rodir.join("new").exists());
    let (okk, out, _) = inside("cat /ro/keep; grep ' /ro ' /proc/self/mountinfo");
    assert!(
        okk && out.starts_with("keep") && out.contains(" ro,"),
        "{out}"
    );
    let (okk, _, _) = inside("mount -o remount,rw,bind /ro && echo x > /ro/new");
    assert!(
        !okk && !rodir.join("new").exists(),
        "container root cannot lift ro"
    );
    let probe = env.path().join("setattr_rw");
    let cc = std::process::Command::new("gcc")
        .args(["-static", "-O", "-o"])
        .arg(&probe)
        .arg(repo().join("tests/it/probes/setattr_rw.c"))
        .output()
        .expect("gcc (build-essential)");
    assert!(cc.status.success(), "{}", stderr(&cc));
    std::fs::copy(
        &probe,
        env.path().join("containers/c1/rootfs/bin/setattr_rw"),
    )
    .unwrap();
    let (_, out, _) = inside("/bin/setattr_rw /ro; echo x > /ro/new");
    assert!(out.contains("SETATTR-DENIED"), "{out}");
    assert!(!rodir.join("new").exists(), "mount_setattr cannot lift ro");

    // The link resolved inside the rootfs: the bind is there, not on the
    // host's canary.
    let (okk, _, err) = inside(&format!("echo in > {}/through-link", canary.display()));
    assert!(okk, "{err}");
    assert!(share.join("through-link").exists());
    assert!(
        !canary.exists(),
        "{} was made on the host",
        canary.display()
    );
    let host_mounts = read_to_string(Path::new("/proc/self/mountinfo"));
    assert!(
        !host_mounts.contains(canary.to_str().unwrap()),
        "nothing mounted on the host"
    );
    assert!(
        rootfs.join(canary.strip_prefix("/").unwrap()).is_dir(),
        "made inside the rootfs"
    );
    ok(env.davit().args(["stop", "-k", "c1"]));

    // No idmapped mounts on ramfs: said at start, and a plain bind.
    let ram = env.path().join("ram");
    std::fs::create_dir(&ram).unwrap();
    let out = env.create("c2", &["--storage", "dir", "--mount", &m(&ram, "/ram")]);
    assert!(out.status.success(), "{}", stderr(&out));
    let script = format!(
        "mount -t ramfs none {ram} && echo r > {ram}/f && chown 1000:1000 {ram}/f && \"$@\" start -d c2 && \"$@\" attach c2 -- stat -c %u /ram/f; \"$@\" stop -k c2 >/dev/null",
        ram = ram.display()
    );
    let d = env.davit();
    let mut c = std::process::Command::new("unshare");
    c.args(["-m", "--propagation", "private", "sh", "-c", &script, "sh"])
        .arg(d.get_program())
        .envs(d.get_envs().filter_map(|(k, v)| v.map(|v| (k, v))));
    let o = run(&mut c);
    assert!(o.status.success(), "{}\n{}", stdout(&o), stderr(&o));
    assert!(
        stderr(&o).contains("is a plain bind, not idmapped (mount_setattr"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        stdout(&o).trim(),
        "65534",
        "unmapped host ids show as nobody"
    );
}

/// `create --mount` as a plain user: a plain bind (only root may idmap),
/// said at create; container root's writes are owned by the user's
/// subordinate root on the host, the user's own files show as nobody, and
/// `:ro` holds.
#[test]
fn mount_as_a_plain_user_is_a_plain_bind_with_shifted_owners() {
    if !require_root("mount_as_a_plain_user_is_a_plain_bind_with_shifted_owners") {
        return;
    }
    let u = plain_user();
    let us = UserSetup::new("umount");
    let share = us.t.path().join("share");
    let rodir = us.t.path().join("rodir");
    for d in [&share, &rodir] {
        std::fs::create_dir(d).unwrap();
        chown(d, u.uid, u.gid);
    }
    std::fs::write(share.join("mine"), "mine\n").unwrap();
    chown(&share.join("mine"), u.uid, u.gid);
    // Container root is not the user: it may write only where others may.
    std::fs::set_permissions(&share, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let out = us.create(
        "u1",
        &[
            "--storage",
            "dir",
            "--mount",
            &format!("{}:/data", share.display()),
            "--mount",
            &format!("{}:/ro:ro", rodir.display()),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is a plain bind, since only root can make an idmapped mount"),
        "{}",
        stderr(&out)
    );
    ok(&mut us.davit(&["start", "-d", "u1"]));
    let inside = |cmd: &str| {
        let o = run(&mut us.davit(&["attach", "u1", "--", "sh", "-c", cmd]));
        (o.status.success(), stdout(&o).trim().to_owned(), stderr(&o))
    };
    let (okk, out, err) = inside("stat -c %u /data/mine && echo w > /data/written");
    assert!(okk, "{err}");
    assert_eq!(out, "65534");
    assert_eq!(
        owner(&share.join("written")).0,
        u.subuid,
        "the user's subordinate root"
    );
    let (okk, _, _) = inside("touch /ro/x");
    assert!(!okk && !rodir.join("x").exists(), "ro holds");
    ok(&mut us.davit(&["stop", "-k", "u1"]));
}

/// The paths of a tree, for comparing whole states.
fn listing(root: &Path) -> Vec<String> {
    let mut v: Vec<String> = walk(root)
        .into_iter()
        .map(|p| p.strip_prefix(root).unwrap().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Snapshot, write, restore; then restores killed with SIGKILL at moments
/// spread over their run, each leaving the old tree or the restored one
/// whole, never a mix, and the snapshot intact. `d` runs davit (as root
/// or as the plain user); `tree` is the container's own tree.
fn snapshot_round(d: &dyn Fn(&[&str]) -> std::process::Command, name: &str, tree: &Path) {
    let run_in = |cmd: &str| {
        ok(&mut d(&["start", "-d", name]));
        ok(&mut d(&["attach", name, "--", "sh", "-c", cmd]));
        ok(&mut d(&["stop", "-k", name]));
    };
    run_in("echo before > /etc/marker");
    let o = run(&mut d(&["snapshot", name]));
    assert!(o.status.success(), "{}", stderr(&o));
    ok(&mut d(&["snapshot", name, "second"]));
    let l = json(&ok(&mut d(&["snapshot", "list", name, "--json"])));
    let names: Vec<&str> = l
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["snap0", "second"]);
    let o = run(&mut d(&["snapshot", name, "second"]));
    assert_eq!(o.status.code(), Some(2), "taken: {}", stderr(&o));
    let snap_state = listing(tree);

    run_in("echo after > /etc/marker; echo new > /etc/written; rm /bin/true 2>/dev/null; mkdir -p /var/many && for i in $(seq 1 300); do echo $i > /var/many/f$i; done");
    let after_state = listing(tree);
    assert_ne!(snap_state, after_state);

    // A running container is refused.
    ok(&mut d(&["start", "-d", name]));
    let o = run(&mut d(&["snapshot", "restore", name, "snap0"]));
    assert_eq!(o.status.code(), Some(2), "running: {}", stderr(&o));
    ok(&mut d(&["stop", "-k", name]));

    // Killed during the restore, at spread moments.
    let mut saw = (0, 0);
    for delay_ms in [0u64, 5, 10, 20, 40, 80, 160] {
        let mut child = d(&["snapshot", "restore", name, "snap0"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = child.wait();
        // Its helpers (cp, the user-namespace child) die with it.
        std::thread::sleep(Duration::from_millis(300));
        let now = listing(tree);
        if now == snap_state {
            saw.1 += 1;
            // Back to the written state for the next round.
            run_in("echo after > /etc/marker; echo new > /etc/written; rm /bin/true 2>/dev/null; mkdir -p /var/many && for i in $(seq 1 300); do echo $i > /var/many/f$i; done");
            assert_eq!(listing(tree), after_state);
        } else {
            assert_eq!(now, after_state, "a mix after a kill at {delay_ms} ms");
            saw.0 += 1;
        }
    }
    eprintln!(
        "{name}: kills left the old tree {} times, the restored one {} times",
        saw.0, saw.1
    );

    ok(&mut d(&["snapshot", "restore", name, "snap0"]));
    assert_eq!(listing(tree), snap_state, "restored");
    ok(&mut d(&["start", "-d", name]));
    let out = stdout(&ok(&mut d(&[
        "attach",
        name,
        "--",
        "sh",
        "-c",
        "cat /etc/marker; ls /etc/written 2>&1; ls /bin/true",
    ])));
    assert!(
        out.starts_with("before\n") && out.contains("No such file") && out.contains("/bin/true"),
        "{out}"
    );
    ok(&mut d(&["stop", "-k", name]));
    // Nothing left behind by the killed restores, and the snapshot is whole.
    let parent = tree.parent().unwrap();
    let stray: Vec<_> = std::fs::read_dir(parent)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".restore-"))
        .collect();
    assert!(stray.is_empty(), "{stray:?}");
    ok(&mut d(&["snapshot", "delete", name, "second"]));
    let l = json(&ok(&mut d(&["snapshot", "list", name, "--json"])));
    assert_eq!(l.as_array().unwrap().len(), 1);
    let o = run(&mut d(&["snapshot", "restore", name, "second"]));
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
}

#[test]
fn snapshot_restore_is_all_or_nothing_for_dir_and_overlay_as_root() {
    if !require_root("snapshot_restore_is_all_or_nothing_for_dir_and_overlay_as_root") {
        return;
    }
    let env = Env::new("snap");
    for (name, storage, tree) in [("c1", "dir", "rootfs"), ("o1", "overlay", "overlay/upper")] {
        let out = env.create(name, &["--storage", storage]);
        assert!(out.status.success(), "{}", stderr(&out));
        let d = |args: &[&str]| {
            let mut c = env.davit();
            c.args(args);
            c
        };
        snapshot_round(
            &d,
            name,
            &env.path().join("containers").join(name).join(tree),
        );
    }
    // destroy takes the snapshots with it.
    ok(env.davit().args(["destroy", "c1"]));
    assert!(!env.path().join("containers/c1").exists());
}

#[test]
fn snapshot_restore_is_all_or_nothing_as_a_plain_user() {
    if !require_root("snapshot_restore_is_all_or_nothing_as_a_plain_user") {
        return;
    }
    let us = UserSetup::new("usnap");
    let cts = us.home.join("data/davit/containers");
    for (name, storage, tree) in [("u1", "dir", "rootfs"), ("v1", "overlay", "overlay/upper")] {
        let out = us.create(name, &["--storage", storage]);
        assert!(out.status.success(), "{}", stderr(&out));
        let d = |args: &[&str]| us.davit(args);
        snapshot_round(&d, name, &cts.join(name).join(tree));
    }
    ok(&mut us.davit(&["destroy", "u1"]));
    assert!(
        !cts.join("u1").exists(),
        "the snapshots' shifted files were removed too"
    );
}

/// `davit console` on a real pseudo-terminal driven by
/// `tests/it/terminal/console.py`: `steps` are (what to type, what to wait
/// for) pairs, then Ctrl-a q.
fn console_session(
    cmd: std::process::Command,
    steps: serde_json::Value,
    timeout: u64,
) -> serde_json::Value {
    let spec = serde_json::json!({"steps": steps, "timeout": timeout});
    let mut c = std::process::Command::new("python3");
    c.arg(repo().join("tests/it/terminal/console.py"))
        .arg(spec.to_string())
        .arg("--")
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("TERM", "xterm")
        .envs(cmd.get_envs().filter_map(|(k, v)| v.map(|v| (k, v))));
    json(&ok(&mut c))
}

/// busybox with a login shell on its console: a detached start logs it,
/// `console` relays it on a real pty, Ctrl-a q detaches and leaves it
/// running, a second session sees what was printed before, `--log` shows
/// the log with escapes shown, `--follow` follows it until the stop.
#[test]
fn console_of_a_detached_container_attaches_detaches_and_logs() {
    if !require_root("console_of_a_detached_container_attaches_detaches_and_logs") {
        return;
    }
    let env = Env::new("console");
    let out = env.create("c1", &["--storage", "dir"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let rootfs = env.path().join("containers/c1/rootfs");
    std::fs::write(
        rootfs.join("etc/inittab"),
        "::sysinit:/etc/init.d/rcS\n::respawn:-/bin/sh\ntty2::respawn:/bin/sh\n::shutdown:/bin/sync\n",
    )
    .unwrap();
    std::fs::write(
        rootfs.join("etc/init.d/rcS"),
        "#!/bin/sh\nhostname -F /etc/hostname\necho booting-the-console-test\nprintf 'esc:\\033[2J:end\\n'\n",
    )
    .unwrap();
    let o = run(env.davit().args(["console", "c1", "--log"]));
    assert_eq!(o.status.code(), Some(3), "no log yet: {}", stderr(&o));
    ok(env.davit().args(["start", "-d", "c1"]));
    let mut log = String::new();
    assert!(
        wait_for(Duration::from_secs(10), || {
            log = stdout(&ok(env.davit().args(["console", "c1", "--log"])));
            log.contains("booting-the-console-test")
        }),
        "{log}"
    );
    assert!(
        log.contains("esc:\\x1b[2J:end"),
        "escapes shown, not obeyed: {log:?}"
    );

    let mut c = env.davit();
    c.args(["console", "c1"]);
    let v = console_session(
        c,
        serde_json::json!([[null, "Ctrl-a q"], ["echo hi-$((6*7))\r", "hi-42"]]),
        30,
    );
    assert_eq!(v["failed"], serde_json::Value::Null, "{v}");
    assert_eq!(v["code"], 0, "{v}");
    assert!(
        v["screen"]
            .as_str()
            .unwrap()
            .contains("Detached from c1's console."),
        "{v}"
    );
    let st = json(&ok(env.davit().args(["info", "c1", "--json"])));
    assert_eq!(st["state"], "RUNNING", "detaching leaves it running");

    // /dev/tty1..4: pseudo-terminals of the container's own devpts
    // (136:N), named to init as systemd expects, each its own session.
    let info = stdout(&ok(env.davit().args([
        "attach", "c1", "--", "sh", "-c",
        "stat -c '%t:%T' /dev/tty1 /dev/tty4; tr '\\0' '\\n' < /proc/1/environ | grep container_ttys",
    ])));
    assert_eq!(
        info.trim(),
        "88:1\n88:4\ncontainer_ttys=pts/1 pts/2 pts/3 pts/4",
        "{info}"
    );
    let mut c = env.davit();
    c.args(["console", "c1", "--tty", "2"]);
    let v = console_session(
        c,
        serde_json::json!([[null, "tty2"], ["tty | tr a-z A-Z\r", "/DEV/TTY2"]]),
        30,
    );
    assert_eq!(v["failed"], serde_json::Value::Null, "{v}");
    let screen = v["screen"].as_str().unwrap();
    assert!(!screen.contains("hi-42"), "tty2 is not the console: {v}");
    assert!(screen.contains("Detached from c1's tty2."), "{v}");
    // Detaching while the container floods the terminal: the relay ends
    // before the message, so no output lands inside or after it (it once
    // did: "Detached from c1/ # ...'s tty2.").
    let mut c = env.davit();
    c.args(["console", "c1", "--tty", "2"]);
    let v = console_session(
        c,
        serde_json::json!([["\r", "# "], ["yes flood\r", "flood\r\nflood"]]),
        30,
    );
    assert_eq!(v["failed"], serde_json::Value::Null, "{v}");
    let screen = v["screen"].as_str().unwrap();
    let (_, after) = screen
        .rsplit_once("\r\nDetached from c1's tty2.\r\n")
        .unwrap_or_else(|| panic!("no whole detach message: {v}"));
    assert_eq!(after, "", "output after the detach message: {v}");
    ok(env.davit().args(["attach", "c1", "--", "killall", "yes"]));
    let o = run(env.davit().args(["console", "c1", "--tty", "5"]));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));

    // A second `davit console` takes the console over: the first is told
    // and ends.
    std::thread::scope(|sc| {
        let first = sc.spawn(|| {
            let mut c = env.davit();
            c.args(["console", "c1"]);
            console_session(c, serde_json::json!([[null, "took it"]]), 20)
        });
        std::thread::sleep(Duration::from_secs(2));
        let mut c = env.davit();
        c.args(["console", "c1"]);
        let v = console_session(
            c,
            serde_json::json!([["echo second-$((2+3))\r", "second-5"]]),
            30,
        );
        assert_eq!(v["failed"], serde_json::Value::Null, "{v}");
        let v = first.join().unwrap();
        assert_eq!(
            v["failed"],
            serde_json::Value::Null,
            "the first session was not taken over: {v}"
        );
        assert_eq!(v["code"], 0, "{v}");
    });

    // What was printed while no one was attached, then the shell again.
    ok(env.davit().args([
        "attach",
        "c1",
        "--",
        "sh",
        "-c",
        "echo while-away > /dev/console",
    ]));
    let mut c = env.davit();
    c.args(["console", "c1"]);
    let v = console_session(
        c,
        serde_json::json!([[null, "while-away"], ["echo again-$((1+1))\r", "again-2"]]),
        30,
    );
    assert_eq!(v["failed"], serde_json::Value::Null, "{v}");
    let screen = v["screen"].as_str().unwrap();
    assert!(
        screen.contains("hi-42"),
        "the first session's output is replayed: {screen}"
    );
    assert!(stdout(&ok(env.davit().args(["console", "c1", "--log"]))).contains("again-2"));

    // Another host user, even given a way to the socket (the test opens
    // the 0700 directory and the 0600 socket for it), gets nothing: the
    // monitor checks the peer's uid and hangs up before the replay.
    let u = plain_user();
    let state = env.path().join("run/c1");
    let sock = state.join("console.sock");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();
    let peek = format!(
        "import socket; s = socket.socket(socket.AF_UNIX); s.connect({:?}); s.settimeout(5); print(len(s.recv(65536)))",
        sock.display().to_string()
    );
    let o = ok(std::process::Command::new("setpriv").args([
        "--reuid",
        &u.uid.to_string(),
        "--regid",
        &u.gid.to_string(),
        "--clear-groups",
        "/usr/bin/python3",
        "-c",
        &peek,
    ]));
    assert_eq!(
        stdout(&o).trim(),
        "0",
        "another user read the console: {}",
        stdout(&o)
    );
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();

    // --follow prints what arrives until the container stops.
    let mut follow = env
        .davit()
        .args(["console", "c1", "--log", "--follow"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    ok(env.davit().args([
        "attach",
        "c1",
        "--",
        "sh",
        "-c",
        "sleep 0.5; echo followed-line > /dev/console",
    ]));
    std::thread::sleep(Duration::from_millis(600));
    ok(env.davit().args(["stop", "-k", "c1"]));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while follow.try_wait().unwrap().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "--follow did not end with the container"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let o = follow.wait_with_output().unwrap();
    assert!(stdout(&o).contains("followed-line"), "{}", stdout(&o));

    let o = run(env.davit().args(["console", "c1"]));
    assert_eq!(o.status.code(), Some(2), "not running: {}", stderr(&o));
    // The log of the last boot stays for --log after the stop; destroy
    // takes it.
    assert!(stdout(&ok(env.davit().args(["console", "c1", "--log"]))).contains("followed-line"));
    ok(env.davit().args(["destroy", "c1"]));
    assert!(
        !env.path().join("run/c1").exists(),
        "the log went with the container"
    );

    // An image's `lxc.tty.max` sets how many terminals it gets.
    let f = fixture();
    let conf = env.path().join("lxc-config");
    std::fs::write(&conf, "lxc.arch = x86_64\nlxc.tty.max = 1\n").unwrap();
    let tree = env.path().join("tree");
    publish_tarball(
        &build_dir(&f.tree_a, BUILD_A).join("rootfs.tar.xz"),
        "ttyimg",
        &f.key,
        &tree,
        &["--config".as_ref(), conf.as_os_str()],
    );
    let out = env.create_from("t1", "ttyimg", &tree, &["--storage", "dir"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(read_to_string(&env.path().join("containers/t1/config.toml")).contains("ttys = 1"));
    ok(env.davit().args(["start", "-d", "t1"]));
    let devs = stdout(&ok(env.davit().args([
        "attach",
        "t1",
        "--",
        "sh",
        "-c",
        "ls /dev/tty1 /dev/tty2 2>&1; true",
    ])));
    assert!(
        devs.contains("/dev/tty1") && devs.contains("tty2: No such file"),
        "{devs}"
    );
    let o = run(env.davit().args(["console", "t1", "--tty", "2"]));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    ok(env.davit().args(["stop", "-k", "t1"]));
}

/// The Debian image (systemd) started with `-d`: `davit console` on a
/// real pseudo-terminal shows getty's login prompt, Ctrl-a q detaches, a
/// second session gets the prompt again, and `--log` holds the boot.
#[test]
fn console_shows_debians_getty_login_prompt() {
    if !require_root("console_shows_debians_getty_login_prompt") {
        return;
    }
    let env = Env::new("dconsole");
    let tar = env.path().join("debian.tar");
    let script = repo().join("images/debian/build.sh");
    let o = run(std::process::Command::new("bash")
        .arg(&script)
        .arg("--cache")
        .arg(davit_testkit::debian_cache())
        .arg("--tarball-only")
        .arg(&tar));
    assert!(o.status.success(), "{}: {}", script.display(), stderr(&o));
    let tree = env.path().join("tree");
    // The fastest xz: this test is about the console, not the archive.
    publish_tarball(
        &tar,
        "debian",
        &fixture().key,
        &tree,
        &["--xz-preset".as_ref(), "0".as_ref()],
    );
    let t = std::time::Instant::now();
    let out = env.create_from("d1", "debian", &tree, &["--storage", "dir"]);
    assert!(out.status.success(), "{}", stderr(&out));
    eprintln!("create {:.1}s", t.elapsed().as_secs_f64());
    let t = std::time::Instant::now();
    ok(env.davit().args(["start", "-d", "d1"]));
    let session = |steps: serde_json::Value| {
        let mut c = env.davit();
        c.args(["console", "d1"]);
        console_session(c, steps, 90)
    };
    let v = session(serde_json::json!([[null, "login:"]]));
    assert_eq!(v["failed"], serde_json::Value::Null, "no login prompt: {v}");
    eprintln!("login prompt {:.1}s after start", t.elapsed().as_secs_f64());
    assert_eq!(v["code"], 0, "{v}");
    let st = json(&ok(env.davit().args(["info", "d1", "--json"])));
    assert_eq!(st["state"], "RUNNING");
    // Again: the prompt (replayed), and a fresh one after Enter.
    let v = session(serde_json::json!([[null, "login:"], ["\r", "login:"]]));
    assert_eq!(v["failed"], serde_json::Value::Null, "{v}");
    // systemd's container-getty@1 on /dev/tty1 (pts/1).
    let mut c = env.davit();
    c.args(["console", "d1", "--tty", "1"]);
    let v = console_session(c, serde_json::json!([["\r", "login:"]]), 60);
    assert_eq!(
        v["failed"],
        serde_json::Value::Null,
        "no getty on tty1: {v}"
    );
    let log = stdout(&ok(env.davit().args(["console", "d1", "--log"])));
    assert!(
        log.contains("Welcome to") && log.contains("login:"),
        "{log}"
    );
    ok(env.davit().args(["stop", "-t", "30", "d1"]));
}
