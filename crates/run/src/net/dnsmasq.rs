//! DHCP, DNS and IPv6 router adverts on a bridge: one dnsmasq per bridge,
//! as lxc-net and Incus run (issue 16; docs/NETWORKING.md, "DHCP, DNS and
//! IPv6 on the bridge").
//!
//! davit's lease table ([`super::lease`]) stays the only allocator. The
//! dnsmasq of a bridge answers DHCP in *static* mode: a client gets an
//! address only if its MAC is in `--dhcp-hostsfile`, written from the
//! table (`MAC,IP,NAME`), so it hands out exactly the address davit leased.
//! Its DNS, on the bridge address only, answers the containers' names from
//! `--addn-hostsfile` (`IP NAME.DOMAIN NAME`, the same table) and forwards
//! everything else to the host's resolvers. With `ipv6`, the bridge has a
//! ULA /64 ([`subnet6_for`]) and dnsmasq sends router adverts for it.
//!
//! Files, all under `LEASE_DIR/BRIDGE.dnsmasq/` ([`files_dir`]):
//! `dhcp-hosts`, `hosts`, `pid` (dnsmasq's own), `running.json` (its pid
//! and start time, so a recycled pid is never signalled, and the domain),
//! `leases` (dnsmasq's lease database), `log` (its DHCP log) and
//! `start.err` (what it said when it would not start).
//!
//! Lifecycle, always under the bridge's lease lock: [`ensure`] after a
//! lease is added (start it, or rewrite the files and `SIGHUP` it);
//! [`refresh`] after leases are dropped (rewrite and `SIGHUP`, or stop it
//! when the table is empty). dnsmasq daemonises itself (fork, `setsid`,
//! fork), so it outlives the monitor that started it; only davit stops it
//! (`SIGTERM`, then `SIGKILL`).
#![forbid(unsafe_code)]

use std::fs::{self, OpenOptions};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};

use super::host::HostNet;
use super::lease::LeaseTable;
use super::subnet::Subnet;
use crate::error::{Error, Result};
use crate::state::ProcessRef;
use crate::sys;

/// Where dnsmasq is looked for: fixed root-owned paths, never `PATH` (the
/// setuid helper runs this too).
pub const DNSMASQ_PATHS: [&str; 4] = [
    "/usr/sbin/dnsmasq",
    "/sbin/dnsmasq",
    "/usr/bin/dnsmasq",
    "/bin/dnsmasq",
];

/// The DHCP lease time dnsmasq gives (the address never changes anyway).
pub const LEASE_TIME: &str = "1h";

/// What `running.json` records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Running {
    /// The daemon (pid and start time).
    pub process: ProcessRef,
    /// The domain its hosts file uses.
    pub domain: String,
}

/// `LEASE_DIR/BRIDGE.dnsmasq`.
pub fn files_dir(lease_dir: &Path, bridge: &str) -> PathBuf {
    lease_dir.join(format!("{bridge}.dnsmasq"))
}

/// The bridge's IPv6 /64 (its network address):
/// [`HostNet::subnet6_for`], the one rule the NAT side uses too.
pub(crate) fn subnet6_for(host: &HostNet, bridge: &str) -> Result<Ipv6Addr> {
    Ok(host.subnet6_for(bridge).network)
}

/// The bridge's own IPv6 address: `::1` of its /64.
pub fn gateway6(net: Ipv6Addr) -> Ipv6Addr {
    let s = net.segments();
    Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 1)
}

/// Whether IPv6 is on for `ifname` (its `disable_ipv6` reads 0).
pub fn ipv6_enabled(ifname: &str) -> bool {
    fs::read_to_string(format!("/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6"))
        .is_ok_and(|s| s.trim() == "0")
}

/// Whether `n` may be a DNS name and a DHCP host name: one label of
/// `[A-Za-z0-9-]`, 1..=63 bytes, not starting or ending with `-`.
fn dns_label(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 63
        && !n.starts_with('-')
        && !n.ends_with('-')
        && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// `--dhcp-hostsfile` text: `MAC,IP[,NAME]` for every lease with a MAC.
pub fn dhcp_hosts(table: &LeaseTable) -> String {
    let mut s = String::from("# written by davit from its lease table; do not edit\n");
    for l in &table.leases {
        let Some(mac) = &l.mac else { continue };
        s += &format!("{mac},{}", l.addr);
        if dns_label(&l.name) {
            s += &format!(",{}", l.name);
        }
        s.push('\n');
    }
    s
}

/// `--addn-hosts` text: `IP NAME.DOMAIN NAME` for every lease.
pub fn addn_hosts(table: &LeaseTable, domain: &str) -> String {
    let mut s = String::from("# written by davit from its lease table; do not edit\n");
    for l in table.leases.iter().filter(|l| dns_label(&l.name)) {
        s += &format!("{} {}.{domain} {}\n", l.addr, l.name, l.name);
    }
    s
}

/// The `nameserver` lines of resolv.conf text, both families, loopback
/// ones included: dnsmasq runs in the host's namespace, where a local
/// resolver (systemd-resolved's 127.0.0.53) answers.
pub fn resolv_servers(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|a| a.trim().parse::<IpAddr>().ok())
        .filter(|a| !a.is_unspecified())
        .collect()
}

/// Where dnsmasq forwards: `network.nameservers`, else the host's
/// resolv.conf servers; never an address of its own (`own`).
pub fn upstreams(host: &HostNet, own: &[IpAddr]) -> Vec<IpAddr> {
    let all: Vec<IpAddr> = if host.nameservers.is_empty() {
        resolv_servers(&fs::read_to_string("/etc/resolv.conf").unwrap_or_default())
    } else {
        host.nameservers.iter().map(|a| IpAddr::V4(*a)).collect()
    };
    all.into_iter().filter(|a| !own.contains(a)).collect()
}

/// What one dnsmasq serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The bridge.
    pub bridge: String,
    /// Its IPv4 subnet.
    pub subnet: Subnet,
    /// The bridge's IPv4 address (router, DNS server).
    pub gateway: Ipv4Addr,
    /// The containers' domain.
    pub domain: String,
    /// `LEASE_DIR/BRIDGE.dnsmasq`.
    pub dir: PathBuf,
    /// The resolvers it forwards to.
    pub upstream: Vec<IpAddr>,
    /// Router adverts for the bridge's IPv6 prefix.
    pub ipv6: bool,
}

/// dnsmasq's command line for `plan`: no configuration file, bound to the
/// bridge only, DHCP only for the MACs of `dhcp-hosts`.
pub fn args(plan: &Plan) -> Vec<String> {
    let d = |f: &str| plan.dir.join(f).display().to_string();
    let br = &plan.bridge;
    let mut a = vec![
        "--conf-file=/dev/null".to_owned(),
        format!("--pid-file={}", d("pid")),
        "--bind-interfaces".to_owned(),
        format!("--interface={br}"),
        "--except-interface=lo".to_owned(),
        format!("--listen-address={}", plan.gateway),
        "--no-hosts".to_owned(),
        "--no-resolv".to_owned(),
        "--strict-order".to_owned(),
        "--domain-needed".to_owned(),
        format!("--domain={}", plan.domain),
        format!("--local=/{}/", plan.domain),
        format!("--addn-hosts={}", d("hosts")),
        format!("--dhcp-hostsfile={}", d("dhcp-hosts")),
        format!("--dhcp-leasefile={}", d("leases")),
        format!(
            "--dhcp-range={},static,{},{LEASE_TIME}",
            plan.subnet.network,
            mask(plan.subnet.prefix)
        ),
        "--dhcp-authoritative".to_owned(),
        format!("--dhcp-option=option:router,{}", plan.gateway),
        format!("--dhcp-option=option:dns-server,{}", plan.gateway),
        format!("--log-facility={}", d("log")),
    ];
    for s in &plan.upstream {
        a.push(format!("--server={s}"));
    }
    if plan.ipv6 {
        a.push("--enable-ra".to_owned());
        a.push(format!(
            "--dhcp-range=::,constructor:{br},ra-stateless,64,{LEASE_TIME}"
        ));
    }
    a
}

fn mask(prefix: u8) -> Ipv4Addr {
    Ipv4Addr::from(u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0))
}

fn write_file(path: &Path, body: &str) -> Result<()> {
    super::lockfile::replace(path, &path.with_extension("tmp"), body.as_bytes(), false)
}

fn make_dir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).map_err(|source| Error::Write {
        path: dir.to_owned(),
        source,
    })?;
    let md = fs::symlink_metadata(dir).map_err(|source| Error::Read {
        path: dir.to_owned(),
        source,
    })?;
    if !md.is_dir() {
        return Err(Error::ConfigInvalid {
            reason: format!("{} is not a directory: remove it", dir.display()),
        });
    }
    let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o755));
    Ok(())
}

fn write_hosts(dir: &Path, table: &LeaseTable, domain: &str) -> Result<()> {
    write_file(&dir.join("dhcp-hosts"), &dhcp_hosts(table))?;
    write_file(&dir.join("hosts"), &addn_hosts(table, domain))
}

/// The recorded dnsmasq of `bridge`, if it still runs.
pub fn running(lease_dir: &Path, bridge: &str) -> Option<Running> {
    let p = files_dir(lease_dir, bridge).join("running.json");
    let r: Running = serde_json::from_slice(&fs::read(p).ok()?).ok()?;
    r.process.is_alive().then_some(r)
}

/// Signal `p`, pinned by a pidfd and checked to be the same process.
fn signal(p: &ProcessRef, sig: Signal) -> bool {
    let Ok(fd) = sys::pidfd_open(nix::unistd::Pid::from_raw(p.pid)) else {
        return false;
    };
    p.is_alive() && sys::pidfd_send_signal(fd.as_fd(), sig as i32).is_ok()
}

/// Whether dnsmasq's own lease database gives one of `table`'s addresses
/// to another MAC (a container that went): dnsmasq would refuse that
/// address to its new holder until the old lease expires.
fn stale_leases(dir: &Path, table: &LeaseTable) -> bool {
    let text = fs::read_to_string(dir.join("leases")).unwrap_or_default();
    text.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() >= 3
            && table.leases.iter().any(|x| {
                x.addr.to_string() == f[2]
                    && x.mac
                        .as_deref()
                        .is_some_and(|m| !m.eq_ignore_ascii_case(f[1]))
            })
    })
}

/// Drop from dnsmasq's lease database every line that is not one of
/// `table`'s (MAC, address) pairs; only while it is stopped.
fn prune_leases(dir: &Path, table: &LeaseTable) -> Result<()> {
    let p = dir.join("leases");
    let Ok(text) = fs::read_to_string(&p) else {
        return Ok(());
    };
    let keep: String = text
        .lines()
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() >= 3
                && table.leases.iter().any(|x| {
                    x.addr.to_string() == f[2]
                        && x.mac
                            .as_deref()
                            .is_some_and(|m| m.eq_ignore_ascii_case(f[1]))
                })
        })
        .map(|l| format!("{l}\n"))
        .collect();
    write_file(&p, &keep)
}

/// Make sure `bridge`'s dnsmasq runs and serves `table` (call under the
/// lease lock, after the table changed). Nothing when `host.dhcp` is off.
///
/// # Errors
/// [`Error::NetHelper`] when dnsmasq is missing or will not start (its
/// message), [`Error::Write`] for its files.
pub fn ensure(host: &HostNet, bridge: &str, subnet: Subnet, table: &LeaseTable) -> Result<()> {
    if !host.dhcp {
        return Ok(());
    }
    let dir = files_dir(&host.lease_dir, bridge);
    make_dir(&dir)?;
    write_hosts(&dir, table, &host.domain)?;
    if let Some(r) = running(&host.lease_dir, bridge) {
        if r.domain == host.domain && !stale_leases(&dir, table) {
            if signal(&r.process, Signal::SIGHUP) {
                return Ok(());
            }
        } else {
            super::usermode::stop(&r.process);
        }
    }
    prune_leases(&dir, table)?;
    start(host, bridge, subnet, &dir)
}

fn start(host: &HostNet, bridge: &str, subnet: Subnet, dir: &Path) -> Result<()> {
    let fail = |message: String| Error::NetHelper {
        program: format!("dnsmasq for {bridge}"),
        message,
    };
    let bin = DNSMASQ_PATHS
        .iter()
        .copied()
        .find(|p| Path::new(p).is_file())
        .ok_or_else(|| {
            fail(format!(
                "not found at {}: apt-get install dnsmasq-base (or dnf install dnsmasq), or set dhcp = false in [network] of {}",
                DNSMASQ_PATHS.join(", "),
                super::HOST_CONFIG
            ))
        })?;
    let gateway = subnet.first_host();
    let ipv6 = host.ipv6 && ipv6_enabled(bridge);
    let mut own = vec![IpAddr::V4(gateway)];
    if ipv6 {
        own.push(IpAddr::V6(gateway6(subnet6_for(host, bridge)?)));
    }
    let plan = Plan {
        bridge: bridge.to_owned(),
        subnet,
        gateway,
        domain: host.domain.clone(),
        dir: dir.to_owned(),
        upstream: upstreams(host, &own),
        ipv6,
    };
    for f in ["pid", "running.json"] {
        let _ = fs::remove_file(dir.join(f));
    }
    let err_path = dir.join("start.err");
    let err = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&err_path)
        .map_err(|source| Error::Write {
            path: err_path.clone(),
            source,
        })?;
    // dnsmasq forks into the background (setsid, second fork) and its
    // first process exits only once the daemon is set up, with an error
    // status when it is not: the wait is its readiness.
    let status = Command::new(bin)
        .args(args(&plan))
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err)
        .status()
        .map_err(|source| Error::Spawn {
            program: bin.into(),
            source,
        })?;
    if !status.success() {
        let said = fs::read_to_string(&err_path).unwrap_or_default();
        return Err(fail(format!(
            "{bin} exited with {status}: {} (its log: {})",
            said.trim(),
            dir.join("log").display()
        )));
    }
    let pid_path = dir.join("pid");
    let pid: i32 = fs::read_to_string(&pid_path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| {
            fail(format!(
                "started but wrote no pid to {}",
                pid_path.display()
            ))
        })?;
    let process = ProcessRef::of(pid).ok_or_else(|| {
        fail(format!(
            "started as pid {pid} and is gone: see {}",
            dir.join("log").display()
        ))
    })?;
    let r = Running {
        process,
        domain: host.domain.clone(),
    };
    let body = serde_json::to_string(&r).map_err(|e| Error::Write {
        path: dir.join("running.json"),
        source: std::io::Error::other(e),
    })?;
    write_file(&dir.join("running.json"), &body)
}

/// After leases were dropped (call under the lease lock): rewrite the
/// files and `SIGHUP` the running dnsmasq, or stop it and remove its
/// directory when `table` is empty.
///
/// # Errors
/// [`Error::Write`] for its files.
pub fn refresh(lease_dir: &Path, bridge: &str, table: &LeaseTable) -> Result<()> {
    if table.leases.is_empty() {
        stop(lease_dir, bridge);
        return Ok(());
    }
    let Some(r) = running(lease_dir, bridge) else {
        return Ok(());
    };
    write_hosts(&files_dir(lease_dir, bridge), table, &r.domain)?;
    signal(&r.process, Signal::SIGHUP);
    Ok(())
}

/// Stop `bridge`'s dnsmasq (`SIGTERM`, up to 2 s, then `SIGKILL`) and
/// remove its directory.
pub fn stop(lease_dir: &Path, bridge: &str) {
    let dir = files_dir(lease_dir, bridge);
    if let Some(r) = running(lease_dir, bridge) {
        super::usermode::stop(&r.process);
    }
    if fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) {
        let _ = fs::remove_dir_all(&dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::lease::Lease;

    fn lease(addr: [u8; 4], name: &str, mac: Option<&str>) -> Lease {
        Lease {
            addr: Ipv4Addr::from(addr),
            name: name.into(),
            veth: "vethx".into(),
            ifindex: 1,
            mac: mac.map(str::to_owned),
            uid: 0,
            publish: Vec::new(),
            owner: ProcessRef {
                pid: 1,
                start_time: 1,
            },
        }
    }

    #[test]
    fn hosts_files_come_from_the_lease_table() {
        let t = LeaseTable {
            last: None,
            leases: vec![
                lease([10, 0, 3, 2], "web", Some("0a:01:02:03:04:05")),
                lease([10, 0, 3, 3], "bad_name", Some("0a:01:02:03:04:06")),
                lease([10, 0, 3, 4], "old", None),
            ],
        };
        let d = dhcp_hosts(&t);
        assert!(d.contains("\n0a:01:02:03:04:05,10.0.3.2,web\n"), "{d}");
        assert!(d.contains("\n0a:01:02:03:04:06,10.0.3.3\n"), "{d}");
        assert!(!d.contains("10.0.3.4"), "no MAC, no DHCP: {d}");
        let h = addn_hosts(&t, "davit");
        assert!(h.contains("10.0.3.2 web.davit web\n"), "{h}");
        assert!(h.contains("10.0.3.4 old.davit old\n"), "{h}");
        assert!(!h.contains("bad_name"), "{h}");
    }

    #[test]
    fn the_ula_is_stable_per_bridge_and_config_wins() {
        let h = HostNet::default();
        let a = subnet6_for(&h, "davitbr0").unwrap();
        assert_eq!(a, subnet6_for(&h, "davitbr0").unwrap());
        assert_ne!(a, subnet6_for(&h, "davitbr1").unwrap());
        let s = a.segments();
        assert_eq!(s[0] >> 8, 0xfd);
        assert_eq!(&s[3..], &[0; 5]);
        let d = {
            use sha2::Digest;
            sha2::Sha256::digest(b"davitbr0")
        };
        assert_eq!(s[0] & 0xff, u16::from(d[0]));
        assert_eq!(s[2], u16::from(d[3]) << 8 | u16::from(d[4]));
        assert_eq!(gateway6(a).segments()[7], 1);
        let h = HostNet {
            subnet6: Some("fd00:1:2::/64".parse().unwrap()),
            ..HostNet::default()
        };
        assert_eq!(
            subnet6_for(&h, "davitbr0").unwrap(),
            "fd00:1:2::".parse::<Ipv6Addr>().unwrap()
        );
    }

    #[test]
    fn command_line_binds_the_bridge_only_and_never_forwards_to_itself() {
        let h = HostNet {
            nameservers: vec![Ipv4Addr::new(198, 51, 100, 1), Ipv4Addr::new(10, 0, 3, 1)],
            ..HostNet::default()
        };
        let up = upstreams(&h, &[IpAddr::V4(Ipv4Addr::new(10, 0, 3, 1))]);
        assert_eq!(up, vec![IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1))]);
        let plan = Plan {
            bridge: "br9".into(),
            subnet: "10.0.3.0/24".parse().unwrap(),
            gateway: Ipv4Addr::new(10, 0, 3, 1),
            domain: "davit".into(),
            dir: "/run/davit/net/br9.dnsmasq".into(),
            upstream: up,
            ipv6: true,
        };
        let a = args(&plan);
        for want in [
            "--conf-file=/dev/null",
            "--bind-interfaces",
            "--interface=br9",
            "--except-interface=lo",
            "--listen-address=10.0.3.1",
            "--no-resolv",
            "--server=198.51.100.1",
            "--dhcp-range=10.0.3.0,static,255.255.255.0,1h",
            "--dhcp-option=option:router,10.0.3.1",
            "--dhcp-option=option:dns-server,10.0.3.1",
            "--local=/davit/",
            "--dhcp-hostsfile=/run/davit/net/br9.dnsmasq/dhcp-hosts",
            "--enable-ra",
            "--dhcp-range=::,constructor:br9,ra-stateless,64,1h",
        ] {
            assert!(a.iter().any(|x| x == want), "{want} missing from {a:?}");
        }
        assert!(!a
            .iter()
            .any(|x| x.contains("10.0.3.1") && x.starts_with("--server")));
        assert_eq!(
            resolv_servers("nameserver 127.0.0.53\nnameserver ::1\nnameserver 0.0.0.0\nsearch x\n"),
            vec![
                IpAddr::V4(Ipv4Addr::new(127, 0, 0, 53)),
                IpAddr::V6(Ipv6Addr::LOCALHOST)
            ]
        );
    }

    #[test]
    fn stale_dnsmasq_leases_are_found_and_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let t = LeaseTable {
            last: None,
            leases: vec![lease([10, 0, 3, 2], "web", Some("0a:01:02:03:04:05"))],
        };
        fs::write(
            dir.path().join("leases"),
            "1 0a:01:02:03:04:05 10.0.3.2 web *\n",
        )
        .unwrap();
        assert!(!stale_leases(dir.path(), &t));
        fs::write(
            dir.path().join("leases"),
            "1 0a:ff:ff:ff:ff:ff 10.0.3.2 gone *\n2 0a:01:02:03:04:05 10.0.3.2 web *\n",
        )
        .unwrap();
        assert!(stale_leases(dir.path(), &t));
        prune_leases(dir.path(), &t).unwrap();
        assert_eq!(
            fs::read_to_string(dir.path().join("leases")).unwrap(),
            "2 0a:01:02:03:04:05 10.0.3.2 web *\n"
        );
    }
}
