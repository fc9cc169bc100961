//! Image meta: LXC's container config as shipped in `meta.tar.xz`
//! (`config`, `config-user`), parsed into what davit can use, and the
//! placeholder substitution LXC applies to it and to template files.
#![forbid(unsafe_code)]

use serde::{Deserialize, Serialize};

pub use davit_types::MountEntry;
use davit_types::{IdMap, IdRange};

/// The filesystems an image's own config may mount: the kernel's virtual
/// ones, which show nothing of the host that the container's namespaces do
/// not already show (the kernel's user-namespace rules still apply).
pub const IMAGE_MOUNTABLE: [&str; 7] = [
    "tmpfs", "proc", "sysfs", "devpts", "mqueue", "cgroup", "cgroup2",
];

/// Why an image (a signed but untrusted `meta.tar.xz`) may not make
/// this mount, or `None` when it may. An image may mount only the
/// pseudo-filesystems of [`IMAGE_MOUNTABLE`]: a bind mount's source is
/// a host path, and a block filesystem's a host device, so either would
/// hand the container a piece of the host (`/ host none rbind` gave an
/// unprivileged container the host's whole `/`). Host directories come
/// only from the admin: `mounts` in `config.toml`.
pub fn refused_for_an_image(m: &MountEntry) -> Option<String> {
    if m.is_bind() {
        Some(format!(
            "binds the host path {} (an image may not bind host paths)",
            m.source
        ))
    } else if !IMAGE_MOUNTABLE.contains(&m.fstype.as_str()) {
        Some(format!(
            "mounts a {} filesystem from {} (an image may mount only {})",
            m.fstype,
            m.source,
            IMAGE_MOUNTABLE.join(", ")
        ))
    } else {
        None
    }
}

/// What davit takes from an LXC config; every other key is listed in
/// [`LxcConfig::ignored`] so `create` can say what it did not use.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LxcConfig {
    /// `lxc.arch` (a personality such as `x86_64`).
    pub arch: Option<String>,
    /// `lxc.uts.name`.
    pub uts_name: Option<String>,
    /// `lxc.idmap` lines (`u|g|b CONTAINER HOST LEN`), as one map; davit
    /// ignores it and maps the caller's own range.
    pub idmap: IdMap,
    /// `lxc.mount.entry` lines.
    pub mounts: Vec<MountEntry>,
    /// `lxc.init.cmd`, split on whitespace.
    pub init_cmd: Option<Vec<String>>,
    /// `lxc.cgroup.KEY` and `lxc.cgroup2.KEY` values: (key, value).
    pub cgroup: Vec<(String, String)>,
    /// `lxc.net.0.KEY` values: (key, value).
    pub net: Vec<(String, String)>,
    /// `lxc.tty.max` (`lxc.tty` in LXC 2): terminals besides the console.
    #[serde(default)]
    pub tty_max: Option<u32>,
    /// Lines davit does not use (`lxc.include` of distro files among them).
    pub ignored: Vec<String>,
}

/// Replaces LXC's placeholders (`LXC_NAME`, `LXC_PATH`, `LXC_ROOTFS`, ...)
/// the way the download template does: plain text replacement.
pub fn substitute(text: &str, vars: &[(String, String)]) -> String {
    let mut out = text.to_string();
    for (k, v) in vars {
        out = out.replace(k.as_str(), v);
    }
    out
}

fn parse_u32(s: &str) -> Option<u32> {
    s.parse().ok()
}

impl LxcConfig {
    /// Parses config text. Unknown keys, comments aside, land in `ignored`.
    pub fn parse(text: &str) -> LxcConfig {
        let mut c = LxcConfig::default();
        for raw in text.lines() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                c.ignored.push(line.to_string());
                continue;
            };
            let (key, value) = (key.trim(), value.trim());
            let used = match key {
                "lxc.arch" => {
                    c.arch = Some(value.to_string());
                    true
                }
                "lxc.uts.name" | "lxc.utsname" => {
                    c.uts_name = Some(value.to_string());
                    true
                }
                "lxc.idmap" | "lxc.id_map" => {
                    let f: Vec<&str> = value.split_whitespace().collect();
                    match (
                        f.first().and_then(|k| k.chars().next()),
                        f.get(1).and_then(|v| parse_u32(v)),
                        f.get(2).and_then(|v| parse_u32(v)),
                        f.get(3).and_then(|v| parse_u32(v)),
                    ) {
                        (
                            Some(kind @ ('u' | 'g' | 'b')),
                            Some(container),
                            Some(host),
                            Some(len),
                        ) if f.len() == 4 => {
                            let r = IdRange {
                                container,
                                host,
                                len,
                            };
                            if kind != 'g' {
                                c.idmap.uid.push(r);
                            }
                            if kind != 'u' {
                                c.idmap.gid.push(r);
                            }
                            true
                        }
                        _ => false,
                    }
                }
                "lxc.mount.entry" => {
                    let f: Vec<&str> = value.split_whitespace().collect();
                    if f.len() >= 4 {
                        // LXC writes the target relative to the rootfs.
                        c.mounts.push(MountEntry {
                            source: f[0].into(),
                            target: format!("/{}", f[1].trim_start_matches('/')).into(),
                            fstype: f[2].into(),
                            options: f[3].into(),
                        });
                        true
                    } else {
                        false
                    }
                }
                "lxc.tty.max" | "lxc.tty" => {
                    c.tty_max = parse_u32(value);
                    c.tty_max.is_some()
                }
                "lxc.init.cmd" | "lxc.init_cmd" => {
                    c.init_cmd = Some(value.split_whitespace().map(str::to_string).collect());
                    true
                }
                k if k.starts_with("lxc.cgroup2.") || k.starts_with("lxc.cgroup.") => {
                    let sub = k
                        .trim_start_matches("lxc.cgroup2.")
                        .trim_start_matches("lxc.cgroup.");
                    c.cgroup.push((sub.to_string(), value.to_string()));
                    true
                }
                k if k.starts_with("lxc.net.0.") || k.starts_with("lxc.network.") => {
                    let sub = k
                        .trim_start_matches("lxc.net.0.")
                        .trim_start_matches("lxc.network.");
                    c.net.push((sub.to_string(), value.to_string()));
                    true
                }
                _ => false,
            };
            if !used {
                c.ignored.push(line.to_string());
            }
        }
        c
    }

    /// Memory limit in bytes from `memory.max` / `memory.limit_in_bytes`.
    pub fn memory_limit(&self) -> Option<u64> {
        self.cgroup
            .iter()
            .rev()
            .find(|(k, _)| k == "memory.max" || k == "memory.limit_in_bytes")
            .and_then(|(_, v)| parse_size(v))
    }

    /// Pids limit from `pids.max`.
    pub fn pids_limit(&self) -> Option<u64> {
        self.cgroup
            .iter()
            .rev()
            .find(|(k, _)| k == "pids.max")
            .and_then(|(_, v)| v.parse().ok())
    }

    /// CPUs from `cpu.max` (`QUOTA PERIOD`) or `cpu.cfs_quota_us` / `cpu.cfs_period_us`.
    pub fn cpus(&self) -> Option<f64> {
        let get = |k: &str| {
            self.cgroup
                .iter()
                .rev()
                .find(|(kk, _)| kk == k)
                .map(|(_, v)| v.as_str())
        };
        if let Some(v) = get("cpu.max") {
            let mut f = v.split_whitespace();
            let q: f64 = f.next()?.parse().ok()?;
            let p: f64 = f.next().unwrap_or("100000").parse().ok()?;
            return (p > 0.0).then(|| q / p);
        }
        let q: f64 = get("cpu.cfs_quota_us")?.parse().ok()?;
        let p: f64 = get("cpu.cfs_period_us").unwrap_or("100000").parse().ok()?;
        (q > 0.0 && p > 0.0).then(|| q / p)
    }
}

/// `512M`, `1G`, `1048576`: bytes.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().ok()?;
    let mul: u64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        "T" | "TB" | "TIB" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(mul)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_may_mount_pseudo_filesystems_only() {
        let m = |s: &str, t: &str, o: &str| MountEntry {
            source: s.into(),
            target: "x".into(),
            fstype: t.into(),
            options: o.into(),
        };
        for ok in [
            m("tmpfs", "tmpfs", "size=64m"),
            m("proc", "proc", "defaults"),
            m("cgroup2", "cgroup2", "rw"),
        ] {
            assert_eq!(refused_for_an_image(&ok), None, "{ok:?}");
        }
        let why = refused_for_an_image(&m("/", "none", "rbind,create=dir")).unwrap();
        assert!(why.contains("host path /"), "{why}");
        // A bind spelled through the options, or a pseudo type with bind.
        assert!(refused_for_an_image(&m("/etc", "tmpfs", "bind")).is_some());
        assert!(refused_for_an_image(&m("/srv", "bind", "")).is_some());
        let why = refused_for_an_image(&m("/dev/sda1", "ext4", "rw")).unwrap();
        assert!(why.contains("ext4 filesystem from /dev/sda1"), "{why}");
    }

    #[test]
    fn parses_the_keys_davit_uses_and_lists_the_rest() {
        let c = LxcConfig::parse(
            "# Distribution configuration\n\
             lxc.include = LXC_TEMPLATE_CONFIG/common.conf\n\
             lxc.arch = x86_64\n\
             lxc.uts.name = web\n\
             lxc.idmap = u 0 100000 65536\n\
             lxc.idmap = g 0 100000 65536\n\
             lxc.mount.entry = /srv/data srv/data none bind,create=dir 0 0\n\
             lxc.init.cmd = /sbin/init --log-level=info\n\
             lxc.tty.max = 2\n\
             lxc.cgroup2.memory.max = 512M\n\
             lxc.cgroup.pids.max = 100\n\
             lxc.cgroup2.cpu.max = 150000 100000\n\
             lxc.net.0.type = veth\n\
             lxc.net.0.link = lxcbr0\n\
             lxc.apparmor.profile = generated\n",
        );
        assert_eq!(c.arch.as_deref(), Some("x86_64"));
        assert_eq!(c.uts_name.as_deref(), Some("web"));
        assert_eq!(c.idmap, IdMap::single(100000, 65536));
        assert_eq!(c.mounts[0].target, std::path::Path::new("/srv/data"));
        assert_eq!(
            c.init_cmd.as_deref().unwrap(),
            ["/sbin/init", "--log-level=info"]
        );
        assert_eq!(c.tty_max, Some(2));
        assert_eq!(c.memory_limit(), Some(512 << 20));
        assert_eq!(c.pids_limit(), Some(100));
        assert_eq!(c.cpus(), Some(1.5));
        assert_eq!(
            c.net,
            vec![
                ("type".into(), "veth".into()),
                ("link".into(), "lxcbr0".into())
            ]
        );
        assert_eq!(
            c.ignored,
            vec![
                "lxc.include = LXC_TEMPLATE_CONFIG/common.conf",
                "lxc.apparmor.profile = generated"
            ]
        );
    }

    #[test]
    fn legacy_keys_and_v1_limits() {
        let c = LxcConfig::parse("lxc.utsname = old\nlxc.id_map = b 0 200000 65536\nlxc.cgroup.memory.limit_in_bytes = 268435456\nlxc.cgroup.cpu.cfs_quota_us = 50000\nlxc.idmap = x 1 2\n");
        assert_eq!(c.uts_name.as_deref(), Some("old"));
        assert_eq!(c.idmap, IdMap::single(200000, 65536), "b maps both");
        assert_eq!(c.memory_limit(), Some(256 << 20));
        assert_eq!(c.cpus(), Some(0.5));
        assert_eq!(c.ignored, vec!["lxc.idmap = x 1 2"]);
    }

    #[test]
    fn substitution_is_plain_text() {
        let vars = vec![
            ("LXC_NAME".to_string(), "web".to_string()),
            (
                "LXC_PATH".to_string(),
                "/var/lib/davit/containers/web".to_string(),
            ),
        ];
        assert_eq!(
            substitute("127.0.1.1\tLXC_NAME\nLXC_PATH/x\n", &vars),
            "127.0.1.1\tweb\n/var/lib/davit/containers/web/x\n"
        );
        assert_eq!(parse_size("1G"), Some(1 << 30));
        assert_eq!(parse_size("12Q"), None);
    }
}
