//! The setuid-root helper `davit-usernet` that gives a plain user's
//! container a veth on a bridge within a quota (`lxc-user-nic`'s job), and
//! the monitor's side of calling it.
//!
//! `/etc/davit/usernet` holds lines `USER|@GROUP veth BRIDGE COUNT`
//! (`#` comments). A user's quota on a bridge is the largest COUNT of the
//! lines that match the user or one of the caller's groups.
//!
//! Built for hostile callers (security.md (b), the `lxc-user-nic` row):
//!
//! * **CVE-2017-5985** (veth into a netns the caller does not own): the
//!   helper drops its effective uid to the real uid before it touches the
//!   target, opens `/proc/PID/ns/net` as the caller (or takes a descriptor
//!   the caller already holds), and requires `NS_GET_OWNER_UID` of the
//!   netns's owning user namespace to be the caller. The host netns (owned
//!   by the initial namespace, uid 0) or another user's container is
//!   refused. The pid must still have that very netns afterwards (inode
//!   compare), so a recycled pid cannot swap it.
//! * **CVE-2018-6556 / CVE-2022-47952** (existence oracle through paths or
//!   differing errors): the helper takes no path from the caller, only a
//!   pid, a container name and a bridge name, all syntax-checked; every
//!   failure of the ownership step gives the same message and exit code
//!   ([`Error::Refused`], exit 3).
//! * **Quota under a lock**: counting and allocating happen under the
//!   lease file's `flock`; dead containers' leases are reclaimed first.
//! * **Only its own interfaces**: release deletes a host link only if the
//!   caller's lease records it, with the same index, kind `veth` and the
//!   same bridge.
#![forbid(unsafe_code)]

use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::unistd::Uid;

use crate::config::{valid_name, ContainerConfig};
use crate::error::{Error, Result};
use crate::net::attachment::Attachment;
use crate::net::bridge::{attach_veth, VethRequest};
use crate::net::host::{valid_ifname, HostNet};
use crate::net::lease::LeaseStore;
use crate::net::rtnl::Rtnl;
use crate::state::ProcessRef;
use crate::sys;

/// The quota file.
pub const USERNET_FILE: &str = "/etc/davit/usernet";

/// Exit code of the helper for a bad command line.
pub const EXIT_USAGE: i32 = 2;
/// Exit code for the uniform refusal.
pub const EXIT_REFUSED: i32 = 3;
/// Exit code for a quota problem.
pub const EXIT_QUOTA: i32 = 4;
/// Exit code for anything else.
pub const EXIT_FAILED: i32 = 1;

/// The descriptor number a caller may pass the netns on (`--netns-fd 3`).
pub const NETNS_FD: i32 = 3;

/// One line of `/etc/davit/usernet`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaLine {
    /// A user name, or a group name when `group`.
    pub who: String,
    /// Whether `who` is `@group`.
    pub group: bool,
    /// The bridge.
    pub bridge: String,
    /// How many veths.
    pub count: u32,
}

/// Parse the quota file; malformed lines and types other than `veth` are
/// skipped (as `lxc-user-nic` does).
pub fn parse_usernet(text: &str) -> Vec<QuotaLine> {
    text.lines()
        .filter_map(|l| {
            let l = l.split('#').next()?.trim();
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() != 4 || f[1] != "veth" || !valid_ifname(f[2]) {
                return None;
            }
            let (who, group) = match f[0].strip_prefix('@') {
                Some(g) => (g, true),
                None => (f[0], false),
            };
            if who.is_empty() {
                return None;
            }
            Some(QuotaLine {
                who: who.to_owned(),
                group,
                bridge: f[2].to_owned(),
                count: f[3].parse().ok()?,
            })
        })
        .collect()
}

/// The quota of `user` (member of `groups`) on `bridge`: the largest
/// matching COUNT, `None` when no line matches.
pub fn quota_for(lines: &[QuotaLine], user: &str, groups: &[String], bridge: &str) -> Option<u32> {
    lines
        .iter()
        .filter(|l| l.bridge == bridge)
        .filter(|l| crate::usercgroup::names(&l.who, l.group, user, groups))
        .map(|l| l.count)
        .max()
}

fn user_and_groups(uid: u32) -> Option<(String, Vec<String>)> {
    crate::usercgroup::user_and_groups(uid).map(|(name, _, groups)| (name, groups))
}

/// The quota the caller (`uid`, with this process's groups) has on
/// `bridge` according to `file`; `None` without a matching line or file.
pub fn caller_quota(file: &Path, uid: u32, bridge: &str) -> Option<u32> {
    let text = std::fs::read_to_string(file).ok()?;
    let (user, groups) = user_and_groups(uid)?;
    quota_for(&parse_usernet(&text), &user, &groups, bridge)
}

/// What the helper was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HelperRequest {
    /// `attach --pid PID --name NAME --bridge BRIDGE [--netns-fd 3]`.
    Attach {
        /// The container's init.
        pid: i32,
        /// The container's name.
        name: String,
        /// The bridge.
        bridge: String,
        /// Whether the netns comes on descriptor [`NETNS_FD`].
        netns_fd: bool,
    },
    /// `release --name NAME --bridge BRIDGE`.
    Release {
        /// The container's name.
        name: String,
        /// The bridge.
        bridge: String,
    },
}

/// Parse the helper's arguments (after the program name). Only numbers and
/// syntax-checked names are accepted, never a path.
///
/// # Errors
/// [`Error::ConfigInvalid`] with the usage.
pub fn parse_helper_args(args: &[OsString]) -> Result<HelperRequest> {
    let usage = || {
        Error::ConfigInvalid {
        reason: "usage: davit-usernet attach --pid PID --name NAME --bridge BRIDGE [--netns-fd 3] | release --name NAME --bridge BRIDGE".into(),
    }
    };
    let s: Vec<&str> = args
        .iter()
        .map(|a| a.to_str().ok_or_else(usage))
        .collect::<Result<_>>()?;
    let (op, rest) = s.split_first().ok_or_else(usage)?;
    let (mut pid, mut name, mut bridge, mut fd) = (None, None, None, false);
    let mut it = rest.iter();
    while let Some(a) = it.next() {
        match *a {
            "--pid" => {
                let p: i32 = it.next().ok_or_else(usage)?.parse().map_err(|_| usage())?;
                if p <= 0 {
                    return Err(usage());
                }
                pid = Some(p);
            }
            "--name" => {
                let n = it.next().ok_or_else(usage)?;
                if !valid_name(n) {
                    return Err(usage());
                }
                name = Some((*n).to_owned());
            }
            "--bridge" => {
                let b = it.next().ok_or_else(usage)?;
                if !valid_ifname(b) {
                    return Err(usage());
                }
                bridge = Some((*b).to_owned());
            }
            "--netns-fd" => {
                if *it.next().ok_or_else(usage)? != "3" {
                    return Err(usage());
                }
                fd = true;
            }
            _ => return Err(usage()),
        }
    }
    match (*op, pid, name, bridge) {
        ("attach", Some(pid), Some(name), Some(bridge)) => Ok(HelperRequest::Attach {
            pid,
            name,
            bridge,
            netns_fd: fd,
        }),
        ("release", None, Some(name), Some(bridge)) if !fd => {
            Ok(HelperRequest::Release { name, bridge })
        }
        _ => Err(usage()),
    }
}

/// Fixed inputs of the helper. The binary uses [`HelperPaths::system`];
/// nothing here ever comes from the caller.
#[derive(Debug, Clone)]
pub struct HelperPaths {
    /// The quota file.
    pub usernet: PathBuf,
    /// The host config with the `[network]` table.
    pub host_config: PathBuf,
}

impl HelperPaths {
    /// `/etc/davit/usernet` and `/etc/davit/config.toml`.
    pub fn system() -> HelperPaths {
        HelperPaths {
            usernet: USERNET_FILE.into(),
            host_config: super::host::HOST_CONFIG.into(),
        }
    }
}

/// Switch the effective uid (and so fsuid) to `uid`, keeping saved uid 0 so
/// root can be taken back.
fn set_euid(uid: u32) -> Result<()> {
    nix::unistd::seteuid(Uid::from_raw(uid)).map_err(|e| Error::sys(format!("seteuid({uid})"), e))
}

/// Everything about the target that could tell the caller something is
/// folded into [`Error::Refused`].
fn prove_ownership(ruid: u32, pid: i32, passed: Option<OwnedFd>) -> Result<(OwnedFd, ProcessRef)> {
    let refused = |_| Error::Refused;
    // Act as the caller: the kernel's ptrace-access check on
    // /proc/PID/ns/net is then the caller's, not root's.
    set_euid(ruid).map_err(|_| Error::Refused)?;
    let r = (|| -> Result<(OwnedFd, ProcessRef)> {
        let ns = match passed {
            Some(fd) => fd,
            None => super::rtnl::open_netns(pid).map_err(|_| Error::Refused)?,
        };
        if sys::ns_get_nstype(ns.as_fd()).map_err(refused)? != libc::CLONE_NEWNET {
            return Err(Error::Refused);
        }
        let userns = sys::ns_get_userns(ns.as_fd()).map_err(refused)?;
        let owner = sys::ns_get_owner_uid(userns.as_fd()).map_err(refused)?;
        if owner != ruid && ruid != 0 {
            return Err(Error::Refused);
        }
        let init = ProcessRef::of(pid).ok_or(Error::Refused)?;
        Ok((ns, init))
    })();
    set_euid(0)?;
    let (ns, init) = r?;
    // The pid must have exactly this netns, and still be the same process.
    let st = nix::sys::stat::fstat(ns.as_raw_fd()).map_err(|_| Error::Refused)?;
    let now = std::fs::metadata(format!("/proc/{pid}/ns/net")).map_err(|_| Error::Refused)?;
    if now.ino() != st.st_ino || now.dev() != st.st_dev || !init.is_alive() {
        return Err(Error::Refused);
    }
    Ok((ns, init))
}

/// The helper's work for one request, running setuid root with real uid
/// `ruid`. `passed_netns` is the caller's descriptor [`NETNS_FD`] when
/// `--netns-fd 3` was given. Returns the JSON to print on success.
///
/// # Errors
/// [`Error::Refused`] (uniform) for anything about the target process,
/// [`Error::NoQuota`] / [`Error::Quota`], or the setup's own errors.
pub fn run_helper(
    paths: &HelperPaths,
    ruid: u32,
    req: &HelperRequest,
    passed_netns: Option<OwnedFd>,
) -> Result<String> {
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    let host = HostNet::load(&paths.host_config)?;
    let (user, groups) = user_and_groups(ruid).ok_or(Error::Refused)?;
    let text = std::fs::read_to_string(&paths.usernet).unwrap_or_default();
    let lines = parse_usernet(&text);
    match req {
        HelperRequest::Attach {
            pid,
            name,
            bridge,
            netns_fd,
        } => {
            let passed = if *netns_fd {
                Some(passed_netns.ok_or(Error::Refused)?)
            } else {
                None
            };
            let (ns, init) = prove_ownership(ruid, *pid, passed)?;
            let count = match quota_for(&lines, &user, &groups, bridge) {
                Some(c) if c > 0 || ruid == 0 => c,
                _ => {
                    return Err(Error::NoQuota {
                        user,
                        bridge: bridge.clone(),
                    })
                }
            };
            let vreq = VethRequest {
                name: name.clone(),
                bridge: bridge.clone(),
                veth: None,
                address: None,
                gateway: None,
                hwaddr: None,
                uid: ruid,
                publish: Vec::new(),
            };
            let att = attach_veth_quota(&host, &vreq, init, ns.as_fd(), Some((user, count)))?;
            serde_json::to_string(&att).map_err(|e| Error::Write {
                path: "stdout".into(),
                source: std::io::Error::other(e),
            })
        }
        HelperRequest::Release { name, bridge } => {
            if quota_for(&lines, &user, &groups, bridge).is_none() && ruid != 0 {
                return Err(Error::NoQuota {
                    user,
                    bridge: bridge.clone(),
                });
            }
            release_dead(&host, ruid, name, bridge)?;
            Ok(String::new())
        }
    }
}

fn attach_veth_quota(
    host: &HostNet,
    req: &VethRequest,
    init: ProcessRef,
    netns: BorrowedFd<'_>,
    quota: Option<(String, u32)>,
) -> Result<Attachment> {
    if let Some((user, count)) = quota {
        // Count under the lease lock; attach_veth takes the same lock after
        // we drop it, so hold a second, outer lock for the whole attach.
        let outer = quota_lock(host, &req.bridge)?;
        let store = LeaseStore::new(&host.lease_dir, &req.bridge);
        let mut l = store.lock()?;
        let dead = l.table.reclaim();
        if !dead.is_empty() {
            l.save()?;
        }
        let used = l.table.leases.iter().filter(|x| x.uid == req.uid).count();
        drop(l);
        if used >= count as usize {
            return Err(Error::Quota {
                user,
                bridge: req.bridge.clone(),
                count,
            });
        }
        let r = attach_veth(host, req, init, netns);
        drop(outer);
        return r;
    }
    attach_veth(host, req, init, netns)
}

/// A lock serialising quota check + attach for one bridge
/// (`LEASE_DIR/BRIDGE.quota.lock`).
fn quota_lock(host: &HostNet, bridge: &str) -> Result<nix::fcntl::Flock<std::fs::File>> {
    std::fs::create_dir_all(&host.lease_dir).map_err(|source| Error::Write {
        path: host.lease_dir.clone(),
        source,
    })?;
    super::lockfile::exclusive(&host.lease_dir.join(format!("{bridge}.quota.lock")))
}

/// Drop the caller's leases named `name` on `bridge` whose container is
/// gone, deleting a leftover host veth only if it is exactly the recorded
/// one. Live leases, and other users' leases, are never touched.
fn release_dead(host: &HostNet, ruid: u32, name: &str, bridge: &str) -> Result<()> {
    let store = LeaseStore::new(&host.lease_dir, bridge);
    let mut l = store.lock()?;
    let mut c = Rtnl::new()?;
    let br = c.link(bridge)?.map(|b| b.index);
    let before = l.table.leases.len();
    let mut keep = Vec::new();
    for x in l.table.leases.drain(..) {
        if x.uid == ruid && x.name == name && !x.is_live() {
            if !super::bridge::delete_recorded_veth(&mut c, &x.veth, x.ifindex, br) {
                super::bridge::forget_filter(&mut c, &x.veth);
            }
        } else {
            keep.push(x);
        }
    }
    l.table.leases = keep;
    if l.table.leases.len() != before {
        l.save()?;
    }
    if l.table.leases.iter().all(|x| !x.is_live()) {
        super::nat::remove_bridge(&host.lease_dir, bridge);
    }
    super::dnsmasq::refresh(&host.lease_dir, bridge, &l.table)
}

/// The monitor's side (plain user, `bridge` mode): run the helper with
/// init's netns on descriptor 3 and read back the [`Attachment`].
///
/// # Errors
/// [`Error::Refused`], or [`Error::NetHelper`] with the helper's message
/// (quota errors read clearly there).
pub fn call_helper(
    host: &HostNet,
    cfg: &ContainerConfig,
    init: ProcessRef,
    netns: BorrowedFd<'_>,
) -> Result<Attachment> {
    let bridge = cfg.network.bridge.as_deref().unwrap_or(&host.bridge);
    let helper = &host.usernet_helper;
    let fd = sys::dup_at_least(netns, 10).map_err(|e| Error::sys("fcntl(F_DUPFD_CLOEXEC)", e))?;
    let mut cmd = Command::new(helper);
    cmd.args([
        "attach",
        "--pid",
        &init.pid.to_string(),
        "--name",
        &cfg.name,
        "--bridge",
        bridge,
    ])
    .args(["--netns-fd", "3"])
    .env_clear()
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    sys::command_pass_fds(&mut cmd, vec![(fd, NETNS_FD)], false);
    let out = cmd.output().map_err(|source| Error::Spawn {
        program: helper.display().to_string(),
        source,
    })?;
    drop(cmd);
    if out.status.code() == Some(EXIT_REFUSED) {
        return Err(Error::Refused);
    }
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stderr);
        return Err(Error::NetHelper {
            program: "davit-usernet".into(),
            message: msg
                .trim()
                .lines()
                .last()
                .map(|l| l.trim_start_matches("davit-usernet: "))
                .unwrap_or("failed")
                .to_owned(),
        });
    }
    let mut att: Attachment =
        serde_json::from_slice(&out.stdout).map_err(|_| Error::NetHelper {
            program: "davit-usernet".into(),
            message: "unreadable reply".into(),
        })?;
    att.helper = Some(helper.clone());
    Ok(att)
}

/// Ask the helper to release this container's leases on `bridge` (after
/// the container stopped).
///
/// # Errors
/// [`Error::NetHelper`] / [`Error::Spawn`].
pub fn call_release(helper: &Path, name: &str, bridge: &str) -> Result<()> {
    let out = Command::new(helper)
        .args(["release", "--name", name, "--bridge", bridge])
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|source| Error::Spawn {
            program: helper.display().to_string(),
            source,
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::NetHelper {
            program: "davit-usernet".into(),
            message: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

/// Out of the caller's reach for as long as the helper runs (issue 13,
/// row 8): it holds the bridge's lease lock and counts the quota, so a
/// caller who could stop or kill it would hang every other start on the
/// bridge, or get veths the quota does not count.
///
/// * Real and saved uid become 0: `kill(2)` from the caller (uid match on
///   the target's real or saved uid) is refused, SIGSTOP and SIGKILL
///   included. The caller's uid was read before.
/// * The signals a terminal sends without that check (Ctrl-Z, Ctrl-C,
///   hang-up, background I/O) are ignored, and so are those the caller's
///   rlimits would raise; CPU, file size and memory limits go to infinity,
///   so no limit the caller set can kill it half-way.
/// * Its environment is emptied (`PATH` set), since what it runs is no
///   longer a secure exec once every uid is 0.
/// * It leaves the caller's cgroup for the root of each hierarchy, where a
///   delegated `cgroup.freeze` or `cgroup.kill` cannot reach it (where the
///   root takes it: not always inside a cgroup namespace).
fn harden() -> Result<()> {
    use nix::sys::resource::{setrlimit, Resource, RLIM_INFINITY};
    use nix::sys::signal::Signal;
    let root = Uid::from_raw(0);
    nix::unistd::setresuid(root, root, root).map_err(|e| Error::sys("setresuid(0, 0, 0)", e))?;
    for sig in [
        Signal::SIGTSTP,
        Signal::SIGTTIN,
        Signal::SIGTTOU,
        Signal::SIGINT,
        Signal::SIGQUIT,
        Signal::SIGHUP,
        Signal::SIGPIPE,
        Signal::SIGXCPU,
        Signal::SIGXFSZ,
    ] {
        sys::set_signal_ignored(sig, true)
            .map_err(|e| Error::sys(format!("sigaction({sig}, SIG_IGN)"), e))?;
    }
    for r in [
        Resource::RLIMIT_CPU,
        Resource::RLIMIT_FSIZE,
        Resource::RLIMIT_AS,
        Resource::RLIMIT_DATA,
    ] {
        setrlimit(r, RLIM_INFINITY, RLIM_INFINITY)
            .map_err(|e| Error::sys(format!("setrlimit({r:?}, RLIM_INFINITY)"), e))?;
    }
    // Nothing of the caller's environment reaches what we run (nft for the
    // L2 filter): with every uid 0 now, an exec is no longer "secure", so
    // LD_PRELOAD and friends would be honoured.
    for (k, _) in std::env::vars_os() {
        std::env::remove_var(k);
    }
    std::env::set_var("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    // Best effort: inside a cgroup namespace the root may not take us.
    if let Ok(layout) = crate::cgroup::Layout::detect() {
        let me = std::process::id().to_string();
        for h in &layout.hierarchies {
            let _ = std::fs::write(h.mountpoint.join("cgroup.procs"), &me);
        }
    }
    Ok(())
}

/// The whole helper process: parse, act, and say what to print. Returns
/// `(exit code, stdout, stderr)`; the binary only prints them. The caller's
/// descriptor 3 is adopted only for `--netns-fd 3`.
pub fn helper_main(args: &[OsString]) -> (i32, String, String) {
    let req = match parse_helper_args(args) {
        Ok(r) => r,
        Err(e) => return (EXIT_USAGE, String::new(), format!("davit-usernet: {e}\n")),
    };
    if !nix::unistd::geteuid().is_root() {
        return (
            EXIT_FAILED,
            String::new(),
            "davit-usernet: not installed setuid root\n".into(),
        );
    }
    let ruid = nix::unistd::getuid().as_raw();
    if let Err(e) = harden() {
        return (EXIT_FAILED, String::new(), format!("davit-usernet: {e}\n"));
    }
    let passed = match &req {
        HelperRequest::Attach { netns_fd: true, .. } => sys::take_inherited_fd(NETNS_FD),
        _ => None,
    };
    match run_helper(&HelperPaths::system(), ruid, &req, passed) {
        Ok(out) => (0, out, String::new()),
        Err(e) => {
            let code = match e {
                Error::Refused => EXIT_REFUSED,
                Error::Quota { .. } | Error::NoQuota { .. } => EXIT_QUOTA,
                _ => EXIT_FAILED,
            };
            let mut msg = e.to_string();
            if !matches!(e, Error::Refused) {
                let mut src = std::error::Error::source(&e);
                while let Some(s) = src {
                    msg += &format!(": {s}");
                    src = s.source();
                }
            }
            (code, String::new(), format!("davit-usernet: {msg}\n"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernet_lines() {
        let t = "# comment\nalice veth davitbr0 2\n@staff veth davitbr0 5\nbob macvlan x 1\nbad line\ncarol veth br1 x\n@ veth br 1\n";
        let l = parse_usernet(t);
        assert_eq!(l.len(), 2);
        assert_eq!(quota_for(&l, "alice", &[], "davitbr0"), Some(2));
        assert_eq!(
            quota_for(&l, "alice", &["staff".into()], "davitbr0"),
            Some(5)
        );
        assert_eq!(quota_for(&l, "alice", &[], "other"), None);
        assert_eq!(quota_for(&l, "bob", &[], "davitbr0"), None);
    }

    #[test]
    fn helper_args_accept_no_paths() {
        let a = |v: &[&str]| parse_helper_args(&v.iter().map(OsString::from).collect::<Vec<_>>());
        assert_eq!(
            a(&["attach", "--pid", "42", "--name", "c1", "--bridge", "br0"]).unwrap(),
            HelperRequest::Attach {
                pid: 42,
                name: "c1".into(),
                bridge: "br0".into(),
                netns_fd: false
            }
        );
        for bad in [
            &[
                "attach",
                "--pid",
                "/proc/1/ns/net",
                "--name",
                "c",
                "--bridge",
                "b",
            ][..],
            &["attach", "--pid", "-1", "--name", "c", "--bridge", "b"],
            &["attach", "--pid", "1", "--name", "../x", "--bridge", "b"],
            &["attach", "--pid", "1", "--name", "c", "--bridge", "a/b"],
            &[
                "attach",
                "--pid",
                "1",
                "--name",
                "c",
                "--bridge",
                "b",
                "--netns-fd",
                "7",
            ],
            &["release", "--pid", "1", "--name", "c", "--bridge", "b"],
            &["delete", "--name", "c", "--bridge", "b"],
            &[],
        ] {
            let e = a(bad).unwrap_err();
            assert!(e.to_string().contains("usage"), "{bad:?}");
        }
    }
}
