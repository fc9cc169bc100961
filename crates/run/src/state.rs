//! `RUNTIME/NAME/state.json`: what a container is doing, written atomically
//! under an `flock`.
//!
//! Every operation does load, check, act, save while holding the lock.
#![forbid(unsafe_code)]

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The console socket in the state directory (`davit console`).
pub const SOCKET: &str = "console.sock";
/// The log in the state directory; the one before it is `console.log.1`.
pub const LOG: &str = "console.log";
/// The log before [`LOG`] (the previous boot, or the first part of a long one).
pub const OLD_LOG: &str = "console.log.1";

/// The lifecycle of a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Not running (or never started).
    Stopped,
    /// The monitor is setting it up.
    Starting,
    /// Init is running.
    Running,
    /// A stop is in progress.
    Stopping,
    /// Running, with every task frozen (`davit freeze`). Never stored:
    /// `info` reads it from the cgroup freezer.
    Frozen,
}

impl Status {
    /// Whether `start` may proceed.
    pub fn can_start(self) -> bool {
        self == Status::Stopped
    }

    /// Whether `stop` has something to stop.
    pub fn can_stop(self) -> bool {
        matches!(self, Status::Starting | Status::Running | Status::Stopping)
    }

    /// Whether `attach` may proceed.
    pub fn can_attach(self) -> bool {
        self == Status::Running
    }

    /// Upper-case name as `lxc-info` prints it (`RUNNING`).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Stopped => "STOPPED",
            Status::Starting => "STARTING",
            Status::Running => "RUNNING",
            Status::Stopping => "STOPPING",
            Status::Frozen => "FROZEN",
        }
    }
}

/// A process identified by pid **and** start time, so that a recycled pid
/// is never mistaken for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessRef {
    /// The pid in the host (runner's) pid namespace.
    pub pid: i32,
    /// Field 22 of `/proc/PID/stat` (clock ticks since boot).
    pub start_time: u64,
}

impl ProcessRef {
    /// Capture `pid` now; `None` if it does not exist.
    pub fn of(pid: i32) -> Option<ProcessRef> {
        Some(ProcessRef {
            pid,
            start_time: start_time(pid)?,
        })
    }

    /// Whether the same process still exists (and is not a zombie).
    pub fn is_alive(&self) -> bool {
        match read_stat(self.pid) {
            Some((state, st)) => st == self.start_time && state != 'Z' && state != 'X',
            None => false,
        }
    }
}

fn read_stat(pid: i32) -> Option<(char, u64)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat)
}

/// Parse state (field 3) and start time (field 22) from `/proc/PID/stat`
/// text. The command (field 2) may hold spaces and parentheses, so parse
/// after the last `)`.
pub fn parse_stat(stat: &str) -> Option<(char, u64)> {
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let mut f = rest.split_whitespace();
    let state = f.next()?.chars().next()?;
    // `f` is now at field 4; field 22 is 18 further.
    let st = f.nth(18)?.parse().ok()?;
    Some((state, st))
}

/// The start time (field 22 of `/proc/PID/stat`) of `pid`, if it exists.
pub fn start_time(pid: i32) -> Option<u64> {
    read_stat(pid).map(|(_, st)| st)
}

/// The recorded state of one container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// Container name.
    pub name: String,
    /// Lifecycle status.
    pub status: Status,
    /// The container's init, once started.
    #[serde(default)]
    pub init: Option<ProcessRef>,
    /// The monitor that reaps init.
    #[serde(default)]
    pub monitor: Option<ProcessRef>,
    /// The container's cgroup directories, one per hierarchy.
    #[serde(default)]
    pub cgroup_paths: Vec<PathBuf>,
    /// The cgroup hierarchy mount points, matching `cgroup_paths`.
    #[serde(default)]
    pub cgroup_mounts: Vec<PathBuf>,
    /// Container root's host uid and gid, when a plain user handed the
    /// cgroup to it: what container root made below is removed from a
    /// helper user namespace ([`crate::cgroup::handover`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_owner: Option<(u32, u32)>,
    /// The user manager's transient scope the cgroup lives in, for a plain
    /// user on cgroup v2 with systemd ([`crate::userscope`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// Whether the container runs without a user namespace.
    #[serde(default)]
    pub privileged: bool,
    /// Why no limits were applied, when they were not.
    #[serde(default)]
    pub no_limits_reason: Option<String>,
    /// What `start` tells the admin about this run: a host bind that is not
    /// idmapped, and why ([`crate::config::MountEntry::plain_bind_note`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// Exit status of the last run: the code, or 128 + signal.
    #[serde(default)]
    pub exit_status: Option<i32>,
    /// The seccomp policy init runs under; `attach` loads the same.
    #[serde(default)]
    pub seccomp: Option<crate::seccomp::Seccomp>,
    /// With `start -- CMD`: CMD, pid 1's first child, in the same
    /// namespaces. A plain user's `attach` joins it, since pid 1 (the shim,
    /// a fork of the monitor) is not dumpable and `setns` through its pidfd
    /// needs ptrace access that user does not have.
    #[serde(default)]
    pub attach_via: Option<ProcessRef>,
    /// The monitor's binary runs attach's child
    /// ([`crate::attach::CHILD_ARG`]): `attach` execs the monitor's sealed
    /// copy rather than make one of its own. False in a state written by
    /// an older monitor.
    #[serde(default)]
    pub attach_helper: bool,
    /// The on-disk monitor binary this monitor's sealed copy was made
    /// from, as `start` saw it: a later start of the same, unchanged file
    /// runs from this monitor's sealed copy rather than make another
    /// ([`crate::reexec::monitor_binary`]). `None` when the monitor sealed
    /// itself, and in a state written by an older monitor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binary: Option<BinaryId>,
}

/// Which file a sealed binary was copied from, and that the file has not
/// changed since: device, inode, size, and the modification and change
/// times. A binary replaced or rewritten (an upgrade) has another; the
/// change time cannot be set back by a plain user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BinaryId {
    /// The device of the file.
    pub dev: u64,
    /// Its inode.
    pub ino: u64,
    /// Its size in bytes.
    pub size: u64,
    /// Its modification time: seconds and nanoseconds.
    pub mtime: (i64, i64),
    /// Its change time: seconds and nanoseconds.
    pub ctime: (i64, i64),
}

impl BinaryId {
    /// The identity of the file `m` describes.
    pub fn of(m: &std::fs::Metadata) -> BinaryId {
        BinaryId {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }
}

impl std::fmt::Display for BinaryId {
    /// `DEV:INO:SIZE:MTIME.NS:CTIME.NS`, as the monitor's `--binary` takes it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}:{}:{}.{}:{}.{}",
            self.dev, self.ino, self.size, self.mtime.0, self.mtime.1, self.ctime.0, self.ctime.1
        )
    }
}

impl std::str::FromStr for BinaryId {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<BinaryId, String> {
        let bad = || format!("bad binary identity {s:?} (want DEV:INO:SIZE:MTIME.NS:CTIME.NS)");
        let time = |t: &str| -> Option<(i64, i64)> {
            let (a, b) = t.split_once('.')?;
            Some((a.parse().ok()?, b.parse().ok()?))
        };
        let f: Vec<&str> = s.split(':').collect();
        let [dev, ino, size, m, c] = f[..] else {
            return Err(bad());
        };
        Ok(BinaryId {
            dev: dev.parse().map_err(|_| bad())?,
            ino: ino.parse().map_err(|_| bad())?,
            size: size.parse().map_err(|_| bad())?,
            mtime: time(m).ok_or_else(bad)?,
            ctime: time(c).ok_or_else(bad)?,
        })
    }
}

impl State {
    /// A fresh stopped state.
    pub fn new(name: &str) -> State {
        State {
            name: name.to_owned(),
            status: Status::Stopped,
            init: None,
            monitor: None,
            cgroup_paths: Vec::new(),
            cgroup_mounts: Vec::new(),
            cgroup_owner: None,
            scope: None,
            privileged: false,
            no_limits_reason: None,
            notes: Vec::new(),
            exit_status: None,
            seccomp: None,
            attach_via: None,
            attach_helper: false,
            binary: None,
        }
    }

    /// Whether init is recorded and that exact process is alive.
    pub fn is_alive(&self) -> bool {
        self.init.is_some_and(|p| p.is_alive())
    }

    /// Whether the recorded monitor is alive.
    pub fn monitor_alive(&self) -> bool {
        self.monitor.is_some_and(|p| p.is_alive())
    }

    /// Whether the record says active but neither init nor the monitor
    /// exists: a killed monitor left it behind and it needs recovery.
    pub fn is_stale(&self) -> bool {
        self.status != Status::Stopped && !self.is_alive() && !self.monitor_alive()
    }
}

/// The state directory of one container, `RUNTIME/NAME`.
#[derive(Debug, Clone)]
pub struct StateStore {
    dir: PathBuf,
    name: String,
}

/// Whether `f` lives on tmpfs, which a reboot empties, so that an fsync
/// buys no durability.
fn volatile(f: &File) -> bool {
    use nix::sys::statfs::{fstatfs, TMPFS_MAGIC};
    fstatfs(f).is_ok_and(|s| s.filesystem_type() == TMPFS_MAGIC)
}

/// An exclusive lock on a container's state; released on drop.
#[derive(Debug)]
pub struct StateLock {
    _lock: Flock<File>,
    store: StateStore,
}

/// Why a state directory with these properties cannot be trusted by the
/// user `me`, if it cannot (see [`StateStore::check_trusted`]).
fn why_untrusted(symlink: bool, dir: bool, uid: u32, mode: u32, me: u32) -> Option<String> {
    if symlink {
        Some("it is a symbolic link".to_owned())
    } else if !dir {
        Some("it is not a directory".to_owned())
    } else if uid != me && me != 0 {
        Some(format!("it belongs to uid {uid}, not to you (uid {me})"))
    } else if mode & 0o022 != 0 {
        Some(format!(
            "others can write to it (mode {:04o})",
            mode & 0o7777
        ))
    } else {
        None
    }
}

impl StateStore {
    /// The store for `name` under `runtime` (e.g. `/run/davit`).
    pub fn new(runtime: &Path, name: &str) -> StateStore {
        StateStore {
            dir: runtime.join(name),
            name: name.to_owned(),
        }
    }

    /// `RUNTIME/NAME`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `RUNTIME/NAME/state.json`.
    pub fn path(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    /// Refuse a runtime directory, or this container's directory in it,
    /// that is not a real directory closed to writes by others, or that
    /// belongs to another user (unless we are root, who reads a user's
    /// state only when pointed at it): a state file in it could be forged
    /// by someone else (a `$TMPDIR/davit-UID` another user made, say) to
    /// name a pid for `stop` to kill. A missing one is fine:
    /// [`StateStore::lock`] makes it.
    ///
    /// # Errors
    /// [`Error::UntrustedStateDir`], or [`Error::Read`] if it cannot be
    /// examined.
    pub fn check_trusted(&self) -> Result<()> {
        let me = nix::unistd::geteuid().as_raw();
        for d in [self.dir.parent(), Some(self.dir.as_path())]
            .into_iter()
            .flatten()
        {
            let m = match fs::symlink_metadata(d) {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => {
                    return Err(Error::Read {
                        path: d.to_path_buf(),
                        source,
                    })
                }
            };
            let ft = m.file_type();
            if let Some(why) = why_untrusted(ft.is_symlink(), ft.is_dir(), m.uid(), m.mode(), me) {
                return Err(Error::UntrustedStateDir {
                    path: d.to_path_buf(),
                    why,
                });
            }
        }
        Ok(())
    }

    /// Read the state without locking (for `info` and `list`); `None` if
    /// there is none.
    ///
    /// # Errors
    /// [`Error::UntrustedStateDir`], [`Error::Read`] or
    /// [`Error::StateParse`].
    pub fn peek(&self) -> Result<Option<State>> {
        self.check_trusted()?;
        let path = self.path();
        match fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|source| Error::StateParse { path, source }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(Error::Read { path, source }),
        }
    }

    /// Take the exclusive lock (blocking), creating the directory (0700).
    ///
    /// # Errors
    /// [`Error::UntrustedStateDir`] (see [`StateStore::check_trusted`]),
    /// [`Error::Write`] if the directory or lock file cannot be made,
    /// [`Error::Syscall`] if `flock` fails.
    pub fn lock(&self) -> Result<StateLock> {
        let lock_path = self.dir.join("lock");
        loop {
            fs::create_dir_all(&self.dir).map_err(|source| Error::Write {
                path: self.dir.clone(),
                source,
            })?;
            let _ = fs::set_permissions(
                &self.dir,
                std::os::unix::fs::PermissionsExt::from_mode(0o700),
            );
            // After the mkdir, so that a directory someone slipped in
            // before it is caught too.
            self.check_trusted()?;
            let f = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path)
                .map_err(|source| Error::Write {
                    path: lock_path.clone(),
                    source,
                })?;
            let ino = f.metadata().map(|m| m.ino()).ok();
            let lock = Flock::lock(f, FlockArg::LockExclusive)
                .map_err(|(_, e)| Error::sys(format!("flock({:?}, LOCK_EX)", lock_path), e))?;
            // A concurrent remove() may have unlinked the file we locked;
            // then our lock protects nothing, so retry on the new file.
            if fs::metadata(&lock_path).map(|m| m.ino()).ok() == ino {
                return Ok(StateLock {
                    _lock: lock,
                    store: self.clone(),
                });
            }
        }
    }
}

impl StateLock {
    /// Load the state, or a fresh stopped one when none exists.
    ///
    /// # Errors
    /// As [`StateStore::peek`].
    pub fn load(&self) -> Result<State> {
        Ok(self
            .store
            .peek()?
            .unwrap_or_else(|| State::new(&self.store.name)))
    }

    /// Write the state atomically: temp file, fsync, rename, fsync the dir.
    /// On tmpfs (`/run`, where the state lives) the two fsyncs are skipped:
    /// the rename alone makes a save all or nothing for a process that
    /// dies, and nothing on tmpfs survives a machine that does (issue 19).
    ///
    /// # Errors
    /// [`Error::Write`].
    pub fn save(&self, state: &State) -> Result<()> {
        let path = self.store.path();
        let tmp = self.store.dir.join(".state.json.tmp");
        let werr = |source| Error::Write {
            path: tmp.clone(),
            source,
        };
        let body = serde_json::to_vec_pretty(state).map_err(|e| Error::Write {
            path: path.clone(),
            source: std::io::Error::other(e),
        })?;
        let mut f = File::create(&tmp).map_err(werr)?;
        f.write_all(&body).map_err(werr)?;
        let durable = !volatile(&f);
        if durable {
            f.sync_all().map_err(werr)?;
        }
        drop(f);
        fs::rename(&tmp, &path).map_err(|source| Error::Write {
            path: path.clone(),
            source,
        })?;
        if durable {
            if let Ok(d) = File::open(&self.store.dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }

    /// Remove the state file and directory; the lock stays held until drop.
    /// The console log of the last detached start stays (`davit console
    /// --log` after a stop), and with it the directory.
    ///
    /// # Errors
    /// [`Error::Write`] if something other than "not found" fails.
    pub fn remove(&self) -> Result<()> {
        self.remove_files(false)
    }

    /// [`StateLock::remove`], the console log included (`destroy`, `rename`).
    ///
    /// # Errors
    /// As [`StateLock::remove`].
    pub fn purge(&self) -> Result<()> {
        self.remove_files(true)
    }

    fn remove_files(&self, logs: bool) -> Result<()> {
        let mut files = vec!["state.json", ".state.json.tmp", SOCKET];
        if logs {
            files.extend([LOG, OLD_LOG]);
        }
        files.push("lock");
        for f in files {
            let p = self.store.dir.join(f);
            match fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(Error::Write { path: p, source }),
            }
        }
        match fs::remove_dir(&self.store.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) if !logs && e.raw_os_error() == Some(libc::ENOTEMPTY) => Ok(()),
            Err(source) => Err(Error::Write {
                path: self.store.dir.clone(),
                source,
            }),
        }
    }

    /// The store this lock belongs to.
    pub fn store(&self) -> &StateStore {
        &self.store
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predicates() {
        assert!(Status::Stopped.can_start());
        assert!(!Status::Running.can_start());
        assert!(!Status::Starting.can_start());
        assert!(Status::Running.can_stop());
        assert!(!Status::Stopped.can_stop());
        assert!(Status::Running.can_attach());
        assert!(!Status::Stopping.can_attach());
    }

    #[test]
    fn parse_stat_with_odd_comm() {
        let s = "123 (a) b (c)) S 1 123 123 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 10";
        assert_eq!(parse_stat(s), Some(('S', 98765)));
    }

    #[test]
    fn own_process_is_alive_and_recycled_pid_is_not() {
        let me = ProcessRef::of(std::process::id() as i32).unwrap();
        assert!(me.is_alive());
        let recycled = ProcessRef {
            start_time: me.start_time + 1,
            ..me
        };
        assert!(!recycled.is_alive());
        let gone = ProcessRef {
            pid: i32::MAX,
            start_time: 1,
        };
        assert!(!gone.is_alive());
    }

    #[test]
    fn only_tmpfs_counts_as_volatile() {
        // /dev/shm is tmpfs on every Linux davit supports; the source tree
        // is on a disk.
        let shm = tempfile::tempfile_in("/dev/shm").unwrap();
        assert!(volatile(&shm), "/dev/shm is not tmpfs here");
        let disk = tempfile::tempfile_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        assert!(!volatile(&disk), "the source tree is on tmpfs here");
    }

    #[test]
    fn save_load_remove_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let store = StateStore::new(tmp.path(), "c1");
        assert!(store.peek().unwrap().is_none());
        let lock = store.lock().unwrap();
        let mut st = lock.load().unwrap();
        assert_eq!(st.status, Status::Stopped);
        st.status = Status::Running;
        st.init = ProcessRef::of(std::process::id() as i32);
        st.cgroup_paths = vec!["/sys/fs/cgroup/pids/davit/c1".into()];
        st.exit_status = Some(7);
        lock.save(&st).unwrap();
        assert_eq!(store.peek().unwrap().unwrap(), st);
        assert!(st.is_alive());
        assert!(!st.is_stale());
        // no temp file left behind
        assert!(!store.dir().join(".state.json.tmp").exists());
        lock.remove().unwrap();
        drop(lock);
        assert!(!store.dir().exists());
    }

    #[test]
    fn state_in_a_dir_others_can_write_or_a_link_is_not_trusted() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        // A world-writable runtime dir (a $TMPDIR/davit-UID someone made
        // for everyone) with a forged state file.
        let rt = tmp.path().join("rt");
        fs::create_dir_all(rt.join("c")).unwrap();
        fs::write(
            rt.join("c/state.json"),
            serde_json::to_vec(&State::new("c")).unwrap(),
        )
        .unwrap();
        fs::set_permissions(&rt, fs::Permissions::from_mode(0o777)).unwrap();
        let store = StateStore::new(&rt, "c");
        for e in [store.peek().unwrap_err(), store.lock().unwrap_err()] {
            assert_eq!(e.kind(), crate::ErrorKind::State, "{e}");
            assert!(
                e.to_string().contains("others can write to it (mode 0777)"),
                "{e}"
            );
        }
        // A symlinked container dir inside a good runtime dir.
        fs::set_permissions(&rt, fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::symlink(rt.join("c"), rt.join("l")).unwrap();
        let e = StateStore::new(&rt, "l").peek().unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        // The same dir, closed to others, is fine.
        assert!(store.peek().unwrap().is_some());
    }

    #[test]
    fn another_users_dir_is_trusted_by_root_only() {
        let d = |uid, me| why_untrusted(false, true, uid, 0o40700, me);
        assert_eq!(
            d(12345, 1000).as_deref(),
            Some("it belongs to uid 12345, not to you (uid 1000)")
        );
        assert_eq!(d(1000, 1000), None);
        assert_eq!(
            d(12345, 0),
            None,
            "root reads a user's state when pointed at it"
        );
        assert!(why_untrusted(false, true, 12345, 0o40770, 0)
            .unwrap()
            .contains("mode 0770"));
        assert!(why_untrusted(false, false, 0, 0o100600, 0)
            .unwrap()
            .contains("not a directory"));
    }

    #[test]
    fn stale_when_nothing_alive() {
        let mut st = State::new("x");
        st.status = Status::Running;
        st.init = Some(ProcessRef {
            pid: i32::MAX,
            start_time: 1,
        });
        assert!(st.is_stale());
    }

    #[test]
    fn lock_is_exclusive() {
        let tmp = tempfile::tempdir().unwrap();
        let store = StateStore::new(tmp.path(), "c2");
        let lock = store.lock().unwrap();
        let s2 = store.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let t = std::thread::spawn(move || {
            let _l = s2.lock().unwrap();
            tx.send(()).unwrap();
        });
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(rx.try_recv().is_err(), "second lock acquired while held");
        drop(lock);
        rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap();
        t.join().unwrap();
    }
}
