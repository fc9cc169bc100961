//! A tree copy that keeps everything a rootfs or an overlay upper holds:
//! owners, modes (set-id bits included), xattrs (overlayfs's own, file
//! capabilities, ACLs), whiteout devices and other special files,
//! hardlinks, symlinks as links, and times. File data is cloned where the
//! filesystem shares blocks (`FICLONE`), else copied in the kernel
//! (`copy_file_range`, through `std::io::copy`).
//!
//! The source is a container's tree, so its content is hostile: every step
//! is relative to a descriptor of a directory already opened without
//! following a link (`O_NOFOLLOW`), a directory's entries are read through
//! that descriptor (`/proc/self/fd/N`), and nothing of the source is ever
//! resolved by path again. The copy never follows a symlink of the source,
//! and writes only below the destination it created itself.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::sys;

/// Copies the tree `from` to `to`, which must not exist (its parent must),
/// as `cp -a --reflink=auto FROM TO` would.
///
/// # Errors
/// [`Error::Write`] naming the step and the path of the source or the
/// destination that failed.
pub fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    let fail = |step: &'static str, p: &Path| {
        let path = p.display().to_string();
        move |source: io::Error| Error::Write { step, path, source }
    };
    let cfrom = cstr(from.as_os_str()).map_err(fail("open", from))?;
    let src = sys::open(
        &cfrom,
        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
    )
    .map_err(fail("open", from))?;
    let st = sys::fstat(src.as_fd()).map_err(fail("fstat", from))?;
    let parent = match to.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = to.file_name().ok_or_else(|| Error::Write {
        step: "mkdir",
        path: to.display().to_string(),
        source: io::ErrorKind::InvalidInput.into(),
    })?;
    let cparent = cstr(parent.as_os_str()).map_err(fail("open", parent))?;
    let dparent =
        sys::open(&cparent, libc::O_RDONLY | libc::O_DIRECTORY).map_err(fail("open", parent))?;
    let mut c = Copier {
        from: from.to_owned(),
        to: to.to_owned(),
        links: HashMap::new(),
        root: None,
    };
    let cname = cstr(name).map_err(fail("mkdir", to))?;
    sys::mkdirat(dparent.as_fd(), &cname, 0o700).map_err(fail("mkdir", to))?;
    let dst = sys::openat(
        dparent.as_fd(),
        &cname,
        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
        0,
    )
    .map_err(fail("open", to))?;
    c.root = Some(
        sys::openat(dst.as_fd(), c".", libc::O_PATH | libc::O_DIRECTORY, 0)
            .map_err(fail("open", to))?,
    );
    c.dir(&src, dparent.as_fd(), &cname, &dst, &st, Path::new(""))
}

fn cstr(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| io::ErrorKind::InvalidInput.into())
}

/// `/proc/self/fd/DIR/NAME`: `NAME` in the directory `dir` is open on,
/// for the calls that have no `*at` form (`l*xattr`, `readlink`); only the
/// final component is looked up, and the `l*` calls do not follow it.
fn in_dir(dir: BorrowedFd<'_>, name: &OsStr) -> PathBuf {
    use std::os::fd::AsRawFd;
    Path::new(&format!("/proc/self/fd/{}", dir.as_raw_fd())).join(name)
}

struct Copier {
    from: PathBuf,
    to: PathBuf,
    /// The first copy of each multiply-linked source inode, by device and
    /// inode: its path below the destination.
    links: HashMap<(u64, u64), CString>,
    /// The destination's root, for `linkat` of a later link.
    root: Option<OwnedFd>,
}

impl Copier {
    fn fail(&self, step: &'static str, rel: &Path, dest: bool) -> impl FnOnce(io::Error) -> Error {
        let base = if dest { &self.to } else { &self.from };
        let path = base.join(rel).display().to_string();
        move |source| Error::Write { step, path, source }
    }

    /// The directory `src` (stat `st`) into the new directory `dst` (named
    /// `name` in `dparent`), at `rel` below both roots: its entries, then
    /// its owner, xattrs, mode and times (the mode last but the times, so
    /// that a read-only directory can still be filled).
    fn dir(
        &mut self,
        src: &OwnedFd,
        dparent: BorrowedFd<'_>,
        name: &CString,
        dst: &OwnedFd,
        st: &libc::stat,
        rel: &Path,
    ) -> Result<()> {
        sys::fchown(dst.as_fd(), st.st_uid, st.st_gid).map_err(self.fail("fchown", rel, true))?;
        let entries = {
            let list = in_dir(src.as_fd(), OsStr::new("."));
            let mut v: Vec<_> = std::fs::read_dir(&list)
                .and_then(|d| {
                    d.map(|e| e.map(|e| e.file_name()))
                        .collect::<io::Result<Vec<_>>>()
                })
                .map_err(self.fail("readdir", rel, false))?;
            v.sort();
            v
        };
        for n in entries {
            let crel = rel.join(&n);
            let cn = cstr(&n).map_err(self.fail("open", &crel, false))?;
            self.entry(src, dst, &cn, &crel)?;
        }
        let n = OsStr::from_bytes(name.as_bytes());
        self.xattrs(
            in_dir(dparent, n),
            in_dir(src.as_fd(), OsStr::new(".")),
            rel,
        )?;
        sys::fchmod(dst.as_fd(), st.st_mode & 0o7777).map_err(self.fail("fchmod", rel, true))?;
        sys::futimens(dst.as_fd(), atime(st), mtime(st)).map_err(self.fail("futimens", rel, true))
    }

    /// One entry `name` of the directory `src` into `dst`.
    fn entry(&mut self, src: &OwnedFd, dst: &OwnedFd, name: &CString, rel: &Path) -> Result<()> {
        let st = sys::lstatat(src.as_fd(), name).map_err(self.fail("lstat", rel, false))?;
        let kind = st.st_mode & libc::S_IFMT;
        let key = (st.st_dev, st.st_ino);
        if kind != libc::S_IFDIR && st.st_nlink > 1 {
            if let Some(first) = self.links.get(&key) {
                let root = self.root.as_ref().map(AsFd::as_fd).expect("root is open");
                return sys::linkat(root, first, dst.as_fd(), name)
                    .map_err(self.fail("linkat", rel, true));
            }
        }
        let nf = libc::O_NOFOLLOW;
        match kind {
            libc::S_IFDIR => {
                let s = sys::openat(
                    src.as_fd(),
                    name,
                    libc::O_RDONLY | libc::O_DIRECTORY | nf,
                    0,
                )
                .map_err(self.fail("open", rel, false))?;
                sys::mkdirat(dst.as_fd(), name, 0o700).map_err(self.fail("mkdir", rel, true))?;
                let d = sys::openat(
                    dst.as_fd(),
                    name,
                    libc::O_RDONLY | libc::O_DIRECTORY | nf,
                    0,
                )
                .map_err(self.fail("open", rel, true))?;
                return self.dir(&s, dst.as_fd(), name, &d, &st, rel);
            }
            libc::S_IFREG => {
                let s = sys::openat(src.as_fd(), name, libc::O_RDONLY | nf, 0)
                    .map_err(self.fail("open", rel, false))?;
                let d = sys::openat(
                    dst.as_fd(),
                    name,
                    libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | nf,
                    0o600,
                )
                .map_err(self.fail("create", rel, true))?;
                let (mut s, mut d) = (File::from(s), File::from(d));
                if sys::ficlone(d.as_fd(), s.as_fd()).is_err() {
                    io::copy(&mut s, &mut d).map_err(self.fail("copy", rel, true))?;
                }
                self.file_attrs(d.as_fd(), dst.as_fd(), name, src, &st, rel)?;
            }
            libc::S_IFLNK => {
                let target =
                    std::fs::read_link(in_dir(src.as_fd(), OsStr::from_bytes(name.as_bytes())))
                        .map_err(self.fail("readlink", rel, false))?;
                let t = cstr(target.as_os_str()).map_err(self.fail("readlink", rel, false))?;
                sys::symlinkat(&t, dst.as_fd(), name).map_err(self.fail("symlink", rel, true))?;
                self.node_attrs(dst.as_fd(), name, src, &st, rel, false)?;
            }
            libc::S_IFCHR | libc::S_IFBLK | libc::S_IFIFO | libc::S_IFSOCK => {
                let (maj, min) = (libc::major(st.st_rdev), libc::minor(st.st_rdev));
                sys::mknodat(dst.as_fd(), name, kind | 0o600, maj, min)
                    .map_err(self.fail("mknod", rel, true))?;
                self.node_attrs(dst.as_fd(), name, src, &st, rel, true)?;
            }
            _ => {
                return Err(Error::Write {
                    step: "copy",
                    path: self.from.join(rel).display().to_string(),
                    source: io::Error::new(io::ErrorKind::InvalidData, "unknown file type"),
                })
            }
        }
        if kind != libc::S_IFDIR && st.st_nlink > 1 {
            let r = cstr(rel.as_os_str()).map_err(self.fail("linkat", rel, true))?;
            self.links.insert(key, r);
        }
        Ok(())
    }

    /// A regular file's owner, xattrs, mode and times, in that order: a
    /// chown clears set-id bits and file capabilities, so both come after.
    fn file_attrs(
        &self,
        d: BorrowedFd<'_>,
        dst: BorrowedFd<'_>,
        name: &CString,
        src: &OwnedFd,
        st: &libc::stat,
        rel: &Path,
    ) -> Result<()> {
        sys::fchown(d, st.st_uid, st.st_gid).map_err(self.fail("fchown", rel, true))?;
        let n = OsStr::from_bytes(name.as_bytes());
        self.xattrs(in_dir(dst, n), in_dir(src.as_fd(), n), rel)?;
        sys::fchmod(d, st.st_mode & 0o7777).map_err(self.fail("fchmod", rel, true))?;
        sys::futimens(d, atime(st), mtime(st)).map_err(self.fail("futimens", rel, true))
    }

    /// The same for a node that cannot be opened (a symlink, a device, a
    /// FIFO, a socket): by name in its directory, never followed. A
    /// symlink has no mode of its own.
    fn node_attrs(
        &self,
        dst: BorrowedFd<'_>,
        name: &CString,
        src: &OwnedFd,
        st: &libc::stat,
        rel: &Path,
        mode: bool,
    ) -> Result<()> {
        sys::lchownat(dst, name, st.st_uid, st.st_gid).map_err(self.fail("lchown", rel, true))?;
        let n = OsStr::from_bytes(name.as_bytes());
        self.xattrs(in_dir(dst, n), in_dir(src.as_fd(), n), rel)?;
        if mode {
            sys::lchmodat(dst, name, st.st_mode & 0o7777).map_err(self.fail("chmod", rel, true))?;
        }
        sys::lutimensat(dst, name, atime(st), mtime(st)).map_err(self.fail("utimensat", rel, true))
    }

    /// Every xattr of the source node at `sp` onto the destination node at
    /// `dp` (both `/proc/self/fd/N/NAME` paths, not followed).
    fn xattrs(&self, dp: PathBuf, sp: PathBuf, rel: &Path) -> Result<()> {
        let names = match xattr::list(&sp) {
            Ok(n) => n,
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => return Ok(()),
            Err(e) => return Err(self.fail("listxattr", rel, false)(e)),
        };
        let cdp = cstr(dp.as_os_str()).map_err(self.fail("setxattr", rel, true))?;
        for n in names {
            let Some(v) = xattr::get(&sp, &n).map_err(self.fail("getxattr", rel, false))? else {
                continue;
            };
            let cn = cstr(&n).map_err(self.fail("setxattr", rel, true))?;
            sys::lsetxattr(&cdp, &cn, &v).map_err(|source| Error::Write {
                step: "setxattr",
                path: format!("{} ({})", self.to.join(rel).display(), n.to_string_lossy()),
                source,
            })?;
        }
        Ok(())
    }
}

fn atime(st: &libc::stat) -> sys::Time {
    Some((st.st_atime, st.st_atime_nsec as u32))
}

fn mtime(st: &libc::stat) -> sys::Time {
    Some((st.st_mtime, st.st_mtime_nsec as u32))
}
