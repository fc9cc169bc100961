//! The container's `/etc/resolv.conf`: whether davit writes it, and which
//! nameservers.
#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::attachment::Attachment;
use super::host::HostNet;
use crate::config::{ContainerConfig, NetworkMode};
use crate::error::{Error, Result};

/// Paths (relative to the container root) whose presence means the image
/// configures its own network, so davit leaves `/etc/resolv.conf` alone.
pub const NETWORK_MANAGERS: [&str; 6] = [
    "usr/sbin/NetworkManager",
    "etc/netplan",
    "etc/systemd/network",
    "etc/sysconfig/network-scripts/ifcfg-eth0",
    "usr/sbin/connmand",
    "etc/network/interfaces.d/eth0",
];

/// Write `/etc/resolv.conf` inside the container unless the image manages
/// its own network (see [`NETWORK_MANAGERS`], or `/etc/network/interfaces`
/// mentioning `eth0`), or the file is a symlink (the image chose a
/// resolver). All opens resolve inside the container's root (`openat2`
/// `RESOLVE_IN_ROOT`), never following a link out of it. Returns whether
/// it wrote.
///
/// # Errors
/// [`Error::Syscall`] for an open or write that fails.
pub fn write_resolv_conf(
    host: &HostNet,
    cfg: &ContainerConfig,
    att: &Attachment,
    pid: i32,
) -> Result<bool> {
    use crate::sys::{openat2, RESOLVE_IN_ROOT, RESOLVE_NO_MAGICLINKS};
    let root_path = format!("/proc/{pid}/root");
    let root = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
        .open(&root_path)
        .map_err(|source| Error::Read {
            path: root_path.clone().into(),
            source,
        })?;
    let rf = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
    let exists = |p: &str| openat2(root.as_fd(), Path::new(p), libc::O_PATH, 0, rf).is_ok();
    if NETWORK_MANAGERS.iter().any(|p| exists(p)) {
        return Ok(false);
    }
    if let Ok(fd) = openat2(
        root.as_fd(),
        Path::new("etc/network/interfaces"),
        libc::O_RDONLY,
        0,
        rf,
    ) {
        let mut s = String::new();
        let _ = std::fs::File::from(fd).read_to_string(&mut s);
        if s.lines().any(|l| {
            let l = l.trim_start();
            !l.starts_with('#') && l.contains("eth0")
        }) {
            return Ok(false);
        }
    }
    let servers = nameservers(host, att);
    if servers.is_empty() {
        return Ok(false);
    }
    let mut body = String::from("# written by davit at start (network.mode = ");
    body += match att.mode {
        NetworkMode::Bridge => "bridge",
        NetworkMode::User => "user",
        NetworkMode::None => "none",
    };
    body += ")\n";
    for s in servers {
        body += &format!("nameserver {s}\n");
    }
    if bridge_dns(host, att).is_some() {
        body += &format!("search {}\n", host.domain);
    }
    let open = || {
        openat2(
            root.as_fd(),
            Path::new("etc/resolv.conf"),
            libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_NOFOLLOW,
            0o644,
            rf,
        )
    };
    let owner = match (cfg.privileged, cfg.idmap.host_uid(0), cfg.idmap.host_gid(0)) {
        (false, Some(u), Some(g)) => Some((u, g)),
        _ => None,
    };
    let opened = match (open(), owner) {
        // An idmapped root does not map host root: a file host root
        // creates there has no owner on disk. Create it as container root
        // instead, from a thread of its own (fs ids are per thread).
        (Err(nix::errno::Errno::EOVERFLOW), Some((u, g))) => std::thread::scope(|s| {
            s.spawn(|| {
                nix::unistd::setfsgid(nix::unistd::Gid::from_raw(g));
                nix::unistd::setfsuid(nix::unistd::Uid::from_raw(u));
                open()
            })
            .join()
            .unwrap_or(Err(nix::errno::Errno::EIO))
        }),
        (r, _) => r,
    };
    let fd = match opened {
        Ok(fd) => fd,
        // A symlink: the image picked its resolver; leave it. No /etc: nothing to do.
        Err(nix::errno::Errno::ELOOP) | Err(nix::errno::Errno::ENOENT) => return Ok(false),
        Err(e) => return Err(Error::sys(format!("openat2({root_path}, \"etc/resolv.conf\", O_WRONLY|O_CREAT|O_TRUNC|O_NOFOLLOW, RESOLVE_IN_ROOT)"), e)),
    };
    let st = nix::sys::stat::fstat(std::os::fd::AsRawFd::as_raw_fd(&fd))
        .map_err(|e| Error::sys("fstat(resolv.conf)", e))?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Ok(false);
    }
    // Owned by container root, so the container may rewrite it.
    if !cfg.privileged {
        if let (Some(u), Some(g)) = (cfg.idmap.host_uid(0), cfg.idmap.host_gid(0)) {
            let _ = nix::unistd::fchown(
                std::os::fd::AsRawFd::as_raw_fd(&fd),
                Some(nix::unistd::Uid::from_raw(u)),
                Some(nix::unistd::Gid::from_raw(g)),
            );
        }
    }
    let mut f = std::fs::File::from(fd);
    f.write_all(body.as_bytes())
        .map_err(|source| Error::Write {
            path: PathBuf::from(format!("{root_path}/etc/resolv.conf")),
            source,
        })?;
    Ok(true)
}

/// The bridge's own resolver (its dnsmasq, on the bridge address) when
/// `dhcp` is on and the container is on a bridge.
fn bridge_dns(host: &HostNet, att: &Attachment) -> Option<Ipv4Addr> {
    if att.mode != NetworkMode::Bridge || !host.dhcp {
        return None;
    }
    let a = att.address?;
    Some(super::subnet::Subnet::containing(a, att.prefix).first_host())
}

/// The nameservers for a container: the bridge's dnsmasq (the bridge
/// address) with `dhcp` on, else slirp4netns's `10.0.2.3` in user mode
/// with slirp, else `network.nameservers`, else the host's non-loopback
/// `/etc/resolv.conf` servers (a loopback resolver such as systemd-resolved's
/// `127.0.0.53` cannot be reached from the container).
pub fn nameservers(host: &HostNet, att: &Attachment) -> Vec<Ipv4Addr> {
    if let Some(gw) = bridge_dns(host, att) {
        return vec![gw];
    }
    if att.mode == NetworkMode::User {
        if let Some((tool, _)) = &att.user_process {
            if tool == "slirp4netns" {
                return vec![Ipv4Addr::new(10, 0, 2, 3)];
            }
        }
    }
    if !host.nameservers.is_empty() {
        return host.nameservers.clone();
    }
    let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    parse_nameservers(&text)
}

/// The non-loopback IPv4 `nameserver` lines of resolv.conf text.
pub fn parse_nameservers(text: &str) -> Vec<Ipv4Addr> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|a| a.trim().parse::<Ipv4Addr>().ok())
        .filter(|a| !a.is_loopback() && !a.is_unspecified())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_servers() {
        let t = "# x\nnameserver 127.0.0.53\nnameserver 192.0.2.53\nnameserver ::1\nsearch x\n";
        assert_eq!(parse_nameservers(t), vec![Ipv4Addr::new(192, 0, 2, 53)]);
    }
}
