//! How davit's binaries re-execute: the argument that selects the monitor,
//! the sealed copy every process a container can reach runs from
//! (CVE-2019-5736), and exit statuses as a shell reports them. A leaf
//! module: the monitor runs attach's child (`attach::child_main`), so
//! attach takes these from here rather than from the monitor.
#![forbid(unsafe_code)]

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;

use crate::error::{Error, Result};
use crate::state::{BinaryId, State, StateStore};
use crate::sys;

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

/// The sealed binary of running monitor `name` (state in `RUNTIME/NAME`)
/// when its state passes `want`: opened through `/proc/PID/exe` while a
/// pidfd proves the pid is still that monitor's, and only if the file is
/// the caller's own and carries every seal. The state directory must be
/// trusted (the caller's, not writable by others).
pub(crate) fn monitor_exe(
    runtime: &Path,
    name: &str,
    want: impl FnOnce(&State) -> bool,
) -> Option<File> {
    let store = StateStore::new(runtime, name);
    store.check_trusted().ok()?;
    let st = store.peek().ok()??;
    if !want(&st) {
        return None;
    }
    let m = st.monitor?;
    let pidfd = sys::pidfd_open(Pid::from_raw(m.pid)).ok()?;
    if !m.is_alive() {
        return None;
    }
    let exe = File::open(format!("/proc/{}/exe", m.pid)).ok()?;
    // Readable now means the monitor exited: the pid may name another.
    if sys::poll_readable(pidfd.as_fd(), 0).unwrap_or(true) {
        return None;
    }
    let me = nix::unistd::geteuid().as_raw();
    (exe.metadata().ok()?.uid() == me && is_sealed(&exe)).then_some(exe)
}

/// How many state directories a start looks at for a monitor to share a
/// binary with: the first running one of the same build is enough.
const SHARE_SCAN: usize = 64;

/// The sealed binary a new monitor of `exe` runs from, duplicated to
/// descriptor 64 or above (clear of the low numbers a spawn passes
/// descriptors on), with the identity of the file it is a copy of.
///
/// That is a running monitor's own sealed copy when one in `runtime` (the
/// caller's, see [`monitor_exe`]) was made from this very file, unchanged
/// since (same [`BinaryId`]): monitors of one build then share their text
/// pages and a start copies nothing. Otherwise a new sealed copy, as
/// [`ensure_sealed`] makes. `None` if neither can be had.
pub(crate) fn monitor_binary(runtime: &Path, exe: &Path) -> Option<(OwnedFd, BinaryId)> {
    let mut f = File::open(exe).ok()?;
    let id = BinaryId::of(&f.metadata().ok()?);
    let shared = std::fs::read_dir(runtime).ok().and_then(|dir| {
        dir.flatten().take(SHARE_SCAN).find_map(|e| {
            let name = e.file_name();
            monitor_exe(runtime, name.to_str()?, |st| st.binary == Some(id))
        })
    });
    let file = match shared {
        Some(file) => file,
        None => seal_options().copy_and_seal(&mut f).ok()?,
    };
    Some((crate::sys::dup_at_least(file.as_fd(), 64).ok()?, id))
}
