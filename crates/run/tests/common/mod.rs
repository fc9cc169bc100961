//! Helpers shared by the runner's integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// The host id container root maps to in these tests.
pub const HOST_BASE: u32 = 100_000;

/// Root-only tests: under `CI=true` a missing privilege fails the test;
/// elsewhere it says so loudly and the test returns.
pub fn have_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("this test needs root and CI=true: failing instead of skipping");
    }
    eprintln!("!!! SKIPPED: this test needs root (run as root, or CI=true to make it fail)");
    false
}

/// The example driver that hosts the monitor (`cargo build --examples`).
pub fn driver() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let p = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples/driver");
    assert!(
        p.exists(),
        "build the example driver first: {}",
        p.display()
    );
    p
}

/// Bytes as text.
pub fn text(o: &[u8]) -> String {
    String::from_utf8_lossy(o).into_owned()
}
