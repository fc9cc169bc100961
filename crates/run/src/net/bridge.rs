//! Bridge mode's root work: the bridge, the veth pair and its names and
//! MACs, `lo`, and deleting a recorded veth.
#![forbid(unsafe_code)]

use std::io::Read;
use std::net::IpAddr;
use std::os::fd::BorrowedFd;
use std::path::PathBuf;

use super::attachment::Attachment;
use super::host::{valid_ifname, HostNet};
use super::l2;
use super::lease::{Lease, LeaseStore};
use super::nat;
use super::rtnl::Rtnl;
use super::subnet::{parse_addr, pick_subnet, Subnet};
use crate::config::NetworkMode;
use crate::error::{Error, Result};
use crate::state::ProcessRef;

/// A veth request, as root mode and the helper make it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VethRequest {
    /// The container name (recorded in the lease).
    pub name: String,
    /// The bridge.
    pub bridge: String,
    /// A fixed host veth name, else `veth` + 6 random characters.
    pub veth: Option<String>,
    /// A static `a.b.c.d[/len]`, else one from the lease file.
    pub address: Option<String>,
    /// A gateway other than the bridge's address.
    pub gateway: Option<String>,
    /// The container side's MAC, else a random locally administered one.
    pub hwaddr: Option<String>,
    /// The uid the lease is for.
    pub uid: u32,
    /// Host ports to forward to the container (root only).
    pub publish: Vec<crate::config::Publish>,
}

/// Make sure `bridge` exists and is up with its gateway address; returns
/// its index and subnet. A new bridge gets `host.subnet`, or the first
/// candidate that collides with no host route or address.
///
/// # Errors
/// [`Error::Netlink`], or [`Error::ConfigInvalid`] when `bridge` names a
/// link that is not a bridge, or no candidate subnet is free.
pub fn ensure_bridge(c: &mut Rtnl, bridge: &str, host: &HostNet) -> Result<(u32, Subnet)> {
    if !valid_ifname(bridge) {
        return Err(Error::ConfigInvalid {
            reason: format!("bridge name {bridge:?} is not a valid interface name"),
        });
    }
    let link = match c.link(bridge)? {
        Some(l) => l,
        None => {
            match c.create_bridge(bridge) {
                Ok(()) => {}
                // Another monitor won the race.
                Err(e) if e.errno() == Some(nix::errno::Errno::EEXIST) => {}
                Err(e) => return Err(e),
            }
            c.link(bridge)?.ok_or_else(|| Error::Netlink {
                op: format!("RTM_GETLINK {bridge} after creating it"),
                source: nix::errno::Errno::ENODEV,
            })?
        }
    };
    if link.kind.as_deref() != Some("bridge") {
        return Err(Error::ConfigInvalid {
            reason: format!("{bridge} exists and is not a bridge"),
        });
    }
    let addrs = c.addresses()?;
    let mine = addrs.iter().find_map(|a| match a.addr {
        IpAddr::V4(v4) if a.index == link.index => Some((v4, a.prefix)),
        _ => None,
    });
    let subnet = match (mine, host.subnet) {
        (Some((a, p)), _) => Subnet::containing(a, p),
        (None, Some(s)) => {
            c.add_address(link.index, s.first_host(), s.prefix)
                .or_else(ignore_eexist)?;
            s
        }
        (None, None) => {
            let s = pick_subnet(&c.routes4()?, &addrs)?;
            c.add_address(link.index, s.first_host(), s.prefix)
                .or_else(ignore_eexist)?;
            s
        }
    };
    if host.ipv6 && super::dnsmasq::ipv6_enabled(bridge) {
        // The ULA /64, ::1 of it, usable at once (no DAD: dnsmasq binds it).
        let net = super::dnsmasq::subnet6_for(host, bridge)?;
        c.add_address6(link.index, super::dnsmasq::gateway6(net), 64, true)
            .or_else(ignore_eexist)?;
    }
    refuse_adverts(bridge)?;
    if !link.up {
        c.set_up(link.index, true)?;
    }
    Ok((link.index, subnet))
}

/// The host takes no router advert and no redirect from a container
/// (issue 13, row 4): `accept_ra` and `accept_redirects` off on the bridge
/// and on every host-side veth. A host without IPv6 has nothing to turn off.
pub fn refuse_adverts(ifname: &str) -> Result<()> {
    if !valid_ifname(ifname) {
        return Err(Error::ConfigInvalid {
            reason: format!("{ifname:?} is not a valid interface name"),
        });
    }
    for key in ["accept_ra", "accept_redirects"] {
        let path = PathBuf::from(format!("/proc/sys/net/ipv6/conf/{ifname}/{key}"));
        match std::fs::write(&path, "0") {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(Error::Write { path, source }),
        }
    }
    Ok(())
}

fn ignore_eexist(e: Error) -> Result<()> {
    if e.errno() == Some(nix::errno::Errno::EEXIST) {
        Ok(())
    } else {
        Err(e)
    }
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    let ok = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_ok();
    if !ok {
        // Not security relevant (names and MACs): fall back to time + pid.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
            ^ u128::from(std::process::id());
        for (i, x) in b.iter_mut().enumerate() {
            *x = (t >> ((i % 16) * 8)) as u8;
        }
    }
    b
}

/// A fresh host veth name: `veth` + 6 characters of `[0-9a-z]`.
pub fn veth_name() -> String {
    const A: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let r: [u8; 6] = random_bytes();
    let s: String = r
        .iter()
        .map(|b| A[usize::from(*b) % A.len()] as char)
        .collect();
    format!("veth{s}")
}

/// A host-side MAC: first byte `0xfe`, so it never becomes the bridge's
/// own MAC (a bridge takes the lowest of its ports'; `lxc_user_nic.c`).
pub fn host_mac() -> [u8; 6] {
    let r: [u8; 5] = random_bytes();
    [0xfe, r[0], r[1], r[2], r[3], r[4]]
}

/// A random locally administered unicast MAC for the container side.
pub fn container_mac() -> [u8; 6] {
    let r: [u8; 5] = random_bytes();
    [0x0a, r[0], r[1], r[2], r[3], r[4]]
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn mac_text(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parse `aa:bb:cc:dd:ee:ff`.
///
/// # Errors
/// [`Error::ConfigInvalid`].
pub fn parse_mac(s: &str) -> Result<[u8; 6]> {
    let bad = || Error::ConfigInvalid {
        reason: format!("hwaddr {s:?} is not a MAC address"),
    };
    let v: Vec<u8> = s
        .split(':')
        .map(|p| u8::from_str_radix(p, 16).map_err(|_| bad()))
        .collect::<Result<_>>()?;
    let m: [u8; 6] = v.try_into().map_err(|_| bad())?;
    if m[0] & 1 == 1 || m == [0; 6] {
        return Err(bad());
    }
    Ok(m)
}

pub(super) fn lo_up(c: &mut Rtnl) -> Result<()> {
    if let Some(lo) = c.link("lo")? {
        if !lo.up {
            c.set_up(lo.index, true)?;
        }
    }
    Ok(())
}

/// Bring `lo` up in a netns owned by the caller's child user namespace: a
/// forked child joins the user namespace (allowed only single-threaded),
/// then the netns, where it holds `CAP_NET_ADMIN`.
pub(super) fn lo_up_as_owner(netns: BorrowedFd<'_>) -> Result<()> {
    use nix::sched::CloneFlags;
    let userns =
        crate::sys::ns_get_userns(netns).map_err(|e| Error::sys("ioctl(NS_GET_USERNS)", e))?;
    match crate::sys::fork().map_err(|e| Error::sys("fork()", e))? {
        crate::sys::Cloned::Child => {
            let ok = nix::sched::setns(&userns, CloneFlags::CLONE_NEWUSER).is_ok()
                && nix::sched::setns(netns, CloneFlags::CLONE_NEWNET).is_ok()
                && Rtnl::new().and_then(|mut c| lo_up(&mut c)).is_ok();
            crate::sys::exit_now(if ok { 0 } else { 1 })
        }
        crate::sys::Cloned::Parent { pid, .. } => {
            let ws = loop {
                match nix::sys::wait::waitpid(pid, None) {
                    Err(nix::errno::Errno::EINTR) => continue,
                    r => break r,
                }
            };
            match ws {
                Ok(nix::sys::wait::WaitStatus::Exited(_, 0)) => Ok(()),
                _ => Err(Error::Netlink {
                    op: "bring lo up in the container (as its owner)".into(),
                    source: nix::errno::Errno::EPERM,
                }),
            }
        }
    }
}

/// Deletes the host veth unless disarmed (setup failed half-way).
struct VethGuard<'a> {
    c: &'a mut Rtnl,
    index: Option<u32>,
    name: String,
}

impl Drop for VethGuard<'_> {
    fn drop(&mut self) {
        if let Some(i) = self.index {
            let _ = self.c.delete_link(i);
            l2::unguard(&self.name);
        }
    }
}

/// Root work shared by root mode and the helper: bridge, veth pair with the
/// peer created in `netns`, eth0, address, route, lease. `init` must own
/// `netns`; the lease lives as long as it does.
///
/// # Errors
/// As [`setup`](super::setup).
pub fn attach_veth(
    host: &HostNet,
    req: &VethRequest,
    init: ProcessRef,
    netns: BorrowedFd<'_>,
) -> Result<Attachment> {
    let mut c = Rtnl::new()?;
    let (br_index, subnet) = ensure_bridge(&mut c, &req.bridge, host)?;
    let peer_mac = req.hwaddr.as_deref().map(parse_mac).transpose()?;
    let container_end_mac = peer_mac.unwrap_or_else(container_mac);
    let store = LeaseStore::new(&host.lease_dir, &req.bridge);
    let mut leases = store.lock()?;
    for dead in leases.table.reclaim() {
        if !delete_recorded_veth(&mut c, &dead.veth, dead.ifindex, Some(br_index)) {
            forget_filter(&mut c, &dead.veth);
        }
        // A crashed monitor's forwards, unless that name runs again.
        if !dead.publish.is_empty()
            && !nat::live_name(&host.lease_dir, &req.bridge, &leases.table, &dead.name)
        {
            nat::remove_container(&host.lease_dir, &dead.name);
        }
    }
    if !req.publish.is_empty() {
        if !host.nat {
            return Err(Error::ConfigInvalid {
                reason: "--publish needs network.nat = true in the host config (published ports are DNAT rules in table inet davit)".into(),
            });
        }
        nat::check_publish(&req.publish)?;
        nat::refuse_taken(&host.lease_dir, &req.bridge, &leases.table, &req.publish)?;
    }
    // Egress NAT and forwarding, under the lease lock: a teardown that
    // finds the table empty removes them under the same lock.
    if host.nat {
        nat::ensure_bridge(
            &host.lease_dir,
            &nat::BridgeNat {
                bridge: req.bridge.clone(),
                subnet,
                subnet6: host.nat6.then(|| host.subnet6_for(&req.bridge)),
            },
        )?;
    }
    let (addr, prefix) = match &req.address {
        Some(s) => {
            let (a, p) = parse_addr(s, subnet.prefix)?;
            if let Some(h) = leases.table.holder(a) {
                return Err(Error::AddressInUse {
                    addr: a,
                    holder: h.name.clone(),
                });
            }
            if a == subnet.first_host() {
                return Err(Error::AddressInUse {
                    addr: a,
                    holder: format!("the bridge {}", req.bridge),
                });
            }
            (a, p)
        }
        None => (
            leases
                .table
                .next_free(&subnet)
                .ok_or_else(|| Error::AddressExhausted {
                    subnet: subnet.to_string(),
                })?,
            subnet.prefix,
        ),
    };
    let gateway = match &req.gateway {
        Some(g) => g.parse().map_err(|_| Error::ConfigInvalid {
            reason: format!("gateway {g:?} is not an IPv4 address"),
        })?,
        None => subnet.first_host(),
    };
    // A temporary name in the container: eth0 may not be free there yet,
    // and a name can only change while the link is down.
    let tmp = format!("dv{}", &veth_name()[4..]);
    let mut tries = 0;
    let veth = loop {
        let name = req.veth.clone().unwrap_or_else(veth_name);
        if !valid_ifname(&name) {
            return Err(Error::ConfigInvalid {
                reason: format!("veth name {name:?} is not a valid interface name"),
            });
        }
        match c.create_veth(&name, host_mac(), &tmp, Some(container_end_mac), netns) {
            Ok(()) => break name,
            Err(e)
                if e.errno() == Some(nix::errno::Errno::EEXIST)
                    && req.veth.is_none()
                    && tries < 8 =>
            {
                tries += 1;
            }
            Err(e) => return Err(e),
        }
    };
    let host_link = c.link(&veth)?.ok_or_else(|| Error::Netlink {
        op: format!("RTM_GETLINK {veth} after creating it"),
        source: nix::errno::Errno::ENODEV,
    })?;
    let mut guard = VethGuard {
        c: &mut c,
        index: Some(host_link.index),
        name: veth.clone(),
    };
    guard.c.set_master(host_link.index, br_index)?;
    refuse_adverts(&veth)?;
    // Only the container's own MAC and address leave its port.
    let prefix6 = (host.ipv6 && super::dnsmasq::ipv6_enabled(&req.bridge))
        .then(|| host.subnet6_for(&req.bridge).network);
    l2::guard(&veth, container_end_mac, addr, prefix6)?;
    guard.c.set_up(host_link.index, true)?;

    let mut inner = Rtnl::in_netns(netns)?;
    lo_up(&mut inner)?;
    let peer = inner.link(&tmp)?.ok_or_else(|| Error::Netlink {
        op: format!("RTM_GETLINK {tmp} in the container"),
        source: nix::errno::Errno::ENODEV,
    })?;
    inner.rename(peer.index, "eth0")?;
    inner.set_up(peer.index, true)?;
    inner.add_address(peer.index, addr, prefix)?;
    inner.add_default_route(peer.index, gateway)?;

    if !req.publish.is_empty() {
        nat::add_publish(&host.lease_dir, &req.name, addr, &req.publish)?;
    }
    leases.table.leases.push(Lease {
        addr,
        name: req.name.clone(),
        veth: veth.clone(),
        ifindex: host_link.index,
        mac: Some(mac_text(container_end_mac)),
        uid: req.uid,
        owner: init,
        publish: req.publish.clone(),
    });
    leases.table.last = Some(addr);
    // The bridge's dnsmasq answers this MAC with this address from now on.
    let saved = super::dnsmasq::ensure(host, &req.bridge, subnet, &leases.table)
        .and_then(|()| leases.save());
    if let Err(e) = saved {
        if !req.publish.is_empty() {
            nat::remove_container(&host.lease_dir, &req.name);
        }
        return Err(e);
    }
    guard.index = None;
    Ok(Attachment {
        mode: NetworkMode::Bridge,
        bridge: Some(req.bridge.clone()),
        link: Some(veth),
        ifindex: host_link.index,
        address: Some(addr),
        prefix,
        gateway: Some(gateway),
        lease_dir: Some(host.lease_dir.clone()),
        helper: None,
        user_process: None,
        init,
        nat: host.nat,
        publish: req.publish.clone(),
        resolv_conf: false,
        note: None,
    })
}

/// The veth `name` went with its container's namespace: drop its L2
/// filter, unless a link of that name exists again (someone else's now).
pub(super) fn forget_filter(c: &mut Rtnl, name: &str) {
    if matches!(c.link(name), Ok(None)) {
        l2::unguard(name);
    }
}

/// Delete host link `name` only if it still has index `ifindex` and is a
/// veth (on `bridge` when given): never an interface davit did not make.
pub(super) fn delete_recorded_veth(
    c: &mut Rtnl,
    name: &str,
    ifindex: u32,
    bridge: Option<u32>,
) -> bool {
    let Ok(Some(l)) = c.link_by_index(ifindex) else {
        return false;
    };
    if l.name != name || l.kind.as_deref() != Some("veth") {
        return false;
    }
    if bridge.is_some() && l.master != bridge {
        return false;
    }
    let gone = c.delete_link(ifindex).is_ok();
    if gone {
        l2::unguard(name);
    }
    gone
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    #[test]
    fn names_and_macs() {
        for _ in 0..50 {
            let n = veth_name();
            assert!(
                valid_ifname(&n) && n.len() == 10 && n.starts_with("veth"),
                "{n}"
            );
            assert_eq!(host_mac()[0], 0xfe);
            let m = container_mac();
            assert_eq!(m[0] & 1, 0, "unicast");
            assert_eq!(m[0] & 2, 2, "locally administered");
        }
        assert!(!valid_ifname("sixteen-chars-xx"));
        assert!(!valid_ifname("a/b"));
        assert!(!valid_ifname(".."));
        assert_eq!(parse_mac("02:00:00:aa:bb:cc").unwrap()[3], 0xaa);
        assert!(parse_mac("01:00:00:aa:bb:cc").is_err(), "multicast");
        assert!(parse_mac("zz").is_err());
        assert_eq!(
            parse_addr("10.0.3.9/24", 16).unwrap(),
            (Ipv4Addr::new(10, 0, 3, 9), 24)
        );
        assert_eq!(parse_addr("10.0.3.9", 16).unwrap().1, 16);
        assert!(parse_addr("10.0.3.9/40", 24).is_err());
    }
}
