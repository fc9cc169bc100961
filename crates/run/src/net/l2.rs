//! The L2 filter on davit's bridge ports (issue 13, "L2 spoofing"): a
//! container may send frames only from its own MAC, ARP only as its own
//! MAC and IPv4 address, IPv4 only from its address (or a DHCP request
//! from 0.0.0.0 to the broadcast address), and no IPv6 router
//! adverts, so it can neither take over a neighbour's or the host's
//! traffic (ARP/MAC spoofing) nor pose as a router. One nftables base
//! chain per host-side veth, on the `netdev` ingress hook of that veth
//! (frames the container sends), in table `netdev davit`; it goes with the
//! veth. Written through the nftables crate (JSON to `nft -j -f -`).
#![forbid(unsafe_code)]

use std::borrow::Cow;
use std::net::{Ipv4Addr, Ipv6Addr};

use nftables::batch::Batch;
use nftables::expr::{Expression, NamedExpression, Payload, PayloadField, SetItem};
use nftables::schema::{Chain, FlushObject, NfCmd, NfListObject, NfObject, Rule, Table};
use nftables::stmt::{Drop, Match, Operator, Statement};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};

use crate::error::{Error, Result};

/// The table every port chain lives in.
pub const TABLE: &str = "davit";

/// The chain of host-side veth `veth`.
pub fn chain_name(veth: &str) -> String {
    format!("port-{veth}")
}

fn mac_str(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn field(protocol: &'static str, name: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(
        PayloadField {
            protocol: Cow::Borrowed(protocol),
            field: Cow::Borrowed(name),
        },
    )))
}

fn cmp(left: Expression<'static>, op: Operator, right: String) -> Statement<'static> {
    Statement::Match(Match {
        left,
        right: Expression::String(Cow::Owned(right)),
        op,
    })
}

fn num(left: Expression<'static>, n: u32) -> Statement<'static> {
    Statement::Match(Match {
        left,
        right: Expression::Number(n),
        op: Operator::EQ,
    })
}

fn table() -> NfListObject<'static> {
    NfListObject::Table(Table {
        family: NfFamily::NetDev,
        name: Cow::Borrowed(TABLE),
        handle: None,
    })
}

fn chain(veth: &str, hook: bool) -> Chain<'static> {
    Chain {
        family: NfFamily::NetDev,
        table: Cow::Borrowed(TABLE),
        name: Cow::Owned(chain_name(veth)),
        _type: hook.then_some(NfChainType::Filter),
        hook: hook.then_some(NfHook::Ingress),
        prio: hook.then_some(0),
        dev: hook.then(|| Cow::Owned(veth.to_owned())),
        policy: hook.then_some(NfChainPolicy::Accept),
        ..Chain::default()
    }
}

/// The IPv6 sources a container with `mac` may send from: `::` (duplicate
/// address detection), its link-local address and, with the bridge's /64
/// `prefix6`, its SLAAC address there, both made from the MAC as the
/// kernel makes them (modified EUI-64).
pub fn own_ipv6(mac: [u8; 6], prefix6: Option<Ipv6Addr>) -> Vec<Ipv6Addr> {
    let iid = [
        mac[0] ^ 0x02,
        mac[1],
        mac[2],
        0xff,
        0xfe,
        mac[3],
        mac[4],
        mac[5],
    ];
    let with = |p: Ipv6Addr| {
        let mut b = p.octets();
        b[8..].copy_from_slice(&iid);
        Ipv6Addr::from(b)
    };
    let mut v = vec![
        Ipv6Addr::UNSPECIFIED,
        with(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0)),
    ];
    v.extend(prefix6.map(with));
    v
}

/// The rules for a port whose container has `mac`, `ip` and, on a bridge
/// with IPv6, the /64 `prefix6`.
pub fn rules(
    mac: [u8; 6],
    ip: Ipv4Addr,
    prefix6: Option<Ipv6Addr>,
) -> Vec<Vec<Statement<'static>>> {
    let drop = Statement::Drop(Some(Drop {}));
    let ether_type = |t: &str| cmp(field("ether", "type"), Operator::EQ, t.to_owned());
    vec![
        vec![
            cmp(field("ether", "saddr"), Operator::NEQ, mac_str(mac)),
            drop.clone(),
        ],
        vec![
            ether_type("arp"),
            cmp(field("arp", "saddr ether"), Operator::NEQ, mac_str(mac)),
            drop.clone(),
        ],
        vec![
            ether_type("arp"),
            cmp(field("arp", "saddr ip"), Operator::NEQ, ip.to_string()),
            drop.clone(),
        ],
        // A DHCP client asks before it has an address: from 0.0.0.0 to
        // the broadcast address, port 68 to 67 (the bridge's dnsmasq).
        vec![
            ether_type("ip"),
            cmp(field("ip", "saddr"), Operator::EQ, "0.0.0.0".to_owned()),
            cmp(
                field("ip", "daddr"),
                Operator::EQ,
                "255.255.255.255".to_owned(),
            ),
            num(field("udp", "sport"), 68),
            num(field("udp", "dport"), 67),
            Statement::Accept(None),
        ],
        vec![
            ether_type("ip"),
            cmp(field("ip", "saddr"), Operator::NEQ, ip.to_string()),
            drop.clone(),
        ],
        // IPv6 only from its own addresses: no neighbour's, no made-up one.
        vec![
            ether_type("ip6"),
            Statement::Match(Match {
                left: field("ip6", "saddr"),
                right: Expression::Named(NamedExpression::Set(
                    own_ipv6(mac, prefix6)
                        .into_iter()
                        .map(|a| SetItem::Element(Expression::String(Cow::Owned(a.to_string()))))
                        .collect(),
                )),
                op: Operator::NEQ,
            }),
            drop.clone(),
        ],
        vec![
            ether_type("ip6"),
            cmp(
                field("icmpv6", "type"),
                Operator::EQ,
                "nd-router-advert".to_owned(),
            ),
            drop,
        ],
    ]
}

/// Where nft lives: a fixed, root-owned path, never a `PATH` lookup (the
/// setuid helper runs this too, for a caller who controls its `PATH`).
pub const NFT_PATHS: [&str; 4] = ["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft", "/bin/nft"];

pub(super) fn nft() -> Result<&'static str> {
    NFT_PATHS
        .iter()
        .copied()
        .find(|p| std::path::Path::new(p).is_file())
        .ok_or_else(|| Error::Unsupported {
            what: format!(
                "the bridge's L2 filter needs nft (not found at {}): apt-get install nftables, or dnf install nftables",
                NFT_PATHS.join(", ")
            ),
        })
}

pub(super) fn apply(b: Batch<'_>, what: &str) -> Result<()> {
    let nft = nft()?;
    nftables::helper::apply_ruleset_with_args(
        &b.to_nftables(),
        Some(nft),
        nftables::helper::DEFAULT_ARGS,
    )
    .map_err(|e| {
        let detail = match &e {
            nftables::helper::NftablesError::NftFailed { stderr, .. } => {
                format!("{e}: {}", stderr.trim())
            }
            _ => e.to_string(),
        };
        Error::Unsupported {
            what: format!("{what}: {detail}"),
        }
    })
}

/// Where guard and unguard serialise: the table is one per network
/// namespace and every bridge's ports share it, so removing it when its
/// last chain goes must not race a chain being added.
pub const LOCK: &str = "/run/davit-l2.lock";

fn lock() -> Option<nix::fcntl::Flock<std::fs::File>> {
    super::lockfile::exclusive(std::path::Path::new(LOCK)).ok()
}

/// The chains of table `netdev davit` in this network namespace; `None`
/// when there is no table (or nft cannot be asked).
pub fn chains() -> Option<Vec<String>> {
    table_chains("netdev", TABLE)
}

/// The chains of nft table `family name` in this network namespace;
/// `None` when there is no such table (or nft cannot be asked).
pub(super) fn table_chains(family: &str, name: &str) -> Option<Vec<String>> {
    let rs = nftables::helper::get_current_ruleset_with_args(
        Some(nft().ok()?),
        ["list", "table", family, name],
    )
    .ok()?;
    Some(
        rs.objects
            .iter()
            .filter_map(|o| match o {
                NfObject::ListObject(NfListObject::Chain(c)) => Some(c.name.to_string()),
                _ => None,
            })
            .collect(),
    )
}

/// Install the filter on host-side veth `veth` (before it goes up).
///
/// # Errors
/// [`Error::Unsupported`] with nft's message (or how to install it).
pub fn guard(veth: &str, mac: [u8; 6], ip: Ipv4Addr, prefix6: Option<Ipv6Addr>) -> Result<()> {
    let _l = lock();
    let mut b = Batch::new();
    b.add(table());
    b.add(NfListObject::Chain(chain(veth, true)));
    for expr in rules(mac, ip, prefix6) {
        b.add(NfListObject::Rule(Rule {
            family: NfFamily::NetDev,
            table: Cow::Borrowed(TABLE),
            chain: Cow::Owned(chain_name(veth)),
            expr: Cow::Owned(expr),
            ..Rule::default()
        }));
    }
    apply(b, &format!("the L2 filter on {veth}"))
}

/// Remove the filter of `veth`; a missing one is not an error. The table
/// goes only with its last chain: nft deletes a table *with* its chains,
/// so deleting it unasked would take every other port's filter too.
pub fn unguard(veth: &str) {
    let _l = lock();
    // One listing, then one batch: the table when this port's chain is all
    // it holds (the usual last stop), else only the chain. Under the lock,
    // so no other port's chain can appear in between.
    let Some(have) = chains() else { return };
    let ours = chain_name(veth);
    let mut b = Batch::new();
    if have.iter().all(|c| *c == ours) {
        b.delete(table());
        let _ = apply(b, "removing the empty L2 table");
    } else if have.contains(&ours) {
        b.add_cmd(NfCmd::Flush(FlushObject::Chain(chain(veth, false))));
        b.delete(NfListObject::Chain(chain(veth, false)));
        let _ = apply(b, &format!("removing the L2 filter of {veth}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stopping one container took every other port's filter with it:
    /// `unguard` deleted table `netdev davit`, and nft deletes a table
    /// with its chains. Run in a network namespace of the test's own (a
    /// thread's), on the two ends of a veth.
    #[test]
    fn unguard_of_one_port_keeps_the_other_ports_filters() {
        if !davit_testkit::require_root("unguard_of_one_port_keeps_the_other_ports_filters") {
            return;
        }
        std::thread::spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let ok = std::process::Command::new("ip")
                .args(["link", "add", "dva", "type", "veth", "peer", "name", "dvb"])
                .status()
                .unwrap()
                .success();
            assert!(ok, "ip link add dva type veth peer name dvb");
            let mac = [0x0a, 0, 0, 0, 0, 1];
            guard("dva", mac, Ipv4Addr::new(10, 9, 9, 2), None).unwrap();
            guard("dvb", mac, Ipv4Addr::new(10, 9, 9, 3), None).unwrap();
            unguard("dva");
            assert_eq!(
                chains().unwrap_or_default(),
                [chain_name("dvb")],
                "the other port's filter went with the first"
            );
            unguard("dvb");
            assert_eq!(chains(), None, "the empty table stayed");
        })
        .join()
        .unwrap();
    }

    #[test]
    fn ipv6_sources_are_the_macs_own_addresses() {
        let mac = [0x0a, 0x11, 0x22, 0x33, 0x44, 0x55];
        let p: Ipv6Addr = "fd14:3df7:4e53::".parse().unwrap();
        let want: Vec<Ipv6Addr> = [
            "::",
            "fe80::811:22ff:fe33:4455",
            "fd14:3df7:4e53::811:22ff:fe33:4455",
        ]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
        assert_eq!(own_ipv6(mac, Some(p)), want);
        assert_eq!(own_ipv6(mac, None), want[..2]);
    }
}
