//! Terminals (security.md (a) TIOCSTI class, CVE-2017-5226, CVE-2016-2779):
//! no container process ever holds a descriptor of the host's terminal.
//!
//! On a terminal the container gets a pseudo-terminal allocated from its
//! own devpts instance; the master goes back to the CLI, which relays it.
//! Off a terminal its processes run in a session of their own, and any
//! standard descriptor that is still a terminal is replaced by `/dev/null`
//! (the CLI hands pipes instead, and relays them).
#![forbid(unsafe_code)]

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::stat::{fstat, major, minor, SFlag};
use rustix::pty::OpenptFlags;

use crate::error::{Error, Result};
use crate::sys;

fn errno(e: rustix::io::Errno) -> Errno {
    Errno::from_raw(e.raw_os_error())
}

/// Open `ptmx` (a path below `dir`, no symlinks or magic links followed)
/// and return the master and its slave, which belong to the devpts
/// instance the node lives in. The node must be the character device 5:2:
/// a FIFO or a file planted there is refused rather than waited on.
pub(crate) fn open_pty_at(dir: BorrowedFd<'_>, ptmx: &str) -> Result<(OwnedFd, OwnedFd)> {
    let shown = format!("/{ptmx}");
    let master = sys::openat2(
        dir,
        Path::new(ptmx),
        (OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_NONBLOCK | OFlag::O_NOFOLLOW).bits(),
        0,
        sys::RESOLVE_IN_ROOT | sys::RESOLVE_NO_SYMLINKS | sys::RESOLVE_NO_MAGICLINKS,
    )
    .map_err(|e| Error::sys(format!("openat2({shown:?}, O_RDWR|O_NOCTTY|O_NONBLOCK)"), e))?;
    let st = fstat(master.as_raw_fd()).map_err(|e| Error::sys(format!("fstat({shown:?})"), e))?;
    if st.st_mode & SFlag::S_IFMT.bits() != SFlag::S_IFCHR.bits()
        || major(st.st_rdev) != 5
        || minor(st.st_rdev) != 2
    {
        return Err(Error::WrongType {
            path: shown.into(),
            want: "the pseudo-terminal multiplexer (character device 5:2)",
        });
    }
    fcntl(master.as_raw_fd(), FcntlArg::F_SETFL(OFlag::O_RDWR))
        .map_err(|e| Error::sys(format!("fcntl({shown:?}, F_SETFL, O_RDWR)"), e))?;
    rustix::pty::unlockpt(&master)
        .map_err(|e| Error::sys(format!("ioctl({shown:?}, TIOCSPTLCK, 0)"), errno(e)))?;
    let slave = rustix::pty::ioctl_tiocgptpeer(
        &master,
        OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC,
    )
    .map_err(|e| Error::sys(format!("ioctl({shown:?}, TIOCGPTPEER)"), errno(e)))?;
    Ok((master, slave))
}

/// Make `slave` this process's standard input, output and error, in a new
/// session; with `controlling`, also its controlling terminal (init runs
/// the container's terminal; the pid-1 shim leaves that to its command).
pub(crate) fn take_terminal(slave: &OwnedFd, controlling: bool) -> Result<()> {
    new_session()?;
    if controlling {
        rustix::process::ioctl_tiocsctty(slave)
            .map_err(|e| Error::sys("ioctl(pty, TIOCSCTTY)", errno(e)))?;
    }
    for fd in 0..3 {
        nix::unistd::dup2(slave.as_raw_fd(), fd)
            .map_err(|e| Error::sys(format!("dup2(pty, {fd})"), e))?;
    }
    Ok(())
}

/// The host's `/dev/null`, opened before any namespace is joined, to put
/// in place of a terminal on 0-2.
pub(crate) fn host_null() -> Result<OwnedFd> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map(OwnedFd::from)
        .map_err(|source| Error::Read {
            path: "/dev/null".into(),
            source,
        })
}

/// A session of our own (no controlling terminal), and no standard
/// descriptor that is a terminal: each that is becomes `null`.
pub(crate) fn leave_terminals(null: BorrowedFd<'_>) -> Result<()> {
    new_session()?;
    for fd in 0..3 {
        if is_terminal(fd) {
            nix::unistd::dup2(null.as_raw_fd(), fd)
                .map_err(|e| Error::sys(format!("dup2(/dev/null, {fd})"), e))?;
        }
    }
    Ok(())
}

fn is_terminal(fd: i32) -> bool {
    // isatty on a descriptor number: false for a closed one.
    nix::unistd::isatty(fd).unwrap_or(false)
}

/// `setsid`: init and an attached command are fresh children, never
/// group leaders, so this cannot fail for them; if it does, going on would
/// keep whatever session (and controlling terminal) they came with.
fn new_session() -> Result<()> {
    nix::unistd::setsid()
        .map(drop)
        .map_err(|e| Error::sys("setsid()", e))
}
