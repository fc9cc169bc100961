//! A small synchronous rtnetlink client over `netlink-sys` and
//! `netlink-packet-route`: no async runtime, no threads, so it is safe in
//! the single-threaded monitor and in the setuid helper.
#![forbid(unsafe_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL,
    NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use nix::errno::Errno;

use crate::error::{Error, Result};

/// One link as a dump reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Interface index.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// `IFLA_INFO_KIND` (`veth`, `bridge`...), when reported.
    pub kind: Option<String>,
    /// Index of the bridge it is enslaved to.
    pub master: Option<u32>,
    /// Whether `IFF_UP` is set.
    pub up: bool,
    /// Received bytes (64-bit counters).
    pub rx_bytes: u64,
    /// Transmitted bytes.
    pub tx_bytes: u64,
}

/// One IPv4 or IPv6 address on a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addr {
    /// The link's index.
    pub index: u32,
    /// The address.
    pub addr: IpAddr,
    /// Its prefix length.
    pub prefix: u8,
}

/// One IPv4 route of the main table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route4 {
    /// Destination network.
    pub dst: Ipv4Addr,
    /// Prefix length (0 for the default route).
    pub prefix: u8,
}

/// A connected `NETLINK_ROUTE` socket in the network namespace it was
/// created in (a socket keeps that namespace for its lifetime).
#[derive(Debug)]
pub struct Rtnl {
    sock: Socket,
    seq: u32,
    what: &'static str,
}

fn nl_err(op: impl Into<String>, e: std::io::Error) -> Error {
    Error::Netlink {
        op: op.into(),
        source: Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
    }
}

impl Rtnl {
    /// Open a socket in the calling thread's network namespace.
    ///
    /// # Errors
    /// [`Error::Netlink`] if the socket cannot be made.
    pub fn new() -> Result<Rtnl> {
        Self::named("host")
    }

    pub(crate) fn named(what: &'static str) -> Result<Rtnl> {
        let mut sock = Socket::new(NETLINK_ROUTE).map_err(|e| nl_err("socket(AF_NETLINK)", e))?;
        sock.bind_auto()
            .map_err(|e| nl_err("bind(AF_NETLINK)", e))?;
        sock.connect(&SocketAddr::new(0, 0))
            .map_err(|e| nl_err("connect(AF_NETLINK)", e))?;
        Ok(Rtnl { sock, seq: 0, what })
    }

    /// Open a socket inside the network namespace `netns` (an open
    /// `/proc/PID/ns/net`). A short-lived thread joins the namespace and
    /// creates the socket; the calling thread never changes namespace.
    ///
    /// # Errors
    /// [`Error::Netlink`] naming `setns` when the namespace cannot be joined.
    pub fn in_netns(netns: BorrowedFd<'_>) -> Result<Rtnl> {
        std::thread::scope(|s| {
            s.spawn(|| {
                nix::sched::setns(netns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| {
                    Error::Netlink {
                        op: format!("setns({}, CLONE_NEWNET)", netns.as_raw_fd()),
                        source: e,
                    }
                })?;
                Rtnl::named("container")
            })
            .join()
            .unwrap_or_else(|_| {
                Err(Error::Netlink {
                    op: "setns thread".into(),
                    source: Errno::EIO,
                })
            })
        })
    }

    /// Send one request and collect the replies: the messages of a dump, or
    /// nothing for an acknowledged change.
    fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
        op: &dyn Fn() -> String,
    ) -> Result<Vec<RouteNetlinkMessage>> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut packet = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(msg));
        packet.header.flags = NLM_F_REQUEST | flags;
        packet.header.sequence_number = seq;
        packet.finalize();
        let mut buf = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut buf);
        self.sock
            .send(&buf, 0)
            .map_err(|e| nl_err(format!("{} ({})", op(), self.what), e))?;
        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let mut out = Vec::new();
        loop {
            let (data, _) = self
                .sock
                .recv_from_full()
                .map_err(|e| nl_err(format!("{} ({})", op(), self.what), e))?;
            let mut off = 0;
            while off < data.len() {
                let m: NetlinkMessage<RouteNetlinkMessage> =
                    NetlinkMessage::deserialize(&data[off..]).map_err(|_| Error::Netlink {
                        op: format!("{} ({}): bad reply", op(), self.what),
                        source: Errno::EBADMSG,
                    })?;
                let len = m.header.length as usize;
                let mine = m.header.sequence_number == seq;
                match m.payload {
                    NetlinkPayload::Done(_) if mine => return Ok(out),
                    NetlinkPayload::Error(e) if mine => {
                        return match e.code {
                            None => Ok(out),
                            Some(c) => Err(Error::Netlink {
                                op: format!("{} ({})", op(), self.what),
                                source: Errno::from_raw(-c.get()),
                            }),
                        };
                    }
                    NetlinkPayload::InnerMessage(inner) if mine => {
                        out.push(inner);
                        if !dump && flags & NLM_F_ACK == 0 {
                            return Ok(out);
                        }
                    }
                    _ => {}
                }
                if len == 0 {
                    break;
                }
                off += len;
            }
        }
    }

    fn change(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
        op: &dyn Fn() -> String,
    ) -> Result<()> {
        self.request(msg, NLM_F_ACK | flags, op).map(|_| ())
    }

    /// Every link of the namespace.
    ///
    /// # Errors
    /// [`Error::Netlink`].
    pub fn links(&mut self) -> Result<Vec<Link>> {
        let msgs = self.request(
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            NLM_F_DUMP,
            &|| "RTM_GETLINK dump".into(),
        )?;
        Ok(msgs
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(parse_link(&l)),
                _ => None,
            })
            .collect())
    }

    /// The link called `name`, if any.
    ///
    /// # Errors
    /// [`Error::Netlink`].
    pub fn link(&mut self, name: &str) -> Result<Option<Link>> {
        Ok(self.links()?.into_iter().find(|l| l.name == name))
    }

    /// The link with index `index`, if any.
    ///
    /// # Errors
    /// [`Error::Netlink`].
    pub fn link_by_index(&mut self, index: u32) -> Result<Option<Link>> {
        Ok(self.links()?.into_iter().find(|l| l.index == index))
    }

    /// Every address of the namespace.
    ///
    /// # Errors
    /// [`Error::Netlink`].
    pub fn addresses(&mut self) -> Result<Vec<Addr>> {
        let msgs = self.request(
            RouteNetlinkMessage::GetAddress(AddressMessage::default()),
            NLM_F_DUMP,
            &|| "RTM_GETADDR dump".into(),
        )?;
        let mut out = Vec::new();
        for m in msgs {
            if let RouteNetlinkMessage::NewAddress(a) = m {
                let addr = a.attributes.iter().find_map(|at| match at {
                    AddressAttribute::Local(ip) => Some(*ip),
                    _ => None,
                });
                let addr = addr.or_else(|| {
                    a.attributes.iter().find_map(|at| match at {
                        AddressAttribute::Address(ip) => Some(*ip),
                        _ => None,
                    })
                });
                if let Some(addr) = addr {
                    out.push(Addr {
                        index: a.header.index,
                        addr,
                        prefix: a.header.prefix_len,
                    });
                }
            }
        }
        Ok(out)
    }

    /// The IPv4 routes of the main table.
    ///
    /// # Errors
    /// [`Error::Netlink`].
    pub fn routes4(&mut self) -> Result<Vec<Route4>> {
        let mut req = RouteMessage::default();
        req.header.address_family = AddressFamily::Inet;
        let msgs = self.request(RouteNetlinkMessage::GetRoute(req), NLM_F_DUMP, &|| {
            "RTM_GETROUTE dump".into()
        })?;
        let mut out = Vec::new();
        for m in msgs {
            if let RouteNetlinkMessage::NewRoute(r) = m {
                if r.header.table != RouteHeader::RT_TABLE_MAIN {
                    continue;
                }
                let dst = r
                    .attributes
                    .iter()
                    .find_map(|a| match a {
                        RouteAttribute::Destination(RouteAddress::Inet(d)) => Some(*d),
                        _ => None,
                    })
                    .unwrap_or(Ipv4Addr::UNSPECIFIED);
                out.push(Route4 {
                    dst,
                    prefix: r.header.destination_prefix_length,
                });
            }
        }
        Ok(out)
    }

    /// Create a bridge called `name` (down, no address).
    ///
    /// # Errors
    /// [`Error::Netlink`] (`EEXIST` when it already exists).
    pub fn create_bridge(&mut self, name: &str) -> Result<()> {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.into()));
        m.attributes
            .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
                InfoKind::Bridge,
            )]));
        self.change(
            RouteNetlinkMessage::NewLink(m),
            NLM_F_CREATE | NLM_F_EXCL,
            &|| format!("RTM_NEWLINK bridge {name}"),
        )
    }

    /// Create a veth pair: `host` here with MAC `mac`, and its peer named
    /// `peer` created directly in the namespace `peer_netns`.
    ///
    /// # Errors
    /// [`Error::Netlink`] (`EEXIST` when `host` is taken).
    pub fn create_veth(
        &mut self,
        host: &str,
        mac: [u8; 6],
        peer: &str,
        peer_mac: Option<[u8; 6]>,
        peer_netns: BorrowedFd<'_>,
    ) -> Result<()> {
        let mut p = LinkMessage::default();
        p.attributes.push(LinkAttribute::IfName(peer.into()));
        if let Some(pm) = peer_mac {
            p.attributes.push(LinkAttribute::Address(pm.to_vec()));
        }
        p.attributes
            .push(LinkAttribute::NetNsFd(peer_netns.as_fd().as_raw_fd()));
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(host.into()));
        m.attributes.push(LinkAttribute::Address(mac.to_vec()));
        m.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(p))),
        ]));
        self.change(
            RouteNetlinkMessage::NewLink(m),
            NLM_F_CREATE | NLM_F_EXCL,
            &|| format!("RTM_NEWLINK veth {host} peer {peer}"),
        )
    }

    fn set_link(
        &mut self,
        index: u32,
        attrs: Vec<LinkAttribute>,
        up: Option<bool>,
        op: &dyn Fn() -> String,
    ) -> Result<()> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        if let Some(up) = up {
            m.header.change_mask = LinkFlags::Up;
            if up {
                m.header.flags = LinkFlags::Up;
            }
        }
        m.attributes = attrs;
        self.change(RouteNetlinkMessage::SetLink(m), 0, op)
    }

    /// Bring link `index` up or down.
    ///
    /// # Errors
    /// [`Error::Netlink`].
    pub fn set_up(&mut self, index: u32, up: bool) -> Result<()> {
        self.set_link(index, Vec::new(), Some(up), &|| {
            format!("RTM_SETLINK {index} {}", if up { "up" } else { "down" })
        })
    }

    /// Enslave link `index` to bridge `master`.
    ///
    /// # Errors
    /// [`Error::Netlink`].
    pub fn set_master(&mut self, index: u32, master: u32) -> Result<()> {
        self.set_link(
            index,
            vec![LinkAttribute::Controller(master)],
            None,
            &|| format!("RTM_SETLINK {index} master {master}"),
        )
    }

    /// Rename link `index` (it must be down).
    ///
    /// # Errors
    /// [`Error::Netlink`].
    pub fn rename(&mut self, index: u32, name: &str) -> Result<()> {
        self.set_link(
            index,
            vec![LinkAttribute::IfName(name.into())],
            None,
            &|| format!("RTM_SETLINK {index} name {name}"),
        )
    }

    /// Delete link `index`.
    ///
    /// # Errors
    /// [`Error::Netlink`] (`ENODEV` when it is gone).
    pub fn delete_link(&mut self, index: u32) -> Result<()> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        self.change(RouteNetlinkMessage::DelLink(m), 0, &|| {
            format!("RTM_DELLINK {index}")
        })
    }

    /// Add `addr/prefix` to link `index`.
    ///
    /// # Errors
    /// [`Error::Netlink`] (`EEXIST` when present).
    pub fn add_address(&mut self, index: u32, addr: Ipv4Addr, prefix: u8) -> Result<()> {
        let mut m = AddressMessage::default();
        m.header.family = AddressFamily::Inet;
        m.header.prefix_len = prefix;
        m.header.index = index;
        m.attributes.push(AddressAttribute::Local(addr.into()));
        m.attributes.push(AddressAttribute::Address(addr.into()));
        let bcast = u32::from(addr) | (u32::MAX.checked_shr(u32::from(prefix)).unwrap_or(0));
        m.attributes
            .push(AddressAttribute::Broadcast(Ipv4Addr::from(bcast)));
        self.change(
            RouteNetlinkMessage::NewAddress(m),
            NLM_F_CREATE | NLM_F_EXCL,
            &|| format!("RTM_NEWADDR {addr}/{prefix} dev {index}"),
        )
    }

    /// Add IPv6 `addr/prefix` to link `index`, without duplicate address
    /// detection when `nodad` (usable at once, as `ip addr add ... nodad`).
    ///
    /// # Errors
    /// [`Error::Netlink`] (`EEXIST` when present).
    pub fn add_address6(
        &mut self,
        index: u32,
        addr: Ipv6Addr,
        prefix: u8,
        nodad: bool,
    ) -> Result<()> {
        let mut m = AddressMessage::default();
        m.header.family = AddressFamily::Inet6;
        m.header.prefix_len = prefix;
        m.header.index = index;
        m.attributes.push(AddressAttribute::Local(addr.into()));
        m.attributes.push(AddressAttribute::Address(addr.into()));
        if nodad {
            m.attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        self.change(
            RouteNetlinkMessage::NewAddress(m),
            NLM_F_CREATE | NLM_F_EXCL,
            &|| format!("RTM_NEWADDR {addr}/{prefix} dev {index}"),
        )
    }

    /// Add the IPv4 default route via `gateway` on link `index`.
    ///
    /// # Errors
    /// [`Error::Netlink`].
    pub fn add_default_route(&mut self, index: u32, gateway: Ipv4Addr) -> Result<()> {
        let mut m = RouteMessage::default();
        m.header.address_family = AddressFamily::Inet;
        m.header.table = RouteHeader::RT_TABLE_MAIN;
        m.header.protocol = RouteProtocol::Static;
        m.header.scope = RouteScope::Universe;
        m.header.kind = RouteType::Unicast;
        m.attributes
            .push(RouteAttribute::Gateway(RouteAddress::Inet(gateway)));
        m.attributes.push(RouteAttribute::Oif(index));
        self.change(
            RouteNetlinkMessage::NewRoute(m),
            NLM_F_CREATE | NLM_F_EXCL,
            &|| format!("RTM_NEWROUTE default via {gateway} dev {index}"),
        )
    }
}

fn parse_link(l: &LinkMessage) -> Link {
    let mut out = Link {
        index: l.header.index,
        name: String::new(),
        kind: None,
        master: None,
        up: l.header.flags.contains(LinkFlags::Up),
        rx_bytes: 0,
        tx_bytes: 0,
    };
    for a in &l.attributes {
        match a {
            LinkAttribute::IfName(n) => out.name = n.clone(),
            LinkAttribute::Controller(m) => out.master = Some(*m),
            LinkAttribute::Stats64(s) => {
                out.rx_bytes = s.rx_bytes;
                out.tx_bytes = s.tx_bytes;
            }
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    if let LinkInfo::Kind(k) = i {
                        out.kind = Some(k.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// Open `/proc/PID/ns/net` read-only.
///
/// # Errors
/// [`Error::Read`].
pub fn open_netns(pid: i32) -> Result<OwnedFd> {
    let path = std::path::PathBuf::from(format!("/proc/{pid}/ns/net"));
    std::fs::File::open(&path)
        .map(OwnedFd::from)
        .map_err(|source| Error::Read { path, source })
}
