//! The shared network files: the exclusive `flock` each is changed under
//! (the lease tables, the NAT table, the veth quota, the L2 table), and
//! the one way they are rewritten (a temporary file renamed over them).
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

/// Replaces `path` with `body`, all or nothing: written to `tmp` (made
/// anew, 0644, never through a symlink; fsynced when `durable`), then
/// renamed over `path`. 0644 because dnsmasq rereads its files as nobody.
///
/// # Errors
/// [`Error::Write`] naming the file.
pub(crate) fn replace(path: &Path, tmp: &Path, body: &[u8], durable: bool) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let werr = |source| Error::Write {
        path: tmp.to_owned(),
        source,
    };
    let _ = std::fs::remove_file(tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW)
        .open(tmp)
        .map_err(werr)?;
    f.write_all(body).map_err(werr)?;
    if durable {
        f.sync_all().map_err(werr)?;
    }
    let _ = f.set_permissions(std::fs::Permissions::from_mode(0o644));
    drop(f);
    std::fs::rename(tmp, path).map_err(|source| Error::Write {
        path: path.to_owned(),
        source,
    })
}
