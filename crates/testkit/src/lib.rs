//! Fixtures that davit's test suites share across test binaries and across
//! runs, and so must be safe when several of them ask at once from an empty
//! cache (docs/TESTING.md):
//!
//! - [`test_cache`]: the root of every cache the tests keep between runs
//!   (`DAVIT_TEST_CACHE`, default `/var/cache/davit-test`). Point it at an
//!   empty directory to run the whole suite as a brand-new machine would.
//! - [`lock`]: an exclusive `flock` that holds across processes.
//! - [`ensure_user`]: a plain test user with `/etc/subuid` and
//!   `/etc/subgid` ranges, created once under a machine-wide lock.
//! - [`standin::StandIn`]: a network namespace standing in for the host,
//!   wired to one playing the internet, for tests that must change nothing
//!   in the real host's namespace.
//!
//! Shell fixtures (the Debian tarball, the VM lane's kernel and qemu) use
//! `scripts/lib/cache.sh`, whose tests are in `tests/cache.rs`.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::fcntl::{Flock, FlockArg};

pub mod standin;

/// Root-only tests: under `CI=true` a missing privilege fails the test;
/// elsewhere the test says so loudly and returns `false`.
pub fn require_root(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test} needs root, and CI runs as root: this is a failure, not a skip");
    }
    eprintln!("!!! SKIPPING {test}: it needs root (run the suite as root, as CI does)");
    false
}

/// The default of [`test_cache`].
pub const DEFAULT_TEST_CACHE: &str = "/var/cache/davit-test";

/// The lock that serialises changes to `/etc/passwd`, `/etc/subuid` and
/// `/etc/subgid` by the tests, whichever test binary or run makes them.
/// Not under [`test_cache`]: two runs with different caches still share
/// one `/etc/passwd`.
pub const USERS_LOCK: &str = "/run/davit-test-users.lock";

/// The root of the tests' persistent caches: `$DAVIT_TEST_CACHE`, or
/// [`DEFAULT_TEST_CACHE`].
pub fn test_cache() -> PathBuf {
    match std::env::var_os("DAVIT_TEST_CACHE") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from(DEFAULT_TEST_CACHE),
    }
}

/// Where `images/debian/build.sh --cache` keeps the Debian tarball:
/// `$DAVIT_DEBIAN_CACHE`, or `debian/` under [`test_cache`].
pub fn debian_cache() -> PathBuf {
    match std::env::var_os("DAVIT_DEBIAN_CACHE") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => test_cache().join("debian"),
    }
}

/// An exclusive `flock` on a file, held until dropped (or the process dies).
pub struct Lock {
    _held: Flock<File>,
}

/// Takes an exclusive `flock` on `path` (created 0600 if missing, with its
/// parent directory), waiting for any other holder, thread or process.
pub fn lock(path: &Path) -> Lock {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).unwrap_or_else(|e| panic!("mkdir {}: {e}", d.display()));
    }
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(path)
        .unwrap_or_else(|e| panic!("open the lock {}: {e}", path.display()));
    let held = Flock::lock(f, FlockArg::LockExclusive)
        .unwrap_or_else(|(_, e)| panic!("flock {}: {e}", path.display()));
    Lock { _held: held }
}

/// Which subordinate ranges a test user gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subids {
    /// Keep the user's first range of at least 65536 ids (useradd may have
    /// made one); add `NAME:START:65536` when it has none.
    KeepOr(u32),
    /// Keep the user's first range of at least 65536 ids; add one of 65536
    /// after every range in the file (from 2,000,000 up) when it has none.
    KeepOrAfterAll,
}

/// How to create a test user that does not exist yet.
#[derive(Debug, Clone)]
pub struct UserSpec<'a> {
    pub name: &'a str,
    /// `useradd --create-home` (else `--no-create-home`).
    pub create_home: bool,
    /// `useradd --system` (no automatic subordinate ranges).
    pub system: bool,
    pub shell: &'a str,
    pub subids: Subids,
}

/// A plain user on this host and its subordinate ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
    /// The first host id of its `/etc/subuid` range.
    pub subuid: u32,
    /// The first host id of its `/etc/subgid` range.
    pub subgid: u32,
}

/// Creates the user if it does not exist and gives it subordinate ranges
/// in `/etc/subuid` and `/etc/subgid` (existing lines are never rewritten),
/// all under [`USERS_LOCK`], so test binaries and runs that ask at once
/// create it once and append each range once. Needs root.
pub fn ensure_user(spec: &UserSpec) -> TestUser {
    let _l = lock(Path::new(USERS_LOCK));
    if nix::unistd::User::from_name(spec.name)
        .expect("read the user database")
        .is_none()
    {
        let mut c = Command::new("useradd");
        c.arg(if spec.create_home {
            "--create-home"
        } else {
            "--no-create-home"
        });
        if spec.system {
            c.arg("--system");
        } else {
            c.arg("--user-group");
        }
        c.args(["--shell", spec.shell]).arg(spec.name);
        let out = c.output().expect("run useradd");
        assert!(
            out.status.success(),
            "{c:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let u = nix::unistd::User::from_name(spec.name)
        .expect("read the user database")
        .unwrap_or_else(|| panic!("{} missing after useradd", spec.name));
    TestUser {
        name: spec.name.to_owned(),
        uid: u.uid.as_raw(),
        gid: u.gid.as_raw(),
        home: u.dir,
        subuid: ensure_subid(Path::new("/etc/subuid"), spec.name, spec.subids),
        subgid: ensure_subid(Path::new("/etc/subgid"), spec.name, spec.subids),
    }
}

/// Removes a user made by [`ensure_user`] and its subordinate lines, under
/// [`USERS_LOCK`]. For tests of this crate that make throwaway users.
pub fn remove_user(name: &str) {
    let _l = lock(Path::new(USERS_LOCK));
    let _ = Command::new("userdel").arg(name).output();
    for f in ["/etc/subuid", "/etc/subgid"] {
        let Ok(text) = std::fs::read_to_string(f) else {
            continue;
        };
        let kept: String = text
            .lines()
            .filter(|l| l.split(':').next() != Some(name))
            .map(|l| format!("{l}\n"))
            .collect();
        if kept != text {
            let tmp = format!("{f}.davit-test");
            std::fs::write(&tmp, kept).unwrap();
            std::fs::rename(&tmp, f).unwrap();
        }
    }
}

/// `name`'s first range of at least 65536 ids in the text of a subid file.
pub fn find_range(text: &str, name: &str) -> Option<u32> {
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.trim().split(':').collect();
        match f[..] {
            [n, start, count] if n == name && count.parse::<u64>().ok()? >= 65536 => {
                start.parse().ok()
            }
            _ => None,
        }
    })
}

/// The first multiple of 65536, at or above 2,000,000, past every range in
/// the text of a subid file.
pub fn after_all(text: &str) -> u32 {
    let mut top: u64 = 2_000_000;
    for l in text.lines() {
        let f: Vec<&str> = l.trim().split(':').collect();
        if let [_, s, n] = f[..] {
            if let (Ok(s), Ok(n)) = (s.parse::<u64>(), n.parse::<u64>()) {
                top = top.max(s + n);
            }
        }
    }
    u32::try_from(top.div_ceil(65536) * 65536).expect("subordinate ids past u32")
}

/// Finds `name`'s range in a subid file, or appends one (the caller holds
/// [`USERS_LOCK`]).
fn ensure_subid(path: &Path, name: &str, how: Subids) -> u32 {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    if let Some(s) = find_range(&text, name) {
        return s;
    }
    let start = match how {
        Subids::KeepOr(s) => s,
        Subids::KeepOrAfterAll => after_all(&text),
    };
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let sep = if !text.is_empty() && !text.ends_with('\n') {
        "\n"
    } else {
        ""
    };
    writeln!(f, "{sep}{name}:{start}:65536")
        .unwrap_or_else(|e| panic!("append to {}: {e}", path.display()));
    start
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_range_takes_the_first_big_enough_range_of_that_name() {
        let t = "alice:100000:65536\nbob:165536:1000\nbob:300000:65536\nbobby:1:65536\n";
        assert_eq!(find_range(t, "bob"), Some(300000));
        assert_eq!(find_range(t, "alice"), Some(100000));
        assert_eq!(find_range(t, "bo"), None);
        assert_eq!(find_range("bob:x:65536\n# c\n\n", "bob"), None);
    }

    #[test]
    fn after_all_clears_every_range_and_rounds_up() {
        assert_eq!(after_all(""), 2_031_616); // 2,000,000 rounded up to 31 * 65536
        assert_eq!(after_all("a:3000000:65536\n"), 3_080_192);
        assert_eq!(after_all("junk\na:1:2\n"), 2_031_616);
    }

    #[test]
    fn ensure_subid_appends_once_and_keeps_a_missing_newline_apart() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("subuid");
        std::fs::write(&p, "root:100000:65536").unwrap();
        assert_eq!(ensure_subid(&p, "t", Subids::KeepOr(700000)), 700000);
        assert_eq!(ensure_subid(&p, "t", Subids::KeepOr(900000)), 700000);
        assert_eq!(ensure_subid(&p, "u", Subids::KeepOrAfterAll), 2_031_616);
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "root:100000:65536\nt:700000:65536\nu:2031616:65536\n"
        );
    }
}
