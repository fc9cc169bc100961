//! The host-wide network settings (`[network]` of `/etc/davit/config.toml`)
//! with their defaults, and interface name checks.
#![forbid(unsafe_code)]

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::subnet::{Subnet, Subnet6};
use crate::error::{Error, Result};

/// Where the host-wide settings live.
pub const HOST_CONFIG: &str = "/etc/davit/config.toml";
/// The default bridge.
pub const DEFAULT_BRIDGE: &str = "davitbr0";
/// The default lease directory.
pub const DEFAULT_LEASE_DIR: &str = "/run/davit/net";
/// The default DNS domain of containers on a bridge.
pub const DEFAULT_DOMAIN: &str = "davit";
/// The default path of the setuid helper.
pub const DEFAULT_HELPER: &str = "/usr/local/libexec/davit-usernet";

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
/// nat = true                  # egress NAT, forwarding and --publish (table inet davit)
/// nat6 = true                 # NAT66 of the bridge's IPv6 ULA /64 too
/// subnet6 = "fd42:1:2:3::/64" # default: HostNet::subnet6_for (fd + sha256 of the name)
/// lease_dir = "/run/davit/net"
/// usernet_helper = "/usr/local/libexec/davit-usernet"
/// user_tool = "auto"          # auto | slirp4netns | pasta
/// user_host_loopback = false  # user mode: may the container reach the host's 127.0.0.1
/// nameservers = ["10.0.3.1"]  # default: the host's non-loopback resolv.conf servers
/// dhcp = true                 # one dnsmasq per bridge: DHCP, DNS (and IPv6 adverts)
/// domain = "davit"            # containers resolve as NAME.DOMAIN (and NAME)
/// ipv6 = true                 # the ULA /64 (subnet6) on the bridge, router adverts (SLAAC)
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
    /// Egress NAT, forwarding and published ports through davit's own
    /// nftables table `inet davit` ([`nat`](super::nat)); on by default.
    #[serde(default = "yes")]
    pub nat: bool,
    /// NAT66 of the bridge's IPv6 /64 (with `nat`); on by default.
    #[serde(default = "yes")]
    pub nat6: bool,
    /// The IPv6 ULA /64 of `bridge`; default [`Subnet6::derived`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet6: Option<Subnet6>,
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
    /// One dnsmasq per bridge answering DHCP (only davit's own leases) and
    /// DNS on the bridge address (docs/NETWORKING.md, "DHCP, DNS and IPv6
    /// on the bridge"). On by default.
    #[serde(default = "yes")]
    pub dhcp: bool,
    /// The DNS domain of the containers on a bridge: `NAME.DOMAIN`.
    #[serde(default = "default_domain")]
    pub domain: String,
    /// A ULA /64 on the bridge ([`HostNet::subnet6_for`]) and router
    /// adverts from its dnsmasq.
    #[serde(default = "yes")]
    pub ipv6: bool,
}

fn yes() -> bool {
    true
}
fn default_domain() -> String {
    DEFAULT_DOMAIN.into()
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
            nat: true,
            nat6: true,
            subnet6: None,
            lease_dir: default_lease_dir(),
            usernet_helper: default_helper(),
            user_tool: UserTool::Auto,
            user_host_loopback: false,
            nameservers: Vec::new(),
            dhcp: true,
            domain: default_domain(),
            ipv6: true,
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

    /// The IPv6 /64 of `bridge`: `subnet6` for the configured bridge when
    /// set, else the stable [`Subnet6::derived`] of its name. The NAT66
    /// rules masquerade it and the bridge's router adverts announce it, so
    /// both sides call this.
    pub fn subnet6_for(&self, bridge: &str) -> Subnet6 {
        match self.subnet6 {
            Some(s) if bridge == self.bridge => s,
            _ => Subnet6::derived(bridge),
        }
    }

    /// Check names.
    ///
    /// # Errors
    /// [`Error::ConfigInvalid`].
    pub fn validate(&self) -> Result<()> {
        if !valid_ifname(&self.bridge) {
            return Err(Error::ConfigInvalid {
                reason: format!(
                    "bridge name {:?} is not a valid interface name",
                    self.bridge
                ),
            });
        }
        if !valid_domain(&self.domain) {
            return Err(Error::ConfigInvalid {
                reason: format!(
                    "network.domain {:?} is not a DNS domain (labels of [a-z0-9-], 1..63 bytes, dot-separated)",
                    self.domain
                ),
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

/// Whether `d` is a usable DNS domain for the containers: dot-separated
/// labels of `[a-z0-9-]` (1..=63 bytes, no leading or trailing `-`), at
/// most 200 bytes.
pub fn valid_domain(d: &str) -> bool {
    !d.is_empty()
        && d.len() <= 200
        && d.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(h.nat && h.nat6, "NAT is on by default");
        let h =
            HostNet::from_toml("[network]\nnat = false\nnat6 = false\n", Path::new("c")).unwrap();
        assert!(!h.nat && !h.nat6);
        let t = "[network]\nbridge = \"br9\"\nsubnet6 = \"fd42:1:2:3::/64\"\n";
        let h = HostNet::from_toml(t, Path::new("c")).unwrap();
        assert_eq!(h.subnet6_for("br9").to_string(), "fd42:1:2:3::/64");
        assert_eq!(h.subnet6_for("other"), Subnet6::derived("other"));
        assert!(
            HostNet::from_toml("[network]\nsubnet6 = \"2001:db8::/64\"\n", Path::new("c")).is_err()
        );
        assert!(h.dhcp && h.ipv6 && h.domain == "davit");
        let h = HostNet::from_toml(
            "[network]\ndhcp = false\nipv6 = false\ndomain = \"lab.example\"\n",
            Path::new("c"),
        )
        .unwrap();
        assert!(!h.dhcp && !h.ipv6 && h.domain == "lab.example");
        for bad in ["", "a..b", "-a", "a/b", "UPPER", "a b"] {
            let t = format!("[network]\ndomain = {bad:?}\n");
            assert!(HostNet::from_toml(&t, Path::new("c")).is_err(), "{bad:?}");
        }
        assert!(
            HostNet::from_toml("[network]\nsubnet6 = \"10.0.0.0/8\"\n", Path::new("c")).is_err()
        );
    }
}
