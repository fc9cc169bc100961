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
        let mut c = Command::new("unshare");
        c.args(["-m", "--propagation", "private", "--", "sh", "-c"])
            .arg(format!(
                "mount --bind {} /etc/davit && exec \"$@\"",
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
    let _tree = TreeGuard(u.name.clone());
    let us = UserSetup::new("ucg");
    let out = us.create("g1", &["--storage", "dir"]);
    assert!(out.status.success(), "{}", out_text(&out));
    let grant = Grant::new("grant", &format!("# test grant\n{}\n", u.name));
    let d = |args: &[&str]| grant.wrap(&us.davit(args));

    let o = run(&mut d(&[
        "start", "-d", "g1", "--memory", "64M", "--pids", "64",
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
    let o = run(&mut d(&[
        "attach",
        "g1",
        "--",
        "sh",
        "-c",
        "mkdir /sys/fs/cgroup/systemd/inner && echo $$ > /sys/fs/cgroup/systemd/inner/cgroup.procs && cat /proc/self/cgroup && echo MOVED; mkdir /sys/fs/cgroup/memory/x 2>&1; echo END",
    ]));
    let t = stdout(&o);
    assert!(t.contains("MOVED"), "{}", out_text(&o));
    assert!(t.contains("name=systemd:/inner"), "{t}");
    assert!(t.contains("Read-only file system"), "{t}");
    // An allocation of 200 MiB inside is OOM-killed; the container lives.
    let o = run(&mut d(&[
        "attach",
        "g1",
        "--",
        "sh",
        "-c",
        "dd if=/dev/zero of=/dev/null bs=200M count=1; echo rc=$?",
    ]));
    let t = stdout(&o);
    assert!(
        !t.contains("rc=0"),
        "a 200M buffer under 64M: {}",
        out_text(&o)
    );
    assert!(t.contains("rc=137"), "killed: {}", out_text(&o));
    let oom = std::fs::read_to_string(mem.join("memory.oom_control")).unwrap();
    let kills: u64 = oom
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(kills > 0, "the kill was this cgroup's OOM killer: {oom}");
    let v = json(&ok(&mut d(&["info", "g1", "--json"])));
    assert_eq!(
        v["state"], "RUNNING",
        "the container outlives the OOM kill: {v}"
    );
    // A fork bomb is held at 64 tasks: the bombing subshell dies of a
    // failed fork, the rest reads the count with builtins and kills the
    // sleepers (all but init and itself).
    let o = run(&mut d(&[
        "attach",
        "g1",
        "--",
        "sh",
        "-c",
        "(while :; do sleep 30 & done) 2>/dev/null; read n < /sys/fs/cgroup/pids/pids.current; echo current=$n; kill -9 -1; echo END",
    ]));
    let t = stdout(&o);
    assert!(t.contains("END"), "{}", out_text(&o));
    let current: u64 = t
        .lines()
        .find_map(|l| l.strip_prefix("current="))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!((48..=64).contains(&current), "held at 64: {t}");
    let events = std::fs::read_to_string(pids.join("pids.events")).unwrap();
    let refused: u64 = events
        .lines()
        .find_map(|l| l.strip_prefix("max "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(refused > 0, "forks refused at the limit: {events}");
    assert_eq!(
        json(&ok(&mut d(&["info", "g1", "--json"])))["state"],
        "RUNNING"
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
}
