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
