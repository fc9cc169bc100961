//! Creating each kind of node relative to its parent's fd (directories,
//! files, hard links, symlinks, fifos and devices), making room for it
//! without following what is there, then its owner, mode, xattrs and times.

use super::dirs::DirMeta;
use super::member::{Kind, Member};
use super::name::{bad, clean, cstr, lossy, werr};
use super::Unpacker;
use crate::decode::Pipe;
use crate::error::{Error, Result};
use crate::sys::{self, is_dir, is_eexist, is_enoent, Time};
use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};

/// Where a node goes: its resolved parent, its name there, and its cleaned
/// path (for errors and the directory bookkeeping).
#[derive(Clone, Copy)]
pub(super) struct At<'a> {
    pub(super) dir: BorrowedFd<'a>,
    pub(super) name: &'a CStr,
    pub(super) path: &'a [u8],
}

/// What a member gets on the host: shifted ids, mode, rewritten xattrs in
/// the order they are set, and times.
pub(super) struct Attrs {
    pub(super) uid: u32,
    pub(super) gid: u32,
    pub(super) mode: u32,
    pub(super) xattrs: Vec<(CString, Vec<u8>)>,
    pub(super) atime: Time,
    pub(super) mtime: Time,
}

impl Unpacker<'_> {
    /// The root entry (`.`, `./`, `/`): only a directory is allowed
    /// (CVE-2021-29136, umoci). Its metadata is applied at the end.
    pub(super) fn write_root(&mut self, m: &Member, a: Attrs) -> Result<()> {
        if m.kind != Kind::Dir {
            return Err(Error::Unsafe {
                entry: m.name.clone(),
                offset: m.offset,
                why: "root entry is not a directory",
            });
        }
        self.dirs.push(DirMeta {
            id: None,
            path: Vec::new(),
            uid: a.uid,
            gid: a.gid,
            mode: a.mode,
            atime: a.atime,
            mtime: a.mtime,
            xattrs: a.xattrs,
        });
        Ok(())
    }

    /// A directory; one already there is kept. Its metadata is applied at
    /// the end, after its children.
    pub(super) fn write_dir(&mut self, at: At<'_>, a: Attrs) -> Result<()> {
        if !self.make_room(at, true)? {
            sys::mkdirat(at.dir, at.name, 0o700).map_err(|e| werr("mkdirat", at.path, e))?;
        }
        let st = sys::lstatat(at.dir, at.name).map_err(|e| werr("fstatat", at.path, e))?;
        self.dirs.push(DirMeta {
            id: Some((st.st_dev, st.st_ino)),
            path: at.path.to_vec(),
            uid: a.uid,
            gid: a.gid,
            mode: a.mode,
            atime: a.atime,
            mtime: a.mtime,
            xattrs: a.xattrs,
        });
        Ok(())
    }

    /// A regular file (`sparse`: the apparent size of a pax sparse member),
    /// created exclusively and never through a link, then its data.
    pub(super) fn write_file(
        &mut self,
        e: &mut tar::Entry<'_, Pipe>,
        m: &Member,
        sparse: Option<u64>,
        at: At<'_>,
        a: &Attrs,
    ) -> Result<()> {
        let claim = sparse.unwrap_or(m.size);
        if claim > self.max_file {
            return Err(Error::TooBig {
                entry: m.name.clone(),
                offset: m.offset,
                size: claim,
                cap: self.max_file,
            });
        }
        let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW;
        let fd = match sys::openat(at.dir, at.name, flags, 0o600) {
            Err(err) if is_eexist(&err) => {
                self.make_room(at, false)?;
                sys::openat(at.dir, at.name, flags, 0o600)
            }
            r => r,
        }
        .map_err(|e| werr("openat", at.path, e))?;
        let mut f = File::from(fd);
        if let Some(real) = sparse {
            self.write_pax_sparse(e, &mut f, real, &m.name, at.path)?;
            self.report.bytes += real;
        } else {
            self.write_data(e, &mut f, &m.name, at.path)?;
        }
        let fd = f.as_fd();
        sys::fchown(fd, a.uid, a.gid).map_err(|e| werr("fchown", at.path, e))?;
        sys::fchmod(fd, a.mode).map_err(|e| werr("fchmod", at.path, e))?;
        for (k, v) in &a.xattrs {
            sys::fsetxattr(fd, k, v).map_err(|e| werr("fsetxattr", at.path, e))?;
        }
        sys::futimens(fd, a.atime, a.mtime).map_err(|e| werr("futimens", at.path, e))
    }

    /// Copies the data of a plain member into `f`; a short member is
    /// [`Error::Truncated`].
    fn write_data(
        &mut self,
        e: &mut tar::Entry<'_, Pipe>,
        f: &mut File,
        name: &str,
        path: &[u8],
    ) -> Result<()> {
        let size = e.size();
        let data_pos = self.at(e.raw_file_position());
        let mut written: u64 = 0;
        loop {
            let n = match e.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => {
                    return Err(Error::Truncated {
                        archive: self.archive.to_owned(),
                        entry: name.to_owned(),
                        offset: data_pos + written,
                    })
                }
                Err(source) => {
                    return Err(Error::Read {
                        archive: self.archive.to_owned(),
                        entry: name.to_owned(),
                        offset: data_pos + written,
                        source,
                    })
                }
            };
            f.write_all(&self.buf[..n])
                .map_err(|e| werr("write", path, e))?;
            written += n as u64;
        }
        if written != size {
            // A short read without an error: the archive ended.
            return Err(Error::Truncated {
                archive: self.archive.to_owned(),
                entry: name.to_owned(),
                offset: data_pos + written,
            });
        }
        self.report.bytes += size;
        Ok(())
    }

    /// A hard link to `target`, resolved inside the root: it must exist and
    /// not be a directory. A link to the inode already there is a no-op.
    pub(super) fn write_hardlink(
        &mut self,
        m: &Member,
        target: Option<&[u8]>,
        at: At<'_>,
    ) -> Result<()> {
        let (name, hpos) = (&m.name, m.offset);
        let target = target.ok_or_else(|| bad(name, hpos, "hardlink without a target"))?;
        let tname = lossy(target);
        let tcomps = clean(target).map_err(|()| Error::Unsafe {
            entry: name.clone(),
            offset: hpos,
            why: "hardlink target contains `..`",
        })?;
        let Some((tlast, tparents)) = tcomps.split_last() else {
            return Err(Error::Unsafe {
                entry: name.clone(),
                offset: hpos,
                why: "hardlink to the root directory",
            });
        };
        let missing = || Error::LinkTarget {
            entry: name.clone(),
            offset: hpos,
            target: tname.clone(),
        };
        let tlast =
            cstr(tlast).ok_or_else(|| bad(name, hpos, "hardlink target contains a nul byte"))?;
        let tdir = match self.dir(tparents, false, name) {
            Ok(d) => d,
            Err(Error::Write { source, .. })
                if is_enoent(&source) || source.raw_os_error() == Some(libc::ENOTDIR) =>
            {
                return Err(missing())
            }
            Err(e) => return Err(e),
        };
        let tst = match sys::lstatat(tdir.as_fd(), &tlast) {
            Ok(st) => st,
            Err(err) if is_enoent(&err) => return Err(missing()),
            Err(err) => return Err(werr("fstatat", target, err)),
        };
        if is_dir(&tst) {
            return Err(Error::Unsafe {
                entry: name.clone(),
                offset: hpos,
                why: "hardlink to a directory",
            });
        }
        if let Ok(st) = sys::lstatat(at.dir, at.name) {
            if st.st_dev == tst.st_dev && st.st_ino == tst.st_ino {
                return Ok(()); // already this inode
            }
        }
        match sys::linkat(tdir.as_fd(), &tlast, at.dir, at.name) {
            Err(err) if is_eexist(&err) => {
                self.make_room(at, false)?;
                sys::linkat(tdir.as_fd(), &tlast, at.dir, at.name)
            }
            r => r,
        }
        .map_err(|e| werr("linkat", at.path, e))
    }

    /// A symbolic link, its target stored as given (it is never followed).
    pub(super) fn write_symlink(
        &mut self,
        m: &Member,
        target: Option<&[u8]>,
        at: At<'_>,
        a: &Attrs,
    ) -> Result<()> {
        let (name, hpos) = (&m.name, m.offset);
        let target = target.ok_or_else(|| bad(name, hpos, "symlink without a target"))?;
        if target.is_empty() {
            return Err(bad(name, hpos, "symlink with an empty target"));
        }
        let ctarget =
            cstr(target).ok_or_else(|| bad(name, hpos, "symlink target contains a nul byte"))?;
        match sys::symlinkat(&ctarget, at.dir, at.name) {
            Err(err) if is_eexist(&err) => {
                self.make_room(at, false)?;
                sys::symlinkat(&ctarget, at.dir, at.name)
            }
            r => r,
        }
        .map_err(|e| werr("symlinkat", at.path, e))?;
        // No chmod: Linux has no mode for a symlink.
        self.node_meta(at, a, false)
    }

    /// A fifo or device node of type `kind` (`S_IFIFO`, `S_IFCHR`,
    /// `S_IFBLK`) with device numbers `(major, minor)`.
    pub(super) fn write_node(
        &mut self,
        at: At<'_>,
        kind: libc::mode_t,
        (maj, min): (u32, u32),
        a: &Attrs,
    ) -> Result<()> {
        match sys::mknodat(at.dir, at.name, kind | 0o600, maj, min) {
            Err(err) if is_eexist(&err) => {
                self.make_room(at, false)?;
                sys::mknodat(at.dir, at.name, kind | 0o600, maj, min)
            }
            r => r,
        }
        .map_err(|e| werr("mknodat", at.path, e))?;
        self.node_meta(at, a, true)
    }

    /// Makes room for a new node at `at`: returns `true` if a directory is
    /// already there and `keep_dir` is set. Otherwise removes what is there
    /// (a directory only if empty) without following it.
    fn make_room(&mut self, at: At<'_>, keep_dir: bool) -> Result<bool> {
        let (dir, name, path) = (at.dir, at.name, at.path);
        let st = match sys::lstatat(dir, name) {
            Ok(st) => st,
            Err(e) if is_enoent(&e) => return Ok(false),
            Err(e) => return Err(werr("fstatat", path, e)),
        };
        if is_dir(&st) {
            if keep_dir {
                return Ok(true);
            }
            sys::unlinkat(dir, name, libc::AT_REMOVEDIR).map_err(|e| werr("rmdir", path, e))?;
            self.cache = None;
            let mut sub = path.to_vec();
            sub.push(b'/');
            self.dirs
                .retain(|d| d.path != path && !d.path.starts_with(&sub));
        } else {
            sys::unlinkat(dir, name, 0).map_err(|e| werr("unlinkat", path, e))?;
            // A replaced symlink may have been a component of the cached
            // parent; resolve again so later members follow the new tree.
            self.cache = None;
        }
        Ok(false)
    }

    /// Owner, mode (with `chmod`), xattrs and times of a node we must not
    /// open (symlink, fifo, device), all without following it.
    fn node_meta(&self, at: At<'_>, a: &Attrs, chmod: bool) -> Result<()> {
        let (dir, name, path) = (at.dir, at.name, at.path);
        sys::lchownat(dir, name, a.uid, a.gid).map_err(|e| werr("fchownat", path, e))?;
        if chmod {
            sys::lchmodat(dir, name, a.mode).map_err(|e| werr("fchmodat2", path, e))?;
        }
        if !a.xattrs.is_empty() {
            // `/proc/self/fd/N` is the resolved parent; the last component is
            // a single name and lsetxattr does not follow it.
            let mut p =
                format!("/proc/self/fd/{}/", std::os::fd::AsRawFd::as_raw_fd(&dir)).into_bytes();
            p.extend_from_slice(name.to_bytes());
            let p = cstr(&p).unwrap();
            for (k, v) in &a.xattrs {
                sys::lsetxattr(&p, k, v).map_err(|e| werr("lsetxattr", path, e))?;
            }
        }
        sys::lutimensat(dir, name, a.atime, a.mtime).map_err(|e| werr("utimensat", path, e))
    }
}
