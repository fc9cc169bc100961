//! `check`: host readiness as data (`lxc-checkconfig` made useful).
#![forbid(unsafe_code)]

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::cgroup::{self, Layout, Mode};
use crate::sys;

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckItem {
    /// What was checked, e.g. `namespace: user`.
    pub item: String,
    /// Whether it is usable.
    pub ok: bool,
    /// What was found.
    pub detail: String,
    /// How to fix it, when not ok.
    pub fix: Option<String>,
}

fn item(
    name: impl Into<String>,
    ok: bool,
    detail: impl Into<String>,
    fix: Option<&str>,
) -> CheckItem {
    CheckItem {
        item: name.into(),
        ok,
        detail: detail.into(),
        fix: if ok { None } else { fix.map(str::to_owned) },
    }
}

/// Total ids `user` (by name or uid) may map according to `/etc/subuid`
/// style text, and the ranges.
pub fn subid_ranges(text: &str, user: &str, uid: u32) -> Vec<(u64, u64)> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.trim().split(':');
            let (who, start, count) = (f.next()?, f.next()?, f.next()?);
            (who == user || who == uid.to_string())
                .then(|| Some((start.parse().ok()?, count.parse().ok()?)))
                .flatten()
        })
        .collect()
}

fn user_name(uid: u32) -> String {
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|p| {
            p.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() > 2 && f[2] == uid.to_string()).then(|| f[0].to_owned())
            })
        })
        .unwrap_or_else(|| uid.to_string())
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    path.split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// Run every check against this host.
pub fn check() -> Vec<CheckItem> {
    let mut out = Vec::new();
    for ns in ["user", "mnt", "pid", "uts", "ipc", "net", "cgroup", "time"] {
        let ok = Path::new(&format!("/proc/self/ns/{ns}")).exists();
        out.push(item(
            format!("namespace: {ns}"),
            ok,
            if ok { "available" } else { "missing" },
            Some("enable the namespace in the kernel config (CONFIG_*_NS)"),
        ));
    }
    let max_userns = std::fs::read_to_string("/proc/sys/user/max_user_namespaces")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(0);
    out.push(item(
        "user namespaces allowed",
        max_userns > 0,
        format!("user.max_user_namespaces = {max_userns}"),
        Some("sysctl -w user.max_user_namespaces=15000"),
    ));
    // Debian and Ubuntu kernels carry a switch that stops plain users from
    // making user namespaces, whatever max_user_namespaces says.
    if let Ok(v) = std::fs::read_to_string("/proc/sys/kernel/unprivileged_userns_clone") {
        let on = v.trim() != "0";
        out.push(item(
            "unprivileged user namespaces",
            on,
            format!("kernel.unprivileged_userns_clone = {}", v.trim()),
            Some("sysctl -w kernel.unprivileged_userns_clone=1 (plain users cannot start containers without it)"),
        ));
    }

    match Layout::detect() {
        Ok(l) => {
            let mode = l.mode();
            out.push(item(
                "cgroup version",
                mode != Mode::None,
                format!("{mode:?}").to_lowercase(),
                Some("mount cgroup2 on /sys/fs/cgroup"),
            ));
            for c in [
                "cpu", "cpuacct", "memory", "pids", "cpuset", "freezer", "blkio", "io",
            ] {
                if let Some(h) = l.hierarchy_for(c) {
                    out.push(item(
                        format!("cgroup controller: {c}"),
                        true,
                        format!("{:?} at {}", h.version, h.mountpoint.display()),
                        None,
                    ));
                }
            }
            for c in ["memory", "pids", "cpu"] {
                if l.hierarchy_for(c).is_none() {
                    out.push(item(
                        format!("cgroup controller: {c}"),
                        false,
                        "not mounted",
                        Some("enable the controller (cgroup_enable= on the kernel command line)"),
                    ));
                }
            }
            let euid = nix::unistd::geteuid();
            if euid.is_root() {
                out.push(item(
                    "cgroup delegation",
                    true,
                    "running as root: not needed",
                    None,
                ));
            } else {
                let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
                let helper = crate::usercgroup::helper_path();
                let bus = crate::userscope::bus_address();
                match cgroup::delegation(&l, &own, euid.as_raw(), &["memory", "pids", "cpu"]) {
                    Ok(base) => out.push(item("cgroup delegation", true, format!("delegated subtree {}", base.display()), None)),
                    Err(_) if l.mode() == cgroup::Mode::Unified && bus.is_some() => out.push(item(
                        "cgroup delegation",
                        true,
                        format!(
                            "each start asks your systemd manager ({}) for a transient scope with Delegate=yes",
                            bus.as_deref().unwrap_or_default()
                        ),
                        None,
                    )),
                    Err(why) => match crate::usercgroup::grant_route(
                        why.to_string(),
                        euid.as_raw(),
                        Path::new(crate::usercgroup::GRANT_FILE),
                        &helper,
                    ) {
                        crate::usercgroup::Route::Helper(h) => out.push(item(
                            "cgroup delegation",
                            true,
                            format!("granted in {}: each start enters /user/{} through {}", crate::usercgroup::GRANT_FILE, user_name(euid.as_raw()), h.display()),
                            None,
                        )),
                        crate::usercgroup::Route::Without(why) => out.push(item(
                            "cgroup delegation",
                            false,
                            why,
                            Some(if l.mode() == cgroup::Mode::Unified {
                                "run under systemd delegation (systemd-run --user --scope -p Delegate=yes), or have the admin grant cgroups in /etc/davit/cgroups"
                            } else {
                                "have the admin grant cgroups in /etc/davit/cgroups (docs/CGROUPS.md)"
                            }),
                        )),
                        crate::usercgroup::Route::Delegated => {}
                    },
                }
            }
        }
        Err(e) => out.push(item("cgroup version", false, e.to_string(), None)),
    }

    let uid = nix::unistd::getuid().as_raw();
    let name = user_name(uid);
    for (file, what) in [("/etc/subuid", "subuid"), ("/etc/subgid", "subgid")] {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        let r = subid_ranges(&text, &name, uid);
        let total: u64 = r.iter().map(|(_, n)| n).sum();
        out.push(item(
            format!("{what} ranges for {name}"),
            total >= 65536,
            if r.is_empty() {
                "none".to_owned()
            } else {
                r.iter()
                    .map(|(s, n)| format!("{s}+{n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
            Some(&format!(
                "usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {name}"
            )),
        ));
    }
    for helper in ["newuidmap", "newgidmap"] {
        let p = find_in_path(helper);
        let setuid = p
            .as_ref()
            .and_then(|p| std::fs::metadata(p).ok())
            .is_some_and(|m| m.uid() == 0 && m.permissions().mode() & 0o4000 != 0);
        out.push(item(
            helper,
            setuid,
            match &p {
                Some(p) if setuid => format!("{} (setuid root)", p.display()),
                Some(p) => format!("{} is not setuid root", p.display()),
                None => "not found".to_owned(),
            },
            Some("apt-get install uidmap"),
        ));
    }
    let clone3 = sys::clone3_supported();
    out.push(item(
        "clone3",
        clone3,
        if clone3 { "available" } else { "ENOSYS" },
        Some("kernel 5.3 or newer"),
    ));
    let root = std::fs::File::open("/");
    let openat2 = root
        .as_ref()
        .ok()
        .map(|r| {
            sys::openat2(
                std::os::fd::AsFd::as_fd(r),
                Path::new("."),
                libc::O_PATH,
                0,
                sys::RESOLVE_IN_ROOT,
            )
            .is_ok()
        })
        .unwrap_or(false);
    out.push(item(
        "openat2",
        openat2,
        if openat2 { "available" } else { "missing" },
        Some("kernel 5.6 or newer"),
    ));
    let pidfd = sys::pidfd_open(nix::unistd::getpid()).is_ok();
    out.push(item(
        "pidfd",
        pidfd,
        if pidfd { "available" } else { "missing" },
        Some("kernel 5.3 or newer"),
    ));
    let idmap = sys::mount_setattr_supported();
    out.push(item(
        "idmapped mounts",
        idmap,
        if idmap {
            "mount_setattr available (root only; ext4, xfs, btrfs, tmpfs)"
        } else {
            "no mount_setattr"
        },
        Some("kernel 5.12 or newer"),
    ));
    let fs = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    let overlay = fs
        .lines()
        .any(|l| l.split_whitespace().last() == Some("overlay"));
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let (maj, min) = kernel_version(&release);
    let userns_overlay = overlay && (maj, min) >= (5, 11);
    out.push(item(
        "overlayfs in a user namespace",
        userns_overlay,
        format!(
            "overlay {}, kernel {release}",
            if overlay {
                "registered"
            } else {
                "not registered"
            }
        ),
        Some("modprobe overlay; kernel 5.11 or newer"),
    ));
    out
}

/// The NAT items of `davit check` for the host config's bridge: whether
/// `ip_forward` is on and table `inet davit` holds the bridge's chains,
/// in this network namespace. Both are made at the first start on the
/// bridge and removed with its last container, so with none running
/// their absence is fine.
pub fn nat_items(host: &crate::net::HostNet) -> Vec<CheckItem> {
    use crate::net::{lease::LeaseStore, nat};
    if !host.nat {
        return vec![item(
            "network: NAT",
            true,
            "off (network.nat = false): containers reach the host and each other only",
            None,
        )];
    }
    let br = &host.bridge;
    let running = LeaseStore::new(&host.lease_dir, br)
        .peek()
        .map(|t| t.leases.iter().any(|l| l.is_live()))
        .unwrap_or(false);
    let fwd = nat::ip_forward();
    let mut out = vec![item(
        "network: ip_forward",
        fwd == Some(true) || !running,
        match fwd {
            Some(true) => "net.ipv4.ip_forward = 1".to_owned(),
            Some(false) if !running => format!(
                "net.ipv4.ip_forward = 0: davit sets it at the first start on {br}"
            ),
            Some(false) => format!("net.ipv4.ip_forward = 0 while containers run on {br}"),
            None => "no /proc/sys/net/ipv4/ip_forward".to_owned(),
        },
        Some("sysctl -w net.ipv4.ip_forward=1 (davit writes it at each start on the bridge; something else turned it off)"),
    )];
    if !nix::unistd::geteuid().is_root() {
        out.push(item(
            format!("network: nft table inet {} for {br}", nat::TABLE),
            true,
            "not readable as a plain user: run davit check as root",
            None,
        ));
        return out;
    }
    let want = [nat::post_chain(br), nat::fwd_chain(br)];
    let have = nat::chains().unwrap_or_default();
    let present = want.iter().all(|c| have.contains(c));
    out.push(item(
        format!("network: nft table inet {} for {br}", nat::TABLE),
        present || !running,
        if present {
            format!("chains {} and {} in place", want[0], want[1])
        } else if !running {
            format!("no container on {br}: made at the first start")
        } else {
            format!("chains {} / {} missing while containers run on {br}", want[0], want[1])
        },
        Some("restart the containers on the bridge (davit stop NAME; davit start NAME) to rewrite them; nft must be installed (apt-get install nftables)"),
    ));
    out
}

/// `(major, minor)` of a kernel release string like `6.18.44-fc`.
pub fn kernel_version(release: &str) -> (u32, u32) {
    let mut it = release
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty());
    let maj = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let min = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    (maj, min)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subuid_parsing() {
        let t = "alice:100000:65536\n1000:200000:10\nbob:300000:65536\n";
        assert_eq!(
            subid_ranges(t, "alice", 1000),
            vec![(100000, 65536), (200000, 10)]
        );
        assert!(subid_ranges(t, "carol", 1002).is_empty());
    }

    #[test]
    fn kernel_versions() {
        assert_eq!(kernel_version("6.18.44-fc-v669"), (6, 18));
        assert_eq!(kernel_version("5.4.0"), (5, 4));
    }

    #[test]
    fn this_host_reports_basics() {
        let items = check();
        let get = |n: &str| items.iter().find(|i| i.item == n).unwrap();
        assert!(get("namespace: user").ok);
        assert!(get("pidfd").ok);
        assert!(get("clone3").ok);
        assert!(get("openat2").ok);
        assert!(items
            .iter()
            .all(|i| i.ok || i.fix.is_some() || i.item == "cgroup version"));
    }
}
