//! cgroup v1, v2 and hybrid hosts: discovery, creation, limits, stats, kill
//! and removal.
//!
//! Nothing here reaches for `/sys/fs/cgroup` by itself: discovery parses the
//! mountinfo text it is given, and every operation works on the paths found
//! there, so tests point it at a temporary directory laid out like a cgroup
//! root. On a hybrid host each controller is used where it is mounted, v1
//! first (as youki does); the v2 hierarchy is still joined so the container
//! gets its own `cgroup2` view.
#![forbid(unsafe_code)]

mod create;
mod delegate;
mod files;
pub mod handover;
mod kill;
mod layout;
mod rmdir;
mod stats;

use std::path::{Path, PathBuf};

pub use self::create::{needed_controllers, CPU_PERIOD_US, V2_CONTROLLERS};
pub use self::delegate::{delegated_files, delegation, DelegationError, Undelegated};
use self::files::join_rel;
pub use self::layout::{
    hierarchy_name, own_path, unescape_mountinfo, Hierarchy, Layout, Mode, Version,
};
pub use self::stats::Stats;

/// One directory of a container's cgroup, in one hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupDir {
    /// The hierarchy.
    pub hierarchy: Hierarchy,
    /// Absolute directory, e.g. `/sys/fs/cgroup/pids/davit/web`.
    pub path: PathBuf,
}

/// A container's cgroup: one directory per hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup {
    dirs: Vec<CgroupDir>,
    /// Container root's host uid and gid when a plain user handed the
    /// cgroup over ([`crate::cgroup::handover`]): what container root made below
    /// is then removed from the helper namespace.
    handed_to: Option<(u32, u32)>,
}

impl Cgroup {
    /// The cgroup at `rel` (e.g. `davit/web`) in every hierarchy of
    /// `layout`, without touching the filesystem.
    pub fn at(layout: &Layout, rel: &Path) -> Cgroup {
        Cgroup {
            dirs: layout
                .hierarchies
                .iter()
                .map(|h| CgroupDir {
                    hierarchy: h.clone(),
                    path: join_rel(&h.mountpoint, rel),
                })
                .collect(),
            handed_to: None,
        }
    }

    /// The same cgroup, recorded as handed to container root `(uid, gid)`
    /// by a plain user (state's `cgroup_owner`).
    pub fn handed_to(mut self, owner: Option<(u32, u32)>) -> Cgroup {
        self.handed_to = owner;
        self
    }

    /// Rebuild from recorded paths (state file) and the current layout;
    /// paths whose hierarchy is no longer mounted are dropped.
    pub fn from_paths(layout: &Layout, paths: &[PathBuf]) -> Cgroup {
        let mut dirs = Vec::new();
        for p in paths {
            if let Some(h) = layout
                .hierarchies
                .iter()
                .filter(|h| p.starts_with(&h.mountpoint))
                .max_by_key(|h| h.mountpoint.as_os_str().len())
            {
                dirs.push(CgroupDir {
                    hierarchy: h.clone(),
                    path: p.clone(),
                });
            }
        }
        Cgroup {
            dirs,
            handed_to: None,
        }
    }

    fn find(&self, controller: &str) -> Option<&CgroupDir> {
        self.dirs
            .iter()
            .find(|d| d.hierarchy.version == Version::V1 && d.hierarchy.has(controller))
            .or_else(|| {
                self.dirs
                    .iter()
                    .find(|d| d.hierarchy.version == Version::V2 && d.hierarchy.has(controller))
            })
    }

    /// The directories, one per hierarchy.
    pub fn dirs(&self) -> &[CgroupDir] {
        &self.dirs
    }

    /// The directory paths (for the state file).
    pub fn paths(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.path.clone()).collect()
    }

    /// The v2 leaf directory, if there is a v2 hierarchy.
    pub fn v2_dir(&self) -> Option<&Path> {
        self.dirs
            .iter()
            .find(|d| d.hierarchy.version == Version::V2)
            .map(|d| d.path.as_path())
    }

    /// The directory in the named v1 hierarchy `name=NAME` (e.g.
    /// `name=systemd`), if the host mounts one.
    pub fn named_v1_dir(&self, name: &str) -> Option<&Path> {
        let want = format!("name={name}");
        self.dirs
            .iter()
            .find(|d| d.hierarchy.version == Version::V1 && d.hierarchy.has(&want))
            .map(|d| d.path.as_path())
    }

    /// Whether every controller lives on v2 (so `CLONE_INTO_CGROUP` alone
    /// places a task in all of its directories).
    pub fn v2_only(&self) -> bool {
        self.dirs.iter().all(|d| d.hierarchy.version == Version::V2)
    }
}
