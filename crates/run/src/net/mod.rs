//! Container networking (issue 5; security.md (e) "Networking").
//!
//! Three modes, chosen by the container config's `[network] mode`:
//!
//! * **`bridge`** — a veth pair to a host bridge (`davitbr0` by default).
//!   As root, [`setup`] creates the bridge on first use with the gateway
//!   address, creates the veth with its peer directly in the container's
//!   network namespace under a temporary name, renames the peer `eth0` while
//!   it is down, gives it an address from a locked [lease file](lease) and a
//!   default route via the bridge. A plain user's monitor asks the setuid
//!   helper `davit-usernet` ([`usernet`]) to do the same within the quota
//!   of `/etc/davit/usernet`.
//! * **`user`** — rootless user-mode networking through `slirp4netns` or
//!   `pasta` ([`usermode`]), no privilege needed.
//! * **`none`** — only `lo`.
//!
//! Everything goes over netlink ([`rtnl`], synchronous, no async runtime
//! and no `ip` binary). The monitor calls [`setup`] while init waits to be
//! released (the `on_ready` hook of [`spawn_init`](crate::spawn::spawn_init)),
//! records the [`Attachment`] as `RUNTIME/NAME/net.json`, and calls
//! [`teardown_recorded`] when init exits; `stop` and crash recovery call it
//! too. [`net_info`] gives `info` its IP / Link / TX / RX / Total lines.
#![forbid(unsafe_code)]

pub mod l2;
pub mod lease;
pub mod rtnl;
pub mod usermode;
pub mod usernet;

use std::fmt;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::config::{ContainerConfig, NetworkMode};
use crate::error::{Error, Result};
use crate::state::ProcessRef;
use lease::{Lease, LeaseStore};
use rtnl::Rtnl;

/// Where the host-wide settings live.
pub const HOST_CONFIG: &str = "/etc/davit/config.toml";
/// The default bridge.
pub const DEFAULT_BRIDGE: &str = "davitbr0";
/// The default lease directory.
pub const DEFAULT_LEASE_DIR: &str = "/run/davit/net";
/// The default path of the setuid helper.
pub const DEFAULT_HELPER: &str = "/usr/local/libexec/davit-usernet";
/// The file name of the recorded attachment in `RUNTIME/NAME/`.
pub const ATTACHMENT_FILE: &str = "net.json";
/// Private /24s tried, in order, for the default bridge subnet; the first
/// that overlaps no host route or address wins.
pub const SUBNET_CANDIDATES: [&str; 6] = [
    "10.0.3.0/24",
    "10.88.3.0/24",
    "10.147.3.0/24",
    "172.30.3.0/24",
    "192.168.203.0/24",
    "10.211.99.0/24",
];

/// An IPv4 network, `a.b.c.d/len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Subnet {
    /// The network address (host bits zero).
    pub network: Ipv4Addr,
    /// The prefix length, 8..=30.
    pub prefix: u8,
}

impl Subnet {
    /// The subnet containing `addr` with `prefix`.
    pub fn containing(addr: Ipv4Addr, prefix: u8) -> Subnet {
        Subnet {
            network: Ipv4Addr::from(u32::from(addr) & mask(prefix)),
            prefix,
        }
    }

    /// The first host address; davit's gateway (`.1`).
    pub fn first_host(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 1)
    }

    /// The broadcast address.
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !mask(self.prefix))
    }

    /// Whether `a` is inside.
    pub fn contains(&self, a: Ipv4Addr) -> bool {
        u32::from(a) & mask(self.prefix) == u32::from(self.network)
    }

    /// Whether two networks overlap.
    pub fn overlaps(&self, o: &Subnet) -> bool {
        let p = self.prefix.min(o.prefix);
        u32::from(self.network) & mask(p) == u32::from(o.network) & mask(p)
    }
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix.min(32)))
    }
}

impl FromStr for Subnet {
    type Err = Error;
    fn from_str(s: &str) -> Result<Subnet> {
        let bad = || Error::ConfigInvalid {
            reason: format!("subnet {s:?} is not an IPv4 a.b.c.d/8..30"),
        };
        let (a, p) = s.split_once('/').ok_or_else(bad)?;
        let a: Ipv4Addr = a.parse().map_err(|_| bad())?;
        let p: u8 = p.parse().map_err(|_| bad())?;
        if !(8..=30).contains(&p) {
            return Err(bad());
        }
        Ok(Subnet::containing(a, p))
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl Serialize for Subnet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Subnet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Subnet, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Which user-mode tool to use for `network = "user"`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UserTool {
    /// `slirp4netns` if installed, else `pasta`.
    #[default]
    Auto,
    /// `slirp4netns` only.
    Slirp4netns,
    /// `pasta` only.
    Pasta,
}

/// Host-wide network settings: the `[network]` table of
/// `/etc/davit/config.toml`. Every key is optional.
///
/// ```toml
/// [network]
/// bridge = "davitbr0"
/// subnet = "10.0.3.0/24"      # default: the first free of SUBNET_CANDIDATES
/// nat = false                 # egress NAT (nftables): not implemented, must stay off
/// lease_dir = "/run/davit/net"
/// usernet_helper = "/usr/local/libexec/davit-usernet"
/// user_tool = "auto"          # auto | slirp4netns | pasta
/// user_host_loopback = false  # user mode: may the container reach the host's 127.0.0.1
/// nameservers = ["10.0.3.1"]  # default: the host's non-loopback resolv.conf servers
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostNet {
    /// The bridge for containers that name none.
    #[serde(default = "default_bridge")]
    pub bridge: String,
    /// The bridge's subnet; the gateway is its first address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<Subnet>,
    /// Egress NAT through nftables. Off by default; not implemented yet, so
    /// `true` is refused rather than silently ignored.
    #[serde(default)]
    pub nat: bool,
    /// Where the lease files live.
    #[serde(default = "default_lease_dir")]
    pub lease_dir: PathBuf,
    /// The setuid helper for plain users.
    #[serde(default = "default_helper")]
    pub usernet_helper: PathBuf,
    /// The user-mode tool.
    #[serde(default)]
    pub user_tool: UserTool,
    /// Whether user mode lets the container reach the host's loopback
    /// (slirp4netns `10.0.2.2`); off by default, as podman does.
    #[serde(default)]
    pub user_host_loopback: bool,
    /// Nameservers written to a container's `/etc/resolv.conf`.
    #[serde(default)]
    pub nameservers: Vec<Ipv4Addr>,
}

fn default_bridge() -> String {
    DEFAULT_BRIDGE.into()
}
fn default_lease_dir() -> PathBuf {
    DEFAULT_LEASE_DIR.into()
}
fn default_helper() -> PathBuf {
    DEFAULT_HELPER.into()
}

impl Default for HostNet {
    fn default() -> Self {
        HostNet {
            bridge: default_bridge(),
            subnet: None,
            nat: false,
            lease_dir: default_lease_dir(),
            usernet_helper: default_helper(),
            user_tool: UserTool::Auto,
            user_host_loopback: false,
            nameservers: Vec::new(),
        }
    }
}

impl HostNet {
    /// Parse the `[network]` table of a davit host config (other tables
    /// are the CLI's business and ignored here).
    ///
    /// # Errors
    /// [`Error::ConfigParse`] / [`Error::ConfigInvalid`].
    pub fn from_toml(text: &str, path: &Path) -> Result<HostNet> {
        let perr = |e: toml::de::Error| Error::ConfigParse {
            path: path.to_owned(),
            source: Box::new(e),
        };
        let table: toml::Table = toml::from_str(text).map_err(perr)?;
        let hn = match table.get("network") {
            None => HostNet::default(),
            Some(v) => v.clone().try_into().map_err(perr)?,
        };
        hn.validate()?;
        Ok(hn)
    }

    /// Load `path`; a missing file gives the defaults.
    ///
    /// # Errors
    /// [`Error::Read`] or as [`HostNet::from_toml`].
    pub fn load(path: &Path) -> Result<HostNet> {
        match std::fs::read_to_string(path) {
            Ok(t) => HostNet::from_toml(&t, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(HostNet::default()),
            Err(source) => Err(Error::Read {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// Check names and switches.
    ///
    /// # Errors
    /// [`Error::ConfigInvalid`] or [`Error::Unsupported`] for `nat = true`.
    pub fn validate(&self) -> Result<()> {
        if !valid_ifname(&self.bridge) {
            return Err(Error::ConfigInvalid {
                reason: format!(
                    "bridge name {:?} is not a valid interface name",
                    self.bridge
                ),
            });
        }
        if self.nat {
            return Err(Error::Unsupported {
                what: "egress NAT (network.nat = true) is not implemented yet".into(),
            });
        }
        Ok(())
    }
}

/// Whether `n` is a usable interface name: 1..=15 bytes of `[A-Za-z0-9_.-]`,
/// not `.`/`..`.
pub fn valid_ifname(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 15
        && n != "."
        && n != ".."
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// What [`setup`] did, recorded as `RUNTIME/NAME/net.json` so `info`,
/// `stop` and crash recovery can find it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// The mode actually in effect (a plain user without any way to get a
    /// network falls back to `none`).
    pub mode: NetworkMode,
    /// The bridge (`bridge` mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<String>,
    /// The host-side veth (`Link` in `info`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// Its interface index.
    #[serde(default)]
    pub ifindex: u32,
    /// The container's IPv4 address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Ipv4Addr>,
    /// Its prefix length.
    #[serde(default)]
    pub prefix: u8,
    /// The default gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Ipv4Addr>,
    /// The lease directory the address came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_dir: Option<PathBuf>,
    /// The setuid helper that made it, when a plain user's monitor did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub helper: Option<PathBuf>,
    /// The user-mode process (slirp4netns or pasta) and its tool name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_process: Option<(String, ProcessRef)>,
    /// The container's init.
    pub init: ProcessRef,
    /// Whether davit wrote the container's `/etc/resolv.conf`.
    #[serde(default)]
    pub resolv_conf: bool,
    /// One line for the user, e.g. how to get a network when there is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Attachment {
    fn none(init: ProcessRef, note: Option<String>) -> Attachment {
        Attachment {
            mode: NetworkMode::None,
            bridge: None,
            link: None,
            ifindex: 0,
            address: None,
            prefix: 0,
            gateway: None,
            lease_dir: None,
            helper: None,
            user_process: None,
            init,
            resolv_conf: false,
            note,
        }
    }

    /// Write to `STATE_DIR/net.json` (temp file + rename).
    ///
    /// # Errors
    /// [`Error::Write`].
    pub fn save(&self, state_dir: &Path) -> Result<()> {
        let path = state_dir.join(ATTACHMENT_FILE);
        let tmp = state_dir.join(".net.json.tmp");
        let body = serde_json::to_vec_pretty(self).map_err(|e| Error::Write {
            path: path.clone(),
            source: std::io::Error::other(e),
        })?;
        std::fs::write(&tmp, body).map_err(|source| Error::Write {
            path: tmp.clone(),
            source,
        })?;
        std::fs::rename(&tmp, &path).map_err(|source| Error::Write { path, source })
    }

    /// Read `STATE_DIR/net.json`; `None` when there is none.
    ///
    /// # Errors
    /// [`Error::Read`] or [`Error::StateParse`].
    pub fn load(state_dir: &Path) -> Result<Option<Attachment>> {
        let path = state_dir.join(ATTACHMENT_FILE);
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|source| Error::StateParse { path, source }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(Error::Read { path, source }),
        }
    }
}

/// The hint a plain user gets when a container has no network beyond `lo`.
pub const NO_NETWORK_HINT: &str = "container has only lo: install passt (pasta) or slirp4netns \
     (and make /dev/net/tun 0666) for network = \"user\", or ask the admin for a veth quota in /etc/davit/usernet";

/// What `setup` will do for this config and caller, without doing it: the
/// effective mode and, when the caller gets less than asked for, one line
/// saying how to get more (the CLI prints it at `start`).
pub fn plan(host: &HostNet, cfg: &ContainerConfig, euid: u32) -> (NetworkMode, Option<String>) {
    match cfg.network.mode {
        NetworkMode::None => (NetworkMode::None, None),
        NetworkMode::Bridge if euid == 0 => (NetworkMode::Bridge, None),
        NetworkMode::Bridge => {
            let bridge = cfg.network.bridge.as_deref().unwrap_or(&host.bridge);
            let has_quota = usernet::caller_quota(Path::new(usernet::USERNET_FILE), euid, bridge)
                .is_some_and(|q| q > 0);
            if has_quota && host.usernet_helper.exists() {
                (NetworkMode::Bridge, None)
            } else if usermode::find_tool(host.user_tool).is_some() && usermode::tun_usable() {
                (
                    NetworkMode::User,
                    Some(format!(
                        "no veth quota for you on {bridge}: using user-mode networking instead"
                    )),
                )
            } else {
                (NetworkMode::None, Some(NO_NETWORK_HINT.into()))
            }
        }
        NetworkMode::User => {
            if usermode::find_tool(host.user_tool).is_some() && usermode::tun_usable() {
                (NetworkMode::User, None)
            } else {
                (NetworkMode::None, Some(NO_NETWORK_HINT.into()))
            }
        }
    }
}

/// The default mode for new containers: `bridge` for root, `user` for a
/// plain user when slirp4netns or pasta is installed, else `none`.
pub fn default_mode(euid: u32, host: &HostNet) -> NetworkMode {
    if euid == 0 {
        NetworkMode::Bridge
    } else if usermode::find_tool(host.user_tool).is_some() && usermode::tun_usable() {
        NetworkMode::User
    } else {
        NetworkMode::None
    }
}

/// Set up the container's network from the host while init waits to be
/// released. `netns` is init's `/proc/PID/ns/net` (opened while it was
/// still dumpable; [`Spawned::netns`](crate::spawn::Spawned::netns)).
///
/// Root gets `bridge` directly; a plain user's `bridge` goes through the
/// setuid helper; `user` starts slirp4netns or pasta. `lo` is brought up
/// where the caller can (root, or the helper). On failure nothing is left
/// behind (no veth, no lease, no helper process).
///
/// # Errors
/// [`Error::Netlink`], [`Error::AddressExhausted`], [`Error::AddressInUse`],
/// [`Error::Quota`], [`Error::Refused`], [`Error::NetHelper`] and
/// [`Error::Unsupported`] (NAT).
pub fn setup(
    host: &HostNet,
    cfg: &ContainerConfig,
    init: ProcessRef,
    netns: BorrowedFd<'_>,
) -> Result<Attachment> {
    host.validate()?;
    let euid = nix::unistd::geteuid().as_raw();
    let (mode, note) = plan(host, cfg, euid);
    let mut att = match mode {
        NetworkMode::None => {
            if euid == 0 {
                let mut c = Rtnl::in_netns(netns)?;
                lo_up(&mut c)?;
            } else {
                // Best effort: lo is convenience, not isolation.
                let _ = lo_up_as_owner(netns);
            }
            Attachment::none(init, note)
        }
        NetworkMode::Bridge if euid == 0 => {
            let req = VethRequest {
                name: cfg.name.clone(),
                bridge: cfg
                    .network
                    .bridge
                    .clone()
                    .unwrap_or_else(|| host.bridge.clone()),
                veth: cfg.network.veth.clone(),
                address: cfg.network.address.clone(),
                gateway: cfg.network.gateway.clone(),
                hwaddr: cfg.network.hwaddr.clone(),
                uid: 0,
            };
            attach_veth(host, &req, init, netns)?
        }
        NetworkMode::Bridge => usernet::call_helper(host, cfg, init, netns)?,
        NetworkMode::User => {
            let mut a = usermode::start(host, init, netns)?;
            a.note = note;
            a
        }
    };
    if matches!(att.mode, NetworkMode::Bridge | NetworkMode::User) {
        att.resolv_conf = write_resolv_conf(host, cfg, &att, init.pid).unwrap_or(false);
    }
    Ok(att)
}

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

/// The first of [`SUBNET_CANDIDATES`] that overlaps no route (other than
/// the default route) and no address of the host.
///
/// # Errors
/// [`Error::ConfigInvalid`] when all collide (set `network.subnet`).
pub fn pick_subnet(routes: &[rtnl::Route4], addrs: &[rtnl::Addr]) -> Result<Subnet> {
    let used: Vec<Subnet> = routes
        .iter()
        .filter(|r| r.prefix > 0)
        .map(|r| Subnet::containing(r.dst, r.prefix))
        .chain(addrs.iter().filter_map(|a| match a.addr {
            IpAddr::V4(v4) => Some(Subnet::containing(v4, a.prefix)),
            IpAddr::V6(_) => None,
        }))
        .collect();
    SUBNET_CANDIDATES
        .iter()
        .filter_map(|s| s.parse::<Subnet>().ok())
        .find(|c| !used.iter().any(|u| u.overlaps(c)))
        .ok_or_else(|| Error::ConfigInvalid {
            reason: "every default bridge subnet collides with a host route: set network.subnet in /etc/davit/config.toml".into(),
        })
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

/// Parse `a.b.c.d` or `a.b.c.d/len` (the length defaults to the subnet's).
///
/// # Errors
/// [`Error::ConfigInvalid`].
pub fn parse_addr(s: &str, default_prefix: u8) -> Result<(Ipv4Addr, u8)> {
    let bad = || Error::ConfigInvalid {
        reason: format!("address {s:?} is not an IPv4 a.b.c.d[/len]"),
    };
    let (a, p) = match s.split_once('/') {
        Some((a, p)) => (a, p.parse::<u8>().map_err(|_| bad())?),
        None => (s, default_prefix),
    };
    let a: Ipv4Addr = a.parse().map_err(|_| bad())?;
    if !(1..=32).contains(&p) {
        return Err(bad());
    }
    Ok((a, p))
}

fn lo_up(c: &mut Rtnl) -> Result<()> {
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
fn lo_up_as_owner(netns: BorrowedFd<'_>) -> Result<()> {
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
/// As [`setup`].
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
    l2::guard(&veth, container_end_mac, addr)?;
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

    leases.table.leases.push(Lease {
        addr,
        name: req.name.clone(),
        veth: veth.clone(),
        ifindex: host_link.index,
        uid: req.uid,
        owner: init,
    });
    leases.table.last = Some(addr);
    leases.save()?;
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
        resolv_conf: false,
        note: None,
    })
}

/// The veth `name` went with its container's namespace: drop its L2
/// filter, unless a link of that name exists again (someone else's now).
fn forget_filter(c: &mut Rtnl, name: &str) {
    if matches!(c.link(name), Ok(None)) {
        l2::unguard(name);
    }
}

/// Delete host link `name` only if it still has index `ifindex` and is a
/// veth (on `bridge` when given): never an interface davit did not make.
fn delete_recorded_veth(c: &mut Rtnl, name: &str, ifindex: u32, bridge: Option<u32>) -> bool {
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

/// Release what [`setup`] made: the lease (only this container's, only once
/// its init is gone or `force`), the host veth if it outlived the netns, the
/// user-mode process. Idempotent.
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
}

/// Network info of a running container from its `STATE_DIR/net.json`.
/// Addresses are read inside the container's netns (as `lxc-info` does)
/// when the caller may join it, else the recorded one is shown.
///
/// # Errors
/// [`Error::Read`]/[`Error::StateParse`] for a broken record; netlink
/// failures only leave fields empty.
pub fn net_info(state_dir: &Path) -> Result<Option<NetInfo>> {
    let Some(att) = Attachment::load(state_dir)? else {
        return Ok(None);
    };
    let mut ni = NetInfo {
        mode: Some(att.mode),
        link: att.link.clone(),
        note: att.note.clone(),
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
/// [`Error::Netlink`].
pub fn link_counters(name: &str) -> Result<Option<(u64, u64)>> {
    Ok(Rtnl::new()?.link(name)?.map(|l| (l.rx_bytes, l.tx_bytes)))
}

/// The addresses inside `pid`'s netns, without `lo` and IPv6 link-local.
///
/// # Errors
/// [`Error::Read`] if the netns cannot be opened, [`Error::Netlink`].
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

/// Paths (relative to the container root) whose presence means the image
/// configures its own network, so davit leaves `/etc/resolv.conf` alone.
pub const NETWORK_MANAGERS: [&str; 6] = [
    "usr/sbin/NetworkManager",
    "etc/netplan",
    "etc/systemd/network",
    "etc/sysconfig/network-scripts/ifcfg-eth0",
    "usr/sbin/connmand",
    "etc/network/interfaces.d/eth0",
];

/// Write `/etc/resolv.conf` inside the container unless the image manages
/// its own network (see [`NETWORK_MANAGERS`], or `/etc/network/interfaces`
/// mentioning `eth0`), or the file is a symlink (the image chose a
/// resolver). All opens resolve inside the container's root (`openat2`
/// `RESOLVE_IN_ROOT`), never following a link out of it. Returns whether
/// it wrote.
///
/// # Errors
/// [`Error::Syscall`] for an open or write that fails.
pub fn write_resolv_conf(
    host: &HostNet,
    cfg: &ContainerConfig,
    att: &Attachment,
    pid: i32,
) -> Result<bool> {
    use crate::sys::{openat2, RESOLVE_IN_ROOT, RESOLVE_NO_MAGICLINKS};
    let root_path = format!("/proc/{pid}/root");
    let root = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
        .open(&root_path)
        .map_err(|source| Error::Read {
            path: root_path.clone().into(),
            source,
        })?;
    let rf = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
    let exists = |p: &str| openat2(root.as_fd(), Path::new(p), libc::O_PATH, 0, rf).is_ok();
    if NETWORK_MANAGERS.iter().any(|p| exists(p)) {
        return Ok(false);
    }
    if let Ok(fd) = openat2(
        root.as_fd(),
        Path::new("etc/network/interfaces"),
        libc::O_RDONLY,
        0,
        rf,
    ) {
        let mut s = String::new();
        let _ = std::fs::File::from(fd).read_to_string(&mut s);
        if s.lines().any(|l| {
            let l = l.trim_start();
            !l.starts_with('#') && l.contains("eth0")
        }) {
            return Ok(false);
        }
    }
    let servers = nameservers(host, att);
    if servers.is_empty() {
        return Ok(false);
    }
    let mut body = String::from("# written by davit at start (network.mode = ");
    body += match att.mode {
        NetworkMode::Bridge => "bridge",
        NetworkMode::User => "user",
        NetworkMode::None => "none",
    };
    body += ")\n";
    for s in servers {
        body += &format!("nameserver {s}\n");
    }
    let fd = match openat2(
        root.as_fd(),
        Path::new("etc/resolv.conf"),
        libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_NOFOLLOW,
        0o644,
        rf,
    ) {
        Ok(fd) => fd,
        // A symlink: the image picked its resolver; leave it. No /etc: nothing to do.
        Err(nix::errno::Errno::ELOOP) | Err(nix::errno::Errno::ENOENT) => return Ok(false),
        Err(e) => return Err(Error::sys(format!("openat2({root_path}, \"etc/resolv.conf\", O_WRONLY|O_CREAT|O_TRUNC|O_NOFOLLOW, RESOLVE_IN_ROOT)"), e)),
    };
    let st = nix::sys::stat::fstat(std::os::fd::AsRawFd::as_raw_fd(&fd))
        .map_err(|e| Error::sys("fstat(resolv.conf)", e))?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Ok(false);
    }
    // Owned by container root, so the container may rewrite it.
    if !cfg.privileged {
        if let (Some(u), Some(g)) = (cfg.idmap.host_uid(0), cfg.idmap.host_gid(0)) {
            let _ = nix::unistd::fchown(
                std::os::fd::AsRawFd::as_raw_fd(&fd),
                Some(nix::unistd::Uid::from_raw(u)),
                Some(nix::unistd::Gid::from_raw(g)),
            );
        }
    }
    let mut f = std::fs::File::from(fd);
    f.write_all(body.as_bytes())
        .map_err(|source| Error::Write {
            path: PathBuf::from(format!("{root_path}/etc/resolv.conf")),
            source,
        })?;
    Ok(true)
}

/// The nameservers for a container: slirp4netns's `10.0.2.3` in user mode
/// with slirp, else `network.nameservers`, else the host's non-loopback
/// `/etc/resolv.conf` servers (a loopback resolver such as systemd-resolved's
/// `127.0.0.53` cannot be reached from the container).
pub fn nameservers(host: &HostNet, att: &Attachment) -> Vec<Ipv4Addr> {
    if att.mode == NetworkMode::User {
        if let Some((tool, _)) = &att.user_process {
            if tool == "slirp4netns" {
                return vec![Ipv4Addr::new(10, 0, 2, 3)];
            }
        }
    }
    if !host.nameservers.is_empty() {
        return host.nameservers.clone();
    }
    let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    parse_nameservers(&text)
}

/// The non-loopback IPv4 `nameserver` lines of resolv.conf text.
pub fn parse_nameservers(text: &str) -> Vec<Ipv4Addr> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|a| a.trim().parse::<Ipv4Addr>().ok())
        .filter(|a| !a.is_loopback() && !a.is_unspecified())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnet_math() {
        let s: Subnet = "10.0.3.77/24".parse().unwrap();
        assert_eq!(s.to_string(), "10.0.3.0/24");
        assert_eq!(s.first_host(), Ipv4Addr::new(10, 0, 3, 1));
        assert_eq!(s.broadcast(), Ipv4Addr::new(10, 0, 3, 255));
        assert!(s.contains(Ipv4Addr::new(10, 0, 3, 200)));
        assert!(!s.contains(Ipv4Addr::new(10, 0, 4, 1)));
        let big: Subnet = "10.0.0.0/16".parse().unwrap();
        assert!(big.overlaps(&s) && s.overlaps(&big));
        assert!("10.0.0.0/31".parse::<Subnet>().is_err());
        assert!("nonsense".parse::<Subnet>().is_err());
    }

    #[test]
    fn subnet_pick_avoids_host_routes() {
        let routes = vec![
            rtnl::Route4 {
                dst: Ipv4Addr::UNSPECIFIED,
                prefix: 0,
            },
            rtnl::Route4 {
                dst: Ipv4Addr::new(10, 0, 0, 0),
                prefix: 8,
            },
        ];
        let s = pick_subnet(&routes, &[]).unwrap();
        assert_eq!(s.to_string(), "172.30.3.0/24");
        let addrs = vec![rtnl::Addr {
            index: 2,
            addr: IpAddr::V4(Ipv4Addr::new(172, 30, 3, 9)),
            prefix: 24,
        }];
        assert_eq!(
            pick_subnet(&routes, &addrs).unwrap().to_string(),
            "192.168.203.0/24"
        );
    }

    #[test]
    fn host_config_parses_only_network_table() {
        let t = "[other]\nx = 1\n[network]\nbridge = \"br9\"\nsubnet = \"10.5.5.0/24\"\n";
        let h = HostNet::from_toml(t, Path::new("c")).unwrap();
        assert_eq!(h.bridge, "br9");
        assert_eq!(h.subnet.unwrap().to_string(), "10.5.5.0/24");
        assert_eq!(h.lease_dir, PathBuf::from(DEFAULT_LEASE_DIR));
        let h = HostNet::from_toml("", Path::new("c")).unwrap();
        assert_eq!(h, HostNet::default());
        assert!(HostNet::from_toml("[network]\nbridge = \"a/b\"\n", Path::new("c")).is_err());
        assert!(HostNet::from_toml("[network]\nbogus = 1\n", Path::new("c")).is_err());
        let e = HostNet::from_toml("[network]\nnat = true\n", Path::new("c")).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Unsupported);
    }

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

    #[test]
    fn resolv_conf_servers() {
        let t = "# x\nnameserver 127.0.0.53\nnameserver 192.0.2.53\nnameserver ::1\nsearch x\n";
        assert_eq!(parse_nameservers(t), vec![Ipv4Addr::new(192, 0, 2, 53)]);
    }
}
