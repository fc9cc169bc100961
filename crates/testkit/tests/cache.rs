//! `scripts/lib/cache.sh` (`cache_build`), the lock-and-rename that every
//! shared shell fixture is built with (the Debian tarball, the VM lane's
//! kernel and qemu), driven for real: several bash processes ask for one
//! artefact at once from an empty cache, a build is SIGKILLed half way, a
//! builder fails, a builder leaves a daemon behind.
//!
//! The bug this guards against: two systemd tests ran `images/debian/build.sh
//! --cache` at once on an empty cache; both built, both wrote the same
//! temporary name, and the second `mv` failed.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn cache_sh() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/lib/cache.sh")
}

/// `cache_build FINAL builder`, with `builder` defined as `body`, in a new
/// bash process of its own process group. `$1` in the body is `arg`.
fn spawn(final_: &Path, body: &str, arg: &str) -> Child {
    let script = format!(
        "set -euo pipefail; . '{}'; builder() {{ {body}\n}}; cache_build \"$0\" builder",
        cache_sh().display()
    );
    Command::new("bash")
        .arg("-c")
        .arg(script)
        .arg(final_)
        .env("ARG", arg)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("bash")
}

fn finish(c: Child) -> (bool, String) {
    let o = c.wait_with_output().unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Names in `dir` other than `keep`, lock files aside.
fn leftovers(dir: &Path, keep: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != keep && !n.ends_with(".lock") && n != "count")
        .collect();
    v.sort();
    v
}

#[test]
fn concurrent_callers_on_an_empty_cache_build_once_and_all_get_it() {
    let d = tempfile::tempdir().unwrap();
    let cache = d.path().join("cache"); // does not exist yet
    let final_ = cache.join("debian-bookworm-amd64-abc.tar");
    let count = d.path().join("count");
    let body = format!(
        "echo built >>'{}'; printf part >\"$CACHE_TMP\"; sleep 0.5; printf ' done' >>\"$CACHE_TMP\"",
        count.display()
    );
    let kids: Vec<Child> = (0..6).map(|_| spawn(&final_, &body, "")).collect();
    for k in kids {
        let (ok, err) = finish(k);
        assert!(ok, "a caller failed: {err}");
    }
    assert_eq!(std::fs::read_to_string(&count).unwrap(), "built\n");
    assert_eq!(std::fs::read_to_string(&final_).unwrap(), "part done");
    assert_eq!(
        leftovers(&cache, "debian-bookworm-amd64-abc.tar"),
        Vec::<String>::new()
    );
}

#[test]
fn a_build_killed_half_way_leaves_nothing_a_later_run_takes_for_finished() {
    let d = tempfile::tempdir().unwrap();
    let final_ = d.path().join("kernel");
    // A directory artefact, as the VM lane's kernel is: half of it is
    // there when the build dies.
    let c = spawn(
        &final_,
        "mkdir \"$CACHE_TMP\"; printf half >\"$CACHE_TMP/vmlinuz\"; sleep 60",
        "",
    );
    let pgid = nix::unistd::Pid::from_raw(c.id() as i32);
    let end = Instant::now() + Duration::from_secs(20);
    while leftovers(d.path(), "kernel").is_empty() {
        assert!(Instant::now() < end, "the builder never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(100));
    nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL).unwrap();
    let (ok, _) = finish(c);
    assert!(!ok);
    assert!(
        !final_.exists(),
        "a killed build left a finished-looking kernel"
    );
    let stale = leftovers(d.path(), "kernel");
    assert!(
        stale.iter().all(|n| n.starts_with(".kernel.tmp.")),
        "{stale:?}"
    );

    // The next run builds it afresh and sweeps the dead build's temp.
    let (ok, err) = finish(spawn(
        &final_,
        "mkdir \"$CACHE_TMP\"; printf whole >\"$CACHE_TMP/vmlinuz\"",
        "",
    ));
    assert!(ok, "{err}");
    assert_eq!(
        std::fs::read_to_string(final_.join("vmlinuz")).unwrap(),
        "whole"
    );
    assert_eq!(leftovers(d.path(), "kernel"), Vec::<String>::new());
}

#[test]
fn a_failing_builder_stops_at_its_first_error_and_leaves_nothing() {
    let d = tempfile::tempdir().unwrap();
    let final_ = d.path().join("t.tar");
    // errexit must hold inside the builder function: `false` stops it.
    let (ok, _) = finish(spawn(
        &final_,
        "printf part >\"$CACHE_TMP\"; false; printf more >>\"$CACHE_TMP\"; touch \"$ARG\"",
        d.path().join("reached").to_str().unwrap(),
    ));
    assert!(!ok, "a failed build reported success");
    assert!(
        !d.path().join("reached").exists(),
        "the builder ran on past `false`"
    );
    assert!(!final_.exists());
    assert_eq!(leftovers(d.path(), "t.tar"), Vec::<String>::new());

    // Exit 0 without making anything is a failure too.
    let (ok, err) = finish(spawn(&final_, "true", ""));
    assert!(!ok);
    assert!(err.contains("made nothing"), "{err}");
    assert!(!final_.exists());
}

#[test]
fn a_daemon_left_by_the_builder_does_not_hold_the_lock() {
    let d = tempfile::tempdir().unwrap();
    let final_ = d.path().join("t.tar");
    let pidfile = d.path().join("daemon.pid");
    let (ok, err) = finish(spawn(
        &final_,
        "sleep 30 >/dev/null 2>&1 & echo $! >\"$ARG\"; printf x >\"$CACHE_TMP\"",
        pidfile.to_str().unwrap(),
    ));
    assert!(ok, "{err}");
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // The daemon lives on; the lock is free.
    let free = Command::new("flock")
        .args(["-n"])
        .arg(d.path().join(".t.tar.lock"))
        .arg("true")
        .status()
        .unwrap()
        .success();
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
    assert!(free, "the builder's background process kept the lock");
}

#[test]
fn scratch_beside_the_temp_goes_with_it_on_success_and_on_failure() {
    let d = tempfile::tempdir().unwrap();
    let final_ = d.path().join("kernel");
    // As ci/vm/fetch.sh's builders do: download into "$CACHE_TMP.dl", a
    // function local under `set -u`, then unpack into CACHE_TMP.
    let body = "local dl=$CACHE_TMP.dl; mkdir -p \"$dl\"; echo deb >\"$dl/k.deb\"; \
                mkdir \"$CACHE_TMP\"; cp \"$dl/k.deb\" \"$CACHE_TMP/vmlinuz\"; [ \"$ARG\" = ok ]";
    let (ok, _) = finish(spawn(&final_, body, "fail"));
    assert!(!ok);
    assert_eq!(leftovers(d.path(), "kernel"), Vec::<String>::new());
    let (ok, err) = finish(spawn(&final_, body, "ok"));
    assert!(ok, "{err}");
    assert!(final_.join("vmlinuz").is_file());
    assert_eq!(leftovers(d.path(), "kernel"), Vec::<String>::new());
}
