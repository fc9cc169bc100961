//! Snapshots (as `lxc-snapshot`): a stopped container's own tree kept
//! under `NAME/snapshots/SNAP/` — the overlay upper directory (cheap: the
//! base is shared) or the whole rootfs for dir storage — listed, restored
//! all at once, and deleted.
//!
//! A restore copies the snapshot beside the live tree and swaps the two
//! with one `renameat2(RENAME_EXCHANGE)`: a kill at any moment leaves the
//! old tree or the restored one, never a mix. What a kill leaves behind
//! (`.restore-*` beside it) is removed by the next snapshot command.

use std::fs;
use std::path::{Path, PathBuf};

use davit_run::config::Backend;
use davit_run::ContainerConfig;

use crate::bases::container_maps;
use crate::error::{io, Error, Result};
use crate::{check_snapshot_name, Container, Store};

/// One snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Its name.
    pub name: String,
    /// When it was made, in nanoseconds since the epoch.
    pub made_ns: u128,
}

/// What a snapshot or a restore did.
#[derive(Debug)]
pub struct SnapshotDone {
    /// The snapshot's name.
    pub snap: String,
    /// The container's storage backend.
    pub backend: Backend,
    /// How long it took.
    pub seconds: f64,
}

/// The part of a container a snapshot keeps, relative to its directory.
fn tree_rel(cfg: &ContainerConfig) -> &'static str {
    match cfg.storage.backend {
        Backend::Overlay => "overlay/upper",
        Backend::Dir => "rootfs",
    }
}

fn snapshots_dir(c: &Container) -> PathBuf {
    c.dir.join("snapshots")
}

/// Snapshots in `dir`, oldest first.
fn list_in(dir: &Path) -> Vec<Snapshot> {
    let mut v: Vec<Snapshot> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with('.') {
                return None;
            }
            let made = fs::read_to_string(e.path().join("made"))
                .ok()
                .and_then(|t| t.trim().parse().ok())?;
            Some(Snapshot {
                name: n,
                made_ns: made,
            })
        })
        .collect();
    v.sort_by(|a, b| (a.made_ns, &a.name).cmp(&(b.made_ns, &b.name)));
    v
}

impl Store {
    /// Copies `from` to `to` keeping owners.
    fn copy_keeping(&self, cfg: &ContainerConfig, from: &Path, to: &Path) -> Result<()> {
        let same = (cfg.name.clone(), cfg.name.clone());
        self.tree()
            .copy(from, to, to, container_maps(cfg).as_ref(), &same)
    }

    /// Removes what a killed snapshot or restore left: `.creating-*` in the
    /// snapshots directory and `.restore-*` beside the tree.
    fn sweep(&self, c: &Container, cfg: &ContainerConfig) {
        let maps = container_maps(cfg);
        let tree = c.dir.join(tree_rel(cfg));
        let dirs = [snapshots_dir(c), tree.parent().unwrap_or(&c.dir).to_owned()];
        for d in dirs {
            let Ok(rd) = fs::read_dir(&d) else { continue };
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if n.starts_with(".creating-") || n.starts_with(".restore-") {
                    let _ = self.remove_tree(&e.path(), maps.as_ref());
                }
            }
        }
    }

    /// Snapshots a stopped container as `snap` (default: `snapN`, the first
    /// free N).
    ///
    /// # Errors
    /// [`Error::Usage`] for a running container or a taken or bad name.
    pub fn snapshot(&self, name: &str, snap: Option<String>) -> Result<SnapshotDone> {
        let c = self.container(name)?;
        let _lock = self.state(&c.name).lock()?;
        self.require_stopped(&c, "snapshot")?;
        let cfg = c.load_config()?;
        self.sweep(&c, &cfg);
        let dir = snapshots_dir(&c);
        fs::create_dir_all(&dir).map_err(io(format!("cannot create {}", dir.display())))?;
        let snap = match snap {
            Some(s) => s,
            None => (0..)
                .map(|i| format!("snap{i}"))
                .find(|s| !dir.join(s).exists())
                .unwrap_or_default(),
        };
        check_snapshot_name(&snap)?;
        let dest = dir.join(&snap);
        if dest.exists() {
            return Err(Error::usage(format!(
                "{} already has a snapshot {snap:?}; pick another name or `davit snapshot delete {} {snap}`",
                c.name, c.name
            )));
        }
        let started = std::time::Instant::now();
        // Made whole under a temporary name; the rename is the commit.
        let staging = dir.join(format!(".creating-{snap}"));
        let made = (|| -> Result<()> {
            fs::create_dir(&staging).map_err(io(format!("cannot create {}", staging.display())))?;
            self.copy_keeping(&cfg, &c.dir.join(tree_rel(&cfg)), &staging.join("tree"))?;
            fs::copy(c.config_path(), staging.join("config.toml"))
                .map_err(io(format!("cannot copy {}", c.config_path().display())))?;
            // Nanoseconds, so that two snapshots in one second list in order.
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            fs::write(staging.join("made"), format!("{nanos}\n"))
                .map_err(io(format!("cannot write in {}", staging.display())))?;
            fs::rename(&staging, &dest).map_err(io(format!("cannot create {}", dest.display())))
        })();
        if let Err(e) = made {
            let _ = self.remove_tree(&staging, container_maps(&cfg).as_ref());
            return Err(e);
        }
        Ok(SnapshotDone {
            snap,
            backend: cfg.storage.backend,
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    /// The container's snapshots, oldest first.
    ///
    /// # Errors
    /// When there is no such container.
    pub fn snapshots(&self, name: &str) -> Result<Vec<Snapshot>> {
        let c = self.container(name)?;
        Ok(list_in(&snapshots_dir(&c)))
    }

    /// Puts a stopped container's tree back as it was in `snap`, all or
    /// nothing.
    ///
    /// # Errors
    /// [`Error::NotFound`] for a missing snapshot, [`Error::Usage`] for a
    /// running container.
    pub fn restore(&self, name: &str, snap: &str) -> Result<SnapshotDone> {
        check_snapshot_name(snap)?;
        let c = self.container(name)?;
        let _lock = self.state(&c.name).lock()?;
        self.require_stopped(&c, "restore")?;
        let cfg = c.load_config()?;
        self.sweep(&c, &cfg);
        let src = snapshots_dir(&c).join(snap).join("tree");
        if !src.is_dir() {
            return Err(Error::NotFound(format!(
                "{} has no snapshot {snap:?} (`davit snapshot list {}`)",
                c.name, c.name
            )));
        }
        let tree = c.dir.join(tree_rel(&cfg));
        let parent = tree.parent().unwrap_or(&c.dir);
        let staged = parent.join(format!(".restore-{}", std::process::id()));
        let maps = container_maps(&cfg);
        let started = std::time::Instant::now();
        // The copy first, beside the live tree (same filesystem), then one
        // atomic swap; the old tree, now under the staging name, goes last.
        if let Err(e) = self.copy_keeping(&cfg, &src, &staged) {
            let _ = self.remove_tree(&staged, maps.as_ref());
            return Err(e);
        }
        if let Err(e) = davit_rootfs::base::exchange(&staged, &tree) {
            let _ = self.remove_tree(&staged, maps.as_ref());
            return Err(e.into());
        }
        self.remove_tree(&staged, maps.as_ref())?;
        Ok(SnapshotDone {
            snap: snap.to_owned(),
            backend: cfg.storage.backend,
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    /// Removes snapshot `snap`.
    ///
    /// # Errors
    /// [`Error::NotFound`] for a missing snapshot.
    pub fn delete_snapshot(&self, name: &str, snap: &str) -> Result<()> {
        check_snapshot_name(snap)?;
        let c = self.container(name)?;
        let cfg = c.load_config()?;
        let d = snapshots_dir(&c).join(snap);
        if !d.is_dir() {
            return Err(Error::NotFound(format!(
                "{} has no snapshot {snap:?}",
                c.name
            )));
        }
        // Out of the list first (a rename), then removed.
        let gone = snapshots_dir(&c).join(format!(".creating-deleted-{snap}"));
        fs::rename(&d, &gone).map_err(io(format!("cannot remove {}", d.display())))?;
        self.remove_tree(&gone, container_maps(&cfg).as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_list_oldest_first_and_skip_staging_and_unmade() {
        let t = tempfile::tempdir().unwrap();
        let mk = |n: &str, made: Option<&str>| {
            let d = t.path().join(n);
            fs::create_dir(&d).unwrap();
            if let Some(m) = made {
                fs::write(d.join("made"), m).unwrap();
            }
        };
        mk("late", Some("300\n"));
        mk("early", Some("100\n"));
        mk("b-same", Some("200"));
        mk("a-same", Some("200"));
        mk(".creating-x", Some("50"));
        mk("broken", None);
        let names: Vec<String> = list_in(t.path()).into_iter().map(|s| s.name).collect();
        assert_eq!(names, ["early", "a-same", "b-same", "late"]);
    }
}
