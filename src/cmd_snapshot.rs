//! `davit snapshot` (as `lxc-snapshot`) and its `list`, `restore` and
//! `delete`: the arguments and what the store's result says
//! (`davit_store::snapshot` keeps the snapshots).

use clap::{Args, Subcommand};
use davit_run::config::Backend;
use serde_json::json;

use crate::ctx::{Ctx, Failure};
use crate::paths;

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

pub fn snapshot(ctx: &Ctx, a: SnapshotArgs) -> Result<(), Failure> {
    match a.cmd {
        Some(SnapshotCmd::List { name }) => list(ctx, &name),
        Some(SnapshotCmd::Restore { name, snap }) => restore(ctx, &name, &snap),
        Some(SnapshotCmd::Delete { name, snap }) => delete(ctx, &name, &snap),
        None => make(ctx, a.name.as_deref().unwrap_or_default(), a.snap),
    }
}

fn make(ctx: &Ctx, name: &str, snap: Option<String>) -> Result<(), Failure> {
    let d = paths::store()?.snapshot(name, snap)?;
    let (snap, secs) = (d.snap, d.seconds);
    if ctx.json {
        ctx.print_json(&json!({"name": name, "snapshot": snap, "storage": d.backend.as_str(), "seconds": secs}));
    } else {
        let what = match d.backend {
            Backend::Overlay => "upper directory",
            Backend::Dir => "rootfs",
        };
        ctx.term.say(&format!(
            "{name}: snapshot {snap} (a copy of the {what}) in {secs:.2}s"
        ));
    }
    Ok(())
}

fn list(ctx: &Ctx, name: &str) -> Result<(), Failure> {
    let snaps = paths::store()?.snapshots(name)?;
    if ctx.json {
        let v: Vec<_> = snaps
            .iter()
            .map(|s| json!({"name": s.name, "made": (s.made_ns / 1_000_000_000) as u64}))
            .collect();
        ctx.print_json(&v);
    } else {
        for s in &snaps {
            let when = utc_text((s.made_ns / 1_000_000_000) as i64);
            println!("{}\t{when}", s.name);
        }
    }
    Ok(())
}

fn restore(ctx: &Ctx, name: &str, snap: &str) -> Result<(), Failure> {
    let d = paths::store()?.restore(name, snap)?;
    let secs = d.seconds;
    if ctx.json {
        ctx.print_json(&json!({"name": name, "restored": snap, "seconds": secs}));
    } else {
        ctx.term
            .say(&format!("{name}: restored {snap} in {secs:.2}s"));
    }
    Ok(())
}

fn delete(ctx: &Ctx, name: &str, snap: &str) -> Result<(), Failure> {
    paths::store()?.delete_snapshot(name, snap)?;
    if ctx.json {
        ctx.print_json(&json!({"name": name, "deleted": snap}));
    } else {
        ctx.term.say(&format!("{name}: deleted snapshot {snap}"));
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
