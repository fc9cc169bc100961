//! Ending a container's cgroup: finding its tasks, freezing and killing
//! them, and removing its directories, retrying while the kernel tears
//! tasks down.
#![forbid(unsafe_code)]

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::files::{cg_err, keyed, write_file};
use super::layout::Version;
use super::rmdir::{descendants, remove_tree};
use super::Cgroup;
use crate::error::{Error, Result};

impl Cgroup {
    /// Every pid in the cgroup, across hierarchies.
    /// An init such as systemd makes sub-cgroups of its own (`init.scope`,
    /// `system.slice/…`) in the hierarchies it may write: they count too.
    pub fn procs(&self) -> Vec<i32> {
        let mut set = BTreeSet::new();
        for d in &self.dirs {
            for dir in std::iter::once(d.path.clone()).chain(descendants(&d.path)) {
                if let Ok(s) = fs::read_to_string(dir.join("cgroup.procs")) {
                    set.extend(s.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
                }
            }
        }
        set.into_iter().collect()
    }

    /// Whether no task is left (v2 `cgroup.events` `populated 0`, or empty
    /// `cgroup.procs` everywhere).
    pub fn is_empty(&self) -> bool {
        for d in &self.dirs {
            if d.hierarchy.version == Version::V2 {
                if let Ok(ev) = fs::read_to_string(d.path.join("cgroup.events")) {
                    if keyed(&ev, &["populated"]).unwrap_or(0) != 0 {
                        return false;
                    }
                    continue;
                }
            }
            for dir in std::iter::once(d.path.clone()).chain(descendants(&d.path)) {
                if let Ok(s) = fs::read_to_string(dir.join("cgroup.procs")) {
                    if s.lines().any(|l| !l.trim().is_empty()) {
                        return false;
                    }
                }
            }
        }
        true
    }

    /// Kill every task: v2 `cgroup.kill` where present; otherwise freeze
    /// (v1 freezer or v2 `cgroup.freeze`), SIGKILL each task, thaw (frozen
    /// tasks do not die until thawed).
    ///
    /// # Errors
    /// [`Error::Cgroup`] when the kill or freezer file cannot be written.
    pub fn kill(&self) -> Result<()> {
        if let Some(v2) = self.v2_dir() {
            let k = v2.join("cgroup.kill");
            if k.exists() && v2.exists() {
                write_file(&k, "1")?;
                if self.v2_only() {
                    return Ok(());
                }
            }
        }
        let freezer = self.freezer();
        if let Some((f, frozen, _)) = &freezer {
            write_file(f, frozen)?;
            let deadline = Instant::now() + Duration::from_secs(1);
            while Instant::now() < deadline {
                let done = if *frozen == "1" {
                    // v2 (kernels 5.2 to 5.13, which have no cgroup.kill):
                    // cgroup.freeze reads back what was asked at once; the
                    // tasks are frozen when cgroup.events says `frozen 1`.
                    f.parent()
                        .and_then(|d| fs::read_to_string(d.join("cgroup.events")).ok())
                        .and_then(|ev| keyed(&ev, &["frozen"]))
                        == Some(1)
                } else {
                    fs::read_to_string(f).unwrap_or_default().trim() == *frozen
                };
                if done {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        for pid in self.procs() {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        if let Some((f, _, thawed)) = &freezer {
            write_file(f, thawed)?;
        }
        Ok(())
    }

    /// The freezer file and its frozen and thawed values: the v1 `freezer`
    /// controller's `freezer.state`, else v2's `cgroup.freeze`.
    fn freezer(&self) -> Option<(PathBuf, &'static str, &'static str)> {
        self.dirs
            .iter()
            .find(|d| d.hierarchy.version == Version::V1 && d.hierarchy.has("freezer"))
            .map(|d| (d.path.join("freezer.state"), "FROZEN", "THAWED"))
            .or_else(|| {
                self.v2_dir()
                    .map(|p| p.join("cgroup.freeze"))
                    .filter(|p| p.exists())
                    .map(|p| (p, "1", "0"))
            })
            .filter(|(p, _, _)| p.exists())
    }

    /// Whether every task is frozen: v1 `freezer.state` reads `FROZEN`
    /// (not `FREEZING`), v2 `cgroup.events` says `frozen 1`. `None` without
    /// a freezer.
    pub fn frozen(&self) -> Option<bool> {
        let (f, frozen, _) = self.freezer()?;
        if frozen == "1" {
            let ev = fs::read_to_string(f.parent()?.join("cgroup.events")).ok()?;
            Some(keyed(&ev, &["frozen"]) == Some(1))
        } else {
            Some(fs::read_to_string(&f).ok()?.trim() == frozen)
        }
    }

    /// Freezes every task of the cgroup (`lxc-freeze`), or thaws them, and
    /// waits up to `timeout` until the kernel reports it done.
    ///
    /// # Errors
    /// [`Error::CgroupState`] without a freezer (v1 `freezer` or v2),
    /// [`Error::Cgroup`] if its file cannot be written, [`Error::Timeout`].
    pub fn set_frozen(&self, freeze: bool, timeout: Duration) -> Result<()> {
        let (f, frozen, thawed) = self.freezer().ok_or_else(|| Error::CgroupState {
            reason: "no freezer: neither the v1 freezer controller nor a v2 cgroup".into(),
        })?;
        write_file(&f, if freeze { frozen } else { thawed })?;
        let deadline = Instant::now() + timeout;
        while self.frozen() != Some(freeze) {
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: format!(
                        "{} to read {}",
                        f.display(),
                        if freeze { frozen } else { thawed }
                    ),
                    secs: timeout.as_secs_f64(),
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    /// Poll until the cgroup is empty.
    ///
    /// # Errors
    /// [`Error::Timeout`].
    pub fn wait_empty(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: "the cgroup to empty".to_owned(),
                    secs: timeout.as_secs_f64(),
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Kill, wait up to `timeout` for the cgroup to empty, and remove it.
    ///
    /// # Errors
    /// As [`Cgroup::kill`], [`Cgroup::wait_empty`] and [`Cgroup::remove`].
    pub fn destroy(&self, timeout: Duration) -> Result<()> {
        if !self.is_empty() {
            self.kill()?;
            self.wait_empty(timeout)?;
        }
        self.remove()
    }

    /// `rmdir` each directory, its sub-cgroups first (an init like systemd
    /// makes its own below a delegated leaf), retrying `EBUSY` for up to a
    /// second, as the kernel may still be tearing tasks down; then try to
    /// remove the now-empty parent (the `davit` prefix), ignoring "not
    /// empty".
    ///
    /// # Errors
    /// [`Error::Cgroup`] naming the directory.
    pub fn remove(&self) -> Result<()> {
        let mut left = Vec::new();
        for d in &self.dirs {
            match remove_tree(&d.path) {
                Ok(()) => {}
                // Container root's own sub-cgroups (a plain user's
                // container): not ours to rmdir, but the helper namespace's.
                Err((_, e))
                    if matches!(e, nix::errno::Errno::EACCES | nix::errno::Errno::EPERM)
                        && self.handed_to.is_some()
                        && !nix::unistd::geteuid().is_root() =>
                {
                    left.push(d.path.clone())
                }
                Err((p, e)) => return Err(cg_err("rmdir", &p, io::Error::from(e))),
            }
        }
        if let (false, Some(owner)) = (left.is_empty(), self.handed_to) {
            super::handover::remove_as(&left, owner)?;
        }
        for d in &self.dirs {
            if let Some(parent) = d.path.parent() {
                if parent != d.hierarchy.mountpoint && parent.starts_with(&d.hierarchy.mountpoint) {
                    let _ = fs::remove_dir(parent);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::layout::fake::{fake_v2, populate, v2_layout};
    use super::super::layout::Layout;
    use super::*;
    use std::path::Path;

    #[test]
    fn v2_kill_writes_cgroup_kill_and_empty_uses_events() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        fake_v2(root, "pids");
        let leaf = root.join("c");
        fs::create_dir(&leaf).unwrap();
        populate(&leaf, "pids");
        let cg = Cgroup::at(&v2_layout(root), Path::new("c"));
        assert!(cg.is_empty());
        fs::write(leaf.join("cgroup.events"), "populated 1\nfrozen 0\n").unwrap();
        assert!(!cg.is_empty());
        cg.kill().unwrap();
        assert_eq!(fs::read_to_string(leaf.join("cgroup.kill")).unwrap(), "1");
        let e = cg.wait_empty(Duration::from_millis(30)).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Timeout);
    }

    /// Without cgroup.kill (kernels before 5.14) a v2 kill freezes first
    /// and must wait for `frozen 1` in cgroup.events before it signals:
    /// cgroup.freeze itself reads `1` at once, before the tasks are frozen,
    /// and a task forked in between would escape the kill.
    #[test]
    fn v2_kill_without_cgroup_kill_waits_until_frozen() {
        use std::os::unix::process::ExitStatusExt;
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        fake_v2(root, "pids");
        let leaf = root.join("c");
        fs::create_dir(&leaf).unwrap();
        populate(&leaf, "pids");
        fs::remove_file(leaf.join("cgroup.kill")).unwrap();
        fs::write(leaf.join("cgroup.freeze"), "0").unwrap();
        fs::write(leaf.join("cgroup.events"), "populated 1\nfrozen 0\n").unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        fs::write(leaf.join("cgroup.procs"), format!("{}\n", child.id())).unwrap();
        let events = leaf.join("cgroup.events");
        let freezer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            fs::write(events, "populated 1\nfrozen 1\n").unwrap();
        });
        let cg = Cgroup::at(&v2_layout(root), Path::new("c"));
        let t = Instant::now();
        cg.kill().unwrap();
        let waited = t.elapsed();
        freezer.join().unwrap();
        assert!(
            waited >= Duration::from_millis(200),
            "signalled after {waited:?}, before the cgroup was frozen"
        );
        assert_eq!(child.wait().unwrap().signal(), Some(9));
        assert_eq!(fs::read_to_string(leaf.join("cgroup.freeze")).unwrap(), "0");
    }

    #[test]
    fn sub_cgroups_of_an_init_count_and_are_removed_first() {
        // systemd below our leaf: init.scope and system.slice/x.service.
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("systemd");
        fs::create_dir(&root).unwrap();
        let mi = format!(
            "40 1 0:50 / {} rw - cgroup cgroup rw,xattr,name=systemd\n",
            root.display()
        );
        let l = Layout::from_mountinfo(&mi);
        let cg = Cgroup::at(&l, Path::new("davit/c"));
        assert_eq!(
            cg.named_v1_dir("systemd"),
            Some(root.join("davit/c").as_path())
        );
        let leaf = root.join("davit/c");
        fs::create_dir_all(leaf.join("init.scope")).unwrap();
        fs::create_dir_all(leaf.join("system.slice/x.service")).unwrap();
        fs::write(leaf.join("system.slice/x.service/cgroup.procs"), "42\n").unwrap();
        assert_eq!(cg.procs(), vec![42]);
        assert!(!cg.is_empty());
        fs::remove_file(leaf.join("system.slice/x.service/cgroup.procs")).unwrap();
        assert!(cg.is_empty());
        let d = descendants(&leaf);
        let pos = |p: &str| d.iter().position(|x| x == &leaf.join(p)).unwrap();
        assert!(pos("system.slice/x.service") < pos("system.slice"));
        cg.remove().unwrap();
        assert!(!leaf.exists() && !root.join("davit").exists());
    }
}
