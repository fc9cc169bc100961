//! A stand-in for the host and the internet, for network tests that must
//! change nothing in the real host's namespace (issue 16).
//!
//! Two network namespaces of the test's own: `host` (davit runs in it, as
//! if it were the machine: its bridge, its nftables table, its dnsmasq)
//! and `wan` (the world: documentation addresses 198.51.100.1 and
//! 2001:db8::1, an HTTP server that logs who asked, and a DNS server that
//! answers `wan.test`). A veth joins them; `host` routes everything to
//! `wan`. Dropping the [`StandIn`] kills every process left in either
//! namespace (only the test's own can be there) and deletes both, and with
//! them every link, route, address and nft table made inside. No packet can
//! leave: neither namespace has a link to anything else.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

static N: AtomicUsize = AtomicUsize::new(0);

/// The world's IPv4 address (TEST-NET-2, RFC 5737).
pub const WAN4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
/// The stand-in host's IPv4 address on the wan link.
pub const HOST4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
/// The world's IPv6 address (documentation prefix, RFC 3849).
pub const WAN6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
/// The stand-in host's IPv6 address on the wan link.
pub const HOST6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
/// The name the world's DNS server answers with [`WAN4`] and [`WAN6`].
pub const WAN_NAME: &str = "www.wan.test";
/// What the world's HTTP server answers for `/`.
pub const WAN_PAGE: &str = "hello from the wan\n";

/// Two namespaces, joined, with the world's servers running.
pub struct StandIn {
    /// The stand-in host's namespace (`ip netns` name).
    pub host: String,
    /// The world's namespace.
    pub wan: String,
    dir: tempfile::TempDir,
    servers: Vec<Child>,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn in_netns(ns: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net=/run/netns/{ns}"))
        .arg("--")
        .arg(program);
    c
}

impl StandIn {
    /// Makes the namespaces and starts the world's HTTP (port 80, both
    /// families) and DNS (port 53 on [`WAN4`]) servers. Needs root, `ip`,
    /// `python3` and `dnsmasq`.
    pub fn start() -> StandIn {
        let n = N.fetch_add(1, Ordering::SeqCst);
        let id = format!("{}-{n}", std::process::id());
        let (host, wan) = (format!("dvhost-{id}"), format!("dvwan-{id}"));
        let dir = tempfile::Builder::new()
            .prefix("davit-standin-")
            .tempdir()
            .expect("tempdir");
        let s = StandIn {
            host,
            wan,
            dir,
            servers: Vec::new(),
        };
        s.wire();
        let mut s = s;
        s.start_servers();
        s
    }

    fn wire(&self) {
        let (h, w) = (&self.host, &self.wan);
        ip(&["netns", "add", h]);
        ip(&["netns", "add", w]);
        // The pair is made inside `host` and one end moved to `wan`, so it
        // never exists in the real host's namespace.
        ip(&[
            "-n", h, "link", "add", "wan0", "type", "veth", "peer", "name", "up0",
        ]);
        ip(&["-n", h, "link", "set", "up0", "netns", w]);
        for (ns, dev, a4, a6) in [(h, "wan0", HOST4, HOST6), (w, "up0", WAN4, WAN6)] {
            ip(&["-n", ns, "link", "set", "lo", "up"]);
            ip(&["-n", ns, "addr", "add", &format!("{a4}/24"), "dev", dev]);
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{a6}/64"),
                "dev",
                dev,
                "nodad",
            ]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
        }
        ip(&["-n", h, "route", "add", "default", "via", &WAN4.to_string()]);
        ip(&[
            "-n",
            h,
            "-6",
            "route",
            "add",
            "default",
            "via",
            &WAN6.to_string(),
        ]);
    }

    fn start_servers(&mut self) {
        let www = self.dir.path().join("www");
        std::fs::create_dir_all(&www).unwrap();
        std::fs::write(www.join("index.html"), WAN_PAGE).unwrap();
        let log = std::fs::File::create(self.http_log_path()).unwrap();
        // http.server binds `::` dual-stack and logs each client's address
        // (IPv4 ones as ::ffff:a.b.c.d) on stderr.
        let http = self
            .in_wan("python3")
            .args([
                "-u",
                "-m",
                "http.server",
                "80",
                "--bind",
                "::",
                "--directory",
            ])
            .arg(&www)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start python3 http.server in the wan namespace");
        self.servers.push(http);
        let dns = self
            .in_wan("dnsmasq")
            .args([
                "--keep-in-foreground",
                "--no-resolv",
                "--no-hosts",
                "--conf-file=/dev/null",
                "--pid-file=",
                "--bind-interfaces",
                "--listen-address",
                &WAN4.to_string(),
                "--except-interface=lo",
                &format!("--address=/wan.test/{WAN4}"),
                &format!("--address=/wan.test/{WAN6}"),
                "--log-queries",
                "--log-facility=-",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start dnsmasq in the wan namespace");
        self.servers.push(dns);
        // Both answer before the test goes on.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let ok = self
                .in_host("python3")
                .args([
                    "-c",
                    &format!(
                        "import socket,urllib.request;urllib.request.urlopen('http://{WAN4}/',timeout=1).read();\
                         s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.settimeout(1);\
                         s.sendto(bytes.fromhex('123401000001000000000000037777770377616e047465737400000100 01'.replace(' ','')),('{WAN4}',53));s.recv(512)"
                    ),
                ])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the wan's servers did not come up"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        // The readiness probe is not a client the tests look for.
        let _ = std::fs::write(self.http_log_path(), "");
    }

    fn http_log_path(&self) -> PathBuf {
        self.dir.path().join("http.log")
    }

    /// What the world's HTTP server logged: one line per request, with
    /// the client's address first.
    pub fn http_log(&self) -> String {
        std::fs::read_to_string(self.http_log_path()).unwrap_or_default()
    }

    /// A scratch directory that goes with the stand-in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `program` to run in the stand-in host's namespace. Only the network
    /// namespace changes (`nsenter --net`): `ip netns exec` would also
    /// remount `/sys` in a mount namespace of its own, hiding the cgroup
    /// hierarchies under `/sys/fs/cgroup` from davit.
    pub fn in_host(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        in_netns(&self.host, program)
    }

    /// `program` to run in the world's namespace.
    pub fn in_wan(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        in_netns(&self.wan, program)
    }

    /// The pids of the processes in namespace `ns` (`ip netns pids`).
    pub fn pids(ns: &str) -> Vec<i32> {
        let out = Command::new("ip")
            .args(["netns", "pids", ns])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        out.split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        for c in &mut self.servers {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Whatever the test left running in its namespaces (a monitor, a
        // dnsmasq davit started): only the test's own processes are there.
        for ns in [&self.host, &self.wan] {
            for pid in StandIn::pids(ns) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while [&self.host, &self.wan]
            .iter()
            .any(|ns| !StandIn::pids(ns).is_empty())
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        for ns in [&self.host, &self.wan] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stand-in works and leaves nothing: the host reaches the world's
    /// page and name, the real host's namespace has none of its links, and
    /// after the drop neither namespace exists.
    #[test]
    fn the_stand_in_reaches_the_wan_and_goes_without_a_trace() {
        if !crate::require_root("the_stand_in_reaches_the_wan_and_goes_without_a_trace") {
            return;
        }
        let s = StandIn::start();
        let page = s
            .in_host("python3")
            .args([
                "-c",
                &format!("import urllib.request;print(urllib.request.urlopen('http://[{WAN6}]/',timeout=5).read().decode(),end='')"),
            ])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&page.stdout), WAN_PAGE);
        assert!(
            s.http_log().contains(&HOST6.to_string()),
            "{}",
            s.http_log()
        );
        let links = Command::new("ip").args(["-o", "link"]).output().unwrap();
        let links = String::from_utf8_lossy(&links.stdout);
        assert!(
            !links.contains("wan0") && !links.contains("up0@"),
            "{links}"
        );
        let (h, w) = (s.host.clone(), s.wan.clone());
        drop(s);
        let list = Command::new("ip").args(["netns", "list"]).output().unwrap();
        let list = String::from_utf8_lossy(&list.stdout);
        assert!(!list.contains(&h) && !list.contains(&w), "{list}");
    }
}
