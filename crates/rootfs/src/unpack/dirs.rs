//! Directory bookkeeping: resolving (and creating) parents through a one-entry
//! handle cache, and directory metadata deferred until after the children.

use super::name::{bad, cstr, join, lossy, werr};
use super::Unpacker;
use crate::error::{Error, Result};
use crate::sys::{self, is_eexist, is_enoent, Time};
use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};
use std::rc::Rc;

pub(super) struct DirMeta {
    pub(super) path: Vec<u8>,
    /// (st_dev, st_ino) when created; checked when the metadata is applied.
    pub(super) id: Option<(u64, u64)>,
    pub(super) uid: u32,
    pub(super) gid: u32,
    pub(super) mode: u32,
    pub(super) atime: Time,
    pub(super) mtime: Time,
    pub(super) xattrs: Vec<(CString, Vec<u8>)>,
}

impl Unpacker<'_> {
    /// Resolves (and with `create`, makes) the directory `comps` inside the
    /// root. Symlinks are clamped to the root by `RESOLVE_IN_ROOT`.
    pub(super) fn dir(
        &mut self,
        comps: &[&[u8]],
        create: bool,
        entry: &str,
    ) -> Result<Rc<OwnedFd>> {
        if comps.is_empty() {
            return Ok(self.root.clone());
        }
        let path = join(comps);
        if let Some((p, fd)) = &self.cache {
            if *p == path {
                return Ok(fd.clone());
            }
        }
        let how = libc::O_PATH | libc::O_DIRECTORY;
        let res = sys::RESOLVE_IN_ROOT | sys::RESOLVE_NO_MAGICLINKS;
        let cpath = cstr(&path).ok_or_else(|| bad(entry, 0, "name contains a nul byte"))?;
        let fd = match sys::openat2(self.root.as_fd(), &cpath, how, 0, res) {
            Ok(fd) => fd,
            Err(e) if is_enoent(&e) && create => {
                // Walk down, creating what is missing. Each mkdirat is
                // relative to a parent resolved inside the root.
                let mut cur = self.root.clone();
                for i in 0..comps.len() {
                    let prefix = join(&comps[..=i]);
                    let cp = cstr(&prefix).unwrap();
                    let next = match sys::openat2(self.root.as_fd(), &cp, how, 0, res) {
                        Ok(fd) => fd,
                        Err(e) if is_enoent(&e) => {
                            let name = cstr(comps[i]).unwrap();
                            match sys::mkdirat(cur.as_fd(), &name, 0o700) {
                                Ok(()) => {
                                    let (uid, gid) = self.root_ids();
                                    let id = sys::lstatat(cur.as_fd(), &name)
                                        .ok()
                                        .map(|st| (st.st_dev, st.st_ino));
                                    self.dirs.push(DirMeta {
                                        id,
                                        path: prefix.clone(),
                                        uid,
                                        gid,
                                        mode: 0o755,
                                        atime: None,
                                        mtime: None,
                                        xattrs: Vec::new(),
                                    });
                                }
                                Err(e) if is_eexist(&e) => {}
                                Err(e) => return Err(werr("mkdirat", &prefix, e)),
                            }
                            sys::openat2(self.root.as_fd(), &cp, how, 0, res)
                                .map_err(|e| werr("openat2", &prefix, e))?
                        }
                        Err(e) => return Err(werr("openat2", &prefix, e)),
                    };
                    cur = Rc::new(next);
                }
                self.cache = Some((path, cur.clone()));
                return Ok(cur);
            }
            Err(e) if is_enoent(&e) => {
                return Err(Error::Write {
                    step: "openat2",
                    path: lossy(&path),
                    source: e,
                })
            }
            Err(e) => return Err(werr("openat2", &path, e)),
        };
        let fd = Rc::new(fd);
        self.cache = Some((path, fd.clone()));
        Ok(fd)
    }

    /// `dev/pts`, then directory metadata deepest first.
    pub(super) fn finish(&mut self) -> Result<()> {
        let (ruid, rgid) = self.root_ids();
        let dev = self.dir(&[b"dev"], true, "dev/pts")?;
        match sys::mkdirat(dev.as_fd(), c"pts", 0o755) {
            Ok(()) => {
                sys::lchownat(dev.as_fd(), c"pts", ruid, rgid)
                    .map_err(|e| werr("fchownat", b"dev/pts", e))?;
                sys::lchmodat(dev.as_fd(), c"pts", 0o755)
                    .map_err(|e| werr("fchmodat2", b"dev/pts", e))?;
            }
            Err(e) if is_eexist(&e) => {}
            Err(e) => return Err(werr("mkdirat", b"dev/pts", e)),
        }
        drop(dev);
        self.cache = None;

        let mut dirs = std::mem::take(&mut self.dirs);
        dirs.sort_by_key(|d| {
            std::cmp::Reverse(
                d.path.iter().filter(|&&b| b == b'/').count() + usize::from(!d.path.is_empty()),
            )
        });
        for d in &dirs {
            let fd = if d.path.is_empty() {
                sys::openat(
                    self.root.as_fd(),
                    c".",
                    libc::O_RDONLY | libc::O_DIRECTORY,
                    0,
                )
            } else {
                let p = cstr(&d.path).unwrap();
                // Parents may be in-root symlinks (clamped); the directory
                // itself must not be one, and must be the one we created.
                sys::openat2(
                    self.root.as_fd(),
                    &p,
                    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                    0,
                    sys::RESOLVE_IN_ROOT | sys::RESOLVE_NO_MAGICLINKS,
                )
            }
            .map_err(|e| werr("openat2", &d.path, e))?;
            let fd = fd.as_fd();
            if let Some(id) = d.id {
                let st = sys::fstat(fd).map_err(|e| werr("fstat", &d.path, e))?;
                if (st.st_dev, st.st_ino) != id {
                    return Err(Error::Unsafe {
                        entry: lossy(&d.path),
                        offset: 0,
                        why: "directory was replaced before its metadata was applied",
                    });
                }
            }
            sys::fchown(fd, d.uid, d.gid).map_err(|e| werr("fchown", &d.path, e))?;
            sys::fchmod(fd, d.mode).map_err(|e| werr("fchmod", &d.path, e))?;
            for (k, v) in &d.xattrs {
                sys::fsetxattr(fd, k, v).map_err(|e| werr("fsetxattr", &d.path, e))?;
            }
            if d.mtime.is_some() || d.atime.is_some() {
                sys::futimens(fd, d.atime, d.mtime).map_err(|e| werr("futimens", &d.path, e))?;
            }
        }
        Ok(())
    }
}
