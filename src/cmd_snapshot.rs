//! `davit snapshot` (as `lxc-snapshot`): a stopped container's own tree
//! kept under `NAME/snapshots/SNAP/` — the overlay upper directory (cheap:
//! the base is shared) or the whole rootfs for dir storage — listed,
//! restored all at once, and deleted.
//!
//! A restore copies the snapshot beside the live tree and swaps the two
//! with one `renameat2(RENAME_EXCHANGE)`: a kill at any moment leaves the
//! old tree or the restored one, never a mix. What a kill leaves behind
//! (`.restore-*` beside it) is removed by the next snapshot command.

use std::fs;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use davit_run::config::Backend;
use davit_run::state::Status;
use davit_run::ContainerConfig;
use serde_json::json;

use crate::cmd_create::remove_tree;
use crate::cmd_run::{container, Container};
use crate::{paths, storage, Ctx, Failure};

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct SnapshotArgs {
    #[command(subcommand)]
    pub cmd: Option<SnapshotCmd>,
    /// The container to snapshot (stopped).
    #[arg(required = true)]
    pub name: Option<String>,
    /// The snapshot's name [default: snapN, the first free N].
    pub snap: Option<String>,
}

#[derive(Subcommand)]
pub enum SnapshotCmd {
    /// The container's snapshots, oldest first.
    List { name: String },
    /// Put the container's tree back as it was in SNAP (stopped; all or nothing).
    Restore { name: String, snap: String },
    /// Remove snapshot SNAP.
    Delete { name: String, snap: String },
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> Failure {
    move |e| Failure::io(anyhow::anyhow!(e).context(what))
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

fn stopped(c: &Container, what: &str) -> Result<(), Failure> {
    let st = davit_run::info::info(
        &paths::runtime_dir(),
        &c.name,
        &davit_run::cgroup::Layout::detect()?,
    )?
    .status;
    if st != Status::Stopped {
        return Err(Failure::usage(format!(
            "{} is {}: stop it first (`davit stop {}`), so the {what} is consistent",
            c.name,
            st.as_str(),
            c.name
        )));
    }
    Ok(())
}

/// Copies `from` to `to` keeping owners (inside the user namespace for a
/// plain user, whose trees belong to its subordinate ids).
fn copy(cfg: &ContainerConfig, from: &Path, to: &Path) -> Result<(), Failure> {
    match storage::container_maps(cfg) {
        Some(m) if !paths::is_root() => {
            let same = (cfg.name.clone(), cfg.name.clone());
            davit_rootfs::copy_in_userns(&paths::davit_exe()?, from, to, to, &m, &same)?
        }
        _ => davit_rootfs::base::copy_tree(from, to)?,
    }
    Ok(())
}

/// Removes what a killed snapshot or restore left: `.creating-*` in the
/// snapshots directory and `.restore-*` beside the tree.
fn sweep(c: &Container, cfg: &ContainerConfig) {
    let maps = storage::container_maps(cfg);
    let tree = c.dir.join(tree_rel(cfg));
    let dirs = [snapshots_dir(c), tree.parent().unwrap_or(&c.dir).to_owned()];
    for d in dirs {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with(".creating-") || n.starts_with(".restore-") {
                let _ = remove_tree(&e.path(), maps.as_ref());
            }
        }
    }
}

fn check_snap(snap: &str) -> Result<(), Failure> {
    if !davit_run::config::valid_name(snap) || snap.starts_with('-') {
        return Err(Failure::usage(format!(
            "invalid snapshot name {snap:?}: use 1 to 64 of A-Z a-z 0-9 . _ -, not starting with '.' or '-'"
        )));
    }
    Ok(())
}

/// Snapshots of `c`, oldest first: (name, when made in nanoseconds since
/// the epoch).
fn list_snaps(c: &Container) -> Vec<(String, u128)> {
    let mut v: Vec<(String, u128)> = fs::read_dir(snapshots_dir(c))
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
            Some((n, made))
        })
        .collect();
    v.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
    v
}

pub fn snapshot(ctx: &Ctx, a: SnapshotArgs) -> Result<(), Failure> {
    match a.cmd {
        Some(SnapshotCmd::List { name }) => list(ctx, &name),
        Some(SnapshotCmd::Restore { name, snap }) => restore(ctx, &name, &snap),
        Some(SnapshotCmd::Delete { name, snap }) => delete(ctx, &name, &snap),
        None => make(ctx, a.name.as_deref().unwrap_or_default(), a.snap),
    }
}

fn make(ctx: &Ctx, name: &str, snap: Option<String>) -> Result<(), Failure> {
    let c = container(name)?;
    let _lock = davit_run::state::StateStore::new(&paths::runtime_dir(), &c.name).lock()?;
    stopped(&c, "snapshot")?;
    let cfg = crate::cmd_manage::load_config(&c)?;
    sweep(&c, &cfg);
    let dir = snapshots_dir(&c);
    fs::create_dir_all(&dir).map_err(io(format!("cannot create {}", dir.display())))?;
    let snap = match snap {
        Some(s) => s,
        None => (0..)
            .map(|i| format!("snap{i}"))
            .find(|s| !dir.join(s).exists())
            .unwrap_or_default(),
    };
    check_snap(&snap)?;
    let dest = dir.join(&snap);
    if dest.exists() {
        return Err(Failure::usage(format!(
            "{} already has a snapshot {snap:?}; pick another name or `davit snapshot delete {} {snap}`",
            c.name, c.name
        )));
    }
    let started = std::time::Instant::now();
    // Made whole under a temporary name; the rename is the commit.
    let staging = dir.join(format!(".creating-{snap}"));
    let maps = storage::container_maps(&cfg);
    let made = (|| -> Result<(), Failure> {
        fs::create_dir(&staging).map_err(io(format!("cannot create {}", staging.display())))?;
        copy(&cfg, &c.dir.join(tree_rel(&cfg)), &staging.join("tree"))?;
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
        let _ = remove_tree(&staging, maps.as_ref());
        return Err(e);
    }
    let secs = started.elapsed().as_secs_f64();
    if ctx.json {
        ctx.print_json(&json!({"name": c.name, "snapshot": snap, "storage": cfg.storage.backend.as_str(), "seconds": secs}));
    } else {
        let what = match cfg.storage.backend {
            Backend::Overlay => "upper directory",
            Backend::Dir => "rootfs",
        };
        ctx.term.say(&format!(
            "{}: snapshot {snap} (a copy of the {what}) in {secs:.2}s",
            c.name
        ));
    }
    Ok(())
}

fn list(ctx: &Ctx, name: &str) -> Result<(), Failure> {
    let c = container(name)?;
    let snaps = list_snaps(&c);
    if ctx.json {
        let v: Vec<_> = snaps
            .iter()
            .map(|(n, t)| json!({"name": n, "made": (t / 1_000_000_000) as u64}))
            .collect();
        ctx.print_json(&v);
    } else {
        for (n, t) in &snaps {
            let when = utc_text((t / 1_000_000_000) as i64);
            println!("{n}\t{when}");
        }
    }
    Ok(())
}

fn restore(ctx: &Ctx, name: &str, snap: &str) -> Result<(), Failure> {
    check_snap(snap)?;
    let c = container(name)?;
    let _lock = davit_run::state::StateStore::new(&paths::runtime_dir(), &c.name).lock()?;
    stopped(&c, "restore")?;
    let cfg = crate::cmd_manage::load_config(&c)?;
    sweep(&c, &cfg);
    let src = snapshots_dir(&c).join(snap).join("tree");
    if !src.is_dir() {
        return Err(Failure::new(
            crate::exit::NOT_FOUND,
            anyhow::anyhow!(
                "{} has no snapshot {snap:?} (`davit snapshot list {}`)",
                c.name,
                c.name
            ),
        ));
    }
    let tree = c.dir.join(tree_rel(&cfg));
    let parent = tree.parent().unwrap_or(&c.dir);
    let staged = parent.join(format!(".restore-{}", std::process::id()));
    let maps = storage::container_maps(&cfg);
    let started = std::time::Instant::now();
    // The copy first, beside the live tree (same filesystem), then one
    // atomic swap; the old tree, now under the staging name, goes last.
    if let Err(e) = copy(&cfg, &src, &staged) {
        let _ = remove_tree(&staged, maps.as_ref());
        return Err(e);
    }
    if let Err(e) = davit_rootfs::base::exchange(&staged, &tree) {
        let _ = remove_tree(&staged, maps.as_ref());
        return Err(e.into());
    }
    remove_tree(&staged, maps.as_ref())?;
    let secs = started.elapsed().as_secs_f64();
    if ctx.json {
        ctx.print_json(&json!({"name": c.name, "restored": snap, "seconds": secs}));
    } else {
        ctx.term
            .say(&format!("{}: restored {snap} in {secs:.2}s", c.name));
    }
    Ok(())
}

fn delete(ctx: &Ctx, name: &str, snap: &str) -> Result<(), Failure> {
    check_snap(snap)?;
    let c = container(name)?;
    let cfg = crate::cmd_manage::load_config(&c)?;
    let d = snapshots_dir(&c).join(snap);
    if !d.is_dir() {
        return Err(Failure::new(
            crate::exit::NOT_FOUND,
            anyhow::anyhow!("{} has no snapshot {snap:?}", c.name),
        ));
    }
    // Out of the list first (a rename), then removed.
    let gone = snapshots_dir(&c).join(format!(".creating-deleted-{snap}"));
    fs::rename(&d, &gone).map_err(io(format!("cannot remove {}", d.display())))?;
    remove_tree(&gone, storage::container_maps(&cfg).as_ref())?;
    if ctx.json {
        ctx.print_json(&json!({"name": c.name, "deleted": snap}));
    } else {
        ctx.term
            .say(&format!("{}: deleted snapshot {snap}", c.name));
    }
    Ok(())
}

/// `YYYY-MM-DD HH:MM:SS UTC` for seconds since the epoch.
fn utc_text(secs: i64) -> String {
    let f = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&f).ok())
        .unwrap_or_else(|| secs.to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_dates() {
        assert_eq!(super::utc_text(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(super::utc_text(1_796_083_261), "2026-12-01 00:01:01 UTC");
    }
}
