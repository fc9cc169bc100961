//! `/sys/fs/cgroup` inside: the container's own cgroups through its cgroup
//! namespace, or an empty read-only tmpfs when it has none.
#![forbid(unsafe_code)]

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::mount::MsFlags;
use nix::sys::stat::{mkdirat, Mode};

use super::fdmount::{mount_on, remount_ro};
use super::inroot::open_in;
use crate::cgroup::{Layout, Version};
use crate::error::{Error, Result};
use crate::sys;

/// `/sys/fs/cgroup` inside: the container's own cgroup through the cgroup
/// namespace. v2 alone: one `cgroup2` mount. v1 or hybrid: a tmpfs holding
/// one mount per hierarchy, named as on the host. v1 controllers are always
/// read-only (CVE-2022-0492 `release_agent`); v2 and the controller-less
/// `name=systemd` hierarchy are writable only when delegated (the mount
/// shows the cgroup namespace root, our own leaf, never the hierarchy root
/// that holds `release_agent`).
/// `/sys/fs/cgroup`: the container's own cgroups (the namespace made
/// after joining them roots every hierarchy there), or with `layout`
/// `None` (no cgroup of its own: a plain user without delegation) an empty
/// read-only tmpfs, since its cgroup namespace would be rooted at the
/// caller's cgroup and could show the host's whole tree.
pub(super) fn mount_cgroupfs(
    root: BorrowedFd<'_>,
    layout: Option<&Layout>,
    v2_rw: bool,
    systemd_rw: bool,
) -> Result<()> {
    let base = match open_in(
        root,
        "sys/fs/cgroup",
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_DIRECTORY,
    ) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(()),
        Err(e) => {
            return Err(Error::sys(
                "openat2(rootfs, \"sys/fs/cgroup\", O_PATH|O_DIRECTORY)",
                e,
            ))
        }
    };
    let common = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let ro = |rw: bool| {
        if rw {
            common
        } else {
            common | MsFlags::MS_RDONLY
        }
    };
    let Some(layout) = layout else {
        return mount_on(
            Some("tmpfs"),
            base.as_fd(),
            "/sys/fs/cgroup",
            Some("tmpfs"),
            common | MsFlags::MS_RDONLY,
            Some("mode=555,size=4k"),
        );
    };
    if layout.hierarchies.iter().all(|h| h.version == Version::V2) {
        if layout.unified().is_some() {
            mount_on(
                Some("cgroup2"),
                base.as_fd(),
                "/sys/fs/cgroup",
                Some("cgroup2"),
                ro(v2_rw),
                None,
            )?;
        }
        return Ok(());
    }
    mount_on(
        Some("tmpfs"),
        base.as_fd(),
        "/sys/fs/cgroup",
        Some("tmpfs"),
        common,
        Some("mode=755,size=64k"),
    )?;
    drop(base);
    let dir = open_in(
        root,
        "sys/fs/cgroup",
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_DIRECTORY,
    )
    .map_err(|e| Error::sys("openat2(rootfs, \"sys/fs/cgroup\", O_PATH)", e))?;
    for h in &layout.hierarchies {
        let Some(name) = h.mountpoint.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if name.contains('/') || name == ".." || name == "." {
            continue;
        }
        mkdirat(Some(dir.as_raw_fd()), name, Mode::from_bits_truncate(0o755))
            .map_err(|e| Error::sys(format!("mkdirat(cgroupfs, {name:?}, 0755)"), e))?;
        let t = sys::openat2(
            dir.as_fd(),
            Path::new(name),
            (OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW).bits(),
            0,
            sys::RESOLVE_BENEATH | sys::RESOLVE_NO_SYMLINKS,
        )
        .map_err(|e| Error::sys(format!("openat2(cgroupfs, {name:?}, O_PATH)"), e))?;
        let shown = format!("/sys/fs/cgroup/{name}");
        match h.version {
            Version::V1 => mount_on(
                Some("cgroup"),
                t.as_fd(),
                &shown,
                Some("cgroup"),
                ro(systemd_rw && h.has("name=systemd")),
                Some(h.mount_options.as_str()),
            )?,
            Version::V2 => mount_on(
                Some("cgroup2"),
                t.as_fd(),
                &shown,
                Some("cgroup2"),
                ro(v2_rw),
                None,
            )?,
        }
    }
    drop(dir);
    remount_ro(root, "sys/fs/cgroup")
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::mount_cgroupfs;
    use crate::cgroup::Layout;

    #[test]
    fn an_image_without_sys_fs_cgroup_gets_no_cgroup_mount() {
        // Nothing is mounted, and nothing is created for it either: the
        // image chose not to have the directory. An empty layout, so that
        // even a regression run as root mounts nothing on the host.
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("sys/fs")).unwrap();
        let root = std::fs::File::open(tmp.path()).unwrap();
        let layout = Layout::from_mountinfo("");
        mount_cgroupfs(root.as_fd(), Some(&layout), true, true).unwrap();
        assert!(!tmp.path().join("sys/fs/cgroup").exists());
    }
}
