//! The container's root mount: the rootfs directory cloned onto itself, or
//! an overlay of its layers (base, upper, work) built with the new mount API.
#![forbid(unsafe_code)]

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;

use crate::config::ContainerConfig;
use crate::error::{Error, Result};
use crate::sys;

/// Clone the rootfs (our cwd, set by the parent before the clone and moved
/// into the new mount namespace by the kernel) onto itself with
/// `open_tree(OPEN_TREE_CLONE|AT_RECURSIVE)` + `move_mount`. No path string
/// is looked up, so no host directory above the rootfs needs to be
/// searchable by the container's root.
pub(super) fn clone_rootfs() -> Result<OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt;
    let here = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
        .open(".")
        .map_err(|source| Error::Read {
            path: PathBuf::from("."),
            source,
        })?;
    let tree = sys::open_tree_clone(here.as_fd(), Path::new("."))
        .map_err(|e| Error::sys("open_tree(rootfs, \".\", OPEN_TREE_CLONE|AT_RECURSIVE)", e))?;
    sys::move_mount_onto(tree.as_fd(), here.as_fd(), Path::new(".")).map_err(|e| {
        Error::sys(
            "move_mount(tree, \"\", rootfs, \".\", MOVE_MOUNT_F_EMPTY_PATH)",
            e,
        )
    })?;
    Ok(tree)
}

/// The layers of an overlay root, opened in the container's mount namespace.
pub(super) struct OverlayLayers {
    /// The base, unless it arrives as an idmapped mount from the parent.
    base: Option<OwnedFd>,
    upper: OwnedFd,
    work: OwnedFd,
}

fn open_dir_path(p: &Path) -> Result<OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(p)
        .map(OwnedFd::from)
        .map_err(|source| Error::Read {
            path: p.to_owned(),
            source,
        })
}

impl OverlayLayers {
    pub(super) fn open(cfg: &ContainerConfig) -> Result<OverlayLayers> {
        let (base, upper, work) = cfg.storage.overlay_dirs()?;
        Ok(OverlayLayers {
            base: if cfg.storage.idmapped_lower {
                None
            } else {
                Some(open_dir_path(base)?)
            },
            upper: open_dir_path(upper)?,
            work: open_dir_path(work)?,
        })
    }

    /// Mounts the overlay on the rootfs mount point (our cwd) and returns
    /// the new mount. An idmapped base (a detached mount from the parent) is
    /// first attached there, because overlayfs refuses layers outside the
    /// caller's mount namespace. In a user namespace the overlay keeps its
    /// whiteouts and opaque markers in `user.overlay.*` xattrs (`userxattr`).
    pub(super) fn mount(self, idmapped: Option<OwnedFd>, userns: bool) -> Result<OwnedFd> {
        use rustix::mount::{
            fsconfig_create, fsconfig_set_flag, fsconfig_set_string, fsmount, fsopen, move_mount,
            FsMountFlags, FsOpenFlags, MountAttrFlags, MoveMountFlags,
        };
        let here = open_dir_path(Path::new("."))?;
        let lower = match (idmapped, self.base) {
            (Some(tree), _) => {
                sys::move_mount_onto(tree.as_fd(), here.as_fd(), Path::new("."))
                    .map_err(|e| Error::sys("move_mount(idmapped base, \"\", rootfs, \".\")", e))?;
                tree
            }
            (None, Some(base)) => base,
            (None, None) => {
                return Err(Error::ConfigInvalid {
                    reason: "the idmapped base did not arrive".into(),
                })
            }
        };
        let errno = |what: String| {
            move |e: rustix::io::Errno| Error::sys(what, Errno::from_raw(e.raw_os_error()))
        };
        let fs = fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC)
            .map_err(errno("fsopen(\"overlay\")".into()))?;
        let fd_path = |fd: &OwnedFd| format!("/proc/self/fd/{}", fd.as_raw_fd());
        for (key, fd) in [
            ("lowerdir", &lower),
            ("upperdir", &self.upper),
            ("workdir", &self.work),
        ] {
            let v = fd_path(fd);
            fsconfig_set_string(&fs, key, v.as_str())
                .map_err(errno(format!("fsconfig(overlay, {key}={v})")))?;
        }
        if userns {
            fsconfig_set_flag(&fs, "userxattr")
                .map_err(errno("fsconfig(overlay, userxattr)".into()))?;
        }
        fsconfig_create(&fs).map_err(errno(format!(
            "fsconfig(overlay, FSCONFIG_CMD_CREATE) with lowerdir={}, upperdir={}, workdir={}",
            self_path(&lower),
            self_path(&self.upper),
            self_path(&self.work)
        )))?;
        let mnt = fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, MountAttrFlags::empty())
            .map_err(errno("fsmount(overlay)".into()))?;
        move_mount(
            &mnt,
            "",
            &here,
            ".",
            MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
        )
        .map_err(errno("move_mount(overlay, \"\", rootfs, \".\")".into()))?;
        Ok(mnt)
    }
}

/// The path a descriptor refers to, for error messages.
fn self_path(fd: &OwnedFd) -> String {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "?".into())
}
