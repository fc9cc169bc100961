//! Signals that are the container's, not ours: blocked before any thread
//! exists, then passed on to its init by one thread.

use nix::sys::signal::{SigSet, Signal};

use crate::relay::Mode;

/// Terminal and termination signals blocked in the calling thread, to be
/// passed on to a process once it runs ([`Forward::to`]).
pub struct Forward(SigSet);

/// Blocks SIGINT, SIGQUIT, SIGTERM and SIGHUP in the calling thread, and
/// SIGWINCH as well for [`Mode::Pty`] (the pty relay waits for it).
///
/// Call it before any thread is started: a thread inherits the mask it is
/// started with, and one started earlier would take these signals itself.
pub fn block(mode: Mode) -> Forward {
    let mut sigs = SigSet::empty();
    for sig in [
        Signal::SIGINT,
        Signal::SIGQUIT,
        Signal::SIGTERM,
        Signal::SIGHUP,
    ] {
        sigs.add(sig);
    }
    let mut blocked = sigs;
    if mode == Mode::Pty {
        blocked.add(Signal::SIGWINCH);
    }
    let _ = blocked.thread_block();
    Forward(sigs)
}

impl Forward {
    /// Starts a thread that passes each signal of the set to `pid` (Ctrl-C,
    /// `kill`, a hang-up), for as long as this process runs.
    pub fn to(self, pid: i32) {
        let sigs = self.0;
        std::thread::spawn(move || loop {
            if let Ok(sig) = sigs.wait() {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The mask after `block(mode)`, in a thread of its own so the test
    /// harness's threads keep theirs.
    fn mask_after(mode: Mode) -> SigSet {
        std::thread::spawn(move || {
            let _ = block(mode);
            SigSet::thread_get_mask().unwrap()
        })
        .join()
        .unwrap()
    }

    #[test]
    fn block_takes_the_termination_signals_and_winch_only_for_a_pty() {
        for mode in [Mode::Pty, Mode::Pipes, Mode::Plain] {
            let m = mask_after(mode);
            for sig in [
                Signal::SIGINT,
                Signal::SIGQUIT,
                Signal::SIGTERM,
                Signal::SIGHUP,
            ] {
                assert!(m.contains(sig), "{mode:?}: {sig} not blocked");
            }
            assert_eq!(m.contains(Signal::SIGWINCH), mode == Mode::Pty, "{mode:?}");
        }
    }

    #[test]
    fn the_forwarded_set_never_holds_winch() {
        // The pty relay's own thread waits for SIGWINCH: were it in the
        // forwarded set too, a resize could go to init instead.
        let f = std::thread::spawn(|| block(Mode::Pty)).join().unwrap();
        assert!(!f.0.contains(Signal::SIGWINCH));
        assert!(f.0.contains(Signal::SIGINT));
    }
}
