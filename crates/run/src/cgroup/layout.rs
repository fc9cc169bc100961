//! Which cgroup hierarchies a host mounts (v1, v2 or both) and where a
//! process sits in each: parsing mountinfo and `/proc/PID/cgroup`.
#![forbid(unsafe_code)]

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// cgroup API version of one hierarchy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// Legacy per-controller hierarchies.
    V1,
    /// The unified hierarchy.
    V2,
}

/// How the host mounts cgroups overall.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Only v1 hierarchies.
    Legacy,
    /// Only the v2 hierarchy.
    Unified,
    /// Both; controllers are split between them.
    Hybrid,
    /// No cgroup filesystem is mounted.
    None,
}

/// One mounted cgroup hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    /// v1 or v2.
    pub version: Version,
    /// Where it is mounted, e.g. `/sys/fs/cgroup/memory`.
    pub mountpoint: PathBuf,
    /// The mount's root within the hierarchy (field 4 of mountinfo), `/`
    /// unless a cgroup namespace or a bind mount hides the top.
    pub root: PathBuf,
    /// Controllers bound to it. For v1 from the mount options (plus
    /// `name=...` for named hierarchies); for v2 from `cgroup.controllers`.
    pub controllers: Vec<String>,
    /// The v1 mount options naming the hierarchy (`cpu`, `none,name=systemd`),
    /// used to mount the same hierarchy inside the container.
    pub mount_options: String,
}

impl Hierarchy {
    /// Whether this hierarchy has `controller`.
    pub fn has(&self, controller: &str) -> bool {
        self.controllers.iter().any(|c| c == controller)
    }
}

/// The cgroup hierarchies of a host.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Layout {
    /// Every hierarchy, in mountinfo order, one per superblock.
    pub hierarchies: Vec<Hierarchy>,
}

const V1_KNOWN: [&str; 13] = [
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "devices",
    "freezer",
    "net_cls",
    "blkio",
    "perf_event",
    "net_prio",
    "hugetlb",
    "pids",
    "rdma",
];

/// Undo the octal escapes (`\040` for space) of `/proc/*/mountinfo`.
pub fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Layout {
    /// Parse `/proc/self/mountinfo` text. v2 controllers are read from the
    /// mount point's `cgroup.controllers` (so a fake root works).
    pub fn from_mountinfo(mountinfo: &str) -> Layout {
        let mut hierarchies: Vec<Hierarchy> = Vec::new();
        let mut seen_dev = BTreeSet::new();
        for line in mountinfo.lines() {
            let Some((pre, post)) = line.split_once(" - ") else {
                continue;
            };
            let pre: Vec<&str> = pre.split(' ').collect();
            let post: Vec<&str> = post.split(' ').collect();
            if pre.len() < 5 || post.len() < 3 {
                continue;
            }
            let (dev, root, mnt) = (
                pre[2],
                unescape_mountinfo(pre[3]),
                unescape_mountinfo(pre[4]),
            );
            let (fstype, superopts) = (post[0], post[2]);
            let version = match fstype {
                "cgroup" => Version::V1,
                "cgroup2" => Version::V2,
                _ => continue,
            };
            // A hierarchy bind-mounted twice appears twice; keep the first.
            if !seen_dev.insert(dev.to_owned()) {
                continue;
            }
            let mountpoint = PathBuf::from(mnt);
            let (controllers, mount_options) = match version {
                Version::V1 => {
                    let mut cs = Vec::new();
                    let mut named = Vec::new();
                    for o in superopts.split(',') {
                        if V1_KNOWN.contains(&o) || o.starts_with("name=") {
                            cs.push(o.to_owned());
                            named.push(o.to_owned());
                        }
                    }
                    let opts = if named.iter().all(|o| o.starts_with("name=")) {
                        format!("none,{}", named.join(","))
                    } else {
                        named.join(",")
                    };
                    (cs, opts)
                }
                Version::V2 => (
                    fs::read_to_string(mountpoint.join("cgroup.controllers"))
                        .map(|s| s.split_whitespace().map(str::to_owned).collect())
                        .unwrap_or_default(),
                    String::new(),
                ),
            };
            hierarchies.push(Hierarchy {
                version,
                mountpoint,
                root: PathBuf::from(root),
                controllers,
                mount_options,
            });
        }
        Layout { hierarchies }
    }

    /// Discover the layout of this process from `/proc/self/mountinfo`.
    ///
    /// # Errors
    /// [`Error::Read`] if mountinfo cannot be read.
    pub fn detect() -> Result<Layout> {
        let p = Path::new("/proc/self/mountinfo");
        let text = fs::read_to_string(p).map_err(|source| Error::Read {
            path: p.to_owned(),
            source,
        })?;
        Ok(Layout::from_mountinfo(&text))
    }

    /// Legacy, unified, hybrid or none.
    pub fn mode(&self) -> Mode {
        let v1 = self.hierarchies.iter().any(|h| h.version == Version::V1);
        let v2 = self.unified().is_some();
        match (v1, v2) {
            (true, true) => Mode::Hybrid,
            (true, false) => Mode::Legacy,
            (false, true) => Mode::Unified,
            (false, false) => Mode::None,
        }
    }

    /// The v2 hierarchy, if mounted.
    pub fn unified(&self) -> Option<&Hierarchy> {
        self.hierarchies.iter().find(|h| h.version == Version::V2)
    }

    /// The hierarchy that holds `controller`: its v1 mount if there is one,
    /// otherwise v2 if `cgroup.controllers` lists it.
    pub fn hierarchy_for(&self, controller: &str) -> Option<&Hierarchy> {
        self.hierarchies
            .iter()
            .find(|h| h.version == Version::V1 && h.has(controller))
            .or_else(|| self.unified().filter(|h| h.has(controller)))
    }
}

/// Parse `/proc/PID/cgroup` and return the path of the hierarchy `h`
/// (the `0::` line for v2, the line listing the same controllers for v1).
pub fn own_path(proc_cgroup: &str, h: &Hierarchy) -> Option<PathBuf> {
    for line in proc_cgroup.lines() {
        let mut f = line.splitn(3, ':');
        let (id, ctrls, path) = (f.next()?, f.next()?, f.next()?);
        let matches = match h.version {
            Version::V2 => id == "0" && ctrls.is_empty(),
            Version::V1 => {
                !ctrls.is_empty() && {
                    let a: BTreeSet<&str> = ctrls.split(',').collect();
                    let b: BTreeSet<&str> = h.controllers.iter().map(String::as_str).collect();
                    a == b
                }
            }
        };
        if matches {
            return Some(PathBuf::from(path));
        }
    }
    None
}

/// How a hierarchy is named in messages: its controllers, or `unified`.
pub fn hierarchy_name(h: &Hierarchy) -> String {
    match h.version {
        Version::V2 => "unified".to_owned(),
        Version::V1 => h.controllers.join(","),
    }
}

/// A fake cgroup root in a temporary directory, for the tests of every
/// cgroup module.
#[cfg(test)]
pub(super) mod fake {
    use std::fs;
    use std::path::Path;

    use super::Layout;

    /// A fake v2 root like /sys/fs/cgroup on a systemd host.
    pub(crate) fn fake_v2(root: &Path, controllers: &str) {
        fs::write(root.join("cgroup.controllers"), controllers).unwrap();
        fs::write(root.join("cgroup.subtree_control"), "").unwrap();
    }

    pub(crate) fn v2_layout(root: &Path) -> Layout {
        let mi = format!(
            "30 23 0:26 / {} rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate\n",
            root.display()
        );
        Layout::from_mountinfo(&mi)
    }

    /// The fake kernel does not populate new dirs; do what cgroupfs does.
    pub(crate) fn populate(dir: &Path, controllers: &str) {
        for (f, v) in [
            ("cgroup.controllers", controllers),
            ("cgroup.subtree_control", ""),
            ("memory.max", "max"),
            ("memory.swap.max", "max"),
            ("pids.max", "max"),
            ("cpu.max", "max 100000"),
            ("cgroup.procs", ""),
            ("cgroup.events", "populated 0\nfrozen 0\n"),
            ("cgroup.kill", ""),
            ("memory.stat", "anon 1000\nfile 2000\nkernel_stack 10\npagetables 20\nsock 30\nslab 40\nshmem 5\n"),
            ("cpu.stat", "usage_usec 1234\nuser_usec 1000\nsystem_usec 234\n"),
            ("io.stat", "8:0 rbytes=100 wbytes=50 rios=1 wios=1 dbytes=0 dios=0\n8:16 rbytes=1 wbytes=2 rios=1 wios=1\n"),
        ] {
            fs::write(dir.join(f), v).unwrap();
        }
    }

    pub(crate) const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
42 31 0:39 / /sys/fs/cgroup/net\\040cls rw,relatime - cgroup cgroup rw,net_cls,net_prio
";
}

#[cfg(test)]
mod tests {
    use super::fake::HYBRID;
    use super::*;

    #[test]
    fn parses_hybrid_mountinfo() {
        let l = Layout::from_mountinfo(HYBRID);
        assert_eq!(l.mode(), Mode::Hybrid);
        assert_eq!(l.hierarchies.len(), 7);
        assert_eq!(
            l.hierarchy_for("memory").unwrap().mountpoint,
            Path::new("/sys/fs/cgroup/memory")
        );
        assert_eq!(l.hierarchy_for("cpu").unwrap().version, Version::V1);
        let sd = l
            .hierarchies
            .iter()
            .find(|h| h.has("name=systemd"))
            .unwrap();
        assert_eq!(sd.mount_options, "none,name=systemd");
        let nc = l.hierarchy_for("net_prio").unwrap();
        assert_eq!(nc.mountpoint, Path::new("/sys/fs/cgroup/net cls"));
        assert_eq!(nc.mount_options, "net_cls,net_prio");
        assert!(l.hierarchy_for("io").is_none());
    }

    #[test]
    fn own_path_per_hierarchy() {
        let l = Layout::from_mountinfo(HYBRID);
        let pc = "9:name=systemd:/\n4:memory:/process_api/49\n1:cpu:/\n0::/x\n";
        let mem = l.hierarchy_for("memory").unwrap();
        assert_eq!(own_path(pc, mem).unwrap(), Path::new("/process_api/49"));
        let uni = l.unified().unwrap();
        assert_eq!(own_path(pc, uni).unwrap(), Path::new("/x"));
    }
}
