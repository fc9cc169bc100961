//! [`davit_testkit::ensure_user`] from several processes at once, as test
//! binaries (or two test runs) on a brand-new machine do: the user is
//! created once, every process gets the same user and ranges, and each
//! subordinate file gains exactly one line for it. Without the machine-wide
//! lock the losers' `useradd` failed ("already exists") and the ranges
//! were appended more than once.
use std::process::{Command, Stdio};

use davit_testkit::{ensure_user, remove_user, require_root, Subids, UserSpec};

const CHILD: &str = "DAVIT_TESTKIT_USER_CHILD";

fn spec(name: &str) -> UserSpec<'_> {
    UserSpec {
        name,
        create_home: false,
        system: true,
        shell: "/usr/sbin/nologin",
        subids: Subids::KeepOrAfterAll,
    }
}

#[test]
fn processes_that_ask_at_once_create_one_user_with_one_range() {
    if let Ok(name) = std::env::var(CHILD) {
        // One of the racing processes.
        let u = ensure_user(&spec(&name));
        println!("USER {} {} {} {}", u.uid, u.gid, u.subuid, u.subgid);
        return;
    }
    if !require_root("processes_that_ask_at_once_create_one_user_with_one_range") {
        return;
    }
    let name = format!("davit-tk{}", std::process::id() % 100_000);
    struct Cleanup<'a>(&'a str);
    impl Drop for Cleanup<'_> {
        fn drop(&mut self) {
            remove_user(self.0);
        }
    }
    let _c = Cleanup(&name);
    let exe = std::env::current_exe().unwrap();
    let kids: Vec<_> = (0..5)
        .map(|_| {
            Command::new(&exe)
                .args([
                    "--exact",
                    "processes_that_ask_at_once_create_one_user_with_one_range",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CHILD, &name)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut seen = Vec::new();
    for k in kids {
        let o = k.wait_with_output().unwrap();
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(
            o.status.success(),
            "a racing process failed:\n{out}\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
        // libtest prints "test NAME ... " before the child's own line.
        let line = out
            .lines()
            .find_map(|l| l.split_once("USER ").map(|(_, u)| u.to_owned()))
            .unwrap_or_else(|| panic!("no USER line in {out}"));
        seen.push(line);
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 1, "the processes saw different users: {seen:?}");
    for f in ["/etc/subuid", "/etc/subgid"] {
        let n = std::fs::read_to_string(f)
            .unwrap()
            .lines()
            .filter(|l| l.split(':').next() == Some(name.as_str()))
            .count();
        assert_eq!(n, 1, "{f} has {n} lines for {name}");
    }
    assert!(nix::unistd::User::from_name(&name).unwrap().is_some());
}
