//! IPv4 subnets: the bridge's network, its parsing and printing, the pick
//! of a free default subnet, and container address parsing.
#![forbid(unsafe_code)]

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::rtnl;
use crate::error::{Error, Result};

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

/// Parse a `subnet6` value: an IPv6 `/64` (`fd12:3456:789a::/64`); returns
/// its network address.
///
/// # Errors
/// [`Error::ConfigInvalid`].
pub fn parse_subnet6(s: &str) -> Result<Ipv6Addr> {
    let bad = || Error::ConfigInvalid {
        reason: format!(
            "network.subnet6 {s:?} is not an IPv6 prefix of length 64 (like fd12:3456:789a::/64)"
        ),
    };
    let (a, p) = s.split_once('/').ok_or_else(bad)?;
    let a: Ipv6Addr = a.parse().map_err(|_| bad())?;
    if p != "64" {
        return Err(bad());
    }
    let seg = a.segments();
    Ok(Ipv6Addr::new(seg[0], seg[1], seg[2], seg[3], 0, 0, 0, 0))
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
}
