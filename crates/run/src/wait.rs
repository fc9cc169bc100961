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

/// How far apart [`settle`]'s two looks at a quiet container are.
pub const QUIET_GAP: Duration = Duration::from_millis(10);

/// What one look at init and every process below it found ([`look`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Look {
    /// Every thread of these processes (sorted) is asleep (`S`) or
    /// stopped (`T`, `t`).
    Quiet(Vec<i32>),
    /// A thread runs or waits to (`R`), waits on the disk (`D`), is a
    /// zombie not yet reaped (`Z`), or a process went while it was looked at.
    Busy,
    /// This `/proc` cannot list a thread's children (a kernel without
    /// `CONFIG_PROC_CHILDREN`), or would not let us read them.
    Unknown,
}

/// The state letter of a `/proc/PID/stat` line: the field after the last
/// `)`, as the command name in parentheses may hold both.
pub fn stat_state(stat: &str) -> Option<char> {
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// Looks once at `init` and its descendants under `proc` (`/proc`): every
/// thread's state (`task/TID/stat`) and children (`task/TID/children`).
/// Orphans of the container go to its init, so the walk finds every
/// process the container runs (but for one `attach` put there).
pub fn look(proc: &Path, init: i32) -> Look {
    let mut todo = vec![init];
    let mut seen = Vec::new();
    while let Some(pid) = todo.pop() {
        let Ok(tasks) = std::fs::read_dir(proc.join(pid.to_string()).join("task")) else {
            return Look::Busy;
        };
        seen.push(pid);
        for t in tasks.flatten().map(|e| e.path()) {
            let Ok(stat) = std::fs::read_to_string(t.join("stat")) else {
                return Look::Busy;
            };
            if !matches!(stat_state(&stat), Some('S' | 'T' | 't')) {
                return Look::Busy;
            }
            match std::fs::read_to_string(t.join("children")) {
                Ok(c) => todo.extend(c.split_whitespace().filter_map(|p| p.parse::<i32>().ok())),
                Err(_) => return Look::Unknown,
            }
        }
    }
    seen.sort_unstable();
    Look::Quiet(seen)
}

/// Watch a just started detached container's init (`pid`, from the ready
/// report) through its first moments, at most `window`: the window ends
/// early once the container has gone quiet, two [`look`]s [`QUIET_GAP`]
/// apart finding the same processes and every thread of them asleep (an
/// init that is about to fail is running, not asleep). For systemd
/// (`/proc/PID/comm`) it then goes on until systemd has made its
/// `init.scope`, at most `systemd_timeout`. When init exits, waits for the
/// monitor to record the status and returns it with the last `lines` of
/// the console log.
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
    // Looked at once the window is over or the container is quiet, not at
    // once: systemd renames itself after the exec of /sbin/init, and a
    // plain user may not read init's exe link.
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
    // Whether /proc can tell (else the whole window is waited), and the
    // processes of the last look if it was quiet.
    let mut looking = true;
    let mut last_quiet: Option<Vec<i32>> = None;
    let mut settled = false;
    if let Some(fd) = &pidfd {
        loop {
            let elapsed = start.elapsed();
            if looking && !settled && elapsed < window {
                match look(Path::new("/proc"), pid) {
                    Look::Quiet(now) if last_quiet.as_ref() == Some(&now) => settled = true,
                    Look::Quiet(now) => last_quiet = Some(now),
                    Look::Busy => last_quiet = None,
                    Look::Unknown => looking = false,
                }
            }
            if settled || elapsed >= window {
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
            let step = if settled || elapsed >= window {
                20
            } else if looking {
                QUIET_GAP.min(window - elapsed).as_millis() as u64
            } else {
                (window - elapsed).as_millis() as u64
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
    use std::os::unix::process::CommandExt;

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
    fn the_state_is_read_after_the_last_paren() {
        assert_eq!(stat_state("1 (init) S 0 1 1"), Some('S'));
        assert_eq!(stat_state("7 (a) R (b)) R 1 7"), Some('R'));
        assert_eq!(stat_state("7 (x)"), None);
        assert_eq!(stat_state(""), None);
    }

    /// One thread of a fake /proc: tid, state, its children file.
    type Task<'a> = (i32, char, Option<&'a str>);

    /// A fake /proc: each (pid, its threads).
    fn fake_proc(procs: &[(i32, &[Task])]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for (pid, tasks) in procs {
            for (tid, st, children) in *tasks {
                let t = d.path().join(format!("{pid}/task/{tid}"));
                std::fs::create_dir_all(&t).unwrap();
                std::fs::write(t.join("stat"), format!("{tid} (a b) c) {st} 1 {pid} 0")).unwrap();
                if let Some(c) = children {
                    std::fs::write(t.join("children"), c).unwrap();
                }
            }
        }
        d
    }

    #[test]
    fn a_look_walks_every_thread_and_child() {
        // init (1) with a thread (2) whose child is 9; 9's child 5.
        let quiet: &[(i32, &[Task])] = &[
            (1, &[(1, 'S', Some("")), (2, 'S', Some("9 "))]),
            (9, &[(9, 'S', Some("5"))]),
            (5, &[(5, 'T', Some(""))]),
        ];
        let d = fake_proc(quiet);
        assert_eq!(look(d.path(), 1), Look::Quiet(vec![1, 5, 9]));
        // A grandchild that runs, one on the disk, a zombie.
        for st in ['R', 'D', 'Z'] {
            let d = fake_proc(&[
                (1, &[(1, 'S', Some("9"))]),
                (9, &[(9, 'S', Some("5"))]),
                (5, &[(5, st, Some(""))]),
            ]);
            assert_eq!(look(d.path(), 1), Look::Busy, "{st}");
        }
        // A child that is gone by the time it is looked at.
        let d = fake_proc(&[(1, &[(1, 'S', Some("9"))])]);
        assert_eq!(look(d.path(), 1), Look::Busy);
        // No children files: /proc cannot tell.
        let d = fake_proc(&[(1, &[(1, 'S', None)])]);
        assert_eq!(look(d.path(), 1), Look::Unknown);
    }

    /// On this kernel's /proc: a sleeping child and its sleeping child are
    /// quiet, a busy loop never is.
    #[test]
    fn a_sleeper_is_quiet_and_a_busy_loop_is_not() {
        let until_quiet = |pid: i32| {
            let end = Instant::now() + Duration::from_secs(10);
            loop {
                match look(Path::new("/proc"), pid) {
                    Look::Quiet(p) => return Some(p),
                    Look::Unknown => panic!("this /proc lists no children"),
                    Look::Busy if Instant::now() > end => return None,
                    Look::Busy => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        };
        // In a process group of its own, so that the sleep goes too.
        let mut sleeper = std::process::Command::new("sh")
            .args(["-c", "sleep 30 & wait"])
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = sleeper.id() as i32;
        let seen = until_quiet(pid);
        let _ = nix::sys::signal::killpg(Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        let _ = sleeper.wait();
        let seen = seen.expect("sh waiting for sleep never looked quiet");
        assert_eq!(seen.len(), 2, "sh and its sleep: {seen:?}");
        assert!(seen.contains(&pid), "{seen:?}");
        let mut busy = std::process::Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .spawn()
            .unwrap();
        let mut looks = Vec::new();
        for _ in 0..20 {
            looks.push(look(Path::new("/proc"), busy.id() as i32));
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = busy.kill();
        let _ = busy.wait();
        assert!(looks.iter().all(|l| *l == Look::Busy), "{looks:?}");
    }

    #[test]
    fn tail_keeps_the_last_non_empty_lines() {
        let t = tail_lines(b"one\r\ntwo\n\nthree \x1b[2Jcleared\n", 2);
        assert_eq!(t, vec!["two".to_owned(), "three \x1b[2Jcleared".to_owned()]);
        assert!(tail_lines(b"", 5).is_empty());
    }
}
