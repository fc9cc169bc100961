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
//! records the [`Attachment`] as `RUNTIME/NAME/net.json`. Every path that
//! ends a container (init's exit, a failed start, `stop`, crash recovery)
//! calls [`release`] once. [`net_info`] gives `info` its IP / Link / TX /
//! RX / Total lines.
#![forbid(unsafe_code)]

mod attachment;
mod bridge;
pub mod dnsmasq;
mod host;
mod info;
pub mod l2;
pub mod lease;
mod lockfile;
pub mod nat;
mod overview;
mod resolv;
pub mod rtnl;
mod subnet;
mod teardown;
pub mod usermode;
pub mod usernet;

use std::os::fd::BorrowedFd;
use std::path::Path;

use crate::config::{ContainerConfig, NetworkMode};
use crate::error::Result;
use crate::state::ProcessRef;
use bridge::{lo_up, lo_up_as_owner};
use rtnl::Rtnl;

pub use attachment::{Attachment, ATTACHMENT_FILE};
pub use bridge::{
    attach_veth, container_mac, ensure_bridge, host_mac, parse_mac, refuse_adverts, veth_name,
    VethRequest,
};
pub use host::{
    valid_domain, valid_ifname, HostNet, UserTool, DEFAULT_BRIDGE, DEFAULT_DOMAIN, DEFAULT_HELPER,
    DEFAULT_LEASE_DIR, HOST_CONFIG,
};
pub use info::{container_ips, link_counters, net_info, NetInfo};
pub use overview::{overview, BridgeView, LeaseView};
pub use resolv::{nameservers, parse_nameservers, write_resolv_conf, NETWORK_MANAGERS};
pub use subnet::{parse_addr, pick_subnet, Subnet, Subnet6, SUBNET_CANDIDATES};
pub use teardown::{release, teardown, teardown_recorded};

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
/// [`Error::Netlink`](crate::Error::Netlink),
/// [`Error::AddressExhausted`](crate::Error::AddressExhausted),
/// [`Error::AddressInUse`](crate::Error::AddressInUse),
/// [`Error::Quota`](crate::Error::Quota), [`Error::Refused`](crate::Error::Refused),
/// [`Error::NetHelper`](crate::Error::NetHelper),
/// [`Error::PortInUse`](crate::Error::PortInUse) and
/// [`Error::Unsupported`](crate::Error::Unsupported) (nft missing or
/// refusing; `--publish` of a plain user on a bridge).
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
                publish: cfg.network.publish.clone(),
            };
            attach_veth(host, &req, init, netns)?
        }
        NetworkMode::Bridge => {
            if !cfg.network.publish.is_empty() {
                return Err(crate::Error::Unsupported {
                    what: "--publish on a bridge needs root (the veth helper forwards no host ports); drop --publish, or start as root".into(),
                });
            }
            usernet::call_helper(host, cfg, init, netns)?
        }
        NetworkMode::User => {
            let mut a = usermode::start(host, &cfg.network.publish, init, netns)?;
            a.note = note;
            a
        }
    };
    if matches!(att.mode, NetworkMode::Bridge | NetworkMode::User) {
        att.resolv_conf = write_resolv_conf(host, cfg, &att, init.pid).unwrap_or(false);
    }
    Ok(att)
}
