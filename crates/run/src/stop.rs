//! `stop` (security.md (a3)): halt signal, wait, SIGKILL, and leave no
//! process, cgroup or state behind.
#![forbid(unsafe_code)]

use std::os::fd::AsFd;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::cgroup::{Cgroup, Layout};
use crate::error::{Error, Result};
use crate::monitor::recover_locked;
use crate::state::{ProcessRef, StateStore, Status};
use crate::sys;

/// `SIGRTMIN+3` as glibc numbers it (the kernel's 34 + 3): systemd's halt.
pub const SIGRTMIN_PLUS_3: i32 = 37;

/// How to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StopOptions {
    /// How long to wait after the halt signal; `None` waits forever.
    pub timeout: Option<Duration>,
    /// Kill at once (`-k`).
    pub kill: bool,
    /// Override the halt signal.
    pub halt_signal: Option<i32>,
}

impl Default for StopOptions {
    fn default() -> Self {
        StopOptions {
            timeout: Some(Duration::from_secs(60)),
            kill: false,
            halt_signal: None,
        }
    }
}

/// How the container went down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopOutcome {
    /// Init exited after the halt signal.
    Halted,
    /// Init was killed (timeout, or `-k`).
    Killed,
    /// Nothing was running, but a dead monitor's leftovers were cleaned.
    Recovered,
}

/// The halt signal for `pid`: `SIGRTMIN+3` when init is systemd (its exe
/// is named systemd, or it catches `SIGRTMIN+3`), else `SIGPWR`.
pub fn halt_signal(pid: i32) -> i32 {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
    if exe
        .as_ref()
        .and_then(|p| p.file_name())
        .is_some_and(|n| n.to_string_lossy().contains("systemd"))
    {
        return SIGRTMIN_PLUS_3;
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let busybox = exe
        .as_ref()
        .and_then(|p| p.file_name())
        .is_some_and(|n| n == "busybox");
    pick_halt_signal(&status, busybox)
}

/// The decision behind [`halt_signal`], from `/proc/PID/status` text:
/// systemd's `SIGRTMIN+3`, else `SIGPWR` (sysvinit, LXC's default), except
/// for busybox init, which ignores `SIGPWR` and powers off on `SIGUSR2`
/// (LXC's busybox template sets `lxc.signal.halt` for the same reason).
pub fn pick_halt_signal(status: &str, busybox: bool) -> i32 {
    if catches(status, SIGRTMIN_PLUS_3) {
        SIGRTMIN_PLUS_3
    } else if busybox
        && !catches(status, Signal::SIGPWR as i32)
        && catches(status, Signal::SIGUSR2 as i32)
    {
        Signal::SIGUSR2 as i32
    } else {
        Signal::SIGPWR as i32
    }
}

/// Whether the `SigCgt` mask in `/proc/PID/status` text includes `sig`.
pub fn catches(status: &str, sig: i32) -> bool {
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
        .is_some_and(|mask| (1..=64).contains(&sig) && mask & (1u64 << (sig - 1)) != 0)
}

fn wait_gone(p: &ProcessRef, fd: Option<&std::os::fd::OwnedFd>, timeout: Option<Duration>) -> bool {
    if let Some(fd) = fd {
        let ms = timeout
            .map(|t| t.as_millis().min(i32::MAX as u128) as i32)
            .unwrap_or(-1);
        if let Ok(true) = sys::poll_readable(fd.as_fd(), ms) {
            return true;
        }
        return !p.is_alive();
    }
    let deadline = timeout.map(|t| Instant::now() + t);
    while p.is_alive() {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

/// Stop container `name`: send the halt signal to init through a pidfd,
/// wait up to the timeout, then SIGKILL; wait for the monitor to tear the
/// cgroup down (or do it if the monitor is gone); remove the state.
///
/// # Errors
/// [`Error::NotRunning`] when nothing runs (the CLI exits 2) and, if a
/// dead monitor left leftovers, only after cleaning them.
pub fn stop(runtime: &Path, name: &str, opts: &StopOptions) -> Result<StopOutcome> {
    let store = StateStore::new(runtime, name);
    if store.peek()?.is_none() {
        return Err(Error::NotRunning { name: name.into() });
    }
    let layout = Layout::detect()?;
    let lock = store.lock()?;
    let mut st = lock.load()?;
    if !st.status.can_stop() {
        let _ = crate::net::release(lock.store().dir(), name, None);
        lock.remove()?;
        return Err(Error::NotRunning { name: name.into() });
    }
    if st.is_stale() {
        // Network released by recover_locked.
        recover_locked(&lock, &mut st, &layout)?;
        lock.remove()?;
        return Ok(StopOutcome::Recovered);
    }
    let init = st.init;
    let monitor = st.monitor;
    st.status = Status::Stopping;
    lock.save(&st)?;
    // The monitor needs the lock to record the exit.
    drop(lock);
    // A frozen init takes no signal: thaw it first (as lxc-stop does).
    let cg = crate::cgroup::Cgroup::from_paths(&layout, &st.cgroup_paths);
    if cg.frozen() == Some(true) {
        let _ = cg.set_frozen(false, Duration::from_secs(2));
    }

    let mut outcome = StopOutcome::Halted;
    if let Some(init) = init.filter(|p| p.is_alive()) {
        let fd = sys::pidfd_open(Pid::from_raw(init.pid)).ok();
        // The pidfd is taken; check it still names our init, not a recycled pid.
        if init.is_alive() {
            let send = |sig: i32| match &fd {
                Some(fd) => sys::pidfd_send_signal(fd.as_fd(), sig),
                None => nix::sys::signal::kill(
                    Pid::from_raw(init.pid),
                    Signal::try_from(sig).unwrap_or(Signal::SIGKILL),
                ),
            };
            let mut gone = false;
            if !opts.kill {
                let sig = opts.halt_signal.unwrap_or_else(|| halt_signal(init.pid));
                let _ = send(sig);
                gone = wait_gone(&init, fd.as_ref(), opts.timeout);
            }
            if !gone {
                outcome = StopOutcome::Killed;
                let _ = send(Signal::SIGKILL as i32);
                if !wait_gone(&init, fd.as_ref(), Some(Duration::from_secs(10))) {
                    return Err(Error::Timeout {
                        what: format!("init of {name} to die"),
                        secs: 10.0,
                    });
                }
            }
        }
    }
    // Let the monitor reap init and remove the cgroup.
    if let Some(m) = monitor.filter(|m| m.is_alive()) {
        let fd = sys::pidfd_open(Pid::from_raw(m.pid)).ok();
        if !wait_gone(&m, fd.as_ref(), Some(Duration::from_secs(15))) {
            return Err(Error::Timeout {
                what: format!("the monitor of {name} to finish"),
                secs: 15.0,
            });
        }
    }
    let lock = store.lock()?;
    let mut st = lock.load()?;
    if !st.cgroup_paths.is_empty() {
        let cg = Cgroup::from_paths(&layout, &st.cgroup_paths).handed_to(st.cgroup_owner);
        cg.destroy(Duration::from_secs(10))?;
        st.cgroup_paths.clear();
    }
    // net: normally the monitor released it; this covers a dead monitor.
    let _ = crate::net::release(lock.store().dir(), name, None);
    lock.remove()?;
    Ok(outcome)
}

#[cfg(test)]
mod halt_tests {
    use super::*;

    #[test]
    fn busybox_init_gets_sigusr2_others_sigpwr() {
        // busybox init 1.36 catches HUP INT QUIT USR1 USR2 TERM (mask 0x4a0f... trimmed to these).
        let mask = (1u64 << 0) | (1 << 1) | (1 << 2) | (1 << 9) | (1 << 11) | (1 << 14);
        let status = format!("Name:\tinit\nSigCgt:\t{mask:016x}\n");
        assert_eq!(pick_halt_signal(&status, true), Signal::SIGUSR2 as i32);
        assert_eq!(pick_halt_signal(&status, false), Signal::SIGPWR as i32);
        let sysv = format!("SigCgt:\t{:016x}\n", mask | (1 << 29));
        assert_eq!(pick_halt_signal(&sysv, true), Signal::SIGPWR as i32);
        let systemd = format!("SigCgt:\t{:016x}\n", 1u64 << (SIGRTMIN_PLUS_3 - 1));
        assert_eq!(pick_halt_signal(&systemd, false), SIGRTMIN_PLUS_3);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sigcgt_mask() {
        // systemd catches SIGRTMIN+3 (bit 36).
        let s = "Name:\tsystemd\nSigCgt:\t00000010000004ec\n";
        assert!(catches(s, SIGRTMIN_PLUS_3));
        let s = "SigCgt:\t0000000000010000\n";
        assert!(!catches(s, SIGRTMIN_PLUS_3));
        assert!(catches(s, 17));
    }

    #[test]
    fn stopping_nothing_is_not_running() {
        let tmp = tempfile::tempdir().unwrap();
        let e = stop(tmp.path(), "nope", &StopOptions::default()).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::NotRunning);
    }
}
