//! `network = "user"`: rootless user-mode networking through `slirp4netns`
//! or `pasta`, the way podman does it. No setuid helper, no bridge: the
//! tool joins the container's user and network namespaces (handed over as
//! descriptors, `/proc/self/fd/N`, because init is non-dumpable until it
//! execs and a plain user could not open its `/proc/PID/ns/*` by pid),
//! makes a tap device there and translates its traffic to host sockets.
//!
//! slirp4netns is preferred by `auto`: it gives a fixed private subnet
//! (`10.0.2.0/24`, guest `.100`, gateway `.2`, DNS `.3`) independent of the
//! host's addresses, has a readiness descriptor, and host loopback access is
//! a single switch (off by default). pasta copies the host's addresses and
//! routes into the namespace and daemonises; it is used when slirp4netns is
//! missing.
#![forbid(unsafe_code)]

use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::config::{NetworkMode, Proto, Publish};
use crate::error::{Error, Result};
use crate::net::attachment::Attachment;
use crate::net::host::{HostNet, UserTool};
use crate::state::ProcessRef;
use crate::sys;

const DIRS: [&str; 4] = ["/usr/bin", "/usr/sbin", "/bin", "/usr/local/bin"];

/// The user-mode tool to use: `(name, path)`, or `None` when neither is
/// installed.
pub fn find_tool(pref: UserTool) -> Option<(&'static str, PathBuf)> {
    let order: &[&'static str] = match pref {
        UserTool::Auto => &["slirp4netns", "pasta"],
        UserTool::Slirp4netns => &["slirp4netns"],
        UserTool::Pasta => &["pasta"],
    };
    for t in order {
        for d in DIRS {
            let p = PathBuf::from(d).join(t);
            if p.is_file() {
                return Some((t, p));
            }
        }
    }
    None
}

/// Start the user-mode tool for init's namespaces and wait until the
/// container's interface is configured.
///
/// # Errors
/// [`Error::NetHelper`] when the tool fails or is not ready within 10 s,
/// [`Error::Unsupported`] when none is installed.
pub fn start(
    host: &HostNet,
    publish: &[Publish],
    init: ProcessRef,
    netns: BorrowedFd<'_>,
) -> Result<Attachment> {
    let (tool, path) = find_tool(host.user_tool).ok_or_else(|| Error::Unsupported {
        what: "user-mode networking: neither slirp4netns nor pasta (passt) is installed".into(),
    })?;
    if !tun_usable() {
        return Err(Error::Unsupported {
            what: format!(
                "user-mode networking: {TUN} is not readable and writable for uid {} (udev normally makes it 0666)",
                nix::unistd::geteuid()
            ),
        });
    }
    let dup = |fd: BorrowedFd<'_>| {
        sys::dup_at_least(fd, 10).map_err(|e| Error::sys("fcntl(F_DUPFD_CLOEXEC, 10)", e))
    };
    let userns = sys::ns_get_userns(netns).map_err(|e| Error::sys("ioctl(NS_GET_USERNS)", e))?;
    let userns = dup(userns.as_fd())?;
    let netns = dup(netns)?;
    if tool == "slirp4netns" {
        if let Some(p) = publish
            .iter()
            .find(|p| p.host_ip.is_some_and(|a| a.is_ipv6()))
        {
            return Err(Error::Unsupported {
                what: format!(
                    "--publish {p}: slirp4netns forwards from IPv4 host addresses only; give an IPv4 address, or set user_tool = \"pasta\" in /etc/davit/config.toml"
                ),
            });
        }
    }
    let proc = match tool {
        "slirp4netns" => start_slirp(host, &path, publish, netns, userns)?,
        _ => start_pasta(host, &path, publish, netns, userns)?,
    };
    let (addr, gw) = match tool {
        "slirp4netns" => (
            Some(std::net::Ipv4Addr::new(10, 0, 2, 100)),
            Some(std::net::Ipv4Addr::new(10, 0, 2, 2)),
        ),
        _ => (None, None),
    };
    Ok(Attachment {
        mode: NetworkMode::User,
        bridge: None,
        link: None,
        ifindex: 0,
        address: addr,
        prefix: if addr.is_some() { 24 } else { 0 },
        gateway: gw,
        lease_dir: None,
        helper: None,
        user_process: Some((tool.to_owned(), proc)),
        init,
        nat: false,
        publish: Vec::new(),
        resolv_conf: false,
        note: None,
    })
}

/// The tun device both tools open.
pub const TUN: &str = "/dev/net/tun";

/// Whether the caller may open [`TUN`] read-write (both tools need it).
pub fn tun_usable() -> bool {
    nix::unistd::access(
        TUN,
        nix::unistd::AccessFlags::R_OK | nix::unistd::AccessFlags::W_OK,
    )
    .is_ok()
}

const NETNS_FD: i32 = 3;
const USERNS_FD: i32 = 4;
const READY_FD: i32 = 5;

fn helper_err(tool: &str, message: impl Into<String>) -> Error {
    Error::NetHelper {
        program: tool.into(),
        message: message.into(),
    }
}

/// slirp4netns's API request that forwards `p` (to the guest's
/// 10.0.2.100).
fn slirp_hostfwd(p: &Publish) -> String {
    serde_json::json!({
        "execute": "add_hostfwd",
        "arguments": {
            "proto": p.proto.as_str(),
            "host_addr": p.host_ip.map_or("0.0.0.0".to_owned(), |a| a.to_string()),
            "host_port": p.host_port,
            "guest_port": p.port,
        }
    })
    .to_string()
}

/// pasta's `-t`/`-u` arguments for `publish`: `[ADDR/]HOSTPORT:PORT` each,
/// `none` for a protocol with no forward.
fn pasta_forwards(publish: &[Publish]) -> Vec<String> {
    let mut out = Vec::new();
    for (flag, proto) in [("-t", Proto::Tcp), ("-u", Proto::Udp)] {
        let specs: Vec<String> = publish
            .iter()
            .filter(|p| p.proto == proto)
            .map(|p| match p.host_ip {
                Some(a) => format!("{a}/{}:{}", p.host_port, p.port),
                None => format!("{}:{}", p.host_port, p.port),
            })
            .collect();
        if specs.is_empty() {
            out.extend([flag.to_owned(), "none".to_owned()]);
        }
        for s in specs {
            out.extend([flag.to_owned(), s]);
        }
    }
    out
}

/// Asks slirp4netns, over its API socket, to forward each of `publish`.
fn slirp_forward(sock: &std::path::Path, publish: &[Publish]) -> Result<()> {
    use std::io::Write;
    for p in publish {
        let fail = |m: String| helper_err("slirp4netns", format!("--publish {p}: {m}"));
        let mut s = std::os::unix::net::UnixStream::connect(sock).map_err(|e| {
            fail(format!(
                "cannot reach its API socket {}: {e}",
                sock.display()
            ))
        })?;
        s.write_all(slirp_hostfwd(p).as_bytes())
            .map_err(|e| fail(e.to_string()))?;
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut reply = String::new();
        let _ = s.read_to_string(&mut reply);
        // {"return": {"id": N}} on success, {"error": {"desc": ...}} not.
        let v: serde_json::Value = serde_json::from_str(&reply).unwrap_or_default();
        if v.get("return").is_none() {
            let why = v["error"]["desc"]
                .as_str()
                .unwrap_or(reply.trim())
                .to_owned();
            return Err(fail(format!("refused: {why} (is the host port free?)")));
        }
    }
    Ok(())
}

fn start_slirp(
    host: &HostNet,
    path: &PathBuf,
    publish: &[Publish],
    netns: OwnedFd,
    userns: OwnedFd,
) -> Result<ProcessRef> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| Error::sys("pipe2(O_CLOEXEC)", e))?;
    let w = sys::dup_at_least(w.as_fd(), 10)
        .map_err(|e| Error::sys("fcntl(F_DUPFD_CLOEXEC, 10)", e))?;
    let mut cmd = Command::new(path);
    cmd.args([
        "--configure",
        "--mtu=65520",
        &format!("--ready-fd={READY_FD}"),
        "--netns-type=path",
        &format!("--userns-path=/proc/self/fd/{USERNS_FD}"),
    ]);
    if !host.user_host_loopback {
        cmd.arg("--disable-host-loopback");
    }
    // Port forwards go through the API socket, in a private directory.
    let api = if publish.is_empty() {
        None
    } else {
        let dir = private_dir("slirp")?;
        let sock = dir.join("api.sock");
        cmd.arg(format!("--api-socket={}", sock.display()));
        Some((dir, sock))
    };
    cmd.arg(format!("/proc/self/fd/{NETNS_FD}"))
        .arg("tap0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    sys::command_pass_fds(
        &mut cmd,
        vec![(netns, NETNS_FD), (userns, USERNS_FD), (w, READY_FD)],
        true,
    );
    let mut child = cmd.spawn().map_err(|source| Error::Spawn {
        program: path.display().to_string(),
        source,
    })?;
    drop(cmd); // closes our copies of the passed descriptors
    let pid = child.id() as i32;
    let ready = sys::poll_readable(r.as_fd(), 10_000).unwrap_or(false);
    let mut buf = [0u8; 1];
    let got = ready && std::fs::File::from(r).read(&mut buf).unwrap_or(0) == 1;
    if !got {
        let _ = child.kill();
        let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
        return Err(helper_err(
            "slirp4netns",
            format!("did not configure the container's tap0 ({status})"),
        ));
    }
    let forwarded = match &api {
        Some((_, sock)) => slirp_forward(sock, publish),
        None => Ok(()),
    };
    if let Some((dir, sock)) = &api {
        // slirp4netns keeps its listening socket; the path is not needed.
        let _ = std::fs::remove_file(sock);
        let _ = std::fs::remove_dir(dir);
    }
    if let Err(e) = forwarded {
        let _ = child.kill();
        let _ = child.wait();
        return Err(e);
    }
    // The child stays ours to reap in stop(); forget the handle.
    std::mem::forget(child);
    ProcessRef::of(pid).ok_or_else(|| helper_err("slirp4netns", "exited right after start"))
}

fn start_pasta(
    host: &HostNet,
    path: &PathBuf,
    publish: &[Publish],
    netns: OwnedFd,
    userns: OwnedFd,
) -> Result<ProcessRef> {
    // pasta daemonises once the namespace is configured; it writes its pid
    // to a file in a private directory (0700, made with O_EXCL semantics).
    let dir = private_dir("pasta")?;
    let pidfile = dir.join("pid");
    let mut cmd = Command::new(path);
    cmd.args(["--quiet", "--config-net"])
        .args(pasta_forwards(publish))
        .args([
            "-T",
            "none",
            "-U",
            "none",
            "--userns",
            &format!("/proc/self/fd/{USERNS_FD}"),
            "--netns",
            &format!("/proc/self/fd/{NETNS_FD}"),
            "--pid",
        ])
        .arg(&pidfile);
    if !host.user_host_loopback {
        cmd.arg("--no-map-gw");
    }
    if nix::unistd::geteuid().is_root() {
        // pasta drops to nobody by default, which cannot enter a user
        // namespace owned by root.
        cmd.args(["--runas", "0:0"]);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    sys::command_pass_fds(&mut cmd, vec![(netns, NETNS_FD), (userns, USERNS_FD)], true);
    let out = cmd.output().map_err(|source| Error::Spawn {
        program: path.display().to_string(),
        source,
    });
    let pid = std::fs::read_to_string(&pidfile).ok();
    let _ = std::fs::remove_file(&pidfile);
    let _ = std::fs::remove_dir(&dir);
    let out = out?;
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stderr);
        return Err(helper_err(
            "pasta",
            format!(
                "{} ({})",
                msg.lines()
                    .rfind(|l| !l.contains("syslog"))
                    .unwrap_or("failed"),
                out.status
            ),
        ));
    }
    pid.and_then(|p| p.trim().parse::<i32>().ok())
        .and_then(ProcessRef::of)
        .ok_or_else(|| helper_err("pasta", "wrote no pid file"))
}

/// A new directory of ours alone (0700, failing if the name exists) for a
/// tool's pid file or API socket: `$TMPDIR/davit-TOOL-RANDOM`.
fn private_dir(tool: &str) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("davit-{tool}-{}", super::bridge::veth_name()));
    std::fs::DirBuilder::new()
        .mode_0700()
        .create(&dir)
        .map_err(|source| Error::Write {
            path: dir.clone(),
            source,
        })?;
    Ok(dir)
}

trait Mode0700 {
    fn mode_0700(&mut self) -> &mut Self;
}

impl Mode0700 for std::fs::DirBuilder {
    fn mode_0700(&mut self) -> &mut Self {
        use std::os::unix::fs::DirBuilderExt;
        self.mode(0o700)
    }
}

/// Stop a user-mode process if it is still the one recorded: SIGTERM, up
/// to 2 s, then SIGKILL; reap it when it is our child.
pub fn stop(p: &ProcessRef) {
    if !p.is_alive() {
        reap(p.pid);
        return;
    }
    let Ok(fd) = sys::pidfd_open(nix::unistd::Pid::from_raw(p.pid)) else {
        return;
    };
    // The pidfd pins the process: check it is still ours before signalling.
    if !p.is_alive() {
        return;
    }
    let _ = sys::pidfd_send_signal(fd.as_fd(), Signal::SIGTERM as i32);
    let deadline = Instant::now() + Duration::from_secs(2);
    while p.is_alive() && Instant::now() < deadline {
        reap(p.pid);
        let _ = sys::poll_readable(fd.as_fd(), 50);
    }
    if p.is_alive() {
        let _ = sys::pidfd_send_signal(fd.as_fd(), Signal::SIGKILL as i32);
        let _ = sys::poll_readable(fd.as_fd(), 2000);
    }
    reap(p.pid);
    let _ = fd.as_raw_fd();
}

fn reap(pid: i32) {
    let _ = nix::sys::wait::waitpid(
        nix::unistd::Pid::from_raw(pid),
        Some(nix::sys::wait::WaitPidFlag::WNOHANG),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwards_become_pasta_arguments_and_slirp_requests() {
        let p = |s: &str| s.parse::<Publish>().unwrap();
        assert_eq!(pasta_forwards(&[]), ["-t", "none", "-u", "none"]);
        assert_eq!(
            pasta_forwards(&[p("8080:80"), p("127.0.0.1:8443:443"), p("5353:53/udp")]),
            ["-t", "8080:80", "-t", "127.0.0.1/8443:443", "-u", "5353:53"]
        );
        let v: serde_json::Value =
            serde_json::from_str(&slirp_hostfwd(&p("127.0.0.1:8080:80"))).unwrap();
        assert_eq!(v["execute"], "add_hostfwd");
        assert_eq!(v["arguments"]["host_addr"], "127.0.0.1");
        assert_eq!(v["arguments"]["host_port"], 8080);
        assert_eq!(v["arguments"]["guest_port"], 80);
        assert_eq!(v["arguments"]["proto"], "tcp");
        let v: serde_json::Value = serde_json::from_str(&slirp_hostfwd(&p("53:53/udp"))).unwrap();
        assert_eq!(v["arguments"]["host_addr"], "0.0.0.0");
        assert_eq!(v["arguments"]["proto"], "udp");
    }
}
