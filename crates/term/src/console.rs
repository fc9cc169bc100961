//! The `davit console` client: the detach keys and the session that
//! relays this terminal to a console socket.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

use nix::sys::signal::Signal;

use crate::relay::{winch, RawMode};

/// `Ctrl-a`, then `q`: detach. `Ctrl-a Ctrl-a` sends one `Ctrl-a`.
const ESCAPE: u8 = 0x01;

/// Splits typed bytes into what goes to the container and whether the
/// escape sequence asked to detach; `armed` carries a trailing `Ctrl-a`
/// to the next read.
pub fn keys(input: &[u8], armed: &mut bool) -> (Vec<u8>, bool) {
    let mut out = Vec::with_capacity(input.len());
    for &b in input {
        if *armed {
            *armed = false;
            match b {
                b'q' | b'Q' => return (out, true),
                ESCAPE => out.push(ESCAPE),
                other => {
                    out.push(ESCAPE);
                    out.push(other);
                }
            }
        } else if b == ESCAPE {
            *armed = true;
        } else {
            out.push(b);
        }
    }
    (out, false)
}

/// How a session's traffic is framed on the socket: the protocol belongs
/// to whoever serves the console (davit-run's monitor), so it is handed in
/// and this crate depends on nothing of davit's.
#[derive(Clone)]
pub struct Framing {
    /// Written first, before anything else (the terminal to select).
    pub select: Vec<u8>,
    /// Frames bytes typed here, for the console's input.
    pub input: fn(&[u8]) -> Vec<u8>,
    /// Frames a window size: rows, then columns.
    pub winsize: fn(u16, u16) -> Vec<u8>,
}

/// How a [`session`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// `Ctrl-a q` was typed, or our input ended.
    Detached,
    /// The other end closed the socket (or stopped reading our keys).
    Closed,
}

/// Relays this process's terminal to a console socket until `Ctrl-a q`
/// ([`keys`]) or until the socket is closed: typed keys go in as
/// `framing.input` frames, output comes out to standard output. With
/// `tty` (standard input and output are a terminal) the terminal is in
/// raw mode for the session, restored before this returns on every path,
/// and its window size goes in as `framing.winsize` frames, first and on
/// each SIGWINCH.
///
/// Call it before any other thread is started: SIGWINCH is blocked in the
/// calling thread, for the thread that waits for it.
///
/// # Errors
///
/// The socket cannot be cloned, or `framing.select` cannot be written.
pub fn session(sock: UnixStream, tty: bool, framing: &Framing) -> std::io::Result<Ended> {
    let _ = winch().thread_block();
    let raw = tty.then(RawMode::enter);
    let mut out_sock = sock.try_clone()?;
    out_sock.write_all(&framing.select)?;
    let Framing { input, winsize, .. } = *framing;
    if tty {
        if let Ok(ws) = rustix::termios::tcgetwinsize(std::io::stdin()) {
            let _ = out_sock.write_all(&winsize(ws.ws_row, ws.ws_col));
        }
        if let Ok(mut resize) = sock.try_clone() {
            std::thread::spawn(move || loop {
                if winch().wait() == Ok(Signal::SIGWINCH) {
                    if let Ok(ws) = rustix::termios::tcgetwinsize(std::io::stdin()) {
                        let _ = resize.write_all(&winsize(ws.ws_row, ws.ws_col));
                    }
                }
            });
        }
    }
    let (tx, rx) = std::sync::mpsc::channel::<bool>();
    let keys_tx = tx.clone();
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = [0u8; 4096];
        let mut armed = false;
        loop {
            let n = match stdin.read(&mut buf) {
                Ok(0) | Err(_) => {
                    let _ = keys_tx.send(true);
                    return;
                }
                Ok(n) => n,
            };
            let (send, detach) = keys(&buf[..n], &mut armed);
            if !send.is_empty() && out_sock.write_all(&input(&send)).is_err() {
                let _ = keys_tx.send(false);
                return;
            }
            if detach {
                let _ = keys_tx.send(true);
                return;
            }
        }
    });
    // Kept to end the output relay on detach, before the caller's message
    // after this returns: the relay and the message share the terminal, and
    // a prompt the container printed in the meantime once landed inside
    // "Detached from …".
    let stop_output = sock.try_clone().ok();
    let mut from = sock;
    let output = std::thread::spawn(move || {
        let mut stdout = std::io::stdout();
        let mut buf = [0u8; 16 << 10];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if stdout
                        .write_all(&buf[..n])
                        .and_then(|()| stdout.flush())
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
        // The monitor closed it: the container stopped, or another
        // console took over.
        let _ = tx.send(false);
    });
    let detached = rx.recv().unwrap_or(false);
    if let Some(s) = stop_output {
        let _ = s.shutdown(std::net::Shutdown::Read);
        let _ = output.join();
    }
    drop(raw);
    Ok(if detached {
        Ended::Detached
    } else {
        Ended::Closed
    })
}

#[cfg(test)]
mod tests {
    use super::keys;

    #[test]
    fn ctrl_a_q_detaches_and_ctrl_a_ctrl_a_sends_one() {
        let mut armed = false;
        assert_eq!(keys(b"ls\r", &mut armed), (b"ls\r".to_vec(), false));
        assert_eq!(keys(b"x\x01", &mut armed), (b"x".to_vec(), false));
        assert!(armed, "a trailing Ctrl-a waits for the next key");
        assert_eq!(keys(b"q", &mut armed), (Vec::new(), true));
        let mut armed = false;
        assert_eq!(
            keys(b"\x01\x01a\x01b", &mut armed),
            (b"\x01a\x01b".to_vec(), false)
        );
        assert_eq!(keys(b"ab\x01qcd", &mut armed), (b"ab".to_vec(), true));
    }

    #[test]
    fn ctrl_a_then_another_key_sends_both_and_capital_q_detaches() {
        let mut armed = false;
        assert_eq!(keys(b"\x01x", &mut armed), (b"\x01x".to_vec(), false));
        assert!(!armed);
        assert_eq!(keys(b"\x01Q", &mut armed), (Vec::new(), true));
        assert!(!armed, "the detach key is consumed");
    }

    #[test]
    fn ctrl_a_ctrl_a_split_across_reads_sends_one() {
        let mut armed = false;
        assert_eq!(keys(b"\x01", &mut armed), (Vec::new(), false));
        assert!(armed);
        assert_eq!(keys(b"\x01", &mut armed), (b"\x01".to_vec(), false));
        assert!(!armed, "the second Ctrl-a is sent, not a new escape");
        assert_eq!(keys(b"q", &mut armed), (b"q".to_vec(), false));
    }

    #[test]
    fn no_input_sends_nothing_and_keeps_the_escape_armed() {
        let mut armed = true;
        assert_eq!(keys(b"", &mut armed), (Vec::new(), false));
        assert!(armed);
    }
}
