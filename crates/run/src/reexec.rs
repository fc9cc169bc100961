//! How davit's binaries re-execute: the argument that selects the monitor,
//! the sealed copy every process a container can reach runs from
//! (CVE-2019-5736), and exit statuses as a shell reports them. A leaf
//! module: the monitor runs attach's child (`attach::child_main`), so
//! attach takes these from here rather than from the monitor.
#![forbid(unsafe_code)]

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
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

/// How davit seals a copy of a binary: the seals `ensure_sealed` checks
/// for (no write, grow, shrink or further sealing), executable.
fn seal_options() -> pentacle::SealOptions<'static> {
    pentacle::SealOptions::new().executable(true)
}

/// Whether `file` is a memfd carrying every seal of [`seal_options`].
pub(crate) fn is_sealed(file: &File) -> bool {
    seal_options().is_sealed(file)
}

/// A sealed memfd copy of `exe`, as [`ensure_sealed`] makes, duplicated to
/// descriptor 64 or above (clear of the low numbers a spawn passes
/// descriptors on); `None` if it cannot be made.
pub(crate) fn sealed_copy_of(exe: &Path) -> Option<OwnedFd> {
    let mut f = File::open(exe).ok()?;
    let copy = seal_options().copy_and_seal(&mut f).ok()?;
    crate::sys::dup_at_least(copy.as_fd(), 64).ok()
}
