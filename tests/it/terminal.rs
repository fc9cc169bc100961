//! Terminals (issue 13, rows 1 and 2): no container process ever holds a
//! descriptor of the host's terminal. Each test runs davit on a real
//! pseudo-terminal that is its controlling terminal, as a login shell
//! would (`terminal/driver.py`), with `dev.tty.legacy_tiocsti` on, and runs
//! `terminal/attack.c` inside: TIOCSTI into every descriptor and
//! `/dev/tty` and `/dev/console`, a flood that stalls the relay, and a
//! process left behind that takes the foreground and reads what the admin
//! types next. From the host the test then checks that nothing was pushed
//! into the terminal, that what the admin typed arrived, and that no
//! process holds the terminal. Before the fix every case failed: the
//! container's fds 0-2 were the admin's terminal.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;
use crate::run::Env;

/// `terminal/attack.c`, static, built into `dir`.
fn attack_bin(dir: &Path) -> PathBuf {
    let bin = dir.join("attack");
    let cc = Command::new("gcc")
        .args(["-static", "-O", "-o"])
        .arg(&bin)
        .arg(repo().join("tests/it/terminal/attack.c"))
        .output()
        .expect("gcc (build-essential)");
    assert!(cc.status.success(), "{}", stderr(&cc));
    bin
}

/// `dev.tty.legacy_tiocsti` on for the test where the kernel has the
/// switch (6.2+), back as it was afterwards.
struct LegacyTiocsti(Option<String>);

impl LegacyTiocsti {
    const PATH: &'static str = "/proc/sys/dev/tty/legacy_tiocsti";

    fn on() -> LegacyTiocsti {
        match std::fs::read_to_string(Self::PATH) {
            Ok(v) if v.trim() == "0" => {
                std::fs::write(Self::PATH, "1").unwrap();
                LegacyTiocsti(Some(v))
            }
            _ => LegacyTiocsti(None),
        }
    }
}

impl Drop for LegacyTiocsti {
    fn drop(&mut self) {
        if let Some(v) = &self.0 {
            let _ = std::fs::write(Self::PATH, v.trim());
        }
    }
}

/// What `driver.py MODE` saw, with the attack's own report (on the
/// terminal, or in the output file for mode `stdin`).
struct Seen {
    v: serde_json::Value,
    report: String,
    /// Whole lines of the flood that came through.
    flood: usize,
}

fn drive(env: &Env, mode: &str, args: &[&str]) -> Seen {
    let out_file = env.path().join(format!("out-{mode}"));
    let mut c = Command::new("python3");
    c.arg(repo().join("tests/it/terminal/driver.py"))
        .arg(mode)
        .arg(&out_file)
        .arg("--")
        .arg(davit_bin())
        .args(args);
    for (k, v) in env.davit().get_envs() {
        if let Some(v) = v {
            c.env(k, v);
        }
    }
    let out = ok(&mut c);
    let v: serde_json::Value = serde_json::from_str(stdout(&out).trim())
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", stdout(&out), stderr(&out)));
    let report = if mode == "stdin" {
        read_to_string(&out_file)
    } else {
        v["screen"].as_str().unwrap().replace('\r', "")
    };
    // Without the flood's lines, which only fill the relay; counted.
    let flood = report
        .lines()
        .filter(|l| l.len() == 1023 && l.bytes().all(|b| b == b'x'))
        .count();
    let report = report
        .lines()
        .filter(|l| l.is_empty() || l.bytes().any(|b| b != b'x'))
        .collect::<Vec<_>>()
        .join("\n");
    Seen { v, report, flood }
}

impl Seen {
    fn line(&self, what: &str) -> &str {
        self.report
            .lines()
            .find(|l| l.starts_with(&format!("{what} ")))
            .unwrap_or_else(|| panic!("no {what:?} line in {}", self.report))
    }

    /// The value of `key=` on a descriptor line, if it has one.
    fn field(&self, what: &str, key: &str) -> Option<&str> {
        self.line(what)
            .split(' ')
            .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
    }

    /// The terminal behind `what` is the one on fd 0, and it is the
    /// controlling terminal of the attack's own session.
    fn assert_same_terminal_as_fd0(&self, what: &str) {
        assert_eq!(
            self.field(what, "real"),
            self.field("fd0", "rdev"),
            "{}",
            self.report
        );
        assert_eq!(
            self.field(what, "tsid"),
            Some(self.sid()),
            "{}",
            self.report
        );
    }

    fn sid(&self) -> &str {
        let l = self.report.lines().find(|l| l.starts_with("sid=")).unwrap();
        &l[4..l.find(' ').unwrap()]
    }

    /// Nothing of the host's terminal reached the container.
    fn assert_contained(&self) {
        let host = self.v["host_tty"].as_str().unwrap();
        assert!(self.report.contains("attack done"), "{}", self.report);
        for what in ["fd0", "fd1", "fd2", "tty", "console"] {
            assert!(
                !self.line(what).contains(host),
                "the container's {what} is the host's terminal ({host}): {}",
                self.report
            );
        }
        assert_eq!(
            self.v["injected"], "",
            "input was pushed into the host's terminal: {}",
            self.v
        );
        assert!(
            self.v["typed"].as_str().unwrap().contains("typed-by-admin"),
            "what the admin typed did not arrive: {}",
            self.v
        );
        assert_eq!(
            self.v["holders"],
            serde_json::json!([]),
            "processes hold the host's terminal: {}",
            self.v
        );
        // A session of its own.
        let sid = self.report.lines().find(|l| l.starts_with("sid=")).unwrap();
        let (s, p) = sid.split_once(' ').unwrap();
        assert_eq!(&s[4..], &p[4..], "{sid}");
    }
}

fn container_with_attack(env: &Env, name: &str) {
    let out = env.create(name, &["--storage", "dir"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let bin = attack_bin(env.path());
    std::fs::copy(
        bin,
        env.path()
            .join(format!("containers/{name}/rootfs/bin/attack")),
    )
    .unwrap();
}

#[test]
fn attach_gives_the_container_its_own_pty_or_pipes_never_the_admins_terminal() {
    if !require_root("attach_gives_the_container_its_own_pty_or_pipes_never_the_admins_terminal") {
        return;
    }
    let _sti = LegacyTiocsti::on();
    let env = Env::new("ttyat");
    container_with_attack(&env, "ta");
    ok(env.davit().args(["start", "-d", "ta"]));

    // On a terminal: a pty from the container's devpts, its controlling
    // terminal (so /dev/tty opens it), relayed.
    let seen = drive(
        &env,
        "pty",
        &["attach", "ta", "--", "/bin/attack", "linger"],
    );
    assert_eq!(seen.v["code"], 0, "{}", seen.v);
    seen.assert_contained();
    assert!(seen.line("fd0").ends_with("tty=1"), "{}", seen.report);
    seen.assert_same_terminal_as_fd0("tty");
    // The process left behind read nothing the admin typed.
    let stolen = env.path().join("containers/ta/rootfs/stolen");
    let got = std::fs::read_to_string(&stolen).unwrap_or_default();
    assert!(!got.contains("typed-by-admin"), "stolen: {got:?}");

    // Off a terminal (standard input only is one): pipes, a new session,
    // no controlling terminal.
    let seen = drive(
        &env,
        "stdin",
        &["attach", "ta", "--", "/bin/attack", "linger"],
    );
    assert_eq!(seen.v["code"], 0, "{}", seen.v);
    seen.assert_contained();
    assert!(seen.line("fd0").ends_with("tty=0"), "{}", seen.report);
    assert!(seen.line("tty").starts_with("tty none"), "{}", seen.report);
    let got = std::fs::read_to_string(&stolen).unwrap_or_default();
    assert!(!got.contains("typed-by-admin"), "stolen: {got:?}");

    ok(env.davit().args(["stop", "-k", "ta"]));
}

#[test]
fn foreground_start_gives_init_its_own_console_never_the_admins_terminal() {
    if !require_root("foreground_start_gives_init_its_own_console_never_the_admins_terminal") {
        return;
    }
    let _sti = LegacyTiocsti::on();
    let env = Env::new("ttyst");
    container_with_attack(&env, "ts");

    // On a terminal, with the relay stalled by a flood while the command
    // pushes input: /dev/console and /dev/tty are the container's own pty.
    let seen = drive(
        &env,
        "stall",
        &["start", "ts", "--", "/bin/attack", "flood"],
    );
    assert_eq!(seen.v["code"], 0, "{}", seen.v);
    seen.assert_contained();
    assert_eq!(seen.flood, 2048, "the relay lost output");
    assert!(seen.line("fd0").ends_with("tty=1"), "{}", seen.report);
    seen.assert_same_terminal_as_fd0("console");
    seen.assert_same_terminal_as_fd0("tty");
    assert_eq!(seen.field("console", "dev"), seen.field("fd0", "dev"));

    // Standard input a terminal, output redirected: pipes, no terminal.
    let seen = drive(&env, "stdin", &["start", "ts", "--", "/bin/attack"]);
    assert_eq!(seen.v["code"], 0, "{}", seen.v);
    seen.assert_contained();
    assert!(seen.line("fd0").ends_with("tty=0"), "{}", seen.report);
    assert!(seen.line("tty").starts_with("tty none"), "{}", seen.report);
    assert!(env.cgroups().is_empty(), "{:?}", env.cgroups());
}
