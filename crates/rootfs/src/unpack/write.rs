//! Creating nodes relative to their parent's fd: making room for a new node
//! without following what is there, and the metadata of nodes we must not open.

use super::name::cstr;
use super::Unpacker;
use crate::error::Result;
use crate::sys::{self, is_dir, is_enoent, Time};
use std::ffi::{CStr, CString};
use std::os::fd::BorrowedFd;

impl Unpacker<'_> {
    /// Makes room for a new node `name` in `dir`: returns `true` if a
    /// directory is already there and `keep_dir` is set. Otherwise removes
    /// what is there (a directory only if empty) without following it.
    pub(super) fn make_room(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &CStr,
        path: &[u8],
        keep_dir: bool,
    ) -> Result<bool> {
        let st = match sys::lstatat(dir, name) {
            Ok(st) => st,
            Err(e) if is_enoent(&e) => return Ok(false),
            Err(e) => return Err(self.werr("fstatat", path, e)),
        };
        if is_dir(&st) {
            if keep_dir {
                return Ok(true);
            }
            sys::unlinkat(dir, name, libc::AT_REMOVEDIR)
                .map_err(|e| self.werr("rmdir", path, e))?;
            self.cache = None;
            let mut sub = path.to_vec();
            sub.push(b'/');
            self.dirs
                .retain(|d| d.path != path && !d.path.starts_with(&sub));
        } else {
            sys::unlinkat(dir, name, 0).map_err(|e| self.werr("unlinkat", path, e))?;
            // A replaced symlink may have been a component of the cached
            // parent; resolve again so later members follow the new tree.
            self.cache = None;
        }
        Ok(false)
    }

    /// Owner, mode, xattrs and times of a node we must not open (symlink,
    /// fifo, device), all without following it.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn node_meta(
        &self,
        dir: BorrowedFd<'_>,
        name: &CStr,
        path: &[u8],
        uid: u32,
        gid: u32,
        mode: Option<u32>,
        xa: &[(CString, Vec<u8>)],
        atime: Time,
        mtime: Time,
    ) -> Result<()> {
        sys::lchownat(dir, name, uid, gid).map_err(|e| self.werr("fchownat", path, e))?;
        if let Some(mode) = mode {
            sys::lchmodat(dir, name, mode).map_err(|e| self.werr("fchmodat2", path, e))?;
        }
        if !xa.is_empty() {
            // `/proc/self/fd/N` is the resolved parent; the last component is
            // a single name and lsetxattr does not follow it.
            let mut p =
                format!("/proc/self/fd/{}/", std::os::fd::AsRawFd::as_raw_fd(&dir)).into_bytes();
            p.extend_from_slice(name.to_bytes());
            let p = cstr(&p).unwrap();
            for (k, v) in xa {
                sys::lsetxattr(&p, k, v).map_err(|e| self.werr("lsetxattr", path, e))?;
            }
        }
        sys::lutimensat(dir, name, atime, mtime).map_err(|e| self.werr("utimensat", path, e))
    }
}
