//! Egress NAT, forwarding and published ports of davit's bridges (issue
//! 16), in davit's own nftables table `inet davit`. Nobody else's table is
//! ever listed, changed or flushed; this one is written through the
//! nftables crate (typed JSON to `nft -j -f -`), as the L2 filter is.
//!
//! Every piece is a base chain of its own, so adding and removing one never
//! edits a rule of another (no handles, no positions):
//!
//! * per bridge `br-BRIDGE-post` (nat, postrouting, srcnat): masquerade
//!   of the bridge's subnet towards addresses outside it (and of its IPv6
//!   /64 with NAT66), and of hairpin connections (a container reaching a
//!   published port of the bridge);
//! * per bridge `br-BRIDGE-fwd` (filter, forward, policy accept): from the
//!   bridge out, and back in when established/related or DNATed by a
//!   published port; anything else routed into the bridge is dropped;
//! * per container `pub-NAME-pre` (nat, prerouting, dstnat) and
//!   `pub-NAME-out` (nat, output, dstnat): a DNAT of each published port
//!   arriving on a local address, from outside and from the host itself.
//!
//! A bridge's chains are (re)written when a container comes up on it and
//! removed when its lease table is empty after a teardown; a container's
//! when it starts (a stale start's are replaced) and at its teardown. The
//! table goes with its last chain. All of it happens under
//! `LEASE_DIR/nat.lock`, and each change is one atomic nft batch.
#![forbid(unsafe_code)]

use std::borrow::Cow;
use std::collections::HashSet;
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use nftables::batch::Batch;
use nftables::expr::{
    Expression, Fib, FibFlag, FibResult, Meta, MetaKey, NamedExpression, Payload, PayloadField,
    Prefix, CT,
};
use nftables::schema::{Chain, FlushObject, NfCmd, NfListObject, Rule, Table};
use nftables::stmt::{Accept, Drop, Match, NATFamily, Operator, Statement, NAT};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};

use super::lease::LeaseTable;
use super::subnet::{Subnet, Subnet6};
use crate::config::{Proto, Publish};
use crate::error::{Error, Result};

/// The table (family `inet`) every NAT and forwarding chain lives in.
pub const TABLE: &str = "davit";

/// What one bridge's NAT covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeNat {
    /// The bridge.
    pub bridge: String,
    /// Its IPv4 subnet.
    pub subnet: Subnet,
    /// Its IPv6 /64, when NAT66 is on.
    pub subnet6: Option<Subnet6>,
}

/// A chain and its rules (each a list of statements), as written.
pub type ChainRules = (String, Vec<Vec<Statement<'static>>>);

/// The bridge's postrouting (masquerade) chain.
pub fn post_chain(bridge: &str) -> String {
    format!("br-{bridge}-post")
}
/// The bridge's forward chain.
pub fn fwd_chain(bridge: &str) -> String {
    format!("br-{bridge}-fwd")
}
/// The container's prerouting DNAT chain.
pub fn pre_chain(name: &str) -> String {
    format!("pub-{name}-pre")
}
/// The container's output DNAT chain.
pub fn out_chain(name: &str) -> String {
    format!("pub-{name}-out")
}

fn s(v: impl Into<String>) -> Expression<'static> {
    Expression::String(Cow::Owned(v.into()))
}
fn payload(protocol: &'static str, field: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(
        PayloadField {
            protocol: Cow::Borrowed(protocol),
            field: Cow::Borrowed(field),
        },
    )))
}
fn meta(key: MetaKey) -> Expression<'static> {
    Expression::Named(NamedExpression::Meta(Meta { key }))
}
fn ct(key: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::CT(CT {
        key: Cow::Borrowed(key),
        family: None,
        dir: None,
    }))
}
fn prefix(addr: impl ToString, len: u8) -> Expression<'static> {
    Expression::Named(NamedExpression::Prefix(Prefix {
        addr: Box::new(s(addr.to_string())),
        len: u32::from(len),
    }))
}
fn fib_daddr_type() -> Expression<'static> {
    Expression::Named(NamedExpression::Fib(Fib {
        result: FibResult::Type,
        flags: HashSet::from([FibFlag::Daddr]),
    }))
}
fn m(left: Expression<'static>, op: Operator, right: Expression<'static>) -> Statement<'static> {
    Statement::Match(Match { left, right, op })
}
fn masquerade() -> Statement<'static> {
    Statement::Masquerade(None)
}
fn accept() -> Statement<'static> {
    Statement::Accept(Some(Accept {}))
}

/// The rules of one bridge: its postrouting and forward chains.
pub fn bridge_rules(b: &BridgeNat) -> Vec<ChainRules> {
    let sn = || prefix(b.subnet.network, b.subnet.prefix);
    let mut post = vec![
        // Egress: from the subnet to anywhere outside it.
        vec![
            m(payload("ip", "saddr"), Operator::EQ, sn()),
            m(payload("ip", "daddr"), Operator::NEQ, sn()),
            masquerade(),
        ],
        // Hairpin: a container reaching a published port of a neighbour
        // (or its own) through a host address gets the reply through the
        // host, not straight from the neighbour on the bridge.
        vec![
            m(payload("ip", "saddr"), Operator::EQ, sn()),
            m(payload("ip", "daddr"), Operator::EQ, sn()),
            m(ct("status"), Operator::IN, s("dnat")),
            masquerade(),
        ],
    ];
    if let Some(s6) = b.subnet6 {
        let sn6 = || prefix(s6.network, Subnet6::PREFIX);
        post.push(vec![
            m(payload("ip6", "saddr"), Operator::EQ, sn6()),
            m(payload("ip6", "daddr"), Operator::NEQ, sn6()),
            masquerade(),
        ]);
    }
    let iif = || m(meta(MetaKey::Iifname), Operator::EQ, s(b.bridge.clone()));
    let oif = || m(meta(MetaKey::Oifname), Operator::EQ, s(b.bridge.clone()));
    let fwd = vec![
        vec![iif(), accept()],
        vec![
            oif(),
            m(
                ct("state"),
                Operator::IN,
                Expression::List(vec![s("established"), s("related")]),
            ),
            accept(),
        ],
        vec![oif(), m(ct("status"), Operator::IN, s("dnat")), accept()],
        vec![oif(), Statement::Drop(Some(Drop {}))],
    ];
    vec![(post_chain(&b.bridge), post), (fwd_chain(&b.bridge), fwd)]
}

/// Refuse what cannot be published: a loopback host address (it would
/// need `route_localnet`, which lets the bridge reach the host's
/// loopback-only services) and an IPv6 one (the bridge has no IPv6
/// forwarding of ports yet).
///
/// # Errors
/// [`Error::ConfigInvalid`].
pub fn check_publish(pubs: &[Publish]) -> Result<()> {
    for p in pubs {
        match p.host_ip {
            Some(IpAddr::V4(a)) if a.is_loopback() => {
                return Err(Error::ConfigInvalid {
                    reason: format!(
                        "--publish {p}: a loopback address cannot be forwarded to a bridge (that needs route_localnet, which davit never turns on): publish on the host's own address or on all of them"
                    ),
                })
            }
            Some(IpAddr::V6(_)) => {
                return Err(Error::ConfigInvalid {
                    reason: format!("--publish {p}: IPv6 host addresses are not supported yet: publish on an IPv4 address or on all of them"),
                })
            }
            _ => {}
        }
    }
    Ok(())
}

/// The DNAT rules of container `name` at `addr`: its prerouting chain
/// (from outside) and output chain (from the host itself, loopback left
/// out).
pub fn publish_rules(name: &str, addr: Ipv4Addr, pubs: &[Publish]) -> Vec<ChainRules> {
    let mut pre = Vec::new();
    let mut out = Vec::new();
    for p in pubs {
        let to = |head: Vec<Statement<'static>>| {
            let mut v = head;
            v.push(m_l4(p));
            v.push(m(
                payload("th", "dport"),
                Operator::EQ,
                Expression::Number(u32::from(p.host_port)),
            ));
            v.push(Statement::DNAT(Some(NAT {
                addr: Some(s(addr.to_string())),
                family: Some(NATFamily::IP),
                port: Some(Expression::Number(u32::from(p.port))),
                flags: None,
            })));
            v
        };
        let dst = match p.host_ip {
            Some(ip) => vec![m(payload("ip", "daddr"), Operator::EQ, s(ip.to_string()))],
            None => vec![
                m(meta(MetaKey::Nfproto), Operator::EQ, s("ipv4")),
                m(fib_daddr_type(), Operator::EQ, s("local")),
            ],
        };
        pre.push(to(dst.clone()));
        let mut dst_out = dst;
        dst_out.push(m(
            payload("ip", "daddr"),
            Operator::NEQ,
            prefix("127.0.0.0", 8),
        ));
        out.push(to(dst_out));
    }
    vec![(pre_chain(name), pre), (out_chain(name), out)]
}

fn m_l4(p: &Publish) -> Statement<'static> {
    m(
        meta(MetaKey::L4proto),
        Operator::EQ,
        s(match p.proto {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }),
    )
}

/// The base chain definition of `chain` (by its name's kind).
fn chain_def(name: &str, hooked: bool) -> Chain<'static> {
    let (ty, hook, prio, policy) = if name.ends_with("-fwd") {
        (
            NfChainType::Filter,
            NfHook::Forward,
            0,
            NfChainPolicy::Accept,
        )
    } else if name.ends_with("-post") {
        (
            NfChainType::NAT,
            NfHook::Postrouting,
            100,
            NfChainPolicy::Accept,
        )
    } else if name.ends_with("-out") {
        (
            NfChainType::NAT,
            NfHook::Output,
            -100,
            NfChainPolicy::Accept,
        )
    } else {
        (
            NfChainType::NAT,
            NfHook::Prerouting,
            -100,
            NfChainPolicy::Accept,
        )
    };
    Chain {
        family: NfFamily::INet,
        table: Cow::Borrowed(TABLE),
        name: Cow::Owned(name.to_owned()),
        _type: hooked.then_some(ty),
        hook: hooked.then_some(hook),
        prio: hooked.then_some(prio),
        policy: hooked.then_some(policy),
        ..Chain::default()
    }
}

fn table() -> NfListObject<'static> {
    NfListObject::Table(Table {
        family: NfFamily::INet,
        name: Cow::Borrowed(TABLE),
        handle: None,
    })
}

/// The batch that (re)writes `chains` whole: the table and each chain
/// added (no-ops when present), flushed, refilled, in one transaction.
pub fn write_batch(chains: &[ChainRules], comment: &str) -> Batch<'static> {
    let mut b = Batch::new();
    b.add(table());
    for (name, rules) in chains {
        b.add(NfListObject::Chain(chain_def(name, true)));
        b.add_cmd(NfCmd::Flush(FlushObject::Chain(chain_def(name, false))));
        for expr in rules {
            b.add(NfListObject::Rule(Rule {
                family: NfFamily::INet,
                table: Cow::Borrowed(TABLE),
                chain: Cow::Owned(name.clone()),
                expr: Cow::Owned(expr.clone()),
                comment: Some(Cow::Owned(comment.to_owned())),
                ..Rule::default()
            }));
        }
    }
    b
}

/// Host-wide lock for every change to the table (`LEASE_DIR/nat.lock`):
/// the check "is the table empty now" and the delete are one step.
fn lock(dir: &Path) -> Result<nix::fcntl::Flock<File>> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Write {
        path: dir.to_owned(),
        source,
    })?;
    super::lockfile::exclusive(&dir.join("nat.lock"))
}

fn apply(b: Batch<'_>, what: &str) -> Result<()> {
    super::l2::apply(b, what)
}

/// Write `1` to a sysctl of the current network namespace, unless it is
/// already; a missing one (no IPv6) is left alone.
fn sysctl_on(path: &str) -> Result<()> {
    let p = PathBuf::from(path);
    match std::fs::read_to_string(&p) {
        Ok(v) if v.trim() == "1" => Ok(()),
        Ok(_) => std::fs::write(&p, "1").map_err(|source| Error::Write { path: p, source }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(Error::Read { path: p, source }),
    }
}

/// `net.ipv4.ip_forward`, read in this network namespace.
pub fn ip_forward() -> Option<bool> {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
        .ok()
        .map(|v| v.trim() == "1")
}

/// Bring a bridge's NAT up: `ip_forward` (and IPv6 forwarding with
/// NAT66) in the current network namespace, and its two chains,
/// rewritten whole (a second container adds nothing twice).
///
/// # Errors
/// [`Error::Write`] for a sysctl, [`Error::Unsupported`] with nft's
/// message.
pub fn ensure_bridge(dir: &Path, b: &BridgeNat) -> Result<()> {
    let _l = lock(dir)?;
    sysctl_on("/proc/sys/net/ipv4/ip_forward")?;
    if b.subnet6.is_some() {
        sysctl_on("/proc/sys/net/ipv6/conf/all/forwarding")?;
    }
    apply(
        write_batch(&bridge_rules(b), &format!("davit: bridge {}", b.bridge)),
        &format!("the NAT of bridge {} (nft table inet {TABLE})", b.bridge),
    )
}

/// Forward `pubs` to container `name` at `addr` (its two chains,
/// rewritten whole: a stale start's rules of the same name go).
///
/// # Errors
/// [`Error::Unsupported`] with nft's message.
pub fn add_publish(dir: &Path, name: &str, addr: Ipv4Addr, pubs: &[Publish]) -> Result<()> {
    let _l = lock(dir)?;
    apply(
        write_batch(
            &publish_rules(name, addr, pubs),
            &format!("davit: container {name}"),
        ),
        &format!("the published ports of {name} (nft table inet {TABLE})"),
    )
}

/// The chains of davit's table in this network namespace; `None` when
/// there is no table (or nft cannot be asked).
pub fn chains() -> Option<Vec<String>> {
    super::l2::table_chains("inet", TABLE)
}

/// Delete those of `names` that exist, or the whole table in one batch
/// when they are all it holds. Best effort: nothing there is nothing to do.
pub fn remove(dir: &Path, names: &[String]) {
    let Ok(_l) = lock(dir) else { return };
    let Some(have) = chains() else { return };
    let mut b = Batch::new();
    if have.iter().all(|c| names.contains(c)) {
        b.delete(table());
        let _ = apply(b, "removing the empty table inet davit");
        return;
    }
    let gone: Vec<&String> = names.iter().filter(|n| have.contains(n)).collect();
    if !gone.is_empty() {
        for n in &gone {
            b.add_cmd(NfCmd::Flush(FlushObject::Chain(chain_def(n, false))));
            b.delete(NfListObject::Chain(chain_def(n, false)));
        }
        let _ = apply(b, "removing davit's NAT chains");
    }
}

/// The chains of container `name`'s published ports.
pub fn container_chains(name: &str) -> [String; 2] {
    [pre_chain(name), out_chain(name)]
}

/// The chains of bridge `bridge`'s NAT.
pub fn bridge_chains(bridge: &str) -> [String; 2] {
    [post_chain(bridge), fwd_chain(bridge)]
}

/// Remove container `name`'s published ports.
pub fn remove_container(dir: &Path, name: &str) {
    remove(dir, &container_chains(name));
}

/// Remove bridge `bridge`'s NAT (its last container is gone).
pub fn remove_bridge(dir: &Path, bridge: &str) {
    remove(dir, &bridge_chains(bridge));
}

/// Every lease table in `dir` (`BRIDGE.json`), the locked one of `bridge`
/// given as `mine`; unreadable files are skipped.
fn all_tables(dir: &Path, bridge: &str, mine: &LeaseTable) -> Vec<LeaseTable> {
    let mut out = vec![mine.clone()];
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        let Some(br) = n.strip_suffix(".json") else {
            continue;
        };
        if br == bridge || br.starts_with('.') {
            continue;
        }
        if let Ok(t) = super::lease::LeaseStore::new(dir, br).peek() {
            out.push(t);
        }
    }
    out
}

/// Whether two publishes take the same host port.
pub fn clash(a: &Publish, b: &Publish) -> bool {
    a.proto == b.proto
        && a.host_port == b.host_port
        && (a.host_ip.is_none() || b.host_ip.is_none() || a.host_ip == b.host_ip)
}

/// The first of `pubs` a live lease in `dir` already forwards, with its
/// container: `Error::PortInUse`.
///
/// # Errors
/// [`Error::PortInUse`].
pub fn refuse_taken(dir: &Path, bridge: &str, mine: &LeaseTable, pubs: &[Publish]) -> Result<()> {
    for t in all_tables(dir, bridge, mine) {
        for l in t.leases.iter().filter(|l| l.is_live()) {
            for p in pubs {
                if l.publish.iter().any(|q| clash(p, q)) {
                    return Err(Error::PortInUse {
                        port: p.to_string(),
                        holder: l.name.clone(),
                    });
                }
            }
        }
    }
    Ok(())
}

/// Whether a live lease in `dir` is named `name` (so a dead lease of that
/// name must not take the live one's chains).
pub fn live_name(dir: &Path, bridge: &str, mine: &LeaseTable, name: &str) -> bool {
    all_tables(dir, bridge, mine)
        .iter()
        .any(|t| t.leases.iter().any(|l| l.name == name && l.is_live()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(chains: &[ChainRules]) -> String {
        serde_json::to_string(&write_batch(chains, "t").to_nftables()).unwrap()
    }

    #[test]
    fn bridge_rules_masquerade_the_subnet_and_its_64() {
        let b = BridgeNat {
            bridge: "br9".into(),
            subnet: "10.9.9.0/24".parse().unwrap(),
            subnet6: Some("fd42:1:2:3::/64".parse().unwrap()),
        };
        let r = bridge_rules(&b);
        assert_eq!(r[0].0, "br-br9-post");
        assert_eq!(r[1].0, "br-br9-fwd");
        assert_eq!(r[0].1.len(), 3);
        let j = json(&r);
        for want in [
            r#""hook":"postrouting""#,
            r#""hook":"forward""#,
            r#"{"prefix":{"addr":"10.9.9.0","len":24}}"#,
            r#"{"prefix":{"addr":"fd42:1:2:3::","len":64}}"#,
            r#""op":"!=""#,
            r#"{"masquerade":null}"#,
            r#"{"ct":{"key":"state"}},"right":["established","related"]"#,
            r#"{"drop":{}}"#,
        ] {
            assert!(j.contains(want), "{want} not in {j}");
        }
        let v4 = bridge_rules(&BridgeNat { subnet6: None, ..b });
        assert_eq!(v4[0].1.len(), 2, "no NAT66 rule without a subnet6");
        assert!(!json(&v4).contains("ip6"));
    }

    #[test]
    fn publish_rules_dnat_local_addresses_but_never_loopback() {
        let p: Publish = "8080:80".parse().unwrap();
        let q: Publish = "198.51.100.2:5353:53/udp".parse().unwrap();
        let r = publish_rules("web", Ipv4Addr::new(10, 9, 9, 2), &[p, q]);
        assert_eq!(r[0].0, "pub-web-pre");
        assert_eq!(r[1].0, "pub-web-out");
        let j = json(&r);
        assert!(
            j.contains(r#"{"dnat":{"addr":"10.9.9.2","family":"ip","port":80}}"#),
            "{j}"
        );
        assert!(j.contains(r#""right":"local""#), "{j}");
        assert!(
            j.contains(r#""right":"udp""#) && j.contains(r#""right":5353"#),
            "{j}"
        );
        let out = serde_json::to_string(&r[1].1).unwrap();
        assert!(
            out.contains(r#"{"prefix":{"addr":"127.0.0.0","len":8}}"#),
            "{out}"
        );
        assert!(check_publish(&[p, q]).is_ok());
        assert!(check_publish(&["127.0.0.1:80:80".parse().unwrap()]).is_err());
        assert!(check_publish(&["[::1]:80:80".parse().unwrap()]).is_err());
        assert!(clash(&p, &"10.0.0.1:8080:81".parse().unwrap()));
        assert!(!clash(&p, &"8080:80/udp".parse().unwrap()));
        assert!(!clash(&q, &"10.0.0.1:5353:53/udp".parse().unwrap()));
    }
}
