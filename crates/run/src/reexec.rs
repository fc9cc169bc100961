//! How davit's binaries re-execute: the argument that selects the monitor,
//! the sealed copy every process a container can reach runs from
//! (CVE-2019-5736), and exit statuses as a shell reports them. A leaf
//! module: the monitor runs attach's child (`attach::child_main`), so
//! attach takes these from here rather than from the monitor.
#![forbid(unsafe_code)]

use std::time::Duration;

use nix::sys::wait::WaitStatus;

use crate::error::{Error, Result};

/// The first argument that selects the monitor in a davit binary.
pub const MONITOR_ARG: &str = "__run-monitor";

/// Make sure this process runs from a sealed anonymous copy of its binary
/// (`pentacle`), re-executing itself with the same arguments if not. Call
/// first thing in `main` of any davit process that a container could reach
/// through `/proc/PID/exe` (the monitor, attach).
///
/// # Errors
/// [`Error::Spawn`] if the copy or the exec fails.
pub fn ensure_sealed() -> Result<()> {
    // Sealing against writes fails with EBUSY while pages of the fresh
    // copy are still pinned (the kernel waits a moment, then gives up);
    // on a loaded machine that happened about once per full test run. A
    // new copy has no such pins yet: try again.
    let mut tries = 0;
    loop {
        match pentacle::ensure_sealed() {
            Ok(()) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && tries < 4 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(20 << tries));
            }
            Err(source) => {
                return Err(Error::Spawn {
                    program: "/proc/self/exe (sealed re-exec)".into(),
                    source,
                })
            }
        }
    }
}

/// Exit status as a shell reports it: the code, or 128 + signal.
pub fn exit_code(ws: WaitStatus) -> Option<i32> {
    match ws {
        WaitStatus::Exited(_, c) => Some(c),
        WaitStatus::Signaled(_, s, _) => Some(128 + s as i32),
        _ => None,
    }
}
