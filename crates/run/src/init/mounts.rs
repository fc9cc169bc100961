//! The config's `[[mounts]]` (host binds through `open_tree` +
//! `move_mount`, other filesystems through `mount`) and the switch into the
//! new root with `pivot_root`.
#![forbid(unsafe_code)]

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use super::fdmount::mount_on;
use super::inroot::mkdir_all_in_root;
use crate::config::{ContainerConfig, MountEntry};
use crate::error::{Error, Result};
use crate::sys;

/// The source of each bind in `cfg.mounts` (`None` for other mounts and
/// for a missing `optional` one), opened `O_PATH` while init still holds
/// the invoking user's host ids: container root may not search the way
/// to a host directory. The host path is the admin's, so its links are
/// followed.
pub(super) fn open_bind_sources(cfg: &ContainerConfig) -> Result<Vec<Option<OwnedFd>>> {
    use std::os::unix::fs::OpenOptionsExt;
    cfg.mounts
        .iter()
        .map(|m| {
            if !m.is_bind() {
                return Ok(None);
            }
            match std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
                .open(&m.source)
            {
                Ok(f) => Ok(Some(OwnedFd::from(f))),
                Err(e)
                    if m.options().any(|o| o == "optional")
                        && e.kind() == std::io::ErrorKind::NotFound =>
                {
                    Ok(None)
                }
                Err(source) => Err(Error::Read {
                    path: PathBuf::from(&m.source),
                    source,
                }),
            }
        })
        .collect()
}

pub(super) fn user_mount(
    root: BorrowedFd<'_>,
    m: &MountEntry,
    source: Option<OwnedFd>,
    idmapped: Option<OwnedFd>,
) -> Result<()> {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    let mut ro = false;
    let bind = m.is_bind();
    let mut recursive = m.fstype == "rbind";
    // mount_setattr flags for a bind's detached tree.
    let (mut set, mut clr) = (0u64, 0u64);
    for o in m.options() {
        match o {
            "ro" => ro = true,
            "rw" | "defaults" | "create=dir" | "create=file" | "bind" | "optional" | "idmap" => {}
            "nosuid" => {
                flags |= MsFlags::MS_NOSUID;
                set |= sys::MOUNT_ATTR_NOSUID;
            }
            "nodev" => {
                flags |= MsFlags::MS_NODEV;
                set |= sys::MOUNT_ATTR_NODEV;
            }
            "noexec" => {
                flags |= MsFlags::MS_NOEXEC;
                set |= sys::MOUNT_ATTR_NOEXEC;
            }
            "noatime" => {
                flags |= MsFlags::MS_NOATIME;
                set |= sys::MOUNT_ATTR_NOATIME;
                clr |= sys::MOUNT_ATTR_ATIME_MASK;
            }
            "relatime" => {
                flags |= MsFlags::MS_RELATIME;
                clr |= sys::MOUNT_ATTR_ATIME_MASK;
            }
            "rbind" => recursive = true,
            other => data.push(other),
        }
    }
    let shown = m.target.to_string_lossy().into_owned();
    if bind {
        // A missing optional source.
        let Some(source) = source else {
            return Ok(());
        };
        let is_dir = nix::sys::stat::fstat(source.as_raw_fd())
            .map(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR)
            .map_err(|e| Error::sys(format!("fstat({:?})", m.source), e))?;
        // Resolved inside the rootfs: a link in the image cannot lead the
        // bind out of it.
        let t = mkdir_all_in_root(root, &m.target, !is_dir)?;
        let tree = match idmapped {
            Some(tree) => tree,
            None => sys::open_tree_clone_fd(source.as_fd(), recursive).map_err(|e| {
                Error::sys(
                    format!(
                        "open_tree({:?}, OPEN_TREE_CLONE{})",
                        m.source,
                        if recursive { "|AT_RECURSIVE" } else { "" }
                    ),
                    e,
                )
            })?,
        };
        if ro {
            set |= sys::MOUNT_ATTR_RDONLY;
        }
        if set != 0 || clr != 0 {
            sys::mount_setattr_flags(tree.as_fd(), set, clr).map_err(|e| {
                Error::sys(
                    format!("mount_setattr({:?}, {:#x}, {:#x})", m.source, set, clr),
                    e,
                )
            })?;
        }
        sys::move_mount_onto(tree.as_fd(), t.as_fd(), Path::new(""))
            .map_err(|e| Error::sys(format!("move_mount({:?}, {shown:?})", m.source), e))
    } else {
        let t = mkdir_all_in_root(root, &m.target, false)?;
        if ro {
            flags |= MsFlags::MS_RDONLY;
        }
        let data = data.join(",");
        mount_on(
            Some(m.source.as_str()),
            t.as_fd(),
            &shown,
            Some(m.fstype.as_str()),
            flags,
            (!data.is_empty()).then_some(data.as_str()),
        )
    }
}

/// `pivot_root(".", ".")` with the rootfs as cwd, then detach the old root
/// after making it rslave so the unmount does not propagate to the host.
pub(super) fn pivot(root: BorrowedFd<'_>) -> Result<()> {
    nix::unistd::fchdir(root.as_raw_fd()).map_err(|e| Error::sys("fchdir(rootfs)", e))?;
    nix::unistd::pivot_root(".", ".").map_err(|e| Error::sys("pivot_root(\".\", \".\")", e))?;
    mount(
        None::<&str>,
        ".",
        None::<&str>,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| Error::sys("mount(NULL, \".\", NULL, MS_SLAVE|MS_REC, NULL)", e))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| Error::sys("umount2(\".\", MNT_DETACH)", e))?;
    nix::unistd::chdir("/").map_err(|e| Error::sys("chdir(\"/\")", e))
}

/// CVE-2024-21626: the cwd must be inside the new root.
pub(super) fn check_cwd() -> Result<()> {
    match nix::unistd::getcwd() {
        Ok(p) if p == Path::new("/") => Ok(()),
        Ok(p) => Err(Error::WrongType {
            path: p,
            want: "working directory inside the container",
        }),
        Err(e) => Err(Error::sys("getcwd()", e)),
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::{AsRawFd, OwnedFd};
    use std::path::{Path, PathBuf};

    use super::open_bind_sources;
    use crate::config::ContainerConfig;
    use crate::error::Error;

    fn config(mounts: &[(&Path, &str, &str)]) -> ContainerConfig {
        let mut text = "name = \"a\"\nrootfs = \"/r\"\nprivileged = true\n".to_owned();
        for (i, (source, fstype, options)) in mounts.iter().enumerate() {
            text += &format!(
                "[[mounts]]\nsource = {:?}\ntarget = \"/m{i}\"\nfstype = {fstype:?}\noptions = {options:?}\n",
                source.to_str().unwrap()
            );
        }
        ContainerConfig::from_toml(&text, Path::new("config")).unwrap()
    }

    fn where_is(fd: &OwnedFd) -> PathBuf {
        std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap()
    }

    #[test]
    fn bind_sources_open_binds_only_and_skip_a_missing_optional_one() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().canonicalize().unwrap();
        let dir = base.join("dir");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(base.join("file"), "").unwrap();
        // The host path is the admin's: its links are followed.
        std::os::unix::fs::symlink(&dir, base.join("link")).unwrap();
        let missing = base.join("missing");
        let cfg = config(&[
            (Path::new("tmpfs"), "tmpfs", "size=1m"),
            (&dir, "bind", ""),
            (&base.join("file"), "none", "bind,ro"),
            (&base.join("link"), "rbind", ""),
            (&missing, "bind", "ro,optional"),
        ]);

        let got = open_bind_sources(&cfg).unwrap();

        assert_eq!(got.len(), 5);
        assert!(got[0].is_none());
        assert_eq!(where_is(got[1].as_ref().unwrap()), dir);
        assert_eq!(where_is(got[2].as_ref().unwrap()), base.join("file"));
        assert_eq!(where_is(got[3].as_ref().unwrap()), dir);
        assert!(got[4].is_none());
    }

    #[test]
    fn bind_sources_refuse_a_missing_required_one() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("missing");
        let cfg = config(&[(&missing, "bind", "ro")]);
        match open_bind_sources(&cfg) {
            Err(Error::Read { path, source }) => {
                assert_eq!(path, missing);
                assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
            }
            other => panic!("{other:?}"),
        }
    }
}
