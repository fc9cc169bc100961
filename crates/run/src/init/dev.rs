//! `/dev` inside: a fresh tmpfs with the basic device nodes (made, or bound
//! from the host in a user namespace), devpts, shm, mqueue, the standard
//! symlinks, and the pty binds on `/dev/console` and `/dev/ttyN`.
#![forbid(unsafe_code)]

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

use nix::fcntl::OFlag;
use nix::mount::MsFlags;
use nix::sys::stat::{fchmodat, makedev, mkdirat, mknodat, FchmodatFlags, Mode, SFlag};

use super::fdmount::{fd_path, mount_on};
use super::inroot::plain_dir;
use crate::error::{Error, Result};
use crate::sys;

const DEVICES: [(&str, u64, u64); 6] = [
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

pub(super) fn build_dev(root: BorrowedFd<'_>, privileged: bool) -> Result<()> {
    let fd = plain_dir(root, "dev")?;
    mount_on(
        Some("tmpfs"),
        fd.as_fd(),
        "/dev",
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("mode=755,size=65536k"),
    )?;
    drop(fd);
    // Reopen: the name now leads onto the fresh tmpfs.
    let dev = plain_dir(root, "dev")?;
    let d = dev.as_raw_fd();
    for (name, major, minor) in DEVICES {
        let shown = format!("/dev/{name}");
        if privileged {
            mknodat(
                Some(d),
                name,
                SFlag::S_IFCHR,
                Mode::from_bits_truncate(0o666),
                makedev(major, minor),
            )
            .map_err(|e| {
                Error::sys(
                    format!("mknodat(dev, {name:?}, S_IFCHR|0666, {major}:{minor})"),
                    e,
                )
            })?;
        } else {
            // mknod is EPERM in a user namespace: bind the host node onto
            // an empty file instead.
            let f = sys::openat2(
                dev.as_fd(),
                Path::new(name),
                (OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW).bits(),
                0o666,
                sys::RESOLVE_BENEATH | sys::RESOLVE_NO_SYMLINKS,
            )
            .map_err(|e| Error::sys(format!("openat2(dev, {name:?}, O_CREAT|O_EXCL)"), e))?;
            drop(f);
            let t = sys::openat2(
                dev.as_fd(),
                Path::new(name),
                (OFlag::O_PATH | OFlag::O_NOFOLLOW).bits(),
                0,
                sys::RESOLVE_BENEATH | sys::RESOLVE_NO_SYMLINKS,
            )
            .map_err(|e| Error::sys(format!("openat2(dev, {name:?}, O_PATH)"), e))?;
            mount_on(
                Some(shown.as_str()),
                t.as_fd(),
                &shown,
                None,
                MsFlags::MS_BIND,
                None,
            )?;
        }
    }
    let mk = |name: &str, mode: u32| -> Result<OwnedFd> {
        mkdirat(Some(d), name, Mode::from_bits_truncate(mode))
            .map_err(|e| Error::sys(format!("mkdirat(dev, {name:?}, {mode:o})"), e))?;
        sys::openat2(
            dev.as_fd(),
            Path::new(name),
            (OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW).bits(),
            0,
            sys::RESOLVE_BENEATH | sys::RESOLVE_NO_SYMLINKS,
        )
        .map_err(|e| Error::sys(format!("openat2(dev, {name:?}, O_PATH)"), e))
    };
    let pts = mk("pts", 0o755)?;
    mount_on(
        Some("devpts"),
        pts.as_fd(),
        "/dev/pts",
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
    )?;
    let shm = mk("shm", 0o1777)?;
    mount_on(
        Some("shm"),
        shm.as_fd(),
        "/dev/shm",
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=1777,size=65536k"),
    )?;
    let mq = mk("mqueue", 0o755)?;
    mount_on(
        Some("mqueue"),
        mq.as_fd(),
        "/dev/mqueue",
        Some("mqueue"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None,
    )?;
    for (link, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        nix::unistd::symlinkat(target, Some(d), link)
            .map_err(|e| Error::sys(format!("symlinkat({target:?}, dev, {link:?})"), e))?;
    }
    fchmodat(
        Some(d),
        ".",
        Mode::from_bits_truncate(0o755),
        FchmodatFlags::FollowSymlink,
    )
    .map_err(|e| Error::sys("fchmodat(dev, \".\", 0755)", e))?;
    Ok(())
}

/// `/dev/console` is the container's terminal (as LXC binds its pty there).
/// Binds the pty `slave` on `/dev/NAME` (a new empty file in init's own
/// `/dev` tmpfs): `console`, or `ttyN`.
pub(super) fn bind_console(root: BorrowedFd<'_>, slave: &OwnedFd, name: &str) -> Result<()> {
    let dev = plain_dir(root, "dev")?;
    let f = sys::openat2(
        dev.as_fd(),
        Path::new(name),
        (OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW).bits(),
        0o600,
        sys::RESOLVE_BENEATH | sys::RESOLVE_NO_SYMLINKS,
    )
    .map_err(|e| Error::sys(format!("openat2(dev, {name:?}, O_CREAT|O_EXCL)"), e))?;
    drop(f);
    let t = sys::openat2(
        dev.as_fd(),
        Path::new(name),
        (OFlag::O_PATH | OFlag::O_NOFOLLOW).bits(),
        0,
        sys::RESOLVE_BENEATH | sys::RESOLVE_NO_SYMLINKS,
    )
    .map_err(|e| Error::sys(format!("openat2(dev, {name:?}, O_PATH)"), e))?;
    mount_on(
        Some(fd_path(slave.as_fd()).as_str()),
        t.as_fd(),
        &format!("/dev/{name}"),
        None,
        MsFlags::MS_BIND,
        None,
    )
}
