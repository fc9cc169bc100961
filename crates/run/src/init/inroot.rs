//! The in-root path handle: opening and creating paths inside the rootfs
//! relative to its descriptor, with `openat2(RESOLVE_IN_ROOT)`, so that no
//! symlink or `..` in the image can lead outside it.
#![forbid(unsafe_code)]

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::{fstat, mkdirat, Mode, SFlag};

use crate::error::{Error, Result};
use crate::sys;

const IN_ROOT: u64 = sys::RESOLVE_IN_ROOT | sys::RESOLVE_NO_MAGICLINKS;

pub(super) fn open_in(
    root: BorrowedFd<'_>,
    path: &str,
    flags: OFlag,
) -> std::result::Result<OwnedFd, Errno> {
    sys::openat2(root, Path::new(path), flags.bits(), 0, IN_ROOT)
}

pub(super) fn open_path(root: BorrowedFd<'_>, path: &str) -> Result<OwnedFd> {
    open_in(root, path, OFlag::O_PATH | OFlag::O_NOFOLLOW).map_err(|e| {
        Error::sys(
            format!("openat2(rootfs, {path:?}, O_PATH|O_NOFOLLOW, RESOLVE_IN_ROOT)"),
            e,
        )
    })
}

/// Open (creating if missing) a directory that must not be a symlink
/// anywhere on its path: `/proc`, `/sys`, `/dev` and friends
/// (CVE-2019-16884 family, CVE-2026-41579).
pub(super) fn plain_dir(root: BorrowedFd<'_>, path: &str) -> Result<OwnedFd> {
    let resolve = IN_ROOT | sys::RESOLVE_NO_SYMLINKS;
    let open = || {
        sys::openat2(
            root,
            Path::new(path),
            (OFlag::O_PATH | OFlag::O_NOFOLLOW).bits(),
            0,
            resolve,
        )
    };
    let fd = match open() {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => {
            let (parent, name) = match path.rsplit_once('/') {
                Some((p, n)) => (Some(p), n),
                None => (None, path),
            };
            let pfd = match parent {
                Some(p) => Some(plain_dir(root, p)?),
                None => None,
            };
            let dirfd = pfd
                .as_ref()
                .map(|f| f.as_raw_fd())
                .unwrap_or(root.as_raw_fd());
            match mkdirat(Some(dirfd), name, Mode::from_bits_truncate(0o755)) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(Error::sys(format!("mkdirat(rootfs, {path:?}, 0755)"), e)),
            }
            open().map_err(|e| Error::sys(format!("openat2(rootfs, {path:?}, O_PATH)"), e))?
        }
        Err(Errno::ELOOP) => {
            return Err(Error::Symlink {
                path: PathBuf::from("/").join(path),
            })
        }
        Err(e) => {
            return Err(Error::sys(
                format!(
                "openat2(rootfs, {path:?}, O_PATH|O_NOFOLLOW, RESOLVE_IN_ROOT|RESOLVE_NO_SYMLINKS)"
            ),
                e,
            ))
        }
    };
    let st = fstat(fd.as_raw_fd()).map_err(|e| Error::sys(format!("fstat({path:?})"), e))?;
    match SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) {
        SFlag::S_IFDIR => Ok(fd),
        SFlag::S_IFLNK => Err(Error::Symlink {
            path: PathBuf::from("/").join(path),
        }),
        _ => Err(Error::WrongType {
            path: PathBuf::from("/").join(path),
            want: "directory",
        }),
    }
}

/// Resolve (creating as needed, never outside the root) the target of a
/// config mount: a directory, or an empty file when `file` is set.
pub(super) fn mkdir_all_in_root(
    root: BorrowedFd<'_>,
    target: &Path,
    file: bool,
) -> Result<OwnedFd> {
    let parts: Vec<&std::ffi::OsStr> = target
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n),
            _ => None,
        })
        .collect();
    let mut cur = root.try_clone_to_owned().map_err(|e| {
        Error::sys(
            "dup(rootfs)",
            Errno::from_raw(e.raw_os_error().unwrap_or(0)),
        )
    })?;
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        let p = Path::new(part);
        let next = sys::openat2(cur.as_fd(), p, (OFlag::O_PATH).bits(), 0, IN_ROOT);
        // Re-resolve the whole prefix from the root each step so a symlink
        // can never lead out of it.
        let next = match next {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => {
                if last && file {
                    drop(
                        sys::openat2(
                            cur.as_fd(),
                            p,
                            (OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW)
                                .bits(),
                            0o644,
                            IN_ROOT,
                        )
                        .map_err(|e| {
                            Error::sys(format!("openat2({:?}, O_CREAT|O_EXCL)", target), e)
                        })?,
                    );
                } else {
                    match mkdirat(Some(cur.as_raw_fd()), p, Mode::from_bits_truncate(0o755)) {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(e) => {
                            return Err(Error::sys(format!("mkdirat({:?}, 0755)", target), e))
                        }
                    }
                }
                sys::openat2(cur.as_fd(), p, (OFlag::O_PATH).bits(), 0, IN_ROOT)
                    .map_err(|e| Error::sys(format!("openat2({:?}, O_PATH)", target), e))?
            }
            Err(e) => {
                return Err(Error::sys(
                    format!("openat2({:?}, O_PATH, RESOLVE_IN_ROOT)", target),
                    e,
                ))
            }
        };
        cur = next;
    }
    Ok(cur)
}
