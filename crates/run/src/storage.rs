//! What the host offers for overlay storage, found by trying it: overlayfs
//! itself, and (as root) idmapped mounts of the directory that holds the
//! bases. `davit create` picks its backend from this and `davit check`
//! reports it.
#![forbid(unsafe_code)]

use std::os::fd::AsFd;
use std::path::Path;

use serde::Serialize;

use crate::config::IdMap;
use crate::sys;

/// The best overlay method this host allows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OverlayMethod {
    /// Root: one base with the image's own ids, attached as an idmapped
    /// lower layer through each container's user namespace.
    IdmappedBase,
    /// One base per id range, its ids shifted on disk (a plain user, or
    /// root where idmapped mounts are unavailable).
    ShiftedBase,
}

/// The storage backends available here.
#[derive(Debug, Clone, Serialize)]
pub struct Probe {
    /// The overlay method, if overlay works at all.
    pub overlay: Option<OverlayMethod>,
    /// Why overlay, or idmapped bases, cannot be used (empty if both can).
    pub notes: Vec<String>,
}

fn kernel_at_least(major: u32, minor: u32) -> bool {
    let Ok(rel) = std::fs::read_to_string("/proc/sys/kernel/osrelease") else {
        return false;
    };
    let mut it = rel
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse::<u32>().ok());
    let (a, b) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
    (a, b) >= (major, minor)
}

/// Whether overlayfs can be mounted by this user: listed in
/// `/proc/filesystems` (or loadable, for root), and for a plain user a
/// kernel (5.11+) that allows it inside a user namespace.
///
/// # Errors
/// Why not, as a sentence.
pub fn overlay_available(root: bool) -> Result<(), String> {
    let listed = std::fs::read_to_string("/proc/filesystems")
        .map(|t| {
            t.lines()
                .any(|l| l.split_whitespace().last() == Some("overlay"))
        })
        .unwrap_or(false);
    if !listed {
        // fsopen loads the module for root.
        let loaded = root
            && rustix::mount::fsopen("overlay", rustix::mount::FsOpenFlags::FSOPEN_CLOEXEC).is_ok();
        if !loaded {
            return Err("this kernel has no overlayfs (not in /proc/filesystems; `modprobe overlay` as root)".into());
        }
    }
    if !root && !kernel_at_least(5, 11) {
        return Err("overlayfs in a user namespace needs Linux 5.11 or newer".into());
    }
    Ok(())
}

/// Tries an idmapped mount of `dir` through a user namespace carrying
/// `map` (root only): a child unshares a user namespace, we write its map,
/// then `open_tree(dir)` + `mount_setattr(MOUNT_ATTR_IDMAP)`. Nothing is
/// attached anywhere; the child exits when its stdin closes.
///
/// # Errors
/// Why it failed, naming the step.
pub fn probe_idmap(dir: &Path, map: &IdMap) -> Result<(), String> {
    if !sys::mount_setattr_supported() {
        return Err("this kernel has no mount_setattr (idmapped mounts need Linux 5.12+)".into());
    }
    if !kernel_at_least(5, 19) {
        return Err("an idmapped lower layer under overlayfs needs Linux 5.19 or newer".into());
    }
    try_idmap(dir, map)
}

/// Whether host path `path` (a directory or file) can be bound into a
/// container with `map` as an idmapped mount (`--mount`, root only).
///
/// # Errors
/// Why not, naming the step.
pub fn probe_idmapped_bind(path: &Path, map: &IdMap) -> Result<(), String> {
    if !sys::mount_setattr_supported() {
        return Err("this kernel has no mount_setattr (idmapped mounts need Linux 5.12+)".into());
    }
    try_idmap(path, map)
}

fn try_idmap(dir: &Path, map: &IdMap) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let (pid, hold) = sys::userns_waiter()
        .map_err(|e| format!("cannot start a user namespace for the probe: {e}"))?;
    let r = (|| {
        davit_types::idmap::write_maps(pid.as_raw() as u32, map, true)
            .map_err(|e| crate::error::Error::from(e).to_string())?;
        let ns = std::fs::File::open(format!("/proc/{pid}/ns/user"))
            .map_err(|e| format!("open /proc/{pid}/ns/user: {e}"))?;
        let d = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH)
            .open(dir)
            .map_err(|e| format!("open {}: {e}", dir.display()))?;
        let tree = sys::open_tree_clone_fd(d.as_fd(), false)
            .map_err(|e| format!("open_tree({}): {e}", dir.display()))?;
        sys::mount_setattr_idmap(tree.as_fd(), ns.as_fd()).map_err(|e| {
            format!(
                "mount_setattr({}, MOUNT_ATTR_IDMAP): {e} (the filesystem may not support idmapped mounts)",
                dir.display()
            )
        })
    })();
    drop(hold);
    let _ = nix::sys::wait::waitpid(pid, None);
    r
}

/// Probes this host for a user (`root` or not) whose bases live in
/// `bases_dir` and whose containers use `map`. Nothing is created: a
/// missing `bases_dir` is probed through its nearest existing ancestor,
/// which is on the filesystem it will be made on.
pub fn probe(root: bool, bases_dir: &Path, map: Option<&IdMap>) -> Probe {
    let mut notes = Vec::new();
    if let Err(e) = overlay_available(root) {
        notes.push(e);
        return Probe {
            overlay: None,
            notes,
        };
    }
    if !root {
        return Probe {
            overlay: Some(OverlayMethod::ShiftedBase),
            notes,
        };
    }
    let dir = bases_dir
        .ancestors()
        .find(|d| d.is_dir())
        .unwrap_or(Path::new("/"));
    let method = match map {
        Some(m) => match probe_idmap(dir, m) {
            Ok(()) => OverlayMethod::IdmappedBase,
            Err(e) => {
                notes.push(format!("idmapped bases unavailable: {e}"));
                OverlayMethod::ShiftedBase
            }
        },
        None => OverlayMethod::IdmappedBase,
    };
    Probe {
        overlay: Some(method),
        notes,
    }
}

#[cfg(test)]
mod tests {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};

    /// The probe's user namespace holder (made here from a test binary
    /// with threads): in a user namespace of its own, waiting, and gone
    /// with status 0 once its pipe end is closed.
    #[test]
    fn the_waiter_sits_in_its_own_user_namespace_until_its_pipe_closes() {
        let (pid, hold) = crate::sys::userns_waiter().unwrap();
        let ours = std::fs::read_link("/proc/self/ns/user").unwrap();
        let its = std::fs::read_link(format!("/proc/{pid}/ns/user")).unwrap();
        assert_ne!(ours, its);
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert_eq!(
            waitpid(pid, Some(WaitPidFlag::WNOHANG)).unwrap(),
            WaitStatus::StillAlive
        );
        drop(hold);
        assert_eq!(waitpid(pid, None).unwrap(), WaitStatus::Exited(pid, 0));
    }
}
