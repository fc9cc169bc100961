//! The exclusive `flock` every shared network file is changed under (the
//! lease tables, the NAT table, the veth quota, the L2 table).
#![forbid(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nix::fcntl::{Flock, FlockArg};

use crate::error::{Error, Result};

/// Opens (making it 0600, never through a symlink) and locks `path`,
/// waiting for another holder.
///
/// # Errors
/// [`Error::Write`] when the file cannot be opened, an `flock`
/// [`Error::Syscall`] otherwise.
pub(crate) fn exclusive(path: &Path) -> Result<Flock<File>> {
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|source| Error::Write {
            path: path.to_owned(),
            source,
        })?;
    Flock::lock(f, FlockArg::LockExclusive)
        .map_err(|(_, e)| Error::sys(format!("flock({path:?}, LOCK_EX)"), e))
}
