//! `wait`: block until a container reaches a state, as `lxc-wait`, without
//! polling. Each change of the state is a write and rename in the
//! container's state directory, or its removal, which inotify reports; a
//! monitor that dies without writing is seen through its pidfd.
#![forbid(unsafe_code)]

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use nix::unistd::Pid;

use crate::error::{Error, Result};
use crate::state::{StateStore, Status};

/// The state `info` reports, and the pidfds of the processes whose death
/// would change it without a write.
fn current(store: &StateStore) -> Result<(Status, Vec<OwnedFd>)> {
    let Some(st) = store.peek()? else {
        return Ok((Status::Stopped, Vec::new()));
    };
    if st.is_stale() {
        return Ok((Status::Stopped, Vec::new()));
    }
    let fds = [st.init, st.monitor]
        .into_iter()
        .flatten()
        .filter(|p| p.is_alive())
        .filter_map(|p| crate::sys::pidfd_open(Pid::from_raw(p.pid)).ok())
        .collect();
    Ok((st.status, fds))
}

/// Waits until container `name` is in state `want` (`Running` or
/// `Stopped`; `Starting` and `Stopping` work too), or `timeout` passes.
/// Returns at once if it already is.
///
/// # Errors
/// [`Error::Timeout`]; [`Error::Syscall`] if inotify or poll fail; the
/// state store's errors ([`Error::UntrustedStateDir`], ...).
pub fn wait(runtime: &Path, name: &str, want: Status, timeout: Option<Duration>) -> Result<()> {
    let store = StateStore::new(runtime, name);
    let start = Instant::now();
    let ino = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)
        .map_err(|e| Error::sys("inotify_init1", e))?;
    std::fs::create_dir_all(runtime).map_err(|source| Error::Write {
        path: runtime.to_owned(),
        source,
    })?;
    // The runtime directory, for the container's own appearing or going,
    // and that directory, for every write of its state.
    let dir_events = AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_MOVED_FROM;
    ino.add_watch(runtime, dir_events)
        .map_err(|e| Error::sys(format!("inotify_add_watch({})", runtime.display()), e))?;
    let state_events = dir_events | AddWatchFlags::IN_CLOSE_WRITE | AddWatchFlags::IN_DELETE_SELF;
    loop {
        // Watch first, then look: a change between the two is not lost.
        let _ = ino.add_watch(store.dir(), state_events);
        let (status, pidfds) = current(&store)?;
        if status == want {
            return Ok(());
        }
        let left = match timeout {
            Some(t) => match t.checked_sub(start.elapsed()) {
                Some(l) => Some(l),
                None => {
                    return Err(Error::Timeout {
                        what: format!("{name} to be {}", want.as_str()),
                        secs: t.as_secs_f64(),
                    })
                }
            },
            None => None,
        };
        let mut fds = vec![PollFd::new(ino.as_fd(), PollFlags::POLLIN)];
        fds.extend(
            pidfds
                .iter()
                .map(|f| PollFd::new(f.as_fd(), PollFlags::POLLIN)),
        );
        let ms = left.map_or(PollTimeout::NONE, |l| {
            PollTimeout::try_from(l.as_millis().min(i32::MAX as u128) as i32 + 1)
                .unwrap_or(PollTimeout::MAX)
        });
        match poll(&mut fds, ms) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(Error::sys("poll", e)),
        }
        // Drain what inotify has; the next look decides.
        while let Ok(ev) = ino.read_events() {
            if ev.is_empty() {
                break;
            }
        }
    }
}

/// How a detached start's first moments went ([`settle`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    /// init is alive after the window (systemd: it made its `init.scope`).
    Up,
    /// systemd is alive but had not made its `init.scope` within the
    /// timeout (a slow machine, or a systemd that hangs early).
    StillStarting,
    /// init exited: its status as a shell reports it, and the last lines
    /// of the console log.
    Exited {
        /// Exit code, or 128 + signal.
        status: Option<i32>,
        /// The console log's last lines, unescaped.
        tail: Vec<String>,
    },
}

/// Whether a `/proc/PID/cgroup` text shows systemd past its manager setup:
/// it has moved itself into its own `init.scope` (on the unified or the
/// `name=systemd` hierarchy).
pub fn in_init_scope(proc_cgroup: &str) -> bool {
    proc_cgroup.lines().any(|l| {
        let mut f = l.splitn(3, ':');
        let (_, ctrls, path) = (f.next(), f.next().unwrap_or(""), f.next().unwrap_or(""));
        (ctrls.is_empty() || ctrls == "name=systemd") && path.ends_with("/init.scope")
    })
}

/// The last `n` non-empty lines of `text` (split at `\n` and `\r`), as
/// they are: showing them safely is the caller's job (the CLI escapes
/// every control character it prints).
pub fn tail_lines(text: &[u8], n: usize) -> Vec<String> {
    let s = String::from_utf8_lossy(text);
    let lines: Vec<&str> = s
        .split(['\n', '\r'])
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| (*l).to_owned())
        .collect()
}

/// Watch a just started detached container's init (`pid`, from the ready
/// report) through its first moments: `window` for any init, and for
/// systemd (`/proc/PID/comm`) until it has made its `init.scope`, at most
/// `systemd_timeout`. When init exits, waits for the monitor to record the
/// status and returns it with the last `lines` of the console log.
///
/// # Errors
/// [`Error::Syscall`] if the pidfd cannot be opened or polled; the state
/// store's errors.
pub fn settle(
    runtime: &Path,
    name: &str,
    pid: i32,
    window: Duration,
    systemd_timeout: Duration,
    lines: usize,
) -> Result<Settled> {
    let start = Instant::now();
    let pidfd = match crate::sys::pidfd_open(Pid::from_raw(pid)) {
        Ok(fd) => Some(fd),
        Err(Errno::ESRCH) => None,
        Err(e) => return Err(Error::sys(format!("pidfd_open({pid})"), e)),
    };
    // Looked at once the window is over: systemd renames itself after the
    // exec of /sbin/init, and a plain user may not read init's exe link.
    let is_systemd = || {
        std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "systemd")
            || std::fs::read_link(format!("/proc/{pid}/exe"))
                .is_ok_and(|p| p.file_name().is_some_and(|n| n == "systemd"))
    };
    let mut systemd = None;
    let exited = |fd: &OwnedFd, ms: u64| -> Result<bool> {
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        let t = PollTimeout::try_from(ms.min(i32::MAX as u64) as i32).unwrap_or(PollTimeout::MAX);
        match poll(&mut fds, t) {
            Ok(n) => Ok(n > 0),
            Err(Errno::EINTR) => Ok(false),
            Err(e) => Err(Error::sys("poll(pidfd)", e)),
        }
    };
    if let Some(fd) = &pidfd {
        loop {
            let elapsed = start.elapsed();
            if elapsed >= window {
                if !*systemd.get_or_insert_with(is_systemd) {
                    return Ok(Settled::Up);
                }
                let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
                if in_init_scope(&cg) {
                    return Ok(Settled::Up);
                }
                if elapsed >= systemd_timeout {
                    return Ok(Settled::StillStarting);
                }
            }
            let step = if elapsed < window {
                (window - elapsed).as_millis() as u64
            } else {
                20
            };
            if exited(fd, step.max(1))? {
                break;
            }
        }
    }
    // The monitor writes the status when it has cleaned up.
    let _ = wait(
        runtime,
        name,
        Status::Stopped,
        Some(Duration::from_secs(15)),
    );
    let store = StateStore::new(runtime, name);
    let status = store.peek()?.and_then(|s| s.exit_status);
    let mut log = Vec::new();
    for p in crate::console::log_paths(runtime, name).unwrap_or_default() {
        if let Ok(b) = std::fs::read(&p) {
            log.extend_from_slice(&b);
        }
    }
    Ok(Settled::Exited {
        status,
        tail: tail_lines(&log, lines),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_scope_on_either_hierarchy() {
        assert!(in_init_scope("0::/davit/web/init.scope\n"));
        assert!(in_init_scope(
            "12:cpu:/x\n1:name=systemd:/davit/web/init.scope\n"
        ));
        assert!(!in_init_scope("0::/davit/web\n1:name=systemd:/davit/web\n"));
        // A controller hierarchy's path does not count.
        assert!(!in_init_scope("4:memory:/a/init.scope\n0::/a\n"));
    }

    #[test]
    fn tail_keeps_the_last_non_empty_lines() {
        let t = tail_lines(b"one\r\ntwo\n\nthree \x1b[2Jcleared\n", 2);
        assert_eq!(t, vec!["two".to_owned(), "three \x1b[2Jcleared".to_owned()]);
        assert!(tail_lines(b"", 5).is_empty());
    }
}
