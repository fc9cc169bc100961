//! `davit network`: the bridges in this network namespace, their
//! addresses, leases and published ports, and whether NAT, DHCP/DNS and
//! IPv6 are up (`--json` too).

use crate::ctx::{Ctx, Failure};
use crate::paths;

fn on(b: bool) -> &'static str {
    if b {
        "up"
    } else {
        "-"
    }
}

pub fn network(ctx: &Ctx) -> Result<(), Failure> {
    let host = davit_run::net::HostNet::load(&paths::net_config_path())?;
    let bridges = davit_run::net::overview(&host)?;
    if ctx.json {
        ctx.print_json(&bridges);
        return Ok(());
    }
    println!(
        "{:<16} {:<6} {:<4} {:<8} {:<4} {:>6}  ADDRESSES",
        "BRIDGE", "STATE", "NAT", "DHCP/DNS", "IPV6", "LEASES"
    );
    for b in &bridges {
        let state = match (b.exists, b.up) {
            (false, _) => "absent",
            (true, true) => "up",
            (true, false) => "down",
        };
        println!(
            "{:<16} {:<6} {:<4} {:<8} {:<4} {:>6}  {}",
            b.name,
            state,
            on(b.nat),
            on(b.dhcp_dns),
            on(b.ipv6),
            b.leases.len(),
            if b.addresses.is_empty() {
                "-".to_owned()
            } else {
                b.addresses.join(", ")
            }
        );
        for l in &b.leases {
            println!(
                "  {:<20} {:<15} {:<17} {:<12} {}{}",
                l.name,
                l.address,
                l.mac.as_deref().unwrap_or("-"),
                l.veth,
                if l.live { "running" } else { "stale" },
                if l.publish.is_empty() {
                    String::new()
                } else {
                    format!("  publish {}", l.publish.join(", "))
                }
            );
        }
    }
    Ok(())
}
