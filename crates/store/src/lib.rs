//! davit's container store: a container on disk and everything that makes,
//! changes or removes one.
//!
//! The CLI hands in the [`Layout`] (where containers, bases and runtime
//! state live) and gets results back to print; nothing here prints. This
//! crate owns:
//! - the name rule ([`check_name`]) and the per-name lock,
//! - staging directories renamed into place (a killed create leaves only a
//!   dot-directory, swept by the next create of that name),
//! - the storage backends (dir, overlay) and bases with their references
//!   and prune ([`bases`]),
//! - [`Store::create`], [`Store::copy`], [`Store::destroy`],
//!   [`Store::rename`] and snapshots ([`snapshot`]),
//! - and the one choice between working as root and working through a user
//!   namespace ([`Access`]): every tree a plain user's container holds
//!   belongs to subordinate ids, which only a user namespace can touch.
//!
//! ```no_run
//! use davit_store::{Layout, Store};
//! let layout = Layout::new("/var/lib/davit/containers".into(), "/run/davit".into(), std::env::current_exe()?);
//! let store = Store::new(layout);
//! for name in store.names() {
//!     println!("{name}");
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::fs;
use std::path::{Path, PathBuf};

pub mod bases;
mod container;
mod create;
mod error;
mod lifecycle;
mod manage;
pub mod snapshot;
mod subids;
#[cfg(test)]
mod tests;
mod tree;

pub use container::{
    check_name, check_snapshot_name, save_config, Container, NameLock, PENDING_CONFIG,
};
pub use create::{
    BaseUsed, Copied, CopyRequest, CreateRequest, Created, ImageFiles, PendingCreate,
};
pub use error::{Error, ErrorKind, Result};
pub use lifecycle::{Launched, PreparedStart, StartRequest};
pub use manage::Destroyed;
pub use tree::{Access, UnpackRequest};

/// Progress and steps of long work (unpacking a base), shown by the
/// caller; nothing here prints.
pub use davit_types::{Quiet, Reporter};

/// Where a user's containers, bases and runtime state live, and the
/// files the store reads about the user. The CLI builds it (its defaults
/// and overrides are its own) and hands it in.
#[derive(Debug, Clone)]
pub struct Layout {
    /// One directory per container (kept 0700).
    pub containers: PathBuf,
    /// Shared read-only trees, one per build and id range.
    pub bases: PathBuf,
    /// Runtime state (`/run/davit` or the user's).
    pub runtime: PathBuf,
    /// This davit binary, re-executed for work inside a user namespace.
    pub exe: PathBuf,
    /// `/etc/subuid`.
    pub subuid: PathBuf,
    /// `/etc/subgid`.
    pub subgid: PathBuf,
    /// `/etc/passwd`, for host accounts inside an id range.
    pub passwd: PathBuf,
    /// The host network config (`/etc/davit/config.toml`).
    pub net_config: PathBuf,
}

impl Layout {
    /// A layout with `bases` beside `containers` and the system's id files.
    pub fn new(containers: PathBuf, runtime: PathBuf, exe: PathBuf) -> Layout {
        let bases = containers.parent().unwrap_or(&containers).join("bases");
        Layout {
            containers,
            bases,
            runtime,
            exe,
            subuid: "/etc/subuid".into(),
            subgid: "/etc/subgid".into(),
            passwd: "/etc/passwd".into(),
            net_config: davit_run::net::HOST_CONFIG.into(),
        }
    }
}

/// The store of one user's containers.
pub struct Store {
    layout: Layout,
    access: Access,
    user: String,
    uid: u32,
}

impl Store {
    /// The store at `layout`, working as root when the effective uid is 0
    /// and through user namespaces otherwise (decided here, once).
    pub fn new(layout: Layout) -> Store {
        let access = if is_root() {
            Access::Root
        } else {
            Access::UserNs
        };
        Store::with_access(layout, access)
    }

    /// The store at `layout` with the given [`Access`] (tests use it).
    pub fn with_access(layout: Layout, access: Access) -> Store {
        let uid = nix::unistd::getuid();
        let user = nix::unistd::User::from_uid(uid)
            .ok()
            .flatten()
            .map(|u| u.name)
            .unwrap_or_else(|| uid.to_string());
        Store {
            layout,
            access,
            user,
            uid: uid.as_raw(),
        }
    }

    /// Where things live.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Root, or a plain user working through user namespaces.
    pub fn access(&self) -> Access {
        self.access
    }

    /// Whether this store works as root.
    pub fn is_root(&self) -> bool {
        self.access == Access::Root
    }

    /// The user name for `/etc/subuid` lookups (the uid if it has none).
    pub fn user_name(&self) -> &str {
        &self.user
    }

    /// An existing container.
    ///
    /// # Errors
    /// [`Error::Usage`] for an invalid name, [`Error::NotFound`] if no
    /// container of that name exists.
    pub fn container(&self, name: &str) -> Result<Container> {
        check_name(name)?;
        let dir = self.layout.containers.join(name);
        if !dir.join("config.toml").is_file() {
            return Err(Error::NotFound(format!(
                "no container {name:?} in {} (create it with `davit create {name} DIST RELEASE`)",
                self.layout.containers.display()
            )));
        }
        Ok(Container {
            name: name.to_string(),
            dir,
        })
    }

    /// The names of every container, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(&self.layout.containers)
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.path().join("config.toml").is_file())
                    .filter_map(|e| e.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// The runtime state of container `name`.
    pub fn state(&self, name: &str) -> davit_run::state::StateStore {
        davit_run::state::StateStore::new(&self.layout.runtime, name)
    }

    /// The status of container `name` (STOPPED when it has no state).
    ///
    /// # Errors
    /// The runtime's, when its state or cgroups cannot be read.
    pub fn status(&self, name: &str) -> Result<davit_run::state::Status> {
        Ok(davit_run::info::info(
            &self.layout.runtime,
            name,
            &davit_run::cgroup::Layout::detect()?,
        )?
        .status)
    }

    /// Fails unless `c` is stopped; `what` names the work that needs it.
    fn require_stopped(&self, c: &Container, what: &str) -> Result<()> {
        let st = self.status(&c.name)?;
        if st != davit_run::state::Status::Stopped {
            return Err(Error::usage(format!(
                "{} is {}: stop it first (`davit stop {}`), so the {what} is consistent",
                c.name,
                st.as_str(),
                c.name
            )));
        }
        Ok(())
    }

    pub(crate) fn tree(&self) -> tree::Trees<'_> {
        tree::Trees {
            access: self.access,
            exe: &self.layout.exe,
        }
    }

    /// Removes a tree that may be owned by subordinate ids (`maps`: the
    /// ids it was made in; `None` for a privileged one).
    ///
    /// # Errors
    /// When the tree cannot be removed.
    pub fn remove_tree(&self, path: &Path, maps: Option<&davit_types::IdMap>) -> Result<()> {
        self.tree().remove(path, maps)
    }
}

/// Whether the caller's effective uid is 0: the one question that
/// decides root or user namespace ([`Store::new`]) and the default layout.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The caller's effective uid (for the network plan and the cgroup route).
pub fn euid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// The caller's real uid (its private runtime directory's name).
pub fn uid() -> u32 {
    nix::unistd::getuid().as_raw()
}

/// Seconds since the epoch (0 if the clock is before it).
pub(crate) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
