//! A plain user's container cgroup, handed to container root and taken
//! back, from a short-lived child in a user namespace of its own.
//!
//! A plain user owns the cgroup directories it made (below a delegated or
//! granted base), but only root may `chown` them to container root's host
//! ids, and the sub-cgroups that systemd inside then makes (owned by
//! container root) are not the user's to `rmdir`. Both are done as LXC's
//! `userns_exec_full` does: a forked child unshares a user namespace in
//! which `newuidmap`/`newgidmap` map the caller's own uid and gid as 0 and
//! container root's host uid and gid as 1. Capabilities there apply to
//! inodes whose owner is mapped, so the child may `chown` the user's
//! directories to 1 (container root) and remove what container root made,
//! and nothing else: every other inode on the host stays out of reach.
#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{Gid, Uid};

use super::delegate::delegated_files;
use super::layout::Version;
use super::rmdir::remove_tree;
use crate::config::{IdMap, IdRange};
use crate::error::{Error, Result};
use crate::sys;

/// Inside the helper namespace: the caller is 0, container root is 1.
const CONTAINER_ROOT: u32 = 1;

/// One cgroup directory to hand over and the files in it that container
/// root needs (moving tasks; for v2 the kernel's delegate list too).
#[derive(Debug, Clone)]
pub struct Handover {
    /// The directory.
    pub dir: PathBuf,
    /// Its files, by name.
    pub files: Vec<String>,
}

impl Handover {
    /// What LXC hands over in a hierarchy of `version`: the directory, the
    /// task files, and for v2 the files the kernel lists as delegatable
    /// (`/sys/kernel/cgroup/delegate`).
    pub fn of(dir: &Path, version: Version) -> Handover {
        Handover {
            dir: dir.to_path_buf(),
            files: delegated_files(version),
        }
    }

    /// `chown` to `(uid, gid)`; the directory becomes 0775 and the task
    /// files and `cgroup.subtree_control` 0664, as LXC's
    /// `chown_cgroup_wrapper` makes them.
    fn apply(&self, uid: u32, gid: u32) -> std::result::Result<(), (PathBuf, Errno)> {
        let (u, g) = (Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)));
        let chown = |p: &Path| nix::unistd::chown(p, u, g).map_err(|e| (p.to_path_buf(), e));
        let chmod = |p: &Path, mode: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
                .map_err(|e| (p.to_path_buf(), io_errno(&e)))
        };
        chown(&self.dir)?;
        chmod(&self.dir, 0o775)?;
        for f in &self.files {
            let p = self.dir.join(f);
            if !p.exists() {
                continue;
            }
            chown(&p)?;
            if matches!(
                f.as_str(),
                "cgroup.procs" | "tasks" | "cgroup.threads" | "cgroup.subtree_control"
            ) {
                chmod(&p, 0o664)?;
            }
        }
        Ok(())
    }
}

fn io_errno(e: &std::io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

/// Hand `dirs` to container root, whose host ids are `root`.
///
/// As root this is a plain `chown`. A plain user goes through the helper
/// namespace (module docs).
///
/// # Errors
/// [`Error::Cgroup`] naming the file, or the namespace's own errors.
pub fn hand_over(dirs: &[Handover], root: (u32, u32)) -> Result<()> {
    if nix::unistd::geteuid().is_root() {
        for d in dirs {
            d.apply(root.0, root.1).map_err(cg_err("chown"))?;
        }
        return Ok(());
    }
    in_helper_ns(root, "chown", || {
        for d in dirs {
            d.apply(CONTAINER_ROOT, CONTAINER_ROOT)?;
        }
        Ok(())
    })
}

/// `rmdir` `dirs` (each after its sub-cgroups) in the helper namespace:
/// for a plain user whose container root made sub-cgroups of its own.
///
/// # Errors
/// [`Error::Cgroup`] naming the directory that would not go.
pub fn remove_as(dirs: &[PathBuf], root: (u32, u32)) -> Result<()> {
    in_helper_ns(root, "rmdir", || {
        for d in dirs {
            remove_tree(d)?;
        }
        Ok(())
    })
}

fn cg_err(op: &'static str) -> impl Fn((PathBuf, Errno)) -> Error {
    move |(path, e)| Error::Cgroup {
        op: op.to_owned(),
        path,
        source: std::io::Error::from_raw_os_error(e as i32),
    }
}

/// Run `op` in a forked child whose user namespace maps the caller as 0
/// and container root (`root`, host ids) as 1. The child reports the
/// failing path and errno back over a pipe.
fn in_helper_ns(
    root: (u32, u32),
    what: &'static str,
    op: impl FnOnce() -> std::result::Result<(), (PathBuf, Errno)>,
) -> Result<()> {
    let (uid, gid) = (
        nix::unistd::getuid().as_raw(),
        nix::unistd::getgid().as_raw(),
    );
    let map = IdMap {
        uid: vec![
            IdRange {
                container: 0,
                host: uid,
                len: 1,
            },
            IdRange {
                container: CONTAINER_ROOT,
                host: root.0,
                len: 1,
            },
        ],
        gid: vec![
            IdRange {
                container: 0,
                host: gid,
                len: 1,
            },
            IdRange {
                container: CONTAINER_ROOT,
                host: root.1,
                len: 1,
            },
        ],
    };
    let (go_r, go_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| Error::sys("pipe2(O_CLOEXEC)", e))?;
    let (res_r, res_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| Error::sys("pipe2(O_CLOEXEC)", e))?;
    let flags = libc::CLONE_NEWUSER as u64;
    let child = match sys::clone_process(flags, None) {
        Err(e) => return Err(Error::sys("clone3(CLONE_NEWUSER)", e)),
        Ok(sys::Cloned::Child) => {
            drop(go_w);
            drop(res_r);
            let mut go = std::fs::File::from(go_r);
            let mut res = std::fs::File::from(res_w);
            let mut b = [0u8; 1];
            if go.read_exact(&mut b).is_err() || b[0] != b'g' {
                sys::exit_now(1);
            }
            // Become the mapped 0 (the caller) with every capability of
            // this namespace, which apply to mapped inodes only.
            let zero = Uid::from_raw(0);
            let gzero = Gid::from_raw(0);
            if nix::unistd::setresgid(gzero, gzero, gzero).is_err()
                || nix::unistd::setresuid(zero, zero, zero).is_err()
            {
                sys::exit_now(1);
            }
            let code = match op() {
                Ok(()) => 0,
                Err((p, e)) => {
                    let _ = res.write_all(format!("{}\0{}", e as i32, p.display()).as_bytes());
                    2
                }
            };
            sys::exit_now(code)
        }
        Ok(sys::Cloned::Parent { pid, .. }) => pid,
    };
    drop(go_r);
    drop(res_w);
    let mapped =
        davit_types::idmap::write_maps(child.as_raw() as u32, &map, false).map_err(Error::from);
    let mut go = std::fs::File::from(go_w);
    if mapped.is_ok() {
        let _ = go.write_all(b"g");
    }
    drop(go);
    let mut report = String::new();
    let _ = std::fs::File::from(res_r).read_to_string(&mut report);
    let status = loop {
        match waitpid(child, None) {
            Err(Errno::EINTR) => continue,
            other => break other,
        }
    };
    mapped?;
    match status {
        Ok(WaitStatus::Exited(_, 0)) => Ok(()),
        Ok(WaitStatus::Exited(_, 2)) => {
            let (errno, path) = report.split_once('\0').unwrap_or(("5", ""));
            Err(Error::Cgroup {
                op: format!("{what} (as container root, in a user namespace)"),
                path: PathBuf::from(path),
                source: std::io::Error::from_raw_os_error(errno.parse().unwrap_or(libc::EIO)),
            })
        }
        other => Err(Error::Cgroup {
            op: format!("{what} (as container root, in a user namespace)"),
            path: PathBuf::from("/proc/self/uid_map"),
            source: std::io::Error::other(format!("the helper child ended with {other:?}")),
        }),
    }
}
