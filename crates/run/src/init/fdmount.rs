//! `mount(2)` onto an opened descriptor (`/proc/self/fd/N`) rather than a
//! path string, each failure reported with the in-container path.
#![forbid(unsafe_code)]

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use nix::mount::{mount, MsFlags};
use nix::sys::statvfs::{fstatvfs, FsFlags};

use super::inroot::open_path;
use crate::error::{Error, Result};

pub(super) fn fd_path(fd: BorrowedFd<'_>) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

fn flag_names(f: MsFlags) -> String {
    let names: Vec<String> = f.iter_names().map(|(n, _)| n.to_owned()).collect();
    if names.is_empty() {
        "0".to_owned()
    } else {
        names.join("|")
    }
}

/// `mount(src, <fd of target>, fstype, flags, data)`, reported with the
/// in-container path.
pub(super) fn mount_on(
    src: Option<&str>,
    target: BorrowedFd<'_>,
    shown: &str,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<()> {
    mount(src, fd_path(target).as_str(), fstype, flags, data).map_err(|e| {
        Error::sys(
            format!(
                "mount({:?}, {:?}, {:?}, {}, {:?})",
                src.unwrap_or("NULL"),
                shown,
                fstype.unwrap_or("NULL"),
                flag_names(flags),
                data.unwrap_or("NULL")
            ),
            e,
        )
    })
}

/// Remount the mount now on top of `path` read-only, keeping its locked
/// flags (a user namespace may add restrictions, never drop them).
pub(super) fn remount_ro(root: BorrowedFd<'_>, path: &str) -> Result<()> {
    let fd = open_path(root, path)?;
    let vfs = fstatvfs(fd.as_fd()).map_err(|e| Error::sys(format!("fstatvfs({path:?})"), e))?;
    let mut flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
    for (f, m) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if vfs.flags().contains(f) {
            flags |= m;
        }
    }
    mount_on(None, fd.as_fd(), &format!("/{path}"), None, flags, None)
}

#[cfg(test)]
mod tests {
    use std::os::fd::{AsFd, AsRawFd};

    use nix::mount::MsFlags;

    use super::{fd_path, flag_names};

    #[test]
    fn flag_names_read_as_strace_shows_them() {
        assert_eq!(flag_names(MsFlags::empty()), "0");
        assert_eq!(flag_names(MsFlags::MS_BIND), "MS_BIND");
        assert_eq!(
            flag_names(MsFlags::MS_NODEV | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID),
            "MS_RDONLY|MS_NOSUID|MS_NODEV"
        );
    }

    #[test]
    fn fd_path_names_the_descriptor_itself() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = std::fs::File::open(tmp.path()).unwrap();
        let p = fd_path(dir.as_fd());
        assert_eq!(p, format!("/proc/self/fd/{}", dir.as_raw_fd()));
        assert_eq!(
            std::fs::canonicalize(&p).unwrap(),
            tmp.path().canonicalize().unwrap()
        );
    }
}
