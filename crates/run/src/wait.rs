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
