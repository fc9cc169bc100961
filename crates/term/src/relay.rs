//! The caller's end of a container's standard descriptors (docs/SECURITY.md,
//! "terminals"). No container process is ever given a descriptor of the
//! caller's terminal: on a terminal the container has a pseudo-terminal of
//! its own, whose master is relayed here; otherwise each standard
//! descriptor that is a terminal is replaced by a pipe relayed here, and the
//! rest (files, pipes) are passed as they are.

use std::io::{IsTerminal, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use nix::sys::signal::{SigSet, Signal};

/// How the container's standard descriptors are connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Standard input and output are terminals: a pty of the container's own.
    Pty,
    /// Some standard descriptor is a terminal: pipes for those.
    Pipes,
    /// None is: the descriptors are passed as they are.
    Plain,
}

/// The mode for this process's standard descriptors.
pub fn mode() -> Mode {
    let (i, o, e) = (
        std::io::stdin().is_terminal(),
        std::io::stdout().is_terminal(),
        std::io::stderr().is_terminal(),
    );
    if i && o {
        Mode::Pty
    } else if i || o || e {
        Mode::Pipes
    } else {
        Mode::Plain
    }
}

/// The signal the pty relay handles itself; callers block it in every
/// thread they start before [`pty`] (see [`crate::signals::block`]).
pub(crate) fn winch() -> SigSet {
    let mut s = SigSet::empty();
    s.add(Signal::SIGWINCH);
    s
}

/// Pipes made by [`pipes`], not relayed yet.
pub struct Pending {
    /// Our ends: the write end for standard input, the read ends for
    /// output and error; `None` where the descriptor is passed as it is.
    ours: [Option<OwnedFd>; 3],
}

/// Descriptors for the container (pipes in place of terminals, copies of
/// the others) and our ends of the pipes, to relay once it runs.
pub fn pipes() -> std::io::Result<([OwnedFd; 3], Pending)> {
    let mut theirs = Vec::with_capacity(3);
    let mut ours = [None, None, None];
    for (n, slot) in ours.iter_mut().enumerate() {
        let fd = dup_std(n)?;
        if !nix::unistd::isatty(fd.as_raw_fd()).unwrap_or(false) {
            theirs.push(fd);
            continue;
        }
        drop(fd);
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        if n == 0 {
            theirs.push(r);
            *slot = Some(w);
        } else {
            theirs.push(w);
            *slot = Some(r);
        }
    }
    let theirs: [OwnedFd; 3] = theirs
        .try_into()
        .map_err(|_| std::io::Error::other("three standard descriptors"))?;
    Ok((theirs, Pending { ours }))
}

/// A close-on-exec copy of standard descriptor `n`.
fn dup_std(n: usize) -> std::io::Result<OwnedFd> {
    match n {
        0 => std::io::stdin().as_fd().try_clone_to_owned(),
        1 => std::io::stdout().as_fd().try_clone_to_owned(),
        _ => std::io::stderr().as_fd().try_clone_to_owned(),
    }
}

/// A running relay: output threads and the terminal mode to restore.
pub struct Relay {
    raw: Option<RawMode>,
    done: Vec<mpsc::Receiver<()>>,
    /// Milliseconds since `start` of the last output relayed.
    last: Arc<AtomicU64>,
    start: Instant,
}

impl Pending {
    /// Relay the pipes: our standard input into the container's, its
    /// output and error out to ours.
    pub fn start(self) -> Relay {
        let mut relay = Relay::new(None);
        let [i, o, e] = self.ours;
        if let Some(w) = i {
            std::thread::spawn(move || {
                // Ends with our input or when the container closes its end;
                // dropping the pipe gives it end of file.
                let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::fs::File::from(w));
            });
        }
        if let Some(r) = o {
            relay.output(std::fs::File::from(r), || Box::new(std::io::stdout()));
        }
        if let Some(r) = e {
            relay.output(std::fs::File::from(r), || Box::new(std::io::stderr()));
        }
        relay
    }
}

/// Relay a pseudo-terminal's `master`: our terminal in raw mode, keys in,
/// output out, and window size changes passed on. The caller has
/// [`winch`] blocked in every thread it started.
pub fn pty(master: OwnedFd) -> Relay {
    let stdin = std::io::stdin();
    let _ = winch().thread_block();
    if let Ok(ws) = rustix::termios::tcgetwinsize(&stdin) {
        let _ = rustix::termios::tcsetwinsize(&master, ws);
    }
    let mut relay = Relay::new(Some(RawMode::enter()));
    let m = std::fs::File::from(master);
    if let Ok(resize) = m.try_clone() {
        std::thread::spawn(move || loop {
            if winch().wait() == Ok(Signal::SIGWINCH) {
                if let Ok(ws) = rustix::termios::tcgetwinsize(std::io::stdin()) {
                    let _ = rustix::termios::tcsetwinsize(&resize, ws);
                }
            }
        });
    }
    if let Ok(mut keys) = m.try_clone() {
        // Only what is typed here goes in: the container's own terminal
        // cannot push input back to ours, however long output stalls.
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut std::io::stdin().lock(), &mut keys);
        });
    }
    // EIO once every holder of the container's side has closed it.
    relay.output(m, || Box::new(std::io::stdout()));
    relay
}

impl Relay {
    fn new(raw: Option<RawMode>) -> Relay {
        Relay {
            raw,
            done: Vec::new(),
            last: Arc::new(AtomicU64::new(0)),
            start: Instant::now(),
        }
    }

    fn output(
        &mut self,
        mut from: std::fs::File,
        to: impl FnOnce() -> Box<dyn Write + Send> + Send + 'static,
    ) {
        let (tx, rx) = mpsc::channel();
        let (last, start) = (self.last.clone(), self.start);
        std::thread::spawn(move || {
            let mut to = to();
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match from.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        last.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
                        if to.write_all(&buf[..n]).and_then(|_| to.flush()).is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = tx.send(());
        });
        self.done.push(rx);
    }

    /// After the container's command has exited: wait until its output is
    /// all relayed (end of file), or, if a process it left behind keeps the
    /// terminal or a pipe open, until output has been quiet for `quiet`.
    /// Restores our terminal.
    pub fn finish(mut self, quiet: Duration) {
        let cap = Instant::now() + Duration::from_secs(10);
        let since = self.start.elapsed().as_millis() as u64;
        for rx in std::mem::take(&mut self.done) {
            loop {
                match rx.recv_timeout(Duration::from_millis(50)) {
                    Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                }
                let last = self.last.load(Ordering::Relaxed).max(since);
                let idle = (self.start.elapsed().as_millis() as u64).saturating_sub(last);
                if Duration::from_millis(idle) >= quiet || Instant::now() >= cap {
                    break;
                }
            }
        }
        drop(self.raw.take());
    }
}

/// The host terminal in raw mode while a container owns it; restored on drop.
pub struct RawMode(Option<nix::sys::termios::Termios>);

impl RawMode {
    /// Puts standard input's terminal in raw mode (`cfmakeraw`) and keeps
    /// its settings to restore; does nothing if it is not a terminal.
    pub fn enter() -> RawMode {
        use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
        let stdin = std::io::stdin();
        let saved = tcgetattr(&stdin).ok();
        if let Some(t) = &saved {
            let mut raw = t.clone();
            cfmakeraw(&mut raw);
            let _ = tcsetattr(&stdin, SetArg::TCSANOW, &raw);
        }
        RawMode(saved)
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(t) = &self.0 {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin(),
                nix::sys::termios::SetArg::TCSANOW,
                t,
            );
        }
    }
}
