//! Releasing a container's network: the lease, a leftover veth, the
//! user-mode process, and the recorded attachment.
#![forbid(unsafe_code)]

use std::path::Path;

use super::attachment::{Attachment, ATTACHMENT_FILE};
use super::bridge::{delete_recorded_veth, forget_filter};
use super::lease::LeaseStore;
use super::rtnl::Rtnl;
use super::{usermode, usernet};
use crate::config::NetworkMode;
use crate::error::{Error, Result};

/// Release what [`setup`](super::setup) made: the lease (only this
/// container's, only once its init is gone or `force`), the host veth if it
/// outlived the netns, the user-mode process. Idempotent.
///
/// # Errors
/// Lease file errors; a plain user's release goes through the helper and
/// its failure is returned.
pub fn teardown(att: &Attachment, name: &str) -> Result<()> {
    if let Some((_, p)) = &att.user_process {
        usermode::stop(p);
    }
    if att.mode != NetworkMode::Bridge {
        return Ok(());
    }
    let (Some(bridge), Some(dir)) = (&att.bridge, &att.lease_dir) else {
        return Ok(());
    };
    if !nix::unistd::geteuid().is_root() {
        if let Some(h) = &att.helper {
            return usernet::call_release(h, name, bridge);
        }
        return Ok(());
    }
    let mut c = Rtnl::new()?;
    if let Some(link) = &att.link {
        if !delete_recorded_veth(&mut c, link, att.ifindex, None) {
            forget_filter(&mut c, link);
        }
    }
    let store = LeaseStore::new(dir, bridge);
    let mut l = store.lock()?;
    let before = l.table.leases.len();
    l.table
        .leases
        .retain(|x| !(x.name == name && x.owner == att.init) && x.is_live());
    if l.table.leases.len() != before {
        l.save()?;
    }
    Ok(())
}

/// Tear down what `STATE_DIR/net.json` records and remove the file. Used by
/// the monitor when init exits, by `stop`, and by crash recovery.
///
/// # Errors
/// As [`teardown`]; the record is removed even then.
pub fn teardown_recorded(state_dir: &Path, name: &str) -> Result<()> {
    // The record goes in any case, so a failing release never blocks
    // `stop`; a lease left behind is reclaimed once its init is gone.
    let r = Attachment::load(state_dir).and_then(|a| match a {
        Some(att) => teardown(&att, name),
        None => Ok(()),
    });
    for f in [ATTACHMENT_FILE, ".net.json.tmp"] {
        let p = state_dir.join(f);
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(Error::Write { path: p, source }),
        }
    }
    r
}
