//! Container networking, for real, as root (issue 5). Network safety: every
//! test makes its own bridge (`davt` + 6 hex, deleted on drop) on its own
//! /24 from 10.213.0.0/16 that overlaps no host route, and traffic goes only
//! to those addresses or to 127.0.0.1. Under `CI=true` a missing privilege
//! fails instead of skipping.
mod common;
use common::{busybox_rootfs, driver, have_root, idmap_toml, lchown_tree, text, Ct, HOST_BASE};
use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read};
use std::net::{IpAddr, Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use davit_run::monitor::{spawn_monitor, MonitorHandle};
use davit_run::net::lease::LeaseStore;
use davit_run::net::rtnl::Rtnl;
use davit_run::net::{net_info, Subnet};
use davit_run::stop::{stop, StopOptions};
use davit_run::ErrorKind;

/// The plain test user and its subordinate range (added idempotently).
const NET_USER: &str = "davit-net";
const NET_USER_BASE: u32 = 700_000;

static N: AtomicUsize = AtomicUsize::new(0);

/// A test-only bridge and subnet with a host config pointing at them;
/// the bridge, its leftover ports and the lease dir go on drop.
struct TestNet {
    tmp: tempfile::TempDir,
    bridge: String,
    subnet: Subnet,
}

impl TestNet {
    fn new(extra: &str) -> TestNet {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let n = N.fetch_add(1, Ordering::SeqCst);
        let id = (std::process::id() as usize * 131 + n * 7919) & 0xff_ffff;
        let bridge = format!("davt{id:06x}");
        let mut c = Rtnl::new().unwrap();
        let routes = c.routes4().unwrap();
        let addrs = c.addresses().unwrap();
        let used: Vec<Subnet> = routes
            .iter()
            .filter(|r| r.prefix > 0)
            .map(|r| Subnet::containing(r.dst, r.prefix))
            .chain(addrs.iter().filter_map(|a| match a.addr {
                IpAddr::V4(v) => Some(Subnet::containing(v, a.prefix)),
                _ => None,
            }))
            .collect();
        let mut third = (id % 200) as u8 + 20;
        let subnet = loop {
            let s: Subnet = format!("10.213.{third}.0/24").parse().unwrap();
            if !used.iter().any(|u| u.overlaps(&s)) {
                break s;
            }
            third = third.wrapping_add(1).max(20);
        };
        let cfg = format!(
            // nat, dhcp and ipv6 off: these tests run in the real host's
            // namespace, where no ip_forward, nft table or dnsmasq of
            // davit's may appear.
            "[network]\nbridge = \"{bridge}\"\nsubnet = \"{subnet}\"\nnat = false\nlease_dir = \"{}\"\n\
             usernet_helper = \"{}\"\nnameservers = [\"{}\"]\n\
             dhcp = false\nipv6 = false\n{extra}",
            tmp.path().join("leases").display(),
            tmp.path().join("helper/davit-usernet").display(),
            subnet.first_host()
        );
        std::fs::write(tmp.path().join("config.toml"), cfg).unwrap();
        std::fs::set_permissions(
            tmp.path().join("config.toml"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        TestNet {
            tmp,
            bridge,
            subnet,
        }
    }

    fn config(&self) -> PathBuf {
        self.tmp.path().join("config.toml")
    }

    fn leases(&self) -> LeaseStore {
        LeaseStore::new(&self.tmp.path().join("leases"), &self.bridge)
    }

    /// Host links enslaved to our bridge.
    fn ports(&self) -> Vec<String> {
        let mut c = Rtnl::new().unwrap();
        let links = c.links().unwrap();
        let Some(br) = links.iter().find(|l| l.name == self.bridge) else {
            return Vec::new();
        };
        links
            .iter()
            .filter(|l| l.master == Some(br.index))
            .map(|l| l.name.clone())
            .collect()
    }

    fn assert_clean(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.ports().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(self.ports(), Vec::<String>::new(), "bridge ports left");
        let t = self.leases().peek().unwrap();
        assert!(t.leases.is_empty(), "leases left: {:?}", t.leases);
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        let Ok(mut c) = Rtnl::new() else { return };
        let Ok(links) = c.links() else { return };
        if let Some(br) = links.iter().find(|l| l.name == self.bridge) {
            for l in links.iter().filter(|l| l.master == Some(br.index)) {
                if l.kind.as_deref() == Some("veth") {
                    let _ = c.delete_link(l.index);
                }
            }
            let _ = c.delete_link(br.index);
        }
    }
}

/// A busybox container (common::Ct, as real.rs builds them) with this
/// test's network config; killed and removed on drop.
impl Ct {
    fn new(net: &TestNet, network: &str) -> Ct {
        Ct::build(net, network, HOST_BASE, 0o700)
    }

    fn build(net: &TestNet, network: &str, base: u32, mode: u32) -> Ct {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(mode)).unwrap();
        let n = N.fetch_add(1, Ordering::SeqCst);
        let name = format!("n{n}x{}", std::process::id());
        let prefix = format!("davit-nettest-{}-{n}", std::process::id());
        let rootfs = tmp.path().join("rootfs");
        busybox_rootfs(&rootfs);
        lchown_tree(&rootfs, base);
        let cfg = format!(
            "name = \"{name}\"\nrootfs = \"{}\"\n{}[network]\n{network}\n",
            rootfs.display(),
            idmap_toml(base)
        );
        std::fs::write(tmp.path().join("config.toml"), cfg).unwrap();
        std::fs::set_permissions(
            tmp.path().join("config.toml"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        Ct {
            tmp,
            name,
            prefix,
            net_config: Some(net.config()),
        }
    }

    fn state_dir(&self) -> PathBuf {
        self.runtime().join(&self.name)
    }

    fn start(&self, cmd: &[&str]) -> (MonitorHandle, i32) {
        let mut h = spawn_monitor(&driver(), &self.args(cmd), true).unwrap();
        let pid = h.wait_ready().unwrap();
        (h, pid)
    }

    fn stop(&self) {
        stop(
            &self.runtime(),
            &self.name,
            &StopOptions {
                timeout: Some(Duration::from_secs(2)),
                ..StopOptions::default()
            },
        )
        .unwrap();
    }

    fn ip(&self) -> Ipv4Addr {
        let ni = net_info(&self.state_dir()).unwrap().expect("net.json");
        match ni.ips.iter().find(|a| a.is_ipv4()) {
            Some(IpAddr::V4(a)) => *a,
            _ => panic!("no IPv4 address: {ni:?}"),
        }
    }
}

impl Drop for Ct {
    fn drop(&mut self) {
        // A failed test may leave it running: stop kills it and cleans up.
        let _ = stop(
            &self.runtime(),
            &self.name,
            &StopOptions {
                timeout: Some(Duration::from_millis(200)),
                kill: true,
                halt_signal: None,
            },
        );
        self.kill_cgroups();
    }
}

/// Server loop: answer every TCP connection on 5555 with `pong-NAME`.
fn server(name: &str) -> Vec<String> {
    vec![
        "/bin/sh".into(),
        "-c".into(),
        format!("while true; do echo pong-{name} | nc -l -p 5555; done"),
    ]
}

fn tcp_get(addr: Ipv4Addr, port: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match TcpStream::connect_timeout(&(addr, port).into(), Duration::from_secs(2)) {
            Ok(mut s) => {
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut out = String::new();
                let _ = s.read_to_string(&mut out);
                if !out.is_empty() {
                    return out;
                }
            }
            Err(e) if Instant::now() > deadline => panic!("connect {addr}:{port}: {e}"),
            Err(_) => {}
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn two_containers_talk_tcp_host_reaches_both_counters_grow_and_stop_leaves_nothing() {
    if !have_root() {
        return;
    }
    let net = TestNet::new("");
    let a = Ct::new(&net, "mode = \"bridge\"");
    let b = Ct::new(&net, "mode = \"bridge\"");
    let sa = server("a");
    let sb = server("b");
    let t0 = Instant::now();
    let (_ha, _) = a.start(&sa.iter().map(String::as_str).collect::<Vec<_>>());
    let startup = t0.elapsed();
    let (_hb, _) = b.start(&sb.iter().map(String::as_str).collect::<Vec<_>>());
    let (ipa, ipb) = (a.ip(), b.ip());
    assert!(
        net.subnet.contains(ipa) && net.subnet.contains(ipb),
        "{ipa} {ipb}"
    );
    assert_ne!(ipa, ipb);

    // Host end: veth + 6, MAC fe:…, on our bridge, up.
    let ni = net_info(&a.state_dir()).unwrap().unwrap();
    let link = ni.link.clone().unwrap();
    assert!(link.starts_with("veth") && link.len() == 10, "{link}");
    let mac = std::fs::read_to_string(format!("/sys/class/net/{link}/address")).unwrap();
    assert!(mac.starts_with("fe:"), "{mac}");
    assert!(net.ports().contains(&link));

    // Inside: eth0 with the address, default route via the gateway, lo up,
    // resolv.conf written (busybox image: no network manager).
    let o = a.attach(&[
        "/bin/sh",
        "-c",
        "ip -4 addr show eth0; ip route; ip link show lo; cat /etc/resolv.conf",
    ]);
    let s = text(&o.stdout);
    assert!(
        s.contains(&format!("inet {ipa}/24")),
        "{s}\n{}",
        text(&o.stderr)
    );
    assert!(
        s.contains(&format!("default via {}", net.subnet.first_host())),
        "{s}"
    );
    assert!(s.contains("LOOPBACK,UP"), "{s}");
    assert!(s.contains("written by davit"), "{s}");
    assert!(
        s.contains(&format!("nameserver {}", net.subnet.first_host())),
        "{s}"
    );

    // The host reaches each container.
    assert_eq!(tcp_get(ipa, 5555).trim(), "pong-a");
    assert_eq!(tcp_get(ipb, 5555).trim(), "pong-b");

    // B talks to A over TCP with busybox nc; then counters grow.
    let before = net_info(&b.state_dir()).unwrap().unwrap();
    let o = b.attach(&["/bin/sh", "-c", &format!("nc -w 3 {ipa} 5555 </dev/null")]);
    assert_eq!(text(&o.stdout).trim(), "pong-a", "{}", text(&o.stderr));
    // 5 x 1000-byte echo requests to A (inside the test subnet): B's TX and
    // RX (its own view, the host veth's counters swapped) grow by >= 5000.
    let o = b.attach(&["/bin/sh", "-c", &format!("ping -c 5 -i 0.2 -s 1000 {ipa}")]);
    assert!(o.status.success(), "{}{}", text(&o.stdout), text(&o.stderr));
    let after = net_info(&b.state_dir()).unwrap().unwrap();
    eprintln!("info b before: {before:?}\ninfo b after: {after:?}");
    assert!(after.tx_bytes.unwrap() >= before.tx_bytes.unwrap() + 5000);
    assert!(after.rx_bytes.unwrap() >= before.rx_bytes.unwrap() + 5000);
    assert_eq!(
        after.total_bytes,
        Some(after.tx_bytes.unwrap() + after.rx_bytes.unwrap())
    );
    // info() carries the same section.
    let layout = davit_run::cgroup::Layout::detect().unwrap();
    let i = davit_run::info::info(&b.runtime(), &b.name, &layout).unwrap();
    assert_eq!(i.net.unwrap().ips, vec![IpAddr::V4(ipb)]);

    let veths: Vec<String> = [&a, &b]
        .iter()
        .map(|c| net_info(&c.state_dir()).unwrap().unwrap().link.unwrap())
        .collect();
    let t1 = Instant::now();
    a.stop();
    b.stop();
    eprintln!(
        "MEASURED: start with bridge {startup:?}; stop of two {:?}",
        t1.elapsed()
    );
    net.assert_clean();
    for v in veths {
        assert!(
            !Path::new(&format!("/sys/class/net/{v}")).exists(),
            "{v} left"
        );
    }
    assert!(!a.state_dir().exists() && !b.state_dir().exists());
}

#[test]
fn twenty_in_parallel_get_unique_addresses_and_leave_nothing() {
    if !have_root() {
        return;
    }
    let net = TestNet::new("");
    let cts: Vec<Ct> = (0..20)
        .map(|_| Ct::new(&net, "mode = \"bridge\""))
        .collect();
    let t0 = Instant::now();
    let mut handles: Vec<MonitorHandle> = cts
        .iter()
        .map(|c| spawn_monitor(&driver(), &c.args(&["/bin/sleep", "600"]), true).unwrap())
        .collect();
    for h in &mut handles {
        h.wait_ready().unwrap();
    }
    let started = t0.elapsed();
    let ips: Vec<Ipv4Addr> = cts.iter().map(Ct::ip).collect();
    let uniq: HashSet<_> = ips.iter().collect();
    assert_eq!(uniq.len(), 20, "{ips:?}");
    assert!(ips.iter().all(|a| net.subnet.contains(*a)));
    assert_eq!(net.leases().peek().unwrap().leases.len(), 20);
    assert_eq!(net.ports().len(), 20);
    let t1 = Instant::now();
    std::thread::scope(|s| {
        for c in &cts {
            s.spawn(move || c.stop());
        }
    });
    eprintln!(
        "MEASURED: 20 parallel starts {started:?}, 20 parallel stops {:?}",
        t1.elapsed()
    );
    net.assert_clean();
}

#[test]
fn static_address_conflict_and_none_mode() {
    if !have_root() {
        return;
    }
    let net = TestNet::new("");
    let fixed = Ipv4Addr::from(u32::from(net.subnet.network) + 77);
    let a = Ct::new(
        &net,
        &format!("mode = \"bridge\"\naddress = \"{fixed}/24\""),
    );
    let (_h, _) = a.start(&["/bin/sleep", "600"]);
    assert_eq!(a.ip(), fixed);
    let b = Ct::new(&net, &format!("mode = \"bridge\"\naddress = \"{fixed}\""));
    let mut h = spawn_monitor(&driver(), &b.args(&["/bin/true"]), true).unwrap();
    let e = h.wait_ready().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Network, "{e}");
    assert!(e.to_string().contains("already used by container"), "{e}");
    let _ = h.child.wait();
    a.stop();
    net.assert_clean();

    // none: only lo, and it is up.
    let c = Ct::new(&net, "mode = \"none\"");
    let o = c.run(&["/bin/sh", "-c", "ls /sys/class/net; ip link show lo"]);
    let s = text(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{s}{}", text(&o.stderr));
    assert!(s.starts_with("lo\n"), "{s}");
    assert!(s.contains("LOOPBACK,UP"), "{s}");
}

#[test]
fn crashed_monitor_lease_is_reclaimed_by_stop_and_by_next_allocation() {
    if !have_root() {
        return;
    }
    let net = TestNet::new("");
    let a = Ct::new(&net, "mode = \"bridge\"");
    let (mut h, pid) = a.start(&["/bin/sleep", "600"]);
    assert_eq!(net.leases().peek().unwrap().leases.len(), 1);
    // Crash: SIGKILL the monitor, then its init (both ours, by pid).
    h.child.kill().unwrap();
    let _ = h.child.wait();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let out = stop(&a.runtime(), &a.name, &StopOptions::default()).unwrap();
    assert_eq!(out, davit_run::stop::StopOutcome::Recovered);
    net.assert_clean();

    // Nobody calls stop: the dead container's lease (its address fixed
    // here) is reclaimed by the next allocation on the bridge.
    let fixed = Ipv4Addr::from(u32::from(net.subnet.network) + 9);
    let net_line = format!("mode = \"bridge\"\naddress = \"{fixed}/24\"");
    let b = Ct::new(&net, &net_line);
    let (mut h, pid) = b.start(&["/bin/sleep", "600"]);
    h.child.kill().unwrap();
    let _ = h.child.wait();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        net.leases().peek().unwrap().leases.len(),
        1,
        "stale lease kept"
    );
    let c = Ct::new(&net, &net_line);
    let (_hc, _) = c.start(&["/bin/sleep", "600"]);
    assert_eq!(c.ip(), fixed);
    let t = net.leases().peek().unwrap();
    assert_eq!(t.leases.len(), 1);
    assert_eq!(t.leases[0].name, c.name);
    c.stop();
    let _ = stop(&b.runtime(), &b.name, &StopOptions::default());
    net.assert_clean();
}

#[test]
fn user_mode_with_slirp4netns_reaches_host_loopback_only_by_choice() {
    if !have_root() {
        return;
    }
    if davit_run::net::usermode::find_tool(davit_run::net::UserTool::Slirp4netns).is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "slirp4netns must be installed in CI (apt-get install slirp4netns)"
        );
        eprintln!("!!! SKIPPED: slirp4netns is not installed");
        return;
    }
    let net = TestNet::new("user_tool = \"slirp4netns\"\nuser_host_loopback = true\n");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let a = Ct::new(&net, "mode = \"user\"");
    let (_h, _) = a.start(&["/bin/sleep", "600"]);
    let att = davit_run::net::Attachment::load(&a.state_dir())
        .unwrap()
        .unwrap();
    let (tool, proc_) = att.user_process.clone().unwrap();
    assert_eq!(tool, "slirp4netns");
    assert!(proc_.is_alive());
    let srv = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut got = String::new();
        s.read_to_string(&mut got).unwrap();
        got
    });
    // 10.0.2.2 is slirp's host alias: it lands on the host's 127.0.0.1.
    let o = a.attach(&[
        "/bin/sh",
        "-c",
        &format!("ip -4 addr show tap0; cat /etc/resolv.conf; echo hello-from-user-mode | nc -w 3 10.0.2.2 {port}"),
    ]);
    let s = text(&o.stdout);
    assert!(s.contains("inet 10.0.2.100/24"), "{s}{}", text(&o.stderr));
    assert!(s.contains("nameserver 10.0.2.3"), "{s}");
    assert_eq!(srv.join().unwrap().trim(), "hello-from-user-mode");
    a.stop();
    assert!(!proc_.is_alive(), "slirp4netns left running");
}

#[test]
fn user_mode_with_pasta_configures_the_namespace() {
    if !have_root() {
        return;
    }
    if davit_run::net::usermode::find_tool(davit_run::net::UserTool::Pasta).is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "pasta (passt) must be installed in CI"
        );
        eprintln!("!!! SKIPPED: pasta is not installed");
        return;
    }
    let net = TestNet::new("user_tool = \"pasta\"\n");
    let a = Ct::new(&net, "mode = \"user\"");
    let (_h, _) = a.start(&["/bin/sleep", "600"]);
    let att = davit_run::net::Attachment::load(&a.state_dir())
        .unwrap()
        .unwrap();
    let (tool, proc_) = att.user_process.clone().unwrap();
    assert_eq!(tool, "pasta");
    // No traffic: only look at what pasta configured.
    let o = a.attach(&["/bin/sh", "-c", "ip -4 addr; ip route"]);
    let s = text(&o.stdout);
    assert!(s.contains("default via"), "{s}{}", text(&o.stderr));
    a.stop();
    assert!(!proc_.is_alive(), "pasta left running");
}

/// A free port on the host's 127.0.0.1 (bound and released: nobody else
/// on this loopback takes it in the moment between).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Nothing accepts on the host's 127.0.0.1:`port` (after a stop).
fn assert_closed(port: u16) {
    assert!(
        TcpStream::connect_timeout(&(Ipv4Addr::LOCALHOST, port).into(), Duration::from_secs(1))
            .is_err(),
        "127.0.0.1:{port} still accepts after stop"
    );
}

/// `network = "user"` with one published port on the host's loopback.
fn published_user_ct(net: &TestNet, host_port: u16) -> Ct {
    Ct::new(
        net,
        &format!(
            "mode = \"user\"\n[[network.publish]]\nhost_ip = \"127.0.0.1\"\nhost_port = {host_port}\nport = 5555\n"
        ),
    )
}

/// Issue 16: `--publish` in user mode. A server in the container answers
/// on the host's 127.0.0.1:PORT through the tool; after stop the port is
/// closed. Only the host's loopback is used.
fn user_mode_publish(tool: davit_run::net::UserTool, name: &str) {
    if !have_root() {
        return;
    }
    if davit_run::net::usermode::find_tool(tool).is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{name} must be installed in CI"
        );
        eprintln!("!!! SKIPPED: {name} is not installed");
        return;
    }
    let net = TestNet::new(&format!("user_tool = \"{name}\"\n"));
    let port = free_port();
    let a = published_user_ct(&net, port);
    let (_h, _) = a.start(
        &server(&a.name)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    let att = davit_run::net::Attachment::load(&a.state_dir())
        .unwrap()
        .unwrap();
    let (tool_ran, proc_) = att.user_process.clone().unwrap();
    assert_eq!(tool_ran, name);
    assert_eq!(
        tcp_get(Ipv4Addr::LOCALHOST, port).trim(),
        format!("pong-{}", a.name),
        "the published port did not reach the container's server"
    );
    a.stop();
    assert!(!proc_.is_alive(), "{name} left running");
    assert_closed(port);
}

#[test]
fn user_mode_publish_with_slirp4netns_forwards_and_closes_at_stop() {
    user_mode_publish(davit_run::net::UserTool::Slirp4netns, "slirp4netns");
}

#[test]
fn user_mode_publish_with_pasta_forwards_and_closes_at_stop() {
    user_mode_publish(davit_run::net::UserTool::Pasta, "pasta");
}

#[test]
fn user_mode_publish_refuses_an_ipv6_host_address_with_slirp4netns() {
    if !have_root() {
        return;
    }
    if davit_run::net::usermode::find_tool(davit_run::net::UserTool::Slirp4netns).is_none() {
        assert!(std::env::var("CI").as_deref() != Ok("true"));
        return;
    }
    let net = TestNet::new("user_tool = \"slirp4netns\"\n");
    let a = Ct::new(
        &net,
        "mode = \"user\"\n[[network.publish]]\nhost_ip = \"::1\"\nhost_port = 18080\nport = 5555\n",
    );
    let mut h = spawn_monitor(&driver(), &a.args(&["/bin/sleep", "60"]), true).unwrap();
    let e = h
        .wait_ready()
        .expect_err("an IPv6 forward started with slirp4netns");
    assert!(e.to_string().contains("pasta"), "{e}");
    let _ = h.child.wait();
}

// ---------------------------------------------------------------------------
// Plain users: the setuid helper and its quota.

/// Create `davit-net` with a subordinate range at `NET_USER_BASE`,
/// idempotently, under a machine-wide lock (davit-testkit); returns its uid.
fn net_user() -> u32 {
    let u = davit_testkit::ensure_user(&davit_testkit::UserSpec {
        name: NET_USER,
        create_home: false,
        system: true,
        shell: "/usr/sbin/nologin",
        subids: davit_testkit::Subids::KeepOr(NET_USER_BASE),
    });
    assert_eq!(
        (u.subuid, u.subgid),
        (NET_USER_BASE, NET_USER_BASE),
        "{NET_USER} has another subordinate range in /etc/subuid or /etc/subgid than the tests expect"
    );
    u.uid
}

/// The helper installed setuid root in the test dir, the usernet quota
/// file next to the config, and the dir `/etc/davit` gets inside a private
/// mount namespace (the host's `/etc/davit` is never written).
fn install_helper(net: &TestNet, usernet: &str) -> PathBuf {
    let dir = net.tmp.path().join("helper");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let h = dir.join("davit-usernet");
    std::fs::copy(env!("CARGO_BIN_EXE_davit-usernet"), &h).unwrap();
    nix::unistd::chown(&h, Some(0.into()), Some(0.into())).unwrap();
    std::fs::set_permissions(&h, std::fs::Permissions::from_mode(0o4755)).unwrap();
    let etc = net.tmp.path().join("etc-davit");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::set_permissions(&etc, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::copy(net.config(), etc.join("config.toml")).unwrap();
    std::fs::write(etc.join("usernet"), usernet).unwrap();
    for f in ["config.toml", "usernet"] {
        std::fs::set_permissions(etc.join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    // The mount point must exist on the host; an empty directory is all
    // davit's own config dir costs.
    std::fs::create_dir_all("/etc/davit").unwrap();
    // /dev/net/tun is 0600 on hosts without udev (udev makes it 0666). A
    // private 0666 node is bound over it inside the test's mount namespace
    // only; the host's node is never changed.
    let tun = net.tmp.path().join("tun");
    if !tun.exists() {
        nix::sys::stat::mknod(
            &tun,
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o666),
            nix::sys::stat::makedev(10, 200),
        )
        .unwrap();
        std::fs::set_permissions(&tun, std::fs::Permissions::from_mode(0o666)).unwrap();
    }
    h
}

/// `unshare -m` + bind the test's etc-davit over /etc/davit, then run
/// `argv` as `uid` (setpriv).
fn as_user(net: &TestNet, uid: u32, argv: &[String]) -> Command {
    let etc = net.tmp.path().join("etc-davit");
    let mut c = Command::new("unshare");
    c.args(["-m", "--propagation", "private", "sh", "-c"])
        .arg(format!(
            "mount --bind {} /etc/davit && mount --bind {} /dev/net/tun && exec setpriv --reuid={uid} --regid={uid} --init-groups \"$@\"",
            etc.display(),
            net.tmp.path().join("tun").display()
        ))
        .arg("sh")
        .args(argv);
    c
}

/// Start a plain user's container through its own monitor; returns the
/// monitor child and its ready line.
fn user_start(net: &TestNet, ct: &Ct, uid: u32, cmd: &[&str]) -> (std::process::Child, String) {
    let mut args = vec![
        driver().display().to_string(),
        davit_run::monitor::MONITOR_ARG.into(),
    ];
    let mut ma = ct.args(cmd);
    ma.ready_fd = true;
    ma.net_config = None; // the monitor reads /etc/davit/config.toml, as in production
    args.extend(
        ma.to_args()
            .iter()
            .map(|a| a.to_string_lossy().into_owned()),
    );
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let mut c = as_user(net, uid, &args);
    c.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    davit_run::sys::command_pass_fds(&mut c, vec![(w, 3)], true);
    let child = c.spawn().unwrap();
    drop(c);
    let mut line = String::new();
    BufReader::new(std::fs::File::from(r))
        .read_line(&mut line)
        .unwrap();
    (child, line)
}

fn user_ct(net: &TestNet, uid: u32) -> Ct {
    let ct = Ct::build(net, "mode = \"bridge\"", NET_USER_BASE, 0o755);
    let run = ct.runtime();
    std::fs::create_dir(&run).unwrap();
    nix::unistd::chown(&run, Some(uid.into()), Some(uid.into())).unwrap();
    ct
}

#[test]
fn plain_user_quota_of_two_third_fails_clearly() {
    if !have_root() {
        return;
    }
    for t in ["unshare", "setpriv", "newuidmap", "newgidmap", "useradd"] {
        assert!(
            Command::new("sh")
                .args(["-c", &format!("command -v {t}")])
                .status()
                .unwrap()
                .success(),
            "{t} is needed"
        );
    }
    let uid = net_user();
    let net = TestNet::new("");
    install_helper(&net, &format!("# test\n{NET_USER} veth {} 2\n", net.bridge));
    let cts: Vec<Ct> = (0..3).map(|_| user_ct(&net, uid)).collect();
    let mut children = Vec::new();
    let mut ips = Vec::new();
    for ct in &cts[..2] {
        let (child, line) = user_start(&net, ct, uid, &["/bin/sleep", "600"]);
        assert!(line.contains("\"ok\":true"), "{line}");
        children.push(child);
        ips.push(ct.ip());
    }
    assert_ne!(ips[0], ips[1]);
    // The host reaches the plain user's container.
    let o = cts[0].attach(&["/bin/sh", "-c", "ip -4 addr show eth0"]);
    assert!(
        text(&o.stdout).contains(&format!("inet {}/24", ips[0])),
        "{}",
        text(&o.stdout)
    );
    let leases = net.leases().peek().unwrap().leases;
    assert_eq!(leases.len(), 2);
    assert!(leases.iter().all(|l| l.uid == uid));

    let (mut child, line) = user_start(&net, &cts[2], uid, &["/bin/sleep", "600"]);
    assert!(line.contains("\"ok\":false"), "{line}");
    assert!(
        line.contains("network quota reached") && line.contains(NET_USER),
        "{line}"
    );
    let _ = child.wait();
    eprintln!("third container: {line}");
    for ct in &cts[..2] {
        ct.stop();
    }
    for mut c in children {
        let _ = c.wait();
    }
    net.assert_clean();
}

fn helper_as(net: &TestNet, uid: u32, args: &[&str]) -> Output {
    let h = net.tmp.path().join("helper/davit-usernet");
    let mut argv = vec![h.display().to_string()];
    argv.extend(args.iter().map(|s| s.to_string()));
    as_user(net, uid, &argv).output().unwrap()
}

#[test]
fn helper_refuses_every_hostile_case_uniformly() {
    if !have_root() {
        return;
    }
    let uid = net_user();
    let net = TestNet::new("");
    install_helper(&net, &format!("{NET_USER} veth {} 5\n", net.bridge));
    let br = net.bridge.clone();

    // A root-owned container on the same bridge: someone else's netns.
    let victim = Ct::new(&net, "mode = \"bridge\"");
    let (_hv, victim_pid) = victim.start(&["/bin/sleep", "600"]);
    let victim_veth = net_info(&victim.state_dir())
        .unwrap()
        .unwrap()
        .link
        .unwrap();
    // The caller's own process in the host netns (owned by the initial userns).
    let mut own = Command::new("setpriv")
        .args([
            &format!("--reuid={uid}"),
            &format!("--regid={uid}"),
            "--clear-groups",
        ])
        .args(["sleep", "600"])
        .spawn()
        .unwrap();
    let own_pid = own.id().to_string();

    let attach = |pid: &str| {
        helper_as(
            &net,
            uid,
            &["attach", "--pid", pid, "--name", "x1", "--bridge", &br],
        )
    };
    // CVE-2017-5985: init's netns (pid 1), another user's container, the
    // caller's own host-netns process; plus pids that do not exist.
    let cases = [
        ("pid 1 (host netns)", "1".to_string()),
        ("root's container", victim_pid.to_string()),
        ("own process in the host netns", own_pid.clone()),
        ("no such pid", "999999".into()),
        ("pid beyond pid_max", "2147483646".into()),
    ];
    let mut first: Option<Output> = None;
    for (what, pid) in &cases {
        let o = attach(pid);
        assert_eq!(o.status.code(), Some(3), "{what}: {}", text(&o.stderr));
        assert!(text(&o.stdout).is_empty(), "{what}");
        // CVE-2018-6556 / CVE-2022-47952: one message for all, no oracle.
        if let Some(f) = &first {
            assert_eq!(f.stderr, o.stderr, "{what}: errors differ");
        } else {
            assert!(
                text(&o.stderr).contains("request refused"),
                "{}",
                text(&o.stderr)
            );
            first = Some(o);
        }
    }
    // A netns descriptor for the host netns, passed by the caller.
    let o = {
        let h = net.tmp.path().join("helper/davit-usernet");
        as_user(
            &net,
            uid,
            &[
                "sh".into(),
                "-c".into(),
                format!(
                    "exec 3</proc/self/ns/net; exec {} attach --pid $$ --name x2 --bridge {br} --netns-fd 3",
                    h.display()
                ),
            ],
        )
        .output()
        .unwrap()
    };
    assert_eq!(
        o.status.code(),
        Some(3),
        "host netns fd: {}",
        text(&o.stderr)
    );
    assert_eq!(o.stderr, first.as_ref().unwrap().stderr);

    // Paths never reach the helper: a path where a pid belongs is a usage
    // error whether the file exists or not.
    let p1 = attach("/etc/shadow");
    let p2 = attach("/nonexistent/file");
    assert_eq!(p1.status.code(), Some(2));
    assert_eq!(p1.stderr, p2.stderr);
    let o = helper_as(
        &net,
        uid,
        &[
            "attach",
            "--pid",
            "1",
            "--name",
            "../../etc",
            "--bridge",
            &br,
        ],
    );
    assert_eq!(o.status.code(), Some(2));
    let o = helper_as(
        &net,
        uid,
        &[
            "attach",
            "--pid",
            "1",
            "--name",
            "x",
            "--bridge",
            "eth0/../lo",
        ],
    );
    assert_eq!(o.status.code(), Some(2));

    // A bridge without a quota line: a clear quota error, nothing made.
    let o = helper_as(
        &net,
        uid,
        &[
            "attach", "--pid", &own_pid, "--name", "x3", "--bridge", "eth0",
        ],
    );
    assert_ne!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(
        Rtnl::new()
            .unwrap()
            .link("eth0")
            .unwrap()
            .unwrap()
            .master
            .is_none(),
        "host eth0 must never be touched"
    );

    // Release of another user's live container: nothing happens to it.
    let o = helper_as(
        &net,
        uid,
        &["release", "--name", &victim.name, "--bridge", &br],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(net.leases().peek().unwrap().leases.len(), 1);
    assert!(Path::new(&format!("/sys/class/net/{victim_veth}")).exists());

    // Not setuid (a copy without the bit) says so instead of acting.
    let plain = net.tmp.path().join("helper/plain-copy");
    std::fs::copy(env!("CARGO_BIN_EXE_davit-usernet"), &plain).unwrap();
    std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o755)).unwrap();
    let o = as_user(
        &net,
        uid,
        &[
            plain.display().to_string(),
            "attach".into(),
            "--pid".into(),
            own_pid.clone(),
            "--name".into(),
            "x4".into(),
            "--bridge".into(),
            br.clone(),
        ],
    )
    .output()
    .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("not installed setuid root"));

    let _ = own.kill();
    let _ = own.wait();
    victim.stop();
    net.assert_clean();
}

#[test]
fn plain_user_gets_user_mode_network_without_any_helper() {
    if !have_root() {
        return;
    }
    if davit_run::net::usermode::find_tool(davit_run::net::UserTool::Auto).is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "slirp4netns or pasta must be installed in CI"
        );
        eprintln!("!!! SKIPPED: neither slirp4netns nor pasta is installed");
        return;
    }
    let uid = net_user();
    let net = TestNet::new("user_tool = \"slirp4netns\"\n");
    // No quota line at all: user mode needs none.
    install_helper(&net, "");
    let ct = Ct::build(&net, "mode = \"user\"", NET_USER_BASE, 0o755);
    let run = ct.runtime();
    std::fs::create_dir(&run).unwrap();
    nix::unistd::chown(&run, Some(uid.into()), Some(uid.into())).unwrap();
    let (mut child, line) = user_start(&net, &ct, uid, &["/bin/sleep", "600"]);
    assert!(line.contains("\"ok\":true"), "{line}");
    let att = davit_run::net::Attachment::load(&ct.state_dir())
        .unwrap()
        .unwrap();
    let (tool, p) = att.user_process.clone().unwrap();
    assert_eq!(tool, "slirp4netns");
    // The tool runs as the user, not as root.
    let st = std::fs::metadata(format!("/proc/{}", p.pid)).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&st), uid);
    let o = ct.attach(&["/bin/sh", "-c", "ip -4 addr show tap0; ip link show lo"]);
    let s = text(&o.stdout);
    assert!(s.contains("inet 10.0.2.100/24"), "{s}{}", text(&o.stderr));
    assert!(s.contains("LOOPBACK,UP"), "{s}");
    ct.stop();
    let _ = child.wait();
    assert!(!p.is_alive(), "slirp4netns left running");
}

#[test]
fn plain_user_without_quota_or_user_mode_gets_lo_up_and_a_hint() {
    if !have_root() {
        return;
    }
    let uid = net_user();
    let net = TestNet::new("");
    install_helper(&net, "");
    let ct = Ct::build(&net, "mode = \"none\"", NET_USER_BASE, 0o755);
    let run = ct.runtime();
    std::fs::create_dir(&run).unwrap();
    nix::unistd::chown(&run, Some(uid.into()), Some(uid.into())).unwrap();
    let (mut child, line) = user_start(&net, &ct, uid, &["/bin/sleep", "600"]);
    assert!(line.contains("\"ok\":true"), "{line}");
    let o = ct.attach(&["/bin/sh", "-c", "ls /sys/class/net; ip link show lo"]);
    let s = text(&o.stdout);
    assert!(s.starts_with("lo\n"), "{s}");
    assert!(s.contains("LOOPBACK,UP"), "{s}");
    ct.stop();
    let _ = child.wait();
    // The hint a plain user's start prints when bridge is asked for but
    // there is neither a quota nor usable user-mode networking.
    let mut cfg = davit_run::ContainerConfig::new("h", "/r");
    cfg.network.mode = davit_run::config::NetworkMode::Bridge;
    let host = davit_run::net::HostNet {
        user_tool: davit_run::net::UserTool::Pasta,
        ..Default::default()
    };
    let (mode, hint) = davit_run::net::plan(&host, &cfg, uid);
    if davit_run::net::usermode::find_tool(davit_run::net::UserTool::Pasta).is_none()
        || !davit_run::net::usermode::tun_usable()
    {
        assert_eq!(mode, davit_run::config::NetworkMode::None);
        assert!(hint.unwrap().contains("only lo"));
    } else {
        assert_eq!(mode, davit_run::config::NetworkMode::User);
        assert!(hint.unwrap().contains("no veth quota"));
    }
}

/// Issue 13, row 4: a container's router advert must not configure the
/// host. Run in a network namespace of the test's own that stands in for
/// the host (this thread's, so the monitor started from it lives there
/// too): the advert is sent from the container's eth0 with a prefix and a
/// router lifetime, and the stand-in host must take neither an address
/// nor a default route, on the bridge or on the veth. Before the fix the
/// bridge kept `accept_ra=1` and took both.
#[test]
fn router_adverts_from_a_container_do_not_configure_the_host() {
    if !have_root() {
        return;
    }
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
    let net = TestNet::new("");
    let ct = Ct::new(&net, "mode = \"bridge\"");
    let (_h, pid) = ct.start(&["/bin/sleep", "600"]);
    let veth = net_info(&ct.state_dir()).unwrap().unwrap().link.unwrap();
    let prefix = "2001:db8:dead:beef::";
    let sent = Command::new("nsenter")
        .arg(format!("--net=/proc/{pid}/ns/net"))
        .arg("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/net/send_ra.py"))
        .args(["eth0", prefix])
        .output()
        .unwrap();
    assert!(
        sent.status.success(),
        "{}{}",
        text(&sent.stdout),
        text(&sent.stderr)
    );
    // Give a host that listens time to act on them.
    std::thread::sleep(Duration::from_secs(2));
    let show = |args: &[&str]| text(&Command::new("ip").args(args).output().unwrap().stdout);
    for dev in [net.bridge.as_str(), veth.as_str()] {
        let a = show(&["-6", "addr", "show", "dev", dev]);
        assert!(
            !a.contains("2001:db8:dead:beef"),
            "{dev} took an address from the container's advert:\n{a}"
        );
        let ra =
            std::fs::read_to_string(format!("/proc/sys/net/ipv6/conf/{dev}/accept_ra")).unwrap();
        assert_eq!(ra.trim(), "0", "{dev}");
    }
    let routes = show(&["-6", "route", "show", "default"]);
    assert!(
        routes.trim().is_empty(),
        "the host took a default route from the container: {routes}"
    );
    ct.stop();
    net.assert_clean();
}

/// Issue 13, row 8: the plain user who runs the setuid helper cannot stop
/// or kill it while it waits for (or holds) the bridge's lease lock. The
/// test holds the lock itself so the helper (a `release`, which takes it
/// first) waits; the user's SIGSTOP and SIGKILL must be refused, and once
/// the lock is free the helper finishes. Before the fix both signals
/// landed (the helper kept the user's real uid), and a stopped helper
/// would have hung every later start on the bridge.
#[test]
fn the_user_cannot_stop_or_kill_the_helper_holding_the_lease_lock() {
    if !have_root() {
        return;
    }
    let uid = net_user();
    let net = TestNet::new("");
    install_helper(&net, &format!("{NET_USER} veth {} 1\n", net.bridge));
    let lock = net.leases().lock().unwrap();
    let h = net.tmp.path().join("helper/davit-usernet");
    let helper = as_user(
        &net,
        uid,
        &[
            h.display().to_string(),
            "release".into(),
            "--name".into(),
            "x".into(),
            "--bridge".into(),
            net.bridge.clone(),
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let pid = helper.id();
    // If the test fails, the helper (stopped, maybe) is killed, by its pid.
    // (Disarmed before it is reaped: a reaped pid may be someone else's.)
    struct Reap(Option<u32>);
    impl Drop for Reap {
        fn drop(&mut self) {
            if let Some(p) = self.0 {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(p as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
    let mut reap = Reap(Some(pid));
    // Wait until it is the helper (the exec chain is done) and blocked.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .next();
        if comm.trim() == "davit-usernet" && state == Some("S") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "helper never waited: {comm} {stat}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(200));
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uids = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    for sig in ["STOP", "KILL"] {
        let o = Command::new("setpriv")
            .args([
                &format!("--reuid={uid}"),
                &format!("--regid={uid}"),
                "--clear-groups",
            ])
            .args(["kill", &format!("-{sig}"), &pid.to_string()])
            .output()
            .unwrap();
        assert!(
            !o.status.success(),
            "the user's SIG{sig} reached the helper ({uids})"
        );
        assert!(
            text(&o.stderr).contains("not permitted"),
            "{}",
            text(&o.stderr)
        );
    }
    drop(lock);
    reap.0 = None;
    let out = helper.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    net.assert_clean();
}

/// Icmp InEchos of this thread's network namespace.
fn in_echos() -> u64 {
    let snmp = std::fs::read_to_string("/proc/thread-self/net/snmp").unwrap();
    let mut icmp = snmp.lines().filter(|l| l.starts_with("Icmp:"));
    let (names, values) = (icmp.next().unwrap(), icmp.next().unwrap());
    let i = names
        .split_whitespace()
        .position(|n| n == "InEchos")
        .unwrap();
    values.split_whitespace().nth(i).unwrap().parse().unwrap()
}

/// The MAC this namespace has for `ip`, from `ip neigh`.
fn neigh_mac(ip: Ipv4Addr) -> Option<String> {
    let o = Command::new("ip")
        .args(["neigh", "show", &ip.to_string()])
        .output()
        .unwrap();
    let s = text(&o.stdout);
    let mut w = s.split_whitespace();
    w.find(|x| *x == "lladdr")?;
    w.next().map(str::to_owned)
}

/// Issue 13 (L2 spoofing): on the bridge, container A tries to take over
/// B's traffic and to hide behind another MAC: a gratuitous ARP and ARP
/// answers claiming B's address, echo requests from B's address, and echo
/// requests from a made-up MAC. Run in a network namespace standing in for
/// the host. The host's neighbour entry for B must keep B's MAC, and none
/// of the spoofed requests may arrive (counted in the stand-in's Icmp
/// InEchos), while A's honest ones do. Before the port filter all three
/// got through.
#[test]
fn containers_cannot_spoof_arp_addresses_or_macs_on_the_bridge() {
    if !have_root() {
        return;
    }
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
    let net = TestNet::new("");
    let a = Ct::new(&net, "mode = \"bridge\"");
    let b = Ct::new(&net, "mode = \"bridge\"");
    let (_ha, _) = a.start(&["/bin/sleep", "600"]);
    let (_hb, _) = b.start(&["/bin/sleep", "600"]);
    let (ipa, ipb, gw) = (a.ip(), b.ip(), net.subnet.first_host());
    let ping = |ip: Ipv4Addr| {
        Command::new("busybox")
            .args(["ping", "-c", "1", "-W", "2", &ip.to_string()])
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(ping(ipa) && ping(ipb), "the host reaches both");
    let mac_b = neigh_mac(ipb).expect("the host knows B");
    let sh = |ct: &Ct, script: &str| text(&ct.attach(&["/bin/sh", "-c", script]).stdout);

    // A's honest echo requests arrive (the path works).
    let n0 = in_echos();
    sh(&a, &format!("ping -c 2 -W 1 {gw}"));
    assert!(in_echos() >= n0 + 2, "A's own echo requests did not arrive");

    // ARP: A claims B's address, unsolicited and as answers.
    std::thread::sleep(Duration::from_millis(1200)); // past the neighbour locktime
    let arp = a.attach(&[
        "/bin/sh",
        "-c",
        &format!(
            "ip addr add {ipb}/32 dev eth0; arping -U -c 3 -s {ipb} -I eth0 {ipb}; \
             arping -A -c 3 -s {ipb} -I eth0 {gw}; arping -c 2 -s {ipb} -I eth0 {gw}; \
             ip addr del {ipb}/32 dev eth0"
        ),
    ]);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        neigh_mac(ipb).as_deref(),
        Some(mac_b.as_str()),
        "A took over B's address in the host's neighbour table ({ipa} is A): {}{}",
        text(&arp.stdout),
        text(&arp.stderr)
    );

    // IPv4: echo requests from B's address.
    let n1 = in_echos();
    sh(
        &a,
        &format!("ip addr add {ipb}/32 dev eth0; ping -c 2 -W 1 -I {ipb} {gw}; ip addr del {ipb}/32 dev eth0"),
    );
    assert_eq!(
        in_echos(),
        n1,
        "echo requests from B's address reached the host"
    );

    // MAC: A takes another MAC and sends again.
    let n2 = in_echos();
    let out = sh(
        &a,
        &format!(
            "ip link set eth0 address 02:de:ad:be:ef:01 || \
             {{ ip link set eth0 down; ip link set eth0 address 02:de:ad:be:ef:01; ip link set eth0 up; \
                ip route add default via {gw}; }}; ip link show eth0; ping -c 2 -W 1 {gw}"
        ),
    );
    assert!(
        out.contains("02:de:ad:be:ef:01"),
        "the MAC did not change: {out}"
    );
    assert_eq!(in_echos(), n2, "frames from a made-up MAC reached the host");

    a.stop();
    b.stop();
    net.assert_clean();
    let o = Command::new("nft")
        .args(["list", "table", "netdev", davit_run::net::l2::TABLE])
        .output()
        .unwrap();
    assert!(
        !text(&o.stdout).contains("chain port-"),
        "port chains left: {}",
        text(&o.stdout)
    );
}

/// Issue 16: a plain user's `--publish` in user mode, with each tool: the
/// tool runs as the user and forwards the host's 127.0.0.1:PORT to the
/// container's server; after stop the port is closed.
fn plain_user_publish(tool: davit_run::net::UserTool, name: &str) {
    if !have_root() {
        return;
    }
    if davit_run::net::usermode::find_tool(tool).is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{name} must be installed in CI"
        );
        return;
    }
    let uid = net_user();
    let net = TestNet::new(&format!("user_tool = \"{name}\"\n"));
    install_helper(&net, "");
    let port = free_port();
    let ct = Ct::build(
        &net,
        &format!(
            "mode = \"user\"\n[[network.publish]]\nhost_ip = \"127.0.0.1\"\nhost_port = {port}\nport = 5555\n"
        ),
        NET_USER_BASE,
        0o755,
    );
    let run = ct.runtime();
    std::fs::create_dir(&run).unwrap();
    nix::unistd::chown(&run, Some(uid.into()), Some(uid.into())).unwrap();
    let srv = server(&ct.name);
    let srv: Vec<&str> = srv.iter().map(String::as_str).collect();
    let (mut child, line) = user_start(&net, &ct, uid, &srv);
    assert!(line.contains("\"ok\":true"), "{line}");
    let att = davit_run::net::Attachment::load(&ct.state_dir())
        .unwrap()
        .unwrap();
    let (ran, p) = att.user_process.clone().unwrap();
    assert_eq!(ran, name);
    let st = std::fs::metadata(format!("/proc/{}", p.pid)).unwrap();
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&st),
        uid,
        "{name} runs as root"
    );
    assert_eq!(
        tcp_get(Ipv4Addr::LOCALHOST, port).trim(),
        format!("pong-{}", ct.name)
    );
    ct.stop();
    let _ = child.wait();
    assert!(!p.is_alive(), "{name} left running");
    assert_closed(port);
}

#[test]
fn plain_user_publish_with_slirp4netns() {
    plain_user_publish(davit_run::net::UserTool::Slirp4netns, "slirp4netns");
}

#[test]
fn plain_user_publish_with_pasta() {
    plain_user_publish(davit_run::net::UserTool::Pasta, "pasta");
}
