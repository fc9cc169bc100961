//! Issue 16, NAT part: egress masquerade, published ports and their
//! cleanup, end to end through the CLI, as root, with every davit command
//! run inside a stand-in host namespace (davit_testkit::standin) wired to
//! a stand-in world (198.51.100.1, 2001:db8::1). Nothing here touches the
//! real host's namespace: the bridge, its nft table `inet davit` and
//! `ip_forward` all live in the stand-in, which goes on drop.
//!
//! davit runs through `nsenter --net=/run/netns/HOST`, not `ip netns
//! exec`: the latter remounts `/sys` in a mount namespace of its own and
//! so hides `/sys/fs/cgroup`, where the monitor puts the container.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use davit_testkit::standin::{StandIn, HOST4, WAN4, WAN_PAGE};

use crate::common::*;
use crate::run::Env;

const BRIDGE: &str = "dvnat0";
const SUBNET: &str = "10.77.0";
const PAGE: &str = "hello from the container\n";

/// A stand-in host with davit's directories and a host config of its own.
struct Host16 {
    names: std::cell::RefCell<Vec<String>>,
    config: PathBuf,
    env: Env,
    s: StandIn,
}

impl Host16 {
    fn new(tag: &str, extra: &str) -> Host16 {
        let s = StandIn::start();
        let env = Env::new(tag);
        let config = env.path().join("net.toml");
        std::fs::write(
            &config,
            format!(
                "[network]\nbridge = \"{BRIDGE}\"\nsubnet = \"{SUBNET}.0/24\"\nlease_dir = \"{}\"\nnameservers = [\"{WAN4}\"]\n{extra}",
                env.path().join("leases").display()
            ),
        )
        .unwrap();
        Host16 {
            names: Default::default(),
            config,
            env,
            s,
        }
    }

    /// `program` in the stand-in host's network namespace only.
    fn in_host(&self, program: &str) -> Command {
        let mut c = self.s.in_host(program);
        c.stdin(Stdio::null());
        c
    }

    /// davit in the stand-in host, with this test's directories.
    fn d(&self, args: &[&str]) -> Command {
        self.env.davit_in(&self.s, &self.config, args)
    }

    fn create(&self, name: &str, extra: &[&str]) {
        let f = fixture();
        let server = format!("file://{}", f.tree_a.display());
        let mut c = self.d(&[
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
        ]);
        c.arg(&f.key.public).args(extra);
        ok(&mut c);
        self.names.borrow_mut().push(name.to_owned());
    }

    fn attach(&self, name: &str, sh: &str) -> Output {
        run(&mut self.d(&["attach", name, "--", "sh", "-c", sh]))
    }

    /// The stand-in host's whole ruleset.
    fn ruleset(&self) -> String {
        stdout(&ok(self.in_host("nft").args(["list", "ruleset"])))
    }

    /// A busybox httpd on port 80 in container `name`, serving PAGE.
    fn serve(&self, name: &str) {
        let o = self.attach(
            name,
            &format!(
                "mkdir -p /www && echo '{}' > /www/index.html && httpd -p 80 -h /www",
                PAGE.trim_end()
            ),
        );
        assert!(o.status.success(), "httpd: {}", stderr(&o));
        // Port 80 is 0050 in /proc/net/tcp, state 0A (listen).
        let up = wait_for(Duration::from_secs(10), || {
            self.attach(
                name,
                "grep -qsE ':0050 0+:0000 0A' /proc/net/tcp /proc/net/tcp6",
            )
            .status
            .success()
        });
        assert!(up, "httpd in {name} never listened");
    }
}

impl Drop for Host16 {
    /// Stop and destroy from inside the stand-in, so that no teardown of
    /// these containers ever runs in the real host's namespace (Env's own
    /// drop then finds nothing).
    fn drop(&mut self) {
        for n in self.names.borrow().iter() {
            let _ = self.d(&["stop", "-k", n]).output();
            let _ = self.d(&["destroy", "-f", n]).output();
        }
    }
}

/// `python3` fetching `url` (5 s timeout): Some(body) or None.
fn fetch(mut c: Command, url: &str) -> Option<String> {
    let o = c
        .args([
            "-c",
            &format!("import urllib.request,sys;sys.stdout.write(urllib.request.urlopen('{url}',timeout=5).read().decode())"),
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    o.status.success().then(|| stdout(&o))
}

fn fetch_retrying(mk: impl Fn() -> Command, url: &str) -> Option<String> {
    let mut got = None;
    wait_for(Duration::from_secs(10), || {
        got = fetch(mk(), url);
        got.is_some()
    });
    got
}

/// (a) A container on the bridge reaches the world, which sees the
/// stand-in host's address (masqueraded), never the container's; the
/// bridge's chains and ip_forward are in place. With `nat = false` the
/// same fetch fails and no table is made.
#[test]
fn egress_is_masqueraded_and_nat_false_turns_it_off() {
    if !require_root("egress_is_masqueraded_and_nat_false_turns_it_off") {
        return;
    }
    let h = Host16::new("nat-a", "");
    h.create("out1", &[]);
    ok(&mut h.d(&["start", "-d", "out1"]));
    let o = h.attach("out1", &format!("timeout 5 wget -q -O - http://{WAN4}/"));
    assert_eq!(
        stdout(&o),
        WAN_PAGE,
        "{}\n{}\n{}\n{}",
        stderr(&o),
        h.ruleset(),
        stdout(&h.attach("out1", "ip addr; ip route")),
        stdout(&run(h.in_host("ip").args(["addr"])))
    );
    let log = h.s.http_log();
    assert!(log.contains(&HOST4.to_string()), "{log}");
    assert!(
        !log.contains(&format!("{SUBNET}.")),
        "not masqueraded: {log}"
    );
    let rules = h.ruleset();
    assert!(
        rules.contains("table inet davit")
            && rules.contains(&format!("chain br-{BRIDGE}-post"))
            && rules.contains(&format!(
                "ip saddr {SUBNET}.0/24 ip daddr != {SUBNET}.0/24 masquerade"
            )),
        "{rules}"
    );
    let fwd = stdout(&ok(h.in_host("cat").arg("/proc/sys/net/ipv4/ip_forward")));
    assert_eq!(fwd.trim(), "1");
    let check = stdout(&ok(&mut h.d(&["check"])));
    assert!(
        check
            .lines()
            .any(|l| l.contains("network: ip_forward") && l.contains(" OK ")),
        "{check}"
    );
    assert!(
        check
            .lines()
            .any(|l| l.contains("nft table inet davit for dvnat0") && l.contains(" OK ")),
        "{check}"
    );
    ok(&mut h.d(&["stop", "-k", "out1"]));

    let off = Host16::new("nat-off", "nat = false\n");
    off.create("out2", &[]);
    ok(&mut off.d(&["start", "-d", "out2"]));
    let o = off.attach("out2", &format!("timeout 3 wget -q -O - http://{WAN4}/"));
    assert!(
        !o.status.success(),
        "fetched with nat = false: {}",
        stdout(&o)
    );
    assert!(off.s.http_log().is_empty(), "{}", off.s.http_log());
    assert!(!off.ruleset().contains("inet davit"), "{}", off.ruleset());
    let fwd = stdout(&ok(off.in_host("cat").arg("/proc/sys/net/ipv4/ip_forward")));
    assert_eq!(fwd.trim(), "0");
}

/// (b), (c) `--publish 8080:80`: a client in the world and one on the
/// stand-in host (to its own address) get the container's page; the
/// host's 127.0.0.1:8080 is not forwarded (no route_localnet). After
/// `stop` the port is closed and no rule names the container; after the
/// last container's `stop` and `destroy` there is no `inet davit` table.
#[test]
fn published_port_reaches_the_container_and_goes_at_stop() {
    if !require_root("published_port_reaches_the_container_and_goes_at_stop") {
        return;
    }
    let h = Host16::new("nat-b", "");
    h.create("web", &["--publish", "8080:80"]);
    ok(&mut h.d(&["start", "-d", "web"]));
    h.serve("web");
    let url = format!("http://{HOST4}:8080/");
    assert_eq!(
        fetch_retrying(|| h.s.in_wan("python3"), &url).as_deref(),
        Some(PAGE),
        "from the wan"
    );
    assert_eq!(
        fetch_retrying(|| h.in_host("python3"), &url).as_deref(),
        Some(PAGE),
        "from the host"
    );
    assert_eq!(
        fetch(h.in_host("python3"), "http://127.0.0.1:8080/"),
        None,
        "loopback must not be forwarded"
    );
    let route_localnet = stdout(&ok(h
        .in_host("cat")
        .arg(format!("/proc/sys/net/ipv4/conf/{BRIDGE}/route_localnet"))));
    assert_eq!(route_localnet.trim(), "0");
    let info = json(&ok(&mut h.d(&["info", "web", "--json"])));
    assert_eq!(
        info["publish"],
        serde_json::json!(["8080:80/tcp"]),
        "{info}"
    );
    let rules = h.ruleset();
    assert!(
        rules.contains("chain pub-web-pre") && rules.contains("tcp dport 8080 dnat ip to 10.77.0."),
        "{rules}"
    );
    // `davit network`: the bridge with NAT, DHCP/DNS and IPv6 up, the
    // container's lease and its forward.
    let bridge = |v: &serde_json::Value| {
        v.as_array()
            .and_then(|a| a.iter().find(|b| b["name"] == BRIDGE).cloned())
            .unwrap_or_else(|| panic!("no {BRIDGE} in {v}"))
    };
    let b = bridge(&json(&ok(&mut h.d(&["network", "--json"]))));
    assert_eq!(
        (&b["nat"], &b["dhcp_dns"], &b["ipv6"], &b["up"]),
        (&true.into(), &true.into(), &true.into(), &true.into()),
        "{b}"
    );
    assert_eq!(b["leases"][0]["name"], "web", "{b}");
    assert_eq!(
        b["leases"][0]["publish"],
        serde_json::json!(["8080:80/tcp"]),
        "{b}"
    );
    let table = stdout(&ok(&mut h.d(&["network"])));
    assert!(
        table.contains(BRIDGE) && table.contains("publish 8080:80/tcp"),
        "{table}"
    );
    ok(&mut h.d(&["stop", "web"]));
    let b = bridge(&json(&ok(&mut h.d(&["network", "--json"]))));
    assert_eq!(
        (
            &b["nat"],
            &b["dhcp_dns"],
            b["leases"].as_array().map(Vec::len)
        ),
        (&false.into(), &false.into(), Some(0)),
        "after stop: {b}"
    );
    assert_eq!(fetch(h.s.in_wan("python3"), &url), None, "open after stop");
    let rules = h.ruleset();
    assert!(
        !rules.contains("web"),
        "a rule names the container: {rules}"
    );
    ok(&mut h.d(&["destroy", "web"]));
    h.names.borrow_mut().clear();
    let rules = h.ruleset();
    assert!(!rules.contains("inet davit"), "table left: {rules}");
}

/// (d) A killed monitor's forwards and NAT are reclaimed by `stop`.
#[test]
fn a_killed_monitors_rules_go_at_stop() {
    if !require_root("a_killed_monitors_rules_go_at_stop") {
        return;
    }
    let h = Host16::new("nat-d", "");
    h.create("k1", &["--publish", "8081:80"]);
    ok(&mut h.d(&["start", "-d", "k1"]));
    assert!(h.ruleset().contains("pub-k1-pre"));
    let st: serde_json::Value =
        serde_json::from_str(&read_to_string(&h.env.path().join("run/k1/state.json"))).unwrap();
    let monitor = st["monitor"]["pid"].as_i64().expect("a monitor pid") as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(monitor),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert!(wait_for(Duration::from_secs(10), || !std::path::Path::new(
        &format!("/proc/{monitor}")
    )
    .exists()
        || read_to_string(&PathBuf::from(format!(
            "/proc/{monitor}/stat"
        )))
        .contains(") Z ")));
    let o = run(&mut h.d(&["stop", "k1"]));
    assert!(o.status.success(), "stop: {}", stderr(&o));
    let rules = h.ruleset();
    assert!(
        !rules.contains("inet davit"),
        "left after a killed monitor: {rules}"
    );
}

/// (e) A host port another running container publishes is refused at
/// start, naming that container; the first keeps its forward.
#[test]
fn a_published_port_in_use_is_refused_naming_the_holder() {
    if !require_root("a_published_port_in_use_is_refused_naming_the_holder") {
        return;
    }
    let h = Host16::new("nat-e", "");
    h.create("first", &["--publish", "8082:80"]);
    h.create("second", &["--publish", "8082:81"]);
    ok(&mut h.d(&["start", "-d", "first"]));
    let o = run(&mut h.d(&["start", "-d", "second"]));
    assert!(!o.status.success(), "second start worked");
    let e = stderr(&o);
    assert!(e.contains("8082") && e.contains("first"), "{e}");
    let rules = h.ruleset();
    assert!(
        rules.contains("pub-first-pre") && !rules.contains("pub-second"),
        "{rules}"
    );
}

/// Security: a container cannot reach a service the stand-in host keeps on
/// its loopback (127.0.0.1:9000) through the gateway or the host's
/// address, while the host itself can; and a loopback address cannot be
/// published (that would need route_localnet on the bridge).
#[test]
fn a_container_cannot_reach_the_hosts_loopback() {
    if !require_root("a_container_cannot_reach_the_hosts_loopback") {
        return;
    }
    let h = Host16::new("nat-lo", "");
    let www = h.env.path().join("lo-www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("index.html"), "loopback only\n").unwrap();
    let mut srv = h
        .in_host("python3")
        .args([
            "-m",
            "http.server",
            "9000",
            "--bind",
            "127.0.0.1",
            "--directory",
        ])
        .arg(&www)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    struct Kill<'a>(&'a mut std::process::Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _k = Kill(&mut srv);
    assert_eq!(
        fetch_retrying(|| h.in_host("python3"), "http://127.0.0.1:9000/").as_deref(),
        Some("loopback only\n"),
        "the host's own client"
    );
    h.create("lo1", &[]);
    ok(&mut h.d(&["start", "-d", "lo1"]));
    for to in [format!("{SUBNET}.1"), HOST4.to_string()] {
        let o = h.attach("lo1", &format!("timeout 3 wget -q -O - http://{to}:9000/"));
        assert!(
            matches!(o.status.code(), Some(1 | 143)) && !stdout(&o).contains("loopback only"),
            "reached the host's loopback service via {to}: {}",
            stdout(&o)
        );
    }
    h.create("lo2", &["--publish", "127.0.0.1:8083:80"]);
    let o = run(&mut h.d(&["start", "-d", "lo2"]));
    assert!(!o.status.success(), "published a loopback address");
    assert!(stderr(&o).contains("route_localnet"), "{}", stderr(&o));
    assert!(!h.ruleset().contains("pub-lo2"), "{}", h.ruleset());
}
