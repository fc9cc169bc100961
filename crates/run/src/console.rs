//! The console of a detached container (`davit start -d`, then `davit
//! console NAME`), as `lxc-console`: the monitor holds the master of the
//! pseudo-terminal init runs on (from the container's own devpts, bound on
//! `/dev/console`), writes everything the container prints to a
//! size-capped `console.log` in the state directory, keeps the last
//! [`REPLAY`] bytes to show a client that attaches later, and serves one
//! client at a time on `console.sock` (0600, in the 0700 state directory,
//! and only for a peer of the monitor's own uid or root).
//!
//! A client sends frames (`kind`, a little-endian `u16` length, the
//! payload): [`FRAME_INPUT`] bytes go to the container's terminal,
//! [`FRAME_WINSIZE`] (rows, columns as `u16`) resizes it. The monitor sends
//! raw output. A new client replaces the one attached before.
#![forbid(unsafe_code)]

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind as IoKind, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::error::{Error, Result};
use crate::state::{StateStore, Status};

/// The socket in the state directory.
pub const SOCKET: &str = "console.sock";
/// The log in the state directory; the one before it is `console.log.1`.
pub const LOG: &str = "console.log";
/// The log before [`LOG`] (the previous boot, or the first part of a long one).
pub const OLD_LOG: &str = "console.log.1";
/// Bytes [`LOG`] may reach before it becomes [`OLD_LOG`] and a new one starts.
pub const LOG_CAP: u64 = 1 << 20;
/// Bytes of recent output a client sees when it attaches.
pub const REPLAY: usize = 64 << 10;
/// A client frame with input for the container's terminal.
pub const FRAME_INPUT: u8 = 0;
/// A client frame with the window size: rows, then columns (`u16` each).
pub const FRAME_WINSIZE: u8 = 1;

/// One frame of `kind` with `payload` (at most 65535 bytes).
pub fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let len = payload.len().min(u16::MAX as usize);
    let mut v = Vec::with_capacity(3 + len);
    v.push(kind);
    v.extend_from_slice(&(len as u16).to_le_bytes());
    v.extend_from_slice(&payload[..len]);
    v
}

/// A [`FRAME_WINSIZE`] frame.
pub fn winsize_frame(rows: u16, cols: u16) -> Vec<u8> {
    let mut p = rows.to_le_bytes().to_vec();
    p.extend_from_slice(&cols.to_le_bytes());
    frame(FRAME_WINSIZE, &p)
}

/// Complete frames at the start of `buf`, removed from it.
fn take_frames(buf: &mut Vec<u8>) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    let mut at = 0;
    while buf.len() - at >= 3 {
        let len = u16::from_le_bytes([buf[at + 1], buf[at + 2]]) as usize;
        if buf.len() - at - 3 < len {
            break;
        }
        out.push((buf[at], buf[at + 3..at + 3 + len].to_vec()));
        at += 3 + len;
    }
    buf.drain(..at);
    out
}

/// Connects to running container `name`'s console.
///
/// # Errors
/// [`Error::NotRunning`]; [`Error::Unsupported`] when it runs without a
/// console to attach to (a foreground start relays its own); [`Error::Read`]
/// when the socket cannot be reached.
pub fn connect(runtime: &Path, name: &str) -> Result<UnixStream> {
    let store = StateStore::new(runtime, name);
    store.check_trusted()?;
    let st = store
        .peek()?
        .filter(|s| s.status != Status::Stopped && s.is_alive())
        .ok_or_else(|| Error::NotRunning { name: name.into() })?;
    let _ = st;
    let path = store.dir().join(SOCKET);
    if !path.exists() {
        return Err(Error::Unsupported {
            what: format!(
                "a console for {name}: it was started in the foreground, whose `davit start` relays its terminal; start it with -d to keep a console"
            ),
        });
    }
    UnixStream::connect(&path).map_err(|source| Error::Read { path, source })
}

/// The console log of `name` (the part before the cap first), for
/// `davit console NAME --log`.
pub fn log_paths(runtime: &Path, name: &str) -> Result<Vec<PathBuf>> {
    let store = StateStore::new(runtime, name);
    store.check_trusted()?;
    Ok([OLD_LOG, LOG]
        .iter()
        .map(|f| store.dir().join(f))
        .filter(|p| p.is_file())
        .collect())
}

/// The log file, size-capped.
struct Log {
    dir: PathBuf,
    file: Option<File>,
    size: u64,
}

impl Log {
    /// A new log for this boot; the last one becomes [`OLD_LOG`].
    fn start(dir: &Path) -> Log {
        let _ = std::fs::rename(dir.join(LOG), dir.join(OLD_LOG));
        let mut l = Log {
            dir: dir.to_owned(),
            file: None,
            size: 0,
        };
        l.open();
        l
    }

    fn open(&mut self) {
        self.file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(self.dir.join(LOG))
            .ok();
        self.size = 0;
    }

    fn write(&mut self, data: &[u8]) {
        if self.size + data.len() as u64 > LOG_CAP {
            let _ = std::fs::rename(self.dir.join(LOG), self.dir.join(OLD_LOG));
            self.open();
        }
        if let Some(f) = &mut self.file {
            if f.write_all(data).is_ok() {
                self.size += data.len() as u64;
            }
        }
    }
}

/// The monitor's side, made before the start is reported, so that `davit
/// console` and `--log` work as soon as `start -d` returns.
pub struct Server {
    listener: UnixListener,
    sock: PathBuf,
    log: Log,
}

impl Server {
    /// Binds `console.sock` (0600) and starts this boot's log in state
    /// directory `dir`.
    ///
    /// # Errors
    /// [`Error::Write`] if the socket cannot be made.
    pub fn bind(dir: &Path) -> Result<Server> {
        let sock = dir.join(SOCKET);
        let _ = std::fs::remove_file(&sock);
        let listener = UnixListener::bind(&sock).map_err(|source| Error::Write {
            path: sock.clone(),
            source,
        })?;
        let _ = std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o600));
        let _ = listener.set_nonblocking(true);
        Ok(Server {
            listener,
            sock,
            log: Log::start(dir),
        })
    }
}

/// Serves the console of init, whose pseudo-terminal master is `master`,
/// until `init_exited` reports true (checked when `pidfd` is readable, or
/// every 250 ms without one). Then the rest of the output goes to the log
/// and the socket is removed. Nothing here is fatal: the container runs on.
pub fn serve(
    server: Server,
    master: OwnedFd,
    pidfd: Option<BorrowedFd<'_>>,
    init_exited: &mut dyn FnMut() -> bool,
) {
    // A slave held here too: without one, the master reads EIO and polls
    // as hung up whenever init has closed its terminal.
    let _peer = rustix::pty::ioctl_tiocgptpeer(
        &master,
        rustix::pty::OpenptFlags::RDWR
            | rustix::pty::OpenptFlags::NOCTTY
            | rustix::pty::OpenptFlags::CLOEXEC,
    )
    .ok();
    let _ = nix::fcntl::fcntl(
        master.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_RDWR),
    );
    let mut master = File::from(master);
    let Server {
        listener,
        sock,
        mut log,
    } = server;
    let mut recent: VecDeque<u8> = VecDeque::with_capacity(REPLAY);
    let mut client: Option<UnixStream> = None;
    let mut pending = Vec::new();
    let me = nix::unistd::geteuid().as_raw();
    let mut buf = vec![0u8; 16 << 10];
    let output =
        |data: &[u8], log: &mut Log, recent: &mut VecDeque<u8>, client: &mut Option<UnixStream>| {
            log.write(data);
            recent.extend(data);
            let extra = recent.len().saturating_sub(REPLAY);
            recent.drain(..extra);
            if let Some(c) = client.as_mut() {
                if c.write_all(data).is_err() {
                    *client = None;
                }
            }
        };
    loop {
        let mut fds = vec![
            PollFd::new(master.as_fd(), PollFlags::POLLIN),
            PollFd::new(listener.as_fd(), PollFlags::POLLIN),
        ];
        if let Some(p) = pidfd {
            fds.push(PollFd::new(p, PollFlags::POLLIN));
        }
        let client_at = fds.len();
        if let Some(c) = &client {
            fds.push(PollFd::new(c.as_fd(), PollFlags::POLLIN));
        }
        let timeout = if pidfd.is_some() {
            PollTimeout::NONE
        } else {
            PollTimeout::from(250u16)
        };
        match poll(&mut fds, timeout) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
        let ready = |i: usize| {
            fds.get(i)
                .and_then(|f| f.revents())
                .is_some_and(|r| !r.is_empty())
        };
        let (m_ready, l_ready, c_ready) = (ready(0), ready(1), ready(client_at));
        let p_ready = pidfd.is_none() || ready(2);
        drop(fds);
        if m_ready {
            match master.read(&mut buf) {
                Ok(n) if n > 0 => output(&buf[..n], &mut log, &mut recent, &mut client),
                Ok(_) => {}
                Err(e) if e.kind() == IoKind::WouldBlock || e.kind() == IoKind::Interrupted => {}
                // Hung up for good: no point polling it again.
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
        if l_ready {
            if let Ok((c, _)) = listener.accept() {
                let allowed = rustix::net::sockopt::socket_peercred(&c)
                    .is_ok_and(|cred| cred.uid.as_raw() == me || cred.uid.is_root());
                if allowed {
                    let _ = c.set_write_timeout(Some(Duration::from_secs(2)));
                    let mut c = c;
                    let (a, b) = recent.as_slices();
                    if c.write_all(a).and_then(|()| c.write_all(b)).is_ok() {
                        // The newcomer takes over.
                        client = Some(c);
                        pending.clear();
                    }
                }
            }
        }
        if c_ready {
            let mut gone = false;
            if let Some(c) = client.as_mut() {
                match c.read(&mut buf) {
                    Ok(0) => gone = true,
                    Ok(n) => pending.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == IoKind::WouldBlock || e.kind() == IoKind::Interrupted => {
                    }
                    Err(_) => gone = true,
                }
            }
            for (kind, payload) in take_frames(&mut pending) {
                match kind {
                    FRAME_INPUT => {
                        // The container not reading its terminal drops input
                        // rather than stalling the monitor.
                        let _ = master.write(&payload);
                    }
                    FRAME_WINSIZE if payload.len() == 4 => {
                        let ws = rustix::termios::Winsize {
                            ws_row: u16::from_le_bytes([payload[0], payload[1]]),
                            ws_col: u16::from_le_bytes([payload[2], payload[3]]),
                            ws_xpixel: 0,
                            ws_ypixel: 0,
                        };
                        let _ = rustix::termios::tcsetwinsize(&master, ws);
                    }
                    _ => gone = true,
                }
            }
            if gone || pending.len() > 1 << 20 {
                client = None;
                pending.clear();
            }
        }
        if p_ready && init_exited() {
            break;
        }
    }
    // What init printed last.
    while let Ok(n) = master.read(&mut buf) {
        if n == 0 {
            break;
        }
        output(&buf[..n], &mut log, &mut recent, &mut client);
    }
    let _ = std::fs::remove_file(&sock);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_come_apart_whole_and_in_order() {
        let mut b = frame(FRAME_INPUT, b"ls\r");
        b.extend(winsize_frame(40, 120));
        b.extend(&frame(FRAME_INPUT, b"partial")[..5]);
        let got = take_frames(&mut b);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0], (FRAME_INPUT, b"ls\r".to_vec()));
        assert_eq!(got[1].0, FRAME_WINSIZE);
        assert_eq!(got[1].1, [40, 0, 120, 0]);
        assert_eq!(b.len(), 5, "the partial frame waits");
    }

    #[test]
    fn the_log_is_capped_and_the_old_part_kept() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join(LOG), "last boot\n").unwrap();
        let mut l = Log::start(t.path());
        assert_eq!(
            std::fs::read_to_string(t.path().join(OLD_LOG)).unwrap(),
            "last boot\n"
        );
        let chunk = vec![b'x'; 300 << 10];
        for _ in 0..4 {
            l.write(&chunk);
        }
        let new = std::fs::metadata(t.path().join(LOG)).unwrap().len();
        let old = std::fs::metadata(t.path().join(OLD_LOG)).unwrap().len();
        assert_eq!(new, 300 << 10);
        assert_eq!(old, 900 << 10);
        assert!(new + old <= 2 * LOG_CAP);
    }
}
