//! Releasing a container's network: the lease, a leftover veth, the
//! user-mode process, and the recorded attachment.
#![forbid(unsafe_code)]

use std::path::Path;

use super::attachment::{Attachment, ATTACHMENT_FILE};
use super::bridge::{delete_recorded_veth, forget_filter};
use super::lease::LeaseStore;
use super::nat;
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
    // Its forwards (keyed by name, so a stale start's go too), and the
    // bridge's NAT with the bridge's last container; the table goes with
    // its last chain. Under the lease lock, as the setup is.
    // One nft listing and one batch for both.
    let mut chains = Vec::new();
    if !l.table.leases.iter().any(|x| x.name == name) {
        chains.extend(nat::container_chains(name));
    }
    if l.table.leases.is_empty() {
        chains.extend(nat::bridge_chains(bridge));
    }
    if !chains.is_empty() {
        nat::remove(dir, &chains);
    }
    // Its name and DHCP line go; the bridge's dnsmasq goes with the last lease.
    super::dnsmasq::refresh(dir, bridge, &l.table)
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

/// Release a container's network: the one call every path that ends a
/// container makes, once (the monitor when init exits or the start fails,
/// `stop`, crash recovery). `unsaved` is an attachment the caller holds that
/// may never have been recorded (setup worked, writing `net.json` did not);
/// it is torn down first. What `STATE_DIR/net.json` records is torn down in
/// any case and the record removed.
///
/// # Errors
/// The first error of [`teardown`] and [`teardown_recorded`]; both always
/// run.
pub fn release(state_dir: &Path, name: &str, unsaved: Option<&Attachment>) -> Result<()> {
    let held = unsaved.map_or(Ok(()), |att| teardown(att, name));
    let recorded = teardown_recorded(state_dir, name);
    held.and(recorded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::ProcessRef;

    fn none_attachment() -> Attachment {
        let init = ProcessRef {
            pid: i32::MAX,
            start_time: 1,
        };
        Attachment::none(init, None)
    }

    #[test]
    fn release_without_a_record_is_a_no_op() {
        let dir = tempfile::tempdir().unwrap();
        release(dir.path(), "c1", None).unwrap();
        release(dir.path(), "c1", Some(&none_attachment())).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn release_removes_the_record_and_its_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        none_attachment().save(dir.path()).unwrap();
        std::fs::write(dir.path().join(".net.json.tmp"), "{").unwrap();
        release(dir.path(), "c1", None).unwrap();
        assert!(Attachment::load(dir.path()).unwrap().is_none());
        assert!(!dir.path().join(".net.json.tmp").exists());
        // A second release (stop after the monitor's) finds nothing to do.
        release(dir.path(), "c1", None).unwrap();
    }

    #[test]
    fn release_removes_a_broken_record_and_reports_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(ATTACHMENT_FILE), "not json").unwrap();
        let e = release(dir.path(), "c1", Some(&none_attachment())).unwrap_err();
        assert!(matches!(e, Error::StateParse { .. }), "{e:?}");
        assert!(!dir.path().join(ATTACHMENT_FILE).exists());
    }
}
