//! The console of a detached container (`davit start -d`, then `davit
//! console NAME`), as `lxc-console`: the monitor holds the master of the
//! pseudo-terminal init runs on (from the container's own devpts, bound on
//! `/dev/console`), writes everything the container prints to a
//! size-capped `console.log` in the state directory, keeps the last
//! [`REPLAY`] bytes to show a client that attaches later, and serves one
//! client at a time on `console.sock` (0600, in the 0700 state directory,
//! and only for a peer of the monitor's own uid or root).
//!
//! With `ttys = N` in its config the monitor holds `/dev/tty1..N` too,
//! pseudo-terminals of the same devpts (not logged).
//!
//! A client sends frames (`kind`, a little-endian `u16` length, the
//! payload): first [`FRAME_SELECT`] (which terminal), then [`FRAME_INPUT`]
//! bytes for it and [`FRAME_WINSIZE`] (rows, columns as `u16`). The
//! monitor sends raw output. A new client of a terminal replaces the one
//! attached to it before.
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

pub use crate::state::{LOG, OLD_LOG, SOCKET};

/// Bytes [`LOG`] may reach before it becomes [`OLD_LOG`] and a new one starts.
pub const LOG_CAP: u64 = 1 << 20;
/// Bytes of recent output a client sees when it attaches.
pub const REPLAY: usize = 64 << 10;
/// A client frame with input for the container's terminal.
pub const FRAME_INPUT: u8 = 0;
/// A client frame with the window size: rows, then columns (`u16` each).
pub const FRAME_WINSIZE: u8 = 1;
/// The client's first frame: the terminal it wants (one byte: 0 for the
/// console, N for `/dev/ttyN`). The replay follows it.
pub const FRAME_SELECT: u8 = 2;

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
    store
        .peek()?
        .filter(|s| s.status != Status::Stopped && s.is_alive())
        .ok_or_else(|| Error::NotRunning { name: name.into() })?;
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

/// One terminal the monitor holds: the console (index 0, logged) or
/// `/dev/ttyN`.
struct Pty {
    master: File,
    /// A slave held here too: without one, the master reads EIO and polls
    /// as hung up whenever the container has closed its side.
    _peer: Option<OwnedFd>,
    recent: VecDeque<u8>,
}

/// A connected client, and the terminal it selected.
struct Client {
    stream: UnixStream,
    tty: Option<usize>,
    pending: Vec<u8>,
}

/// Serves the terminals of init: `ptys[0]` is the master of its console,
/// `ptys[N]` that of `/dev/ttyN`. Runs until `init_exited` reports true
/// (checked when `pidfd` is readable, or every 250 ms without one); then
/// the rest of the console's output goes to the log and the socket is
/// removed. Nothing here is fatal: the container runs on.
pub fn serve(
    server: Server,
    ptys: Vec<OwnedFd>,
    pidfd: Option<BorrowedFd<'_>>,
    init_exited: &mut dyn FnMut() -> bool,
) {
    let mut ptys: Vec<Pty> = ptys
        .into_iter()
        .map(|m| {
            let peer = rustix::pty::ioctl_tiocgptpeer(
                &m,
                rustix::pty::OpenptFlags::RDWR
                    | rustix::pty::OpenptFlags::NOCTTY
                    | rustix::pty::OpenptFlags::CLOEXEC,
            )
            .ok();
            let _ = nix::fcntl::fcntl(
                m.as_raw_fd(),
                nix::fcntl::FcntlArg::F_SETFL(
                    nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_RDWR,
                ),
            );
            Pty {
                master: File::from(m),
                _peer: peer,
                recent: VecDeque::with_capacity(REPLAY),
            }
        })
        .collect();
    let Server {
        listener,
        sock,
        mut log,
    } = server;
    let mut clients: Vec<Client> = Vec::new();
    let me = nix::unistd::geteuid().as_raw();
    let mut buf = vec![0u8; 16 << 10];
    let output =
        |i: usize, data: &[u8], pty: &mut Pty, log: &mut Log, clients: &mut Vec<Client>| {
            if i == 0 {
                log.write(data);
            }
            pty.recent.extend(data);
            let extra = pty.recent.len().saturating_sub(REPLAY);
            pty.recent.drain(..extra);
            clients.retain_mut(|c| c.tty != Some(i) || c.stream.write_all(data).is_ok());
        };
    loop {
        let mut fds: Vec<PollFd<'_>> = ptys
            .iter()
            .map(|p| PollFd::new(p.master.as_fd(), PollFlags::POLLIN))
            .collect();
        fds.push(PollFd::new(listener.as_fd(), PollFlags::POLLIN));
        if let Some(p) = pidfd {
            fds.push(PollFd::new(p, PollFlags::POLLIN));
        }
        let first_client = fds.len();
        for c in &clients {
            fds.push(PollFd::new(c.stream.as_fd(), PollFlags::POLLIN));
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
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        let n = ptys.len();
        for i in 0..n {
            if !ready[i] {
                continue;
            }
            match ptys[i].master.read(&mut buf) {
                Ok(k) if k > 0 => output(i, &buf[..k], &mut ptys[i], &mut log, &mut clients),
                Ok(_) => {}
                Err(e) if e.kind() == IoKind::WouldBlock || e.kind() == IoKind::Interrupted => {}
                // Hung up: no point polling it again at once.
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
        let p_ready = pidfd.is_none() || ready[n + 1];
        // Clients first (their indices in `ready`), then a newcomer.
        let mut drop_at = Vec::new();
        let mut selected = Vec::new();
        for (ci, c) in clients.iter_mut().enumerate() {
            if !ready[first_client + ci] {
                continue;
            }
            let mut gone = false;
            match c.stream.read(&mut buf) {
                Ok(0) => gone = true,
                Ok(k) => c.pending.extend_from_slice(&buf[..k]),
                Err(e) if e.kind() == IoKind::WouldBlock || e.kind() == IoKind::Interrupted => {}
                Err(_) => gone = true,
            }
            for (kind, payload) in take_frames(&mut c.pending) {
                match (kind, c.tty) {
                    (FRAME_SELECT, None) if payload.len() == 1 && (payload[0] as usize) < n => {
                        let t = payload[0] as usize;
                        let (a, b) = ptys[t].recent.as_slices();
                        if c.stream
                            .write_all(a)
                            .and_then(|()| c.stream.write_all(b))
                            .is_err()
                        {
                            gone = true;
                            break;
                        }
                        c.tty = Some(t);
                        selected.push((ci, t));
                    }
                    (FRAME_INPUT, Some(t)) => {
                        // A container not reading its terminal drops input
                        // rather than stalling the monitor.
                        let _ = ptys[t].master.write(&payload);
                    }
                    (FRAME_WINSIZE, Some(t)) if payload.len() == 4 => {
                        let ws = rustix::termios::Winsize {
                            ws_row: u16::from_le_bytes([payload[0], payload[1]]),
                            ws_col: u16::from_le_bytes([payload[2], payload[3]]),
                            ws_xpixel: 0,
                            ws_ypixel: 0,
                        };
                        let _ = rustix::termios::tcsetwinsize(&ptys[t].master, ws);
                    }
                    // Anything else (no terminal chosen, one that is not
                    // there, an unknown frame) ends the session.
                    _ => {
                        gone = true;
                        break;
                    }
                }
            }
            if gone || c.pending.len() > 1 << 20 {
                drop_at.push(ci);
            }
        }
        // The newest client of a terminal takes it over.
        for (ci, c) in clients.iter().enumerate() {
            if selected
                .iter()
                .any(|&(sci, t)| sci != ci && c.tty == Some(t))
            {
                drop_at.push(ci);
            }
        }
        drop_at.sort_unstable();
        drop_at.dedup();
        for ci in drop_at.into_iter().rev() {
            clients.remove(ci);
        }
        if ready[n] {
            if let Ok((c, _)) = listener.accept() {
                let allowed = rustix::net::sockopt::socket_peercred(&c)
                    .is_ok_and(|cred| cred.uid.as_raw() == me || cred.uid.is_root());
                // At most a few waiting to choose a terminal.
                if allowed && clients.iter().filter(|c| c.tty.is_none()).count() < 4 {
                    let _ = c.set_write_timeout(Some(Duration::from_secs(2)));
                    clients.push(Client {
                        stream: c,
                        tty: None,
                        pending: Vec::new(),
                    });
                }
            }
        }
        if p_ready && init_exited() {
            break;
        }
    }
    // What init printed last on its console.
    let (first, _) = ptys.split_at_mut(1);
    if let Some(console) = first.first_mut() {
        while let Ok(k) = console.master.read(&mut buf) {
            if k == 0 {
                break;
            }
            output(0, &buf[..k], console, &mut log, &mut clients);
        }
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
