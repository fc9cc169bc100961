//! Removing a cgroup directory tree: children first, `EBUSY` retried
//! while the kernel finishes with the last task.
#![forbid(unsafe_code)]

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `rmdir` `dir` after every cgroup below it, children first, retrying
/// `EBUSY` (see [`Cgroup::remove`]). Gone already is fine.
///
/// # Errors
/// The directory that would not go, and why.
pub(crate) fn remove_tree(dir: &Path) -> std::result::Result<(), (PathBuf, nix::errno::Errno)> {
    for d in descendants(dir)
        .iter()
        .chain(std::iter::once(&dir.to_path_buf()))
    {
        rmdir_retry(d).map_err(|e| {
            (
                d.clone(),
                nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
            )
        })?;
    }
    Ok(())
}

/// Every cgroup below `dir`, children before their parents. Cgroup
/// filesystems hold no symlinks, and `file_type` does not follow them.
pub(super) fn descendants(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                out.extend(descendants(&e.path()));
                out.push(e.path());
            }
        }
    }
    out
}

fn rmdir_retry(dir: &Path) -> io::Result<()> {
    let mut tries = 0;
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && tries < 20 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(e),
        }
    }
}
