//! The network lines of `info`: mode, addresses, link and byte counters.
#![forbid(unsafe_code)]

use std::net::IpAddr;
use std::os::fd::AsFd;
use std::path::Path;

use super::attachment::Attachment;
use super::rtnl::{self, Rtnl};
use crate::config::NetworkMode;
use crate::error::Result;

/// The network lines of `info` (`lxc-info`'s IP, Link, TX/RX/Total bytes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetInfo {
    /// The mode in effect.
    pub mode: Option<NetworkMode>,
    /// The container's addresses, `lo` and IPv6 link-local left out.
    pub ips: Vec<IpAddr>,
    /// The host-side veth.
    pub link: Option<String>,
    /// Bytes the container sent (the host veth's rx).
    pub tx_bytes: Option<u64>,
    /// Bytes the container received (the host veth's tx).
    pub rx_bytes: Option<u64>,
    /// `tx + rx`.
    pub total_bytes: Option<u64>,
    /// The one-line note recorded at start.
    pub note: Option<String>,
    /// The host ports forwarded to it (`--publish`).
    pub publish: Vec<crate::config::Publish>,
}

/// Network info of a running container from its `STATE_DIR/net.json`.
/// Addresses are read inside the container's netns (as `lxc-info` does)
/// when the caller may join it, else the recorded one is shown.
///
/// # Errors
/// [`Error::Read`](crate::Error::Read)/[`Error::StateParse`](crate::Error::StateParse)
/// for a broken record; netlink failures only leave fields empty.
pub fn net_info(state_dir: &Path) -> Result<Option<NetInfo>> {
    let Some(att) = Attachment::load(state_dir)? else {
        return Ok(None);
    };
    let mut ni = NetInfo {
        mode: Some(att.mode),
        link: att.link.clone(),
        note: att.note.clone(),
        publish: att.publish.clone(),
        ..NetInfo::default()
    };
    if !att.init.is_alive() {
        return Ok(Some(ni));
    }
    ni.ips = container_ips(att.init.pid).unwrap_or_default();
    if ni.ips.is_empty() {
        ni.ips.extend(att.address.map(IpAddr::V4));
    }
    if let Some(link) = &att.link {
        if let Ok(Some((rx, tx))) = link_counters(link) {
            // Swapped to the container's view: what the host end received,
            // the container sent.
            ni.tx_bytes = Some(rx);
            ni.rx_bytes = Some(tx);
            ni.total_bytes = Some(rx + tx);
        }
    }
    Ok(Some(ni))
}

/// `(rx_bytes, tx_bytes)` of host link `name`.
///
/// # Errors
/// [`Error::Netlink`](crate::Error::Netlink).
pub fn link_counters(name: &str) -> Result<Option<(u64, u64)>> {
    Ok(Rtnl::new()?.link(name)?.map(|l| (l.rx_bytes, l.tx_bytes)))
}

/// The addresses inside `pid`'s netns, without `lo` and IPv6 link-local.
///
/// # Errors
/// [`Error::Read`](crate::Error::Read) if the netns cannot be opened,
/// [`Error::Netlink`](crate::Error::Netlink).
pub fn container_ips(pid: i32) -> Result<Vec<IpAddr>> {
    let ns = rtnl::open_netns(pid)?;
    let mut c = Rtnl::in_netns(ns.as_fd())?;
    let lo: Vec<u32> = c
        .links()?
        .into_iter()
        .filter(|l| l.name == "lo")
        .map(|l| l.index)
        .collect();
    Ok(c.addresses()?
        .into_iter()
        .filter(|a| !lo.contains(&a.index))
        .filter(|a| match a.addr {
            IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) != 0xfe80,
            IpAddr::V4(_) => true,
        })
        .map(|a| a.addr)
        .collect())
}
