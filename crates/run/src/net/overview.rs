//! `davit network`: the bridges davit uses in this network namespace,
//! their addresses, leases and published ports, and whether NAT, DHCP and
//! DNS (the bridge's dnsmasq) and IPv6 are up.
#![forbid(unsafe_code)]

use std::collections::BTreeSet;
use std::net::IpAddr;

use serde::Serialize;

use super::host::HostNet;
use super::lease::LeaseStore;
use super::rtnl::Rtnl;
use crate::error::Result;

/// One container's lease on a bridge.
#[derive(Debug, Clone, Serialize)]
pub struct LeaseView {
    /// The container.
    pub name: String,
    /// Its address.
    pub address: std::net::Ipv4Addr,
    /// Its MAC (leases made before DHCP have none).
    pub mac: Option<String>,
    /// The host side of its veth.
    pub veth: String,
    /// Whether its init still runs.
    pub live: bool,
    /// Its published ports, `[HOSTIP:]HOSTPORT:PORT/PROTO`.
    pub publish: Vec<String>,
}

/// One bridge.
#[derive(Debug, Clone, Serialize)]
pub struct BridgeView {
    /// Its name.
    pub name: String,
    /// Whether the link exists now.
    pub exists: bool,
    /// Whether it is up.
    pub up: bool,
    /// Its addresses, `ADDR/PREFIX` (link-local ones left out).
    pub addresses: Vec<String>,
    /// The containers holding a lease on it.
    pub leases: Vec<LeaseView>,
    /// Whether its NAT chains are in table `inet davit` now.
    pub nat: bool,
    /// Whether its dnsmasq runs (DHCP and DNS).
    pub dhcp_dns: bool,
    /// The pid of that dnsmasq.
    pub dnsmasq_pid: Option<i32>,
    /// The DNS domain of its containers, when dnsmasq runs.
    pub domain: Option<String>,
    /// Whether it carries its IPv6 /64 (router adverts go with dnsmasq).
    pub ipv6: bool,
}

/// The bridges davit knows of: the configured one and every bridge with a
/// lease file in the lease directory, as they are now.
///
/// # Errors
/// Netlink, or a lease file that cannot be read.
pub fn overview(host: &HostNet) -> Result<Vec<BridgeView>> {
    let mut names: BTreeSet<String> = BTreeSet::new();
    names.insert(host.bridge.clone());
    if let Ok(rd) = std::fs::read_dir(&host.lease_dir) {
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if let Some(b) = n.strip_suffix(".json") {
                if super::host::valid_ifname(b) {
                    names.insert(b.to_owned());
                }
            }
        }
    }
    let mut c = Rtnl::new()?;
    let links = c.links()?;
    let addrs = c.addresses()?;
    let chains = super::nat::chains().unwrap_or_default();
    let mut out = Vec::new();
    for name in names {
        let link = links.iter().find(|l| l.name == name);
        let mine: Vec<IpAddr> = link
            .map(|l| {
                addrs
                    .iter()
                    .filter(|a| a.index == l.index)
                    .filter(|a| !matches!(a.addr, IpAddr::V6(v) if v.segments()[0] == 0xfe80))
                    .map(|a| a.addr)
                    .collect()
            })
            .unwrap_or_default();
        let addresses = link
            .map(|l| {
                addrs
                    .iter()
                    .filter(|a| a.index == l.index && mine.contains(&a.addr))
                    .map(|a| format!("{}/{}", a.addr, a.prefix))
                    .collect()
            })
            .unwrap_or_default();
        let six = host.subnet6_for(&name);
        let ipv6 = mine
            .iter()
            .any(|a| matches!(a, IpAddr::V6(v) if six.contains(*v)));
        let table = LeaseStore::new(&host.lease_dir, &name).peek()?;
        let leases = table
            .leases
            .iter()
            .map(|l| LeaseView {
                name: l.name.clone(),
                address: l.addr,
                mac: l.mac.clone(),
                veth: l.veth.clone(),
                live: l.is_live(),
                publish: l.publish.iter().map(|p| p.to_string()).collect(),
            })
            .collect();
        let dns = super::dnsmasq::running(&host.lease_dir, &name);
        out.push(BridgeView {
            exists: link.is_some(),
            up: link.is_some_and(|l| l.up),
            nat: chains.contains(&super::nat::post_chain(&name)),
            dhcp_dns: dns.is_some(),
            dnsmasq_pid: dns.as_ref().map(|r| r.process.pid),
            domain: dns.map(|r| r.domain),
            ipv6,
            name,
            addresses,
            leases,
        });
    }
    Ok(out)
}
