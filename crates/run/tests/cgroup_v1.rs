//! Real cgroup tests on this host's hierarchy (v1 or hybrid here): create
//! under a `davit-test-*` prefix, move a process in, check enforcement,
//! and always clean up through a Drop guard.
mod common;
use common::have_root;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use davit_run::cgroup::{Cgroup, Layout, Version};
use davit_run::config::Limits;

/// Removes the cgroup (killing what is inside) even when the test fails.
struct Guard {
    cg: Cgroup,
    children: Vec<Child>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = self.cg.destroy(Duration::from_secs(5));
    }
}

fn prefix(tag: &str) -> PathBuf {
    PathBuf::from(format!("davit-test-{}-{tag}", std::process::id()))
}

/// A `sh` that waits for a line on stdin before running `script`, so it can
/// be moved into the cgroup before it forks.
fn held_sh(script: &str) -> Child {
    Command::new("/bin/busybox")
        .args(["sh", "-c", &format!("read go; {script}")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn release(c: &mut Child) {
    c.stdin.take().unwrap().write_all(b"go\n").unwrap();
}

#[test]
fn real_pids_limit_is_enforced() {
    if !have_root() {
        return;
    }
    let layout = Layout::detect().unwrap();
    let rel = prefix("pids").join("c");
    let limits = Limits {
        pids: Some(5),
        ..Limits::default()
    };
    let cg = Cgroup::create(&layout, &rel, Path::new(""), &limits).unwrap();
    let mut g = Guard {
        cg,
        children: vec![],
    };
    let pids_dir =
        g.cg.dirs()
            .iter()
            .find(|d| d.hierarchy.has("pids"))
            .unwrap()
            .path
            .clone();
    assert_eq!(
        std::fs::read_to_string(pids_dir.join("pids.max"))
            .unwrap()
            .trim(),
        "5"
    );
    let mut c = held_sh("for i in 1 2 3 4 5 6 7 8 9 10; do sleep 5 & done; echo spawned; wait");
    g.cg.add_pid(c.id() as i32).unwrap();
    assert_eq!(g.cg.procs(), vec![c.id() as i32]);
    release(&mut c);
    g.children.push(c);
    std::thread::sleep(Duration::from_millis(500));
    let cur: u64 = std::fs::read_to_string(pids_dir.join("pids.current"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(cur <= 5, "pids.current = {cur}");
    if pids_dir.join("pids.events").exists() {
        let ev = std::fs::read_to_string(pids_dir.join("pids.events")).unwrap();
        let n: u64 = ev.split_whitespace().nth(1).unwrap().parse().unwrap();
        assert!(n >= 1, "pids.events: {ev}");
    }
    // kill (freezer + SIGKILL + thaw on v1), wait empty, remove.
    g.cg.kill().unwrap();
    g.cg.wait_empty(Duration::from_secs(5)).unwrap();
    g.cg.remove().unwrap();
    for d in g.cg.dirs() {
        assert!(!d.path.exists(), "{} left behind", d.path.display());
        assert!(!d.path.parent().unwrap().exists(), "prefix dir left behind");
    }
}

#[test]
fn real_memory_limit_is_enforced_and_stats_read() {
    if !have_root() {
        return;
    }
    let layout = Layout::detect().unwrap();
    let rel = prefix("mem").join("c");
    let limits = Limits {
        memory: Some(16 << 20),
        cpus: Some(0.5),
        ..Limits::default()
    };
    let cg = Cgroup::create(&layout, &rel, Path::new(""), &limits).unwrap();
    let g = Guard {
        cg,
        children: vec![],
    };
    let mem =
        g.cg.dirs()
            .iter()
            .find(|d| d.hierarchy.has("memory"))
            .unwrap()
            .clone();
    if mem.hierarchy.version == Version::V1 {
        assert_eq!(
            std::fs::read_to_string(mem.path.join("memory.limit_in_bytes"))
                .unwrap()
                .trim(),
            "16777216"
        );
        let cpu = g.cg.dirs().iter().find(|d| d.hierarchy.has("cpu")).unwrap();
        assert_eq!(
            std::fs::read_to_string(cpu.path.join("cpu.cfs_quota_us"))
                .unwrap()
                .trim(),
            "50000"
        );
    }
    let mut c = held_sh("x=$(head -c 100000000 /dev/zero | tr '\\0' a); echo survived");
    g.cg.add_pid(c.id() as i32).unwrap();
    release(&mut c);
    let out = c.wait_with_output().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), Some(9), "not OOM-killed: {:?}", out);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("survived"));
    let st = g.cg.stats();
    assert!(st.cpu_ns.unwrap_or(0) > 0, "{st:?}");
    assert!(st.memory.is_some(), "{st:?}");
    g.cg.destroy(Duration::from_secs(5)).unwrap();
    for d in g.cg.dirs() {
        assert!(!d.path.exists());
    }
}
