//! The last steps before the exec: the capabilities init keeps, and the
//! executable `argv[0]` names inside the container.
#![forbid(unsafe_code)]

use std::ffi::CString;
use std::path::Path;

use nix::errno::Errno;

use super::Plan;
use crate::error::{Error, Result};

/// The capabilities removed from the bounding set, as LXC's default config.
pub const DROPPED_CAPS: [caps::Capability; 5] = [
    caps::Capability::CAP_SYS_MODULE,
    caps::Capability::CAP_SYS_TIME,
    caps::Capability::CAP_MAC_ADMIN,
    caps::Capability::CAP_MAC_OVERRIDE,
    caps::Capability::CAP_SYS_RAWIO,
];

/// Drop the bounding-set capabilities LXC drops and clear inheritable and
/// ambient (CVE-2022-29162).
pub(crate) fn drop_caps() -> Result<()> {
    for c in DROPPED_CAPS {
        match caps::drop(None, caps::CapSet::Bounding, c) {
            Ok(()) => {}
            // An unknown capability on an old kernel is already "dropped".
            Err(_) if !caps::has_cap(None, caps::CapSet::Bounding, c).unwrap_or(true) => {}
            Err(_) => {
                return Err(Error::sys(
                    format!("prctl(PR_CAPBSET_DROP, {c})"),
                    Errno::last(),
                ))
            }
        }
    }
    caps::clear(None, caps::CapSet::Ambient)
        .map_err(|_| Error::sys("prctl(PR_CAP_AMBIENT_CLEAR_ALL)", Errno::last()))?;
    caps::clear(None, caps::CapSet::Inheritable)
        .map_err(|_| Error::sys("capset(inheritable = 0)", Errno::last()))?;
    Ok(())
}

/// Resolve `argv[0]` inside the (pivoted) container through `PATH`.
pub(crate) fn find_exe(plan: &Plan<'_>) -> Result<CString> {
    let arg0 = plan.argv[0].to_bytes();
    let as_path = |p: &Path| {
        CString::new(std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str())).unwrap_or_default()
    };
    if arg0.contains(&b'/') {
        return Ok(plan.argv[0].clone());
    }
    let name = <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(arg0);
    for d in &plan.path_dirs {
        let cand = d.join(name);
        if nix::unistd::access(&cand, nix::unistd::AccessFlags::X_OK).is_ok()
            && std::fs::metadata(&cand)
                .map(|m| m.is_file())
                .unwrap_or(false)
        {
            return Ok(as_path(&cand));
        }
    }
    Err(Error::sys(
        format!("execvp({:?})", String::from_utf8_lossy(arg0)),
        Errno::ENOENT,
    ))
}
