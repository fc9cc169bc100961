//! DHCP, DNS and IPv6 on the bridge (issue 16): one dnsmasq per bridge,
//! run by davit inside the network stand-in (`davit_testkit::standin`),
//! never in the real host's namespace. Every davit command runs in the
//! stand-in host with a host config of the test's own (`DAVIT_NET_CONFIG`:
//! its bridge, subnet and lease dir; upstream DNS the wan's 198.51.100.1).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use davit_testkit::standin::{StandIn, HOST4, HOST6, WAN4, WAN6, WAN_NAME, WAN_PAGE};
use sha2::Digest;

use crate::common::*;
use crate::run::Env;

static N: AtomicUsize = AtomicUsize::new(0);

/// One test's stand-in, davit environment and bridge.
struct Net {
    s: StandIn,
    env: Env,
    bridge: String,
    /// The third octet of 10.97.X.0/24.
    third: u8,
    config: PathBuf,
}

impl Net {
    fn new(tag: &str) -> Net {
        let n = N.fetch_add(1, Ordering::SeqCst);
        let s = StandIn::start();
        let env = Env::new(tag);
        let bridge = format!("dvd{:05x}{n}", std::process::id() & 0xf_ffff);
        let third = 10 + n as u8;
        let config = env.path().join("net.toml");
        std::fs::write(
            &config,
            format!(
                "[network]\nbridge = \"{bridge}\"\nsubnet = \"10.97.{third}.0/24\"\n\
                 lease_dir = \"{}\"\nnameservers = [\"{WAN4}\"]\n",
                env.path().join("leases").display()
            ),
        )
        .unwrap();
        Net {
            s,
            env,
            bridge,
            third,
            config,
        }
    }

    fn gateway(&self) -> String {
        format!("10.97.{}.1", self.third)
    }

    /// `davit ARGS` in the stand-in host, with this test's environment.
    fn davit(&self, args: &[&str]) -> Command {
        self.env.davit_in(&self.s, &self.config, args)
    }

    fn ok(&self, args: &[&str]) -> Output {
        ok(&mut self.davit(args))
    }

    fn busybox(&self, name: &str) {
        self.create_busybox(name);
        self.ok(&["start", "-d", name]);
    }

    /// `davit create NAME busybox` on this test's bridge, not started.
    fn create_busybox(&self, name: &str) {
        let f = fixture();
        let server = format!("file://{}", f.tree_a.display());
        let key = f.key.public.display().to_string();
        self.ok(&[
            "create",
            name,
            "busybox",
            "1.36",
            "amd64",
            "--network",
            "bridge",
            "--server",
            &server,
            "--keyring",
            &key,
        ]);
    }

    /// `davit attach NAME -- sh -c SCRIPT`.
    fn sh(&self, name: &str, script: &str) -> Output {
        run(&mut self.davit(&["attach", name, "--", "sh", "-c", script]))
    }

    fn ip_of(&self, name: &str) -> String {
        let v = json(&self.ok(&["info", name, "--json"]));
        v["ips"][0].as_str().expect("an address").to_owned()
    }

    fn lease_dir(&self) -> PathBuf {
        self.env.path().join("leases")
    }

    fn dnsmasq_dir(&self) -> PathBuf {
        self.lease_dir().join(format!("{}.dnsmasq", self.bridge))
    }

    /// The recorded dnsmasq pid (`running.json`).
    fn dnsmasq_pid(&self) -> i32 {
        let p = self.dnsmasq_dir().join("running.json");
        let v: serde_json::Value = serde_json::from_str(&read_to_string(&p)).unwrap();
        v["process"]["pid"].as_i64().unwrap() as i32
    }

    /// The dnsmasq processes in the stand-in host (`ip netns pids`).
    fn dnsmasqs_in_host(&self) -> Vec<i32> {
        StandIn::pids(&self.s.host)
            .into_iter()
            .filter(|p| {
                std::fs::read_to_string(format!("/proc/{p}/comm"))
                    .is_ok_and(|c| c.trim() == "dnsmasq")
            })
            .collect()
    }

    fn leases(&self) -> serde_json::Value {
        let p = self.lease_dir().join(format!("{}.json", self.bridge));
        serde_json::from_str(&read_to_string(&p)).unwrap()
    }

    /// After the last container went: no dnsmasq (by its pid and in the
    /// namespace), no files of it (hosts entries), no lease.
    fn assert_no_dnsmasq(&self, pid: i32) {
        let gone = wait_for(Duration::from_secs(5), || {
            !is_dnsmasq(pid) && self.dnsmasqs_in_host().is_empty()
        });
        assert!(
            gone,
            "dnsmasq left: pid {pid} alive {}, in host {:?}",
            is_dnsmasq(pid),
            self.dnsmasqs_in_host()
        );
        assert!(
            !self.dnsmasq_dir().exists(),
            "{} left",
            self.dnsmasq_dir().display()
        );
        let l = self.leases();
        assert_eq!(l["leases"].as_array().map(Vec::len), Some(0), "{l}");
    }
}

fn is_dnsmasq(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "dnsmasq")
}

/// The ULA rule: `fd` + the first 5 bytes of sha256(bridge), `::/64`.
fn ula_prefix(bridge: &str) -> String {
    let h = sha2::Sha256::digest(bridge.as_bytes());
    format!(
        "fd{:02x}{:02x}{:02x}{:02x}{:02x}",
        h[0], h[1], h[2], h[3], h[4]
    )
}

/// An address of the /64 `prefix` (12 hex digits, as `ula_prefix` gives)
/// with the interface part `tail`, written as `ip` writes it: no leading
/// zeros in a group, the longest run of zero groups as `::`. A group such
/// as `05c5` is shown as `5c5`, so text built by pasting the prefix's
/// digits is not found in `ip`'s output for one bridge name in eight.
fn in_prefix(prefix: &str, tail: &str) -> String {
    let addr = format!(
        "{}:{}:{}::{tail}",
        &prefix[0..4],
        &prefix[4..8],
        &prefix[8..12]
    );
    addr.parse::<std::net::Ipv6Addr>()
        .unwrap_or_else(|e| panic!("{addr}: {e}"))
        .to_string()
}

#[test]
fn in_prefix_writes_addresses_as_ip_does() {
    assert_eq!(in_prefix("fdd605c57441", "bad:1"), "fdd6:5c5:7441::bad:1");
    assert_eq!(in_prefix("fd000000ab00", "1"), "fd00:0:ab00::1");
    assert_eq!(in_prefix("fd12abcd0000", "1"), "fd12:abcd::1");
}

fn debian_tree(dir: &Path) -> PathBuf {
    let tar = dir.join("debian.tar");
    let script = repo().join("images/debian/build.sh");
    let o = run(Command::new("bash")
        .arg(&script)
        .arg("--cache")
        .arg(davit_testkit::debian_cache())
        .arg("--tarball-only")
        .arg(&tar));
    assert!(o.status.success(), "{}: {}", script.display(), stderr(&o));
    let tree = dir.join("tree");
    publish_tarball(
        &tar,
        "debian",
        &fixture().key,
        &tree,
        &["--xz-preset".as_ref(), "0".as_ref()],
    );
    let _ = std::fs::remove_file(&tar);
    tree
}

/// (a) The Debian image (systemd-networkd, DHCP=yes) boots on the bridge,
/// gets the address davit leased by DHCP from the bridge's dnsmasq
/// (dnsmasq's DHCPACK for that address and MAC; networkd shows it as a
/// DHCPv4 address), and resolves the wan's name through the bridge's
/// resolver (resolved, fed by DHCP, asks dnsmasq, which forwards to the
/// wan's DNS), and fetches the wan's page over IPv4 and IPv6 (SLAAC from
/// the bridge's adverts), masqueraded both ways: the wan's server logs the
/// stand-in host's addresses, never the container's. (c) `stop` and
/// `destroy` of it, the last container, leave no dnsmasq, no hosts files
/// and no lease.
#[test]
fn debian_gets_its_lease_by_dhcp_and_resolves_the_wan_through_the_bridge() {
    if !require_root("debian_gets_its_lease_by_dhcp_and_resolves_the_wan_through_the_bridge") {
        return;
    }
    let net = Net::new("ndeb");
    let tree = debian_tree(net.env.path());
    let key = fixture().key.public.display().to_string();
    let server = format!("file://{}", tree.display());
    net.ok(&[
        "create",
        "deb",
        "debian",
        "1",
        "amd64",
        "--network",
        "bridge",
        "--storage",
        "dir",
        "--server",
        &server,
        "--keyring",
        &key,
    ]);
    let t = Instant::now();
    net.ok(&["start", "-d", "deb"]);
    let ip = net.ip_of("deb");
    let leases = net.leases();
    let mac = leases["leases"][0]["mac"].as_str().unwrap().to_owned();
    assert_eq!(leases["leases"][0]["addr"], ip.as_str(), "{leases}");
    let log = net.dnsmasq_dir().join("log");
    let ack = format!("DHCPACK({}) {ip} {mac}", net.bridge);
    let acked = wait_for(Duration::from_secs(120), || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains(&ack))
    });
    assert!(
        acked,
        "no {ack:?} in dnsmasq's log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    eprintln!("DHCPACK {:.1}s after start", t.elapsed().as_secs_f64());
    // networkd holds it as its DHCP lease.
    let mut status = String::new();
    let dhcp = wait_for(Duration::from_secs(30), || {
        let o = net.sh("deb", "networkctl status eth0 --no-pager 2>&1");
        status = stdout(&o);
        status.contains(&format!("{ip} (DHCP4 via {})", net.gateway()))
    });
    assert!(dhcp, "networkctl status eth0:\n{status}");
    let mut got = String::new();
    let resolved = wait_for(Duration::from_secs(30), || {
        got = stdout(&net.sh("deb", &format!("getent ahostsv4 {WAN_NAME}")));
        got.contains(&WAN4.to_string())
    });
    assert!(resolved, "getent ahostsv4 {WAN_NAME}: {got:?}");
    eprintln!(
        "resolved {WAN_NAME} {:.1}s after start",
        t.elapsed().as_secs_f64()
    );
    // The world's page over IPv4 and over IPv6 (the address from the
    // bridge's router adverts, NAT66), each masqueraded: the wan sees the
    // stand-in host's address, never the container's.
    for (addr, host_side) in [
        (WAN4.to_string(), HOST4.to_string()),
        (WAN6.to_string(), HOST6.to_string()),
    ] {
        let script = format!(
            "exec 3<>/dev/tcp/{addr}/80 && printf 'GET / HTTP/1.0\\r\\n\\r\\n' >&3 && cat <&3"
        );
        let mut page = String::new();
        let fetched = wait_for(Duration::from_secs(30), || {
            let o = run(&mut net.davit(&["attach", "deb", "--", "bash", "-c", &script]));
            page = stdout(&o) + &stderr(&o);
            page.contains(WAN_PAGE.trim())
        });
        assert!(fetched, "GET http://[{addr}]/ from the container: {page:?}");
        let log = net.s.http_log();
        assert!(
            log.contains(&host_side),
            "the wan did not see {host_side}:\n{log}"
        );
        assert!(
            !log.contains(&ip) && !log.lines().any(|l| l.starts_with("fd")),
            "the wan saw the container's own address:\n{log}"
        );
    }
    eprintln!(
        "fetched the wan's page over IPv4 and IPv6 {:.1}s after start",
        t.elapsed().as_secs_f64()
    );
    let pid = net.dnsmasq_pid();
    assert!(is_dnsmasq(pid));
    net.ok(&["stop", "-t", "30", "deb"]);
    net.ok(&["destroy", "deb"]);
    net.assert_no_dnsmasq(pid);
}

/// (b) Two busybox containers resolve each other by name (`b.davit`, and
/// the bare name through `search davit` in the resolv.conf davit wrote);
/// (e) each gets a SLAAC address in the bridge's ULA /64 (derived from the
/// bridge name) from the adverts of the same dnsmasq; (c) the first stop
/// keeps dnsmasq (the other's name stays, the stopped one's goes), the
/// last one's stop leaves no dnsmasq, no hosts files and no lease.
#[test]
fn containers_resolve_each_other_get_slaac_and_the_last_stop_ends_dnsmasq() {
    if !require_root("containers_resolve_each_other_get_slaac_and_the_last_stop_ends_dnsmasq") {
        return;
    }
    let net = Net::new("ndns");
    net.busybox("a");
    net.busybox("b");
    let (ip_a, ip_b) = (net.ip_of("a"), net.ip_of("b"));
    let o = net.sh("a", "cat /etc/resolv.conf");
    let resolv = stdout(&o) + &stderr(&o);
    assert!(
        resolv.contains(&format!("nameserver {}\n", net.gateway()))
            && resolv.contains("search davit\n"),
        "{resolv}"
    );
    // dnsmasq rereads its hosts file on the SIGHUP of b's start, a few
    // milliseconds later: the names are there within a second.
    let mut got = String::new();
    let resolved = wait_for(Duration::from_secs(10), || {
        let o = net.sh("a", "nslookup b.davit");
        got = stdout(&o) + &stderr(&o);
        o.status.success() && stdout(&o).contains(&ip_b)
    });
    assert!(resolved, "nslookup b.davit: {got}");
    let resolved = wait_for(Duration::from_secs(10), || {
        got = stdout(&net.sh("b", "nslookup a.davit"));
        got.contains(&ip_a)
    });
    assert!(resolved, "nslookup a.davit: {got}");
    let o = net.sh("a", "ping -c1 -W5 b");
    assert!(
        o.status.success() && stdout(&o).contains(&ip_b),
        "ping b: {}{}",
        stdout(&o),
        stderr(&o)
    );
    // An unknown name of the domain is not forwarded; the wan's is.
    let o = net.sh("a", "nslookup nosuch.davit");
    assert!(!stdout(&o).contains("Address: 1"), "{}", stdout(&o));
    let o = net.sh("a", &format!("nslookup {WAN_NAME}"));
    assert!(stdout(&o).contains(&WAN4.to_string()), "{}", stdout(&o));

    // IPv6: the bridge has ::1 of its ULA /64, the containers a SLAAC
    // address in it (/proc/net/if_inet6: address hex, ..., scope 00 global).
    let prefix = ula_prefix(&net.bridge);
    let br6 = stdout(&ok(net.s.in_host("ip").args([
        "-6",
        "-o",
        "addr",
        "show",
        "dev",
        &net.bridge,
    ])));
    let want_br = format!("{}/64", in_prefix(&prefix, "1"));
    assert!(br6.contains(&want_br), "{want_br} not on the bridge: {br6}");
    for n in ["a", "b"] {
        let mut inet6 = String::new();
        let slaac = wait_for(Duration::from_secs(20), || {
            inet6 = stdout(&net.sh(n, "cat /proc/net/if_inet6"));
            inet6
                .lines()
                .any(|l| l.starts_with(&format!("{prefix}0000")) && l.contains(" eth0"))
        });
        assert!(slaac, "{n}: no SLAAC address in {prefix}::/64:\n{inet6}");
    }

    let pid = net.dnsmasq_pid();
    net.ok(&["stop", "-k", "b"]);
    assert!(is_dnsmasq(pid), "dnsmasq stopped while a still runs");
    let hosts = read_to_string(&net.dnsmasq_dir().join("hosts"));
    assert!(
        hosts.contains(&format!("{ip_a} a.davit a")) && !hosts.contains("b.davit"),
        "{hosts}"
    );
    let gone = wait_for(Duration::from_secs(10), || {
        got = stdout(&net.sh("a", "nslookup b.davit"));
        !got.contains(&ip_b)
    });
    assert!(gone, "b still resolves: {got}");
    net.ok(&["stop", "-k", "a"]);
    net.assert_no_dnsmasq(pid);
    for n in ["a", "b"] {
        net.ok(&["destroy", n]);
    }
    net.assert_no_dnsmasq(pid);
}

/// The signal mask of process `pid` (`SigBlk` of /proc/PID/status).
fn blocked_signals(pid: i32) -> String {
    read_to_string(Path::new(&format!("/proc/{pid}/status")))
        .lines()
        .find_map(|l| l.strip_prefix("SigBlk:"))
        .map(|m| m.trim().to_owned())
        .unwrap_or_default()
}

/// Bug (issue 19's bridge benchmark): a foreground `start` blocks SIGINT,
/// SIGQUIT, SIGTERM and SIGHUP to forward them, and std's `Command` keeps
/// a mask across exec, so its monitor and the dnsmasq it started had them
/// blocked. dnsmasq then ignored the SIGHUP that makes it reread its hosts
/// file (a later container's name never resolved) and the SIGTERM of the
/// last stop (every such stop waited 2 s, then killed it). Now: nothing is
/// blocked in the monitor, dnsmasq or an attached command; a's dnsmasq
/// learns b's name; the last stop ends it.
#[test]
fn dnsmasq_of_a_foreground_start_reloads_on_sighup_and_stops_on_sigterm() {
    if !require_root("dnsmasq_of_a_foreground_start_reloads_on_sighup_and_stops_on_sigterm") {
        return;
    }
    let net = Net::new("nfg");
    net.create_busybox("a");
    // a in the foreground, off a terminal, as `davit start a -- CMD` from a
    // script: the first container on the bridge, so its monitor starts
    // dnsmasq.
    let mut fg = net
        .davit(&[
            "start",
            "a",
            "--",
            "/bin/sh",
            "-c",
            "echo ready; exec sleep 120",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(fg.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "ready");
    let pid = net.dnsmasq_pid();
    let state: serde_json::Value =
        serde_json::from_str(&read_to_string(&net.env.path().join("run/a/state.json"))).unwrap();
    let monitor = state["monitor"]["pid"].as_i64().unwrap() as i32;
    let none = "0000000000000000";
    assert_eq!(blocked_signals(monitor), none, "a's monitor");
    assert_eq!(blocked_signals(pid), none, "dnsmasq");
    let o = net.sh("a", "grep SigBlk /proc/self/status");
    assert!(
        stdout(&o).contains(none),
        "attach: {}{}",
        stdout(&o),
        stderr(&o)
    );
    // b's start adds its name and sends dnsmasq SIGHUP: a resolves it.
    net.busybox("b");
    let ip_b = net.ip_of("b");
    let mut got = String::new();
    let resolved = wait_for(Duration::from_secs(10), || {
        let o = net.sh("a", "nslookup b.davit");
        got = stdout(&o) + &stderr(&o);
        o.status.success() && stdout(&o).contains(&ip_b)
    });
    assert!(resolved, "nslookup b.davit in a: {got}");
    net.ok(&["stop", "-k", "b"]);
    assert!(is_dnsmasq(pid), "dnsmasq stopped while a still runs");
    // The last one: a's CMD ends on the forwarded SIGTERM, and its
    // monitor's SIGTERM ends dnsmasq (a blocked one was killed after 2 s;
    // the pid is gone either way, so the mask above is what tells).
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(fg.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(fg.wait().unwrap().code(), Some(143));
    net.assert_no_dnsmasq(pid);
    for n in ["a", "b"] {
        net.ok(&["destroy", n]);
    }
}

/// (d) A monitor killed with SIGKILL leaves its container's lease and the
/// bridge's dnsmasq behind; `davit stop` (crash recovery) reclaims both.
#[test]
fn a_killed_monitors_lease_and_dnsmasq_are_reclaimed_by_stop() {
    if !require_root("a_killed_monitors_lease_and_dnsmasq_are_reclaimed_by_stop") {
        return;
    }
    let net = Net::new("nkill");
    net.busybox("k");
    let pid = net.dnsmasq_pid();
    assert!(is_dnsmasq(pid));
    let state: serde_json::Value =
        serde_json::from_str(&read_to_string(&net.env.path().join("run/k/state.json"))).unwrap();
    let monitor = state["monitor"]["pid"].as_i64().unwrap() as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(monitor),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert!(wait_for(Duration::from_secs(5), || !Path::new(&format!(
        "/proc/{monitor}/stat"
    ))
    .exists()
        || std::fs::read_to_string(format!("/proc/{monitor}/stat"))
            .is_ok_and(|s| s.contains(") Z"))));
    // The monitor is gone; its dnsmasq and the lease are still there.
    assert!(is_dnsmasq(pid), "dnsmasq went with the monitor");
    assert_eq!(net.leases()["leases"].as_array().map(Vec::len), Some(1));
    net.ok(&["stop", "-k", "k"]);
    net.assert_no_dnsmasq(pid);
    net.ok(&["destroy", "k"]);
}

/// Issue 16, safe defaults: with IPv6 on the bridge, a container sends
/// only from its own addresses. b adds a made-up address of the bridge's
/// /64 and pings the bridge from it: nothing comes back, because its port
/// drops the frames; from its own SLAAC address the same ping is answered,
/// and a keeps its IPv6.
#[test]
fn a_container_cannot_send_from_another_containers_ipv6_address() {
    if !require_root("a_container_cannot_send_from_another_containers_ipv6_address") {
        return;
    }
    let net = Net::new("nsp6");
    net.busybox("a");
    net.busybox("b");
    let prefix = ula_prefix(&net.bridge);
    let gw6 = in_prefix(&prefix, "1");
    let global = |n: &str| {
        let mut addr = String::new();
        let ok = wait_for(Duration::from_secs(20), || {
            let o = net.sh(n, "ip -6 -o addr show dev eth0 scope global");
            addr = stdout(&o)
                .split_whitespace()
                .skip_while(|w| *w != "inet6")
                .nth(1)
                .and_then(|a| a.split('/').next())
                .unwrap_or_default()
                .to_owned();
            !addr.is_empty()
        });
        assert!(ok, "{n} got no SLAAC address");
        addr
    };
    let (a6, b6) = (global("a"), global("b"));
    assert_ne!(a6, b6);
    assert!(!a6.is_empty());
    let own = wait_for(Duration::from_secs(10), || {
        net.sh("b", &format!("ping -6 -c1 -W2 -I {b6} {gw6}"))
            .status
            .success()
    });
    assert!(own, "b cannot reach {gw6} from its own {b6}");
    // A made-up address in the bridge's /64 (a's own would fail b's
    // duplicate address detection, and busybox's ip has no nodad): once
    // the kernel holds it as usable (no longer tentative), a ping from it
    // goes out, and b's port drops it.
    let fake = in_prefix(&prefix, "bad:1");
    let o = net.sh("b", &format!("ip -6 addr add {fake}/64 dev eth0"));
    assert!(o.status.success(), "{}", stderr(&o));
    let mut shown = String::new();
    let usable = wait_for(Duration::from_secs(10), || {
        shown = stdout(&net.sh("b", "ip -6 addr show dev eth0"));
        shown.contains(&fake) && !shown.contains("tentative") && !shown.contains("dadfailed")
    });
    assert!(usable, "{fake} never became usable in b:\n{shown}");
    for _ in 0..3 {
        let o = net.sh("b", &format!("ping -6 -c1 -W2 -I {fake} {gw6}"));
        assert!(
            !o.status.success() && stdout(&o).contains("1 packets transmitted"),
            "b sent from {fake} and was answered, or could not send: {}{}",
            stdout(&o),
            stderr(&o)
        );
    }
    // a, the address's owner, is still answered.
    let o = net.sh("a", &format!("ping -6 -c1 -W2 {gw6}"));
    assert!(o.status.success(), "a lost its IPv6: {}", stdout(&o));
    net.ok(&["stop", "-k", "a"]);
    net.ok(&["stop", "-k", "b"]);
}
