//! The kernel's pseudo-filesystems inside: `/proc`, `/sys`, and the masked
//! and read-only paths under them.
#![forbid(unsafe_code)]

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::mount::MsFlags;
use nix::sys::stat::{fstat, makedev, SFlag};

use super::fdmount::{fd_path, mount_on, remount_ro};
use super::inroot::{open_in, open_path, plain_dir};
use crate::error::{Error, Result};

/// `/proc` files hidden behind `/dev/null` and directories behind an empty
/// read-only tmpfs (runc's and LXC's lists).
pub const MASKED_PATHS: [&str; 11] = [
    "proc/acpi",
    "proc/asound",
    "proc/kcore",
    "proc/keys",
    "proc/latency_stats",
    "proc/timer_list",
    "proc/timer_stats",
    "proc/sched_debug",
    "proc/scsi",
    "sys/firmware",
    "sys/devices/virtual/powercap",
];

/// `/proc` paths remounted read-only.
pub const READONLY_PATHS: [&str; 5] = [
    "proc/bus",
    "proc/fs",
    "proc/irq",
    "proc/sys",
    "proc/sysrq-trigger",
];

pub(super) fn mount_proc(root: BorrowedFd<'_>) -> Result<()> {
    let fd = plain_dir(root, "proc")?;
    mount_on(
        Some("proc"),
        fd.as_fd(),
        "/proc",
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None,
    )
}

pub(super) fn mount_sys(root: BorrowedFd<'_>) -> Result<()> {
    let fd = plain_dir(root, "sys")?;
    let flags = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    match mount_on(
        Some("sysfs"),
        fd.as_fd(),
        "/sys",
        Some("sysfs"),
        flags,
        None,
    ) {
        Ok(()) => Ok(()),
        Err(e) if e.errno() == Some(Errno::EPERM) => {
            // No netns of our own: bind the host's /sys read-only instead.
            mount_on(
                Some("/sys"),
                fd.as_fd(),
                "/sys",
                None,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None,
            )?;
            remount_ro(root, "sys")
        }
        Err(e) => Err(e),
    }
}

/// Mask and read-only paths. `/dev/null` is opened `O_PATH` and checked to
/// be char 1:3 before it is bound anywhere (CVE-2025-31133).
pub(super) fn mask_paths(root: BorrowedFd<'_>) -> Result<()> {
    let null = open_path(root, "dev/null")?;
    let st = fstat(null.as_raw_fd()).map_err(|e| Error::sys("fstat(\"/dev/null\")", e))?;
    if st.st_mode & SFlag::S_IFMT.bits() != SFlag::S_IFCHR.bits() || st.st_rdev != makedev(1, 3) {
        return Err(Error::WrongType {
            path: "/dev/null".into(),
            want: "character device 1:3",
        });
    }
    let null_src = fd_path(null.as_fd());
    for p in MASKED_PATHS {
        let t = match open_in(root, p, OFlag::O_PATH | OFlag::O_NOFOLLOW) {
            Ok(t) => t,
            Err(Errno::ENOENT) => continue,
            Err(e) => {
                return Err(Error::sys(
                    format!("openat2(rootfs, {p:?}, O_PATH|O_NOFOLLOW)"),
                    e,
                ))
            }
        };
        let st = fstat(t.as_raw_fd()).map_err(|e| Error::sys(format!("fstat({p:?})"), e))?;
        let shown = format!("/{p}");
        if st.st_mode & SFlag::S_IFMT.bits() == SFlag::S_IFDIR.bits() {
            mount_on(
                Some("tmpfs"),
                t.as_fd(),
                &shown,
                Some("tmpfs"),
                MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                Some("size=0,mode=555"),
            )?;
        } else {
            mount_on(
                Some(null_src.as_str()),
                t.as_fd(),
                &shown,
                None,
                MsFlags::MS_BIND,
                None,
            )?;
        }
    }
    for p in READONLY_PATHS {
        let t = match open_in(root, p, OFlag::O_PATH | OFlag::O_NOFOLLOW) {
            Ok(t) => t,
            Err(Errno::ENOENT) => continue,
            Err(e) => {
                return Err(Error::sys(
                    format!("openat2(rootfs, {p:?}, O_PATH|O_NOFOLLOW)"),
                    e,
                ))
            }
        };
        let src = fd_path(t.as_fd());
        mount_on(
            Some(src.as_str()),
            t.as_fd(),
            &format!("/{p}"),
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
        )?;
        drop(t);
        remount_ro(root, p)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::{Component, Path};

    use super::{MASKED_PATHS, READONLY_PATHS};

    #[test]
    fn masked_and_readonly_paths_are_plain_relative_paths() {
        // They are opened relative to the rootfs descriptor: a leading `/`
        // or a `..` would not name what the list means.
        for p in MASKED_PATHS.iter().chain(READONLY_PATHS.iter()) {
            assert!(
                Path::new(p)
                    .components()
                    .all(|c| matches!(c, Component::Normal(_))),
                "{p}"
            );
            assert!(p.starts_with("proc/") || p.starts_with("sys/"), "{p}");
        }
    }
}
