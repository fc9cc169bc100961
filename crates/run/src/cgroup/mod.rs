//! cgroup v1, v2 and hybrid hosts: discovery, creation, limits, stats, kill
//! and removal.
//!
//! Nothing here reaches for `/sys/fs/cgroup` by itself: discovery parses the
//! mountinfo text it is given, and every operation works on the paths found
//! there, so tests point it at a temporary directory laid out like a cgroup
//! root. On a hybrid host each controller is used where it is mounted, v1
//! first (as youki does); the v2 hierarchy is still joined so the container
//! gets its own `cgroup2` view.
#![forbid(unsafe_code)]

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::config::Limits;
use crate::error::{Error, Result};

/// The controllers davit manages on v2 (enabled top-down in ancestors).
pub const V2_CONTROLLERS: [&str; 4] = ["cpu", "memory", "pids", "io"];

/// The CFS period davit uses for CPU limits, in microseconds.
pub const CPU_PERIOD_US: u64 = 100_000;

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

/// The files of a cgroup directory that whoever is handed it must own: the
/// task files on v1, and on v2 those the kernel lists as delegatable
/// (`/sys/kernel/cgroup/delegate`), as LXC and systemd hand them over.
pub fn delegated_files(version: Version) -> Vec<String> {
    match version {
        Version::V1 => vec!["cgroup.procs".to_owned(), "tasks".to_owned()],
        Version::V2 => fs::read_to_string("/sys/kernel/cgroup/delegate")
            .unwrap_or_else(|_| "cgroup.procs\ncgroup.threads\ncgroup.subtree_control\n".into())
            .split_whitespace()
            .map(str::to_owned)
            .collect(),
    }
}

/// Whether `dir` and the files that move tasks (and for v2 enable
/// controllers) are owned by `uid`: a subtree delegated to that user.
fn owned_by(dir: &Path, version: Version, uid: u32) -> bool {
    let files: &[&str] = match version {
        Version::V1 => &["", "cgroup.procs", "tasks"],
        Version::V2 => &["", "cgroup.procs", "cgroup.subtree_control"],
    };
    files.iter().all(|f| {
        let p = if f.is_empty() {
            dir.to_path_buf()
        } else {
            dir.join(f)
        };
        fs::metadata(p).map(|m| m.uid() == uid).unwrap_or(false)
    })
}

/// Find the cgroup subtree delegated to an unprivileged `uid`, the same
/// path in every hierarchy.
///
/// For each hierarchy, walks from the caller's own cgroup (from
/// `proc_self_cgroup`) towards the root and takes the top-most directory
/// owned by `uid` (with its task files, and on v2 its
/// `cgroup.subtree_control`): a unit systemd made with `Delegate=yes`, or
/// the `/user/USER` that the setuid `davit-cgroup` makes on a v1 or hybrid
/// host. Returns it relative to the mount points. `needed` lists the
/// controllers the limits need; those on v2 must be available there.
///
/// # Errors
/// A sentence saying why there can be no cgroup (a hierarchy not
/// delegated, the unified one holding processes, a controller missing),
/// for the CLI to print once.
pub fn delegation(
    layout: &Layout,
    proc_self_cgroup: &str,
    uid: u32,
    needed: &[&str],
) -> std::result::Result<PathBuf, String> {
    if layout.hierarchies.is_empty() {
        return Err("no cgroup filesystem is mounted".to_owned());
    }
    let mut base: Option<(PathBuf, String)> = None;
    let mut not = Vec::new();
    let mut own_v2 = None;
    for h in &layout.hierarchies {
        let Some(own) = own_path(proc_self_cgroup, h) else {
            not.push(format!(
                "{} (no line in /proc/self/cgroup)",
                hierarchy_name(h)
            ));
            continue;
        };
        let rel = own.strip_prefix(&h.root).unwrap_or(&own).to_path_buf();
        if h.version == Version::V2 {
            own_v2 = Some(rel.clone());
        }
        let mut best: Option<PathBuf> = None;
        let mut cur = rel.clone();
        loop {
            if !owned_by(&join_rel(&h.mountpoint, &cur), h.version, uid) {
                break;
            }
            best = Some(cur.clone());
            if !cur.pop() || cur.as_os_str().is_empty() || cur == Path::new("/") {
                break;
            }
        }
        match (best, &base) {
            (None, _) => not.push(format!("{} ({})", hierarchy_name(h), own.display())),
            (Some(b), None) => base = Some((b, hierarchy_name(h))),
            (Some(b), Some((x, first))) if b != *x => {
                return Err(format!(
                    "the cgroups delegated to uid {uid} differ between hierarchies ({} in {first}, {} in {})",
                    x.display(),
                    b.display(),
                    hierarchy_name(h)
                ))
            }
            _ => {}
        }
    }
    if !not.is_empty() {
        if layout.mode() == Mode::Unified {
            let own = layout
                .unified()
                .and_then(|h| own_path(proc_self_cgroup, h))
                .unwrap_or_else(|| PathBuf::from("/"));
            return Err(format!(
                "cgroup {} is not delegated to uid {uid}; run davit inside a delegated unit (systemd-run --user --scope -p Delegate=yes)",
                own.display()
            ));
        }
        return Err(format!(
            "no cgroup is delegated to uid {uid} in the {} hierarch{}: {}",
            if layout.mode() == Mode::Hybrid {
                "v1 and hybrid"
            } else {
                "v1"
            },
            if not.len() == 1 { "y" } else { "ies" },
            not.join(", ")
        ));
    }
    let Some((base, _)) = base else {
        return Err("no cgroup filesystem is mounted".to_owned());
    };
    let Some(h) = layout.unified() else {
        return Ok(base);
    };
    // cgroup v2 enables no controller below a non-root cgroup that holds
    // processes (EBUSY on cgroup.subtree_control): a caller sitting in the
    // delegated cgroup itself gets no limits, and is told why, instead of a
    // failed start.
    let procs =
        fs::read_to_string(join_rel(&h.mountpoint, &base).join("cgroup.procs")).unwrap_or_default();
    if procs.lines().any(|l| !l.trim().is_empty()) {
        return Err(format!(
            "the delegated cgroup {} holds processes{}, and cgroup v2 enables no controllers below a cgroup with processes; run davit from a leaf cgroup below it (systemd-run --user --scope -p Delegate=yes)",
            base.display(),
            if own_v2.as_ref() == Some(&base) { ", this one among them" } else { "" }
        ));
    }
    let avail: Vec<String> =
        fs::read_to_string(join_rel(&h.mountpoint, &base).join("cgroup.controllers"))
            .map(|s| s.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default();
    // Controllers a v1 hierarchy provides are used there (hybrid hosts).
    let missing: Vec<&str> = needed
        .iter()
        .copied()
        .filter(|c| {
            !layout
                .hierarchies
                .iter()
                .any(|x| x.version == Version::V1 && x.has(c))
        })
        .filter(|c| !avail.iter().any(|a| a == c))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "the delegated cgroup {} lacks the {} controller(s)",
            base.display(),
            missing.join(", ")
        ));
    }
    Ok(base)
}

/// Controllers a set of limits needs.
pub fn needed_controllers(limits: &Limits) -> Vec<&'static str> {
    let mut v = Vec::new();
    if limits.memory.is_some() {
        v.push("memory");
    }
    if limits.pids.is_some() {
        v.push("pids");
    }
    if limits.cpus.is_some() {
        v.push("cpu");
    }
    v
}

fn join_rel(base: &Path, rel: &Path) -> PathBuf {
    let mut p = base.to_path_buf();
    for c in rel.components() {
        if let Component::Normal(n) = c {
            p.push(n);
        }
    }
    p
}

fn cg_err(op: impl Into<String>, path: &Path, source: io::Error) -> Error {
    Error::Cgroup {
        op: op.into(),
        path: path.to_owned(),
        source,
    }
}

fn write_file(path: &Path, value: &str) -> Result<()> {
    fs::write(path, value).map_err(|e| cg_err(format!("write {value:?} to"), path, e))
}

fn read_file(path: &Path) -> Result<String> {
    fs::read_to_string(path).map_err(|e| cg_err("read", path, e))
}

fn read_u64(path: &Path) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn keyed(text: &str, keys: &[&str]) -> Option<u64> {
    let mut sum = 0u64;
    let mut found = false;
    for line in text.lines() {
        let mut f = line.split_whitespace();
        if let (Some(k), Some(v)) = (f.next(), f.next()) {
            if keys.contains(&k) {
                sum += v.parse::<u64>().ok()?;
                found = true;
            }
        }
    }
    found.then_some(sum)
}

/// One directory of a container's cgroup, in one hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupDir {
    /// The hierarchy.
    pub hierarchy: Hierarchy,
    /// Absolute directory, e.g. `/sys/fs/cgroup/pids/davit/web`.
    pub path: PathBuf,
}

/// Usage counters for `info`; `None` where the host has no such file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// CPU time in nanoseconds.
    pub cpu_ns: Option<u64>,
    /// Memory use in bytes.
    pub memory: Option<u64>,
    /// Kernel memory use in bytes.
    pub kmem: Option<u64>,
    /// Block I/O in bytes, read plus write.
    pub blkio: Option<u64>,
}

/// A container's cgroup: one directory per hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup {
    dirs: Vec<CgroupDir>,
    /// Container root's host uid and gid when a plain user handed the
    /// cgroup over ([`crate::handover`]): what container root made below
    /// is then removed from the helper namespace.
    handed_to: Option<(u32, u32)>,
}

impl Cgroup {
    /// The cgroup at `rel` (e.g. `davit/web`) in every hierarchy of
    /// `layout`, without touching the filesystem.
    pub fn at(layout: &Layout, rel: &Path) -> Cgroup {
        Cgroup {
            dirs: layout
                .hierarchies
                .iter()
                .map(|h| CgroupDir {
                    hierarchy: h.clone(),
                    path: join_rel(&h.mountpoint, rel),
                })
                .collect(),
            handed_to: None,
        }
    }

    /// The same cgroup, recorded as handed to container root `(uid, gid)`
    /// by a plain user (state's `cgroup_owner`).
    pub fn handed_to(mut self, owner: Option<(u32, u32)>) -> Cgroup {
        self.handed_to = owner;
        self
    }

    /// Rebuild from recorded paths (state file) and the current layout;
    /// paths whose hierarchy is no longer mounted are dropped.
    pub fn from_paths(layout: &Layout, paths: &[PathBuf]) -> Cgroup {
        let mut dirs = Vec::new();
        for p in paths {
            if let Some(h) = layout
                .hierarchies
                .iter()
                .filter(|h| p.starts_with(&h.mountpoint))
                .max_by_key(|h| h.mountpoint.as_os_str().len())
            {
                dirs.push(CgroupDir {
                    hierarchy: h.clone(),
                    path: p.clone(),
                });
            }
        }
        Cgroup {
            dirs,
            handed_to: None,
        }
    }

    /// Create the cgroup at `rel` in every hierarchy and apply `limits`.
    ///
    /// v2: every missing directory is created and the wanted controllers
    /// ([`V2_CONTROLLERS`], as far as available) are enabled in each
    /// ancestor's `cgroup.subtree_control` from `rel`'s first component down,
    /// never in the leaf. Directories above `rel` (the root, or a delegated
    /// base given as a prefix of `rel` and as `writable_from`) are only
    /// written from `writable_from` on.
    /// v1: one directory per hierarchy; new cpuset directories copy their
    /// parent's `cpuset.cpus` and `cpuset.mems`.
    ///
    /// On error, what was created is removed again.
    ///
    /// # Errors
    /// [`Error::Cgroup`] naming the file, or [`Error::CgroupState`] when a
    /// limit needs a controller no hierarchy has.
    pub fn create(
        layout: &Layout,
        rel: &Path,
        writable_from: &Path,
        limits: &Limits,
    ) -> Result<Cgroup> {
        for c in needed_controllers(limits) {
            if layout.hierarchy_for(c).is_none() {
                return Err(Error::CgroupState {
                    reason: format!("no mounted cgroup hierarchy has the {c} controller"),
                });
            }
        }
        let cg = Cgroup::at(layout, rel);
        if cg.dirs.is_empty() {
            return Err(Error::CgroupState {
                reason: "no cgroup filesystem is mounted".to_owned(),
            });
        }
        // A concurrent remove() of the last sibling may rmdir the shared
        // prefix directory between our two mkdirs: retry on ENOENT.
        let mut r = cg.create_dirs(rel, writable_from);
        for _ in 0..3 {
            match &r {
                Err(e) if e.errno() == Some(nix::errno::Errno::ENOENT) => {
                    r = cg.create_dirs(rel, writable_from)
                }
                _ => break,
            }
        }
        let r = r.and_then(|()| cg.apply_limits(limits));
        if let Err(e) = r {
            let _ = cg.remove();
            return Err(e);
        }
        Ok(cg)
    }

    fn create_dirs(&self, rel: &Path, writable_from: &Path) -> Result<()> {
        let parts: Vec<&std::ffi::OsStr> = rel
            .components()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(n),
                _ => None,
            })
            .collect();
        let skip = writable_from
            .components()
            .filter(|c| matches!(c, Component::Normal(_)))
            .count();
        for d in &self.dirs {
            let h = &d.hierarchy;
            let mut cur = h.mountpoint.clone();
            for (i, part) in parts.iter().enumerate() {
                let parent = cur.clone();
                cur.push(part);
                if h.version == Version::V2 && i >= skip {
                    enable_controllers(&parent)?;
                }
                match fs::create_dir(&cur) {
                    Ok(()) => {
                        if h.version == Version::V1 && h.has("cpuset") {
                            copy_cpuset(&parent, &cur)?;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(cg_err("mkdir", &cur, e)),
                }
            }
        }
        Ok(())
    }

    /// Write the limits to the right files for each version. A limit of
    /// `0` removes that limit (`davit set NAME --memory 0`); a limit left
    /// `None` is not touched.
    ///
    /// # Errors
    /// [`Error::Cgroup`] naming the file (a memory limit below what the
    /// container uses and cannot reclaim reads `EBUSY` on v1).
    pub fn apply_limits(&self, limits: &Limits) -> Result<()> {
        if let Some(mem) = limits.memory {
            let d = self.dir_for("memory")?;
            match d.hierarchy.version {
                Version::V2 => {
                    let v = if mem == 0 {
                        "max".into()
                    } else {
                        mem.to_string()
                    };
                    write_file(&d.path.join("memory.max"), &v)?;
                    let swap = d.path.join("memory.swap.max");
                    if swap.exists() {
                        write_file(&swap, if mem == 0 { "max" } else { "0" })?;
                    }
                }
                Version::V1 => {
                    // memsw may never be below the limit: raise it first,
                    // lower it last.
                    let v = if mem == 0 {
                        "-1".into()
                    } else {
                        mem.to_string()
                    };
                    let limit = d.path.join("memory.limit_in_bytes");
                    let memsw = d.path.join("memory.memsw.limit_in_bytes");
                    let has_memsw = memsw.exists();
                    let raising = mem == 0 || read_u64(&memsw).is_some_and(|cur| mem > cur);
                    if has_memsw && raising {
                        write_file(&memsw, &v)?;
                    }
                    write_file(&limit, &v)?;
                    if has_memsw && !raising {
                        write_file(&memsw, &v)?;
                    }
                }
            }
        }
        if let Some(p) = limits.pids {
            let d = self.dir_for("pids")?;
            let v = if p == 0 { "max".into() } else { p.to_string() };
            write_file(&d.path.join("pids.max"), &v)?;
        }
        if let Some(c) = limits.cpus {
            let quota = ((c * CPU_PERIOD_US as f64).round() as u64).max(1000);
            let d = self.dir_for("cpu")?;
            match d.hierarchy.version {
                Version::V2 => {
                    let v = if c == 0.0 {
                        format!("max {CPU_PERIOD_US}")
                    } else {
                        format!("{quota} {CPU_PERIOD_US}")
                    };
                    write_file(&d.path.join("cpu.max"), &v)?
                }
                Version::V1 => {
                    write_file(
                        &d.path.join("cpu.cfs_period_us"),
                        &CPU_PERIOD_US.to_string(),
                    )?;
                    let v = if c == 0.0 {
                        "-1".into()
                    } else {
                        quota.to_string()
                    };
                    write_file(&d.path.join("cpu.cfs_quota_us"), &v)?;
                }
            }
        }
        Ok(())
    }

    fn dir_for(&self, controller: &str) -> Result<&CgroupDir> {
        self.find(controller).ok_or_else(|| Error::CgroupState {
            reason: format!("no cgroup directory for the {controller} controller"),
        })
    }

    fn find(&self, controller: &str) -> Option<&CgroupDir> {
        self.dirs
            .iter()
            .find(|d| d.hierarchy.version == Version::V1 && d.hierarchy.has(controller))
            .or_else(|| {
                self.dirs
                    .iter()
                    .find(|d| d.hierarchy.version == Version::V2 && d.hierarchy.has(controller))
            })
    }

    /// The directories, one per hierarchy.
    pub fn dirs(&self) -> &[CgroupDir] {
        &self.dirs
    }

    /// The directory paths (for the state file).
    pub fn paths(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.path.clone()).collect()
    }

    /// The v2 leaf directory, if there is a v2 hierarchy.
    pub fn v2_dir(&self) -> Option<&Path> {
        self.dirs
            .iter()
            .find(|d| d.hierarchy.version == Version::V2)
            .map(|d| d.path.as_path())
    }

    /// Only the devices in `rules` may be opened by tasks in this cgroup:
    /// the v1 `devices` controller where the host has one, else a device
    /// program on the v2 directory of a pure v2 host.
    ///
    /// # Errors
    /// As [`crate::devices::apply_v1`] and [`crate::devices::apply_v2`];
    /// [`Error::CgroupState`] when neither is possible.
    pub fn restrict_devices(&self, rules: &[crate::devices::Rule]) -> Result<()> {
        if let Some(d) = self
            .dirs
            .iter()
            .find(|d| d.hierarchy.version == Version::V1 && d.hierarchy.has("devices"))
        {
            return crate::devices::apply_v1(&d.path, rules);
        }
        match self.v2_dir() {
            Some(dir) if self.v2_only() => crate::devices::apply_v2(dir, rules),
            _ => Err(Error::CgroupState {
                reason: "no devices controller on v1 and no pure v2 hierarchy for a device program"
                    .to_owned(),
            }),
        }
    }

    /// The directory in the named v1 hierarchy `name=NAME` (e.g.
    /// `name=systemd`), if the host mounts one.
    pub fn named_v1_dir(&self, name: &str) -> Option<&Path> {
        let want = format!("name={name}");
        self.dirs
            .iter()
            .find(|d| d.hierarchy.version == Version::V1 && d.hierarchy.has(&want))
            .map(|d| d.path.as_path())
    }

    /// Whether every controller lives on v2 (so `CLONE_INTO_CGROUP` alone
    /// places a task in all of its directories).
    pub fn v2_only(&self) -> bool {
        self.dirs.iter().all(|d| d.hierarchy.version == Version::V2)
    }

    /// Move `pid` into every directory (writes `cgroup.procs`).
    ///
    /// # Errors
    /// [`Error::Cgroup`] naming the `cgroup.procs` file.
    pub fn add_pid(&self, pid: i32) -> Result<()> {
        self.add_pid_except(pid, false)
    }

    /// Move `pid` into every directory, or every v1 directory only.
    ///
    /// # Errors
    /// As [`Cgroup::add_pid`].
    pub fn add_pid_except(&self, pid: i32, skip_v2: bool) -> Result<()> {
        for d in &self.dirs {
            if skip_v2 && d.hierarchy.version == Version::V2 {
                continue;
            }
            write_file(&d.path.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// Move an attaching `pid` into the container's cgroup: every leaf,
    /// except that on v2 a leaf whose init enabled controllers for its own
    /// sub-cgroups (systemd does) takes no process (`EBUSY`, no internal
    /// processes): there `pid` joins init's own cgroup below the leaf
    /// (`init.scope`), as `runc exec` does.
    ///
    /// # Errors
    /// As [`Cgroup::add_pid`].
    pub fn attach_pid(&self, pid: i32, init: i32) -> Result<()> {
        for d in &self.dirs {
            let r = write_file(&d.path.join("cgroup.procs"), &pid.to_string());
            match r {
                Err(e)
                    if d.hierarchy.version == Version::V2
                        && e.errno() == Some(nix::errno::Errno::EBUSY) =>
                {
                    let text =
                        fs::read_to_string(format!("/proc/{init}/cgroup")).unwrap_or_default();
                    let Some(own) = own_path(&text, &d.hierarchy) else {
                        return Err(e);
                    };
                    let rel = own.strip_prefix(&d.hierarchy.root).unwrap_or(&own);
                    let dir = join_rel(&d.hierarchy.mountpoint, rel);
                    if dir == d.path || !dir.starts_with(&d.path) {
                        return Err(e);
                    }
                    write_file(&dir.join("cgroup.procs"), &pid.to_string())?;
                }
                r => r?,
            }
        }
        Ok(())
    }

    /// Every pid in the cgroup, across hierarchies.
    /// An init such as systemd makes sub-cgroups of its own (`init.scope`,
    /// `system.slice/…`) in the hierarchies it may write: they count too.
    pub fn procs(&self) -> Vec<i32> {
        let mut set = BTreeSet::new();
        for d in &self.dirs {
            for dir in std::iter::once(d.path.clone()).chain(descendants(&d.path)) {
                if let Ok(s) = fs::read_to_string(dir.join("cgroup.procs")) {
                    set.extend(s.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
                }
            }
        }
        set.into_iter().collect()
    }

    /// Whether no task is left (v2 `cgroup.events` `populated 0`, or empty
    /// `cgroup.procs` everywhere).
    pub fn is_empty(&self) -> bool {
        for d in &self.dirs {
            if d.hierarchy.version == Version::V2 {
                if let Ok(ev) = fs::read_to_string(d.path.join("cgroup.events")) {
                    if keyed(&ev, &["populated"]).unwrap_or(0) != 0 {
                        return false;
                    }
                    continue;
                }
            }
            for dir in std::iter::once(d.path.clone()).chain(descendants(&d.path)) {
                if let Ok(s) = fs::read_to_string(dir.join("cgroup.procs")) {
                    if s.lines().any(|l| !l.trim().is_empty()) {
                        return false;
                    }
                }
            }
        }
        true
    }

    /// Counters for `info`, from the right files for each version.
    pub fn stats(&self) -> Stats {
        let mut st = Stats::default();
        if let Some(d) = self.find("cpuacct").or_else(|| self.find("cpu")) {
            st.cpu_ns = match d.hierarchy.version {
                Version::V1 => read_u64(&d.path.join("cpuacct.usage")),
                Version::V2 => None,
            };
        }
        if st.cpu_ns.is_none() {
            if let Some(v2) = self.v2_dir() {
                st.cpu_ns = fs::read_to_string(v2.join("cpu.stat"))
                    .ok()
                    .and_then(|s| keyed(&s, &["usage_usec"]))
                    .map(|u| u * 1000);
            }
        }
        if let Some(d) = self.find("memory") {
            match d.hierarchy.version {
                Version::V1 => {
                    st.memory = read_u64(&d.path.join("memory.usage_in_bytes"));
                    st.kmem = read_u64(&d.path.join("memory.kmem.usage_in_bytes"));
                }
                Version::V2 => {
                    let s = fs::read_to_string(d.path.join("memory.stat")).unwrap_or_default();
                    st.memory = keyed(&s, &["anon", "file"]);
                    st.kmem = keyed(&s, &["kernel_stack", "pagetables", "sock", "slab"]);
                }
            }
        }
        if let Some(d) = self.find("blkio").or_else(|| self.find("io")) {
            st.blkio = match d.hierarchy.version {
                Version::V1 => fs::read_to_string(d.path.join("blkio.throttle.io_service_bytes"))
                    .ok()
                    .and_then(|s| {
                        s.lines().find_map(|l| {
                            l.strip_prefix("Total ").and_then(|v| v.trim().parse().ok())
                        })
                    }),
                Version::V2 => fs::read_to_string(d.path.join("io.stat")).ok().map(|s| {
                    s.split_whitespace()
                        .filter_map(|kv| {
                            let (k, v) = kv.split_once('=')?;
                            matches!(k, "rbytes" | "wbytes").then(|| v.parse::<u64>().ok())?
                        })
                        .sum()
                }),
            };
        }
        st
    }

    /// Kill every task: v2 `cgroup.kill` where present; otherwise freeze
    /// (v1 freezer or v2 `cgroup.freeze`), SIGKILL each task, thaw (frozen
    /// tasks do not die until thawed).
    ///
    /// # Errors
    /// [`Error::Cgroup`] when the kill or freezer file cannot be written.
    pub fn kill(&self) -> Result<()> {
        if let Some(v2) = self.v2_dir() {
            let k = v2.join("cgroup.kill");
            if k.exists() && v2.exists() {
                write_file(&k, "1")?;
                if self.v2_only() {
                    return Ok(());
                }
            }
        }
        let freezer = self.freezer();
        if let Some((f, frozen, _)) = &freezer {
            write_file(f, frozen)?;
            let deadline = Instant::now() + Duration::from_secs(1);
            while Instant::now() < deadline {
                let done = if *frozen == "1" {
                    // v2 (kernels 5.2 to 5.13, which have no cgroup.kill):
                    // cgroup.freeze reads back what was asked at once; the
                    // tasks are frozen when cgroup.events says `frozen 1`.
                    f.parent()
                        .and_then(|d| fs::read_to_string(d.join("cgroup.events")).ok())
                        .and_then(|ev| keyed(&ev, &["frozen"]))
                        == Some(1)
                } else {
                    fs::read_to_string(f).unwrap_or_default().trim() == *frozen
                };
                if done {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        for pid in self.procs() {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        if let Some((f, _, thawed)) = &freezer {
            write_file(f, thawed)?;
        }
        Ok(())
    }

    /// The freezer file and its frozen and thawed values: the v1 `freezer`
    /// controller's `freezer.state`, else v2's `cgroup.freeze`.
    fn freezer(&self) -> Option<(PathBuf, &'static str, &'static str)> {
        self.dirs
            .iter()
            .find(|d| d.hierarchy.version == Version::V1 && d.hierarchy.has("freezer"))
            .map(|d| (d.path.join("freezer.state"), "FROZEN", "THAWED"))
            .or_else(|| {
                self.v2_dir()
                    .map(|p| p.join("cgroup.freeze"))
                    .filter(|p| p.exists())
                    .map(|p| (p, "1", "0"))
            })
            .filter(|(p, _, _)| p.exists())
    }

    /// Whether every task is frozen: v1 `freezer.state` reads `FROZEN`
    /// (not `FREEZING`), v2 `cgroup.events` says `frozen 1`. `None` without
    /// a freezer.
    pub fn frozen(&self) -> Option<bool> {
        let (f, frozen, _) = self.freezer()?;
        if frozen == "1" {
            let ev = fs::read_to_string(f.parent()?.join("cgroup.events")).ok()?;
            Some(keyed(&ev, &["frozen"]) == Some(1))
        } else {
            Some(fs::read_to_string(&f).ok()?.trim() == frozen)
        }
    }

    /// Freezes every task of the cgroup (`lxc-freeze`), or thaws them, and
    /// waits up to `timeout` until the kernel reports it done.
    ///
    /// # Errors
    /// [`Error::CgroupState`] without a freezer (v1 `freezer` or v2),
    /// [`Error::Cgroup`] if its file cannot be written, [`Error::Timeout`].
    pub fn set_frozen(&self, freeze: bool, timeout: Duration) -> Result<()> {
        let (f, frozen, thawed) = self.freezer().ok_or_else(|| Error::CgroupState {
            reason: "no freezer: neither the v1 freezer controller nor a v2 cgroup".into(),
        })?;
        write_file(&f, if freeze { frozen } else { thawed })?;
        let deadline = Instant::now() + timeout;
        while self.frozen() != Some(freeze) {
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: format!(
                        "{} to read {}",
                        f.display(),
                        if freeze { frozen } else { thawed }
                    ),
                    secs: timeout.as_secs_f64(),
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    /// Poll until the cgroup is empty.
    ///
    /// # Errors
    /// [`Error::Timeout`].
    pub fn wait_empty(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: "the cgroup to empty".to_owned(),
                    secs: timeout.as_secs_f64(),
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Kill, wait up to `timeout` for the cgroup to empty, and remove it.
    ///
    /// # Errors
    /// As [`Cgroup::kill`], [`Cgroup::wait_empty`] and [`Cgroup::remove`].
    pub fn destroy(&self, timeout: Duration) -> Result<()> {
        if !self.is_empty() {
            self.kill()?;
            self.wait_empty(timeout)?;
        }
        self.remove()
    }

    /// `rmdir` each directory, its sub-cgroups first (an init like systemd
    /// makes its own below a delegated leaf), retrying `EBUSY` for up to a
    /// second, as the kernel may still be tearing tasks down; then try to
    /// remove the now-empty parent (the `davit` prefix), ignoring "not
    /// empty".
    ///
    /// # Errors
    /// [`Error::Cgroup`] naming the directory.
    pub fn remove(&self) -> Result<()> {
        let mut left = Vec::new();
        for d in &self.dirs {
            match remove_tree(&d.path) {
                Ok(()) => {}
                // Container root's own sub-cgroups (a plain user's
                // container): not ours to rmdir, but the helper namespace's.
                Err((_, e))
                    if matches!(e, nix::errno::Errno::EACCES | nix::errno::Errno::EPERM)
                        && self.handed_to.is_some()
                        && !nix::unistd::geteuid().is_root() =>
                {
                    left.push(d.path.clone())
                }
                Err((p, e)) => return Err(cg_err("rmdir", &p, io::Error::from(e))),
            }
        }
        if let (false, Some(owner)) = (left.is_empty(), self.handed_to) {
            crate::handover::remove_as(&left, owner)?;
        }
        for d in &self.dirs {
            if let Some(parent) = d.path.parent() {
                if parent != d.hierarchy.mountpoint && parent.starts_with(&d.hierarchy.mountpoint) {
                    let _ = fs::remove_dir(parent);
                }
            }
        }
        Ok(())
    }
}

/// `rmdir` `dir` after every cgroup below it, children first, retrying
/// `EBUSY` (see [`Cgroup::remove`]). Gone already is fine.
///
/// # Errors
/// The directory that would not go, and why.
pub(crate) fn remove_tree(dir: &Path) -> std::result::Result<(), (PathBuf, nix::errno::Errno)> {
    for d in descendants(dir)
        .iter()
        .chain(std::iter::once(&dir.to_path_buf()))
    {
        rmdir_retry(d).map_err(|e| {
            (
                d.clone(),
                nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
            )
        })?;
    }
    Ok(())
}

/// Every cgroup below `dir`, children before their parents. Cgroup
/// filesystems hold no symlinks, and `file_type` does not follow them.
fn descendants(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                out.extend(descendants(&e.path()));
                out.push(e.path());
            }
        }
    }
    out
}

fn rmdir_retry(dir: &Path) -> io::Result<()> {
    let mut tries = 0;
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && tries < 20 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(e),
        }
    }
}

fn enable_controllers(dir: &Path) -> Result<()> {
    let avail = read_file(&dir.join("cgroup.controllers"))?;
    let sc_path = dir.join("cgroup.subtree_control");
    let enabled = read_file(&sc_path)?;
    let want: Vec<String> = V2_CONTROLLERS
        .iter()
        .filter(|c| avail.split_whitespace().any(|a| a == **c))
        .filter(|c| !enabled.split_whitespace().any(|a| a == **c))
        .map(|c| format!("+{c}"))
        .collect();
    if want.is_empty() {
        return Ok(());
    }
    write_file(&sc_path, &want.join(" "))
}

fn copy_cpuset(parent: &Path, dir: &Path) -> Result<()> {
    for f in ["cpuset.cpus", "cpuset.mems"] {
        let mine = dir.join(f);
        let cur = fs::read_to_string(&mine).unwrap_or_default();
        if cur.trim().is_empty() {
            let v = read_file(&parent.join(f))?;
            if !v.trim().is_empty() {
                write_file(&mine, v.trim())?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake v2 root like /sys/fs/cgroup on a systemd host.
    fn fake_v2(root: &Path, controllers: &str) {
        fs::write(root.join("cgroup.controllers"), controllers).unwrap();
        fs::write(root.join("cgroup.subtree_control"), "").unwrap();
    }

    fn v2_layout(root: &Path) -> Layout {
        let mi = format!(
            "30 23 0:26 / {} rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate\n",
            root.display()
        );
        Layout::from_mountinfo(&mi)
    }

    /// The fake kernel does not populate new dirs; do what cgroupfs does.
    fn populate(dir: &Path, controllers: &str) {
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

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
42 31 0:39 / /sys/fs/cgroup/net\\040cls rw,relatime - cgroup cgroup rw,net_cls,net_prio
";

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

    #[test]
    fn v2_create_limits_exact_values() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        fake_v2(root, "cpuset cpu io memory hugetlb pids rdma misc");
        let l = v2_layout(root);
        assert_eq!(l.mode(), Mode::Unified);
        assert!(l.hierarchy_for("memory").is_some());
        // The fake kernel: pre-create dirs with their files, as cgroupfs would.
        fs::create_dir(root.join("davit")).unwrap();
        populate(&root.join("davit"), "cpu io memory pids");
        fs::create_dir(root.join("davit/web")).unwrap();
        populate(&root.join("davit/web"), "cpu io memory pids");
        let limits = Limits {
            memory: Some(512 << 20),
            pids: Some(64),
            cpus: Some(1.5),
        };
        let cg = Cgroup::create(&l, Path::new("davit/web"), Path::new(""), &limits).unwrap();
        let leaf = root.join("davit/web");
        let rd = |p: &str| fs::read_to_string(leaf.join(p)).unwrap();
        assert_eq!(rd("memory.max"), "536870912");
        assert_eq!(rd("memory.swap.max"), "0");
        assert_eq!(rd("pids.max"), "64");
        assert_eq!(rd("cpu.max"), "150000 100000");
        // Controllers enabled top-down in ancestors, never on the leaf.
        assert_eq!(
            fs::read_to_string(root.join("cgroup.subtree_control")).unwrap(),
            "+cpu +memory +pids +io"
        );
        assert_eq!(
            fs::read_to_string(root.join("davit/cgroup.subtree_control")).unwrap(),
            "+cpu +memory +pids +io"
        );
        assert_eq!(rd("cgroup.subtree_control"), "");
        assert_eq!(cg.v2_dir(), Some(leaf.as_path()));
        assert!(cg.v2_only());
        cg.add_pid(4242).unwrap();
        assert_eq!(rd("cgroup.procs"), "4242");
    }

    #[test]
    fn v2_stats() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        fake_v2(root, "cpu io memory pids");
        let leaf = root.join("c");
        fs::create_dir(&leaf).unwrap();
        populate(&leaf, "cpu io memory pids");
        let cg = Cgroup::at(&v2_layout(root), Path::new("c"));
        let s = cg.stats();
        assert_eq!(s.cpu_ns, Some(1_234_000));
        assert_eq!(s.memory, Some(3000));
        assert_eq!(s.kmem, Some(100));
        assert_eq!(s.blkio, Some(153));
    }

    #[test]
    fn v2_kill_writes_cgroup_kill_and_empty_uses_events() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        fake_v2(root, "pids");
        let leaf = root.join("c");
        fs::create_dir(&leaf).unwrap();
        populate(&leaf, "pids");
        let cg = Cgroup::at(&v2_layout(root), Path::new("c"));
        assert!(cg.is_empty());
        fs::write(leaf.join("cgroup.events"), "populated 1\nfrozen 0\n").unwrap();
        assert!(!cg.is_empty());
        cg.kill().unwrap();
        assert_eq!(fs::read_to_string(leaf.join("cgroup.kill")).unwrap(), "1");
        let e = cg.wait_empty(Duration::from_millis(30)).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Timeout);
    }

    /// Without cgroup.kill (kernels before 5.14) a v2 kill freezes first
    /// and must wait for `frozen 1` in cgroup.events before it signals:
    /// cgroup.freeze itself reads `1` at once, before the tasks are frozen,
    /// and a task forked in between would escape the kill.
    #[test]
    fn v2_kill_without_cgroup_kill_waits_until_frozen() {
        use std::os::unix::process::ExitStatusExt;
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        fake_v2(root, "pids");
        let leaf = root.join("c");
        fs::create_dir(&leaf).unwrap();
        populate(&leaf, "pids");
        fs::remove_file(leaf.join("cgroup.kill")).unwrap();
        fs::write(leaf.join("cgroup.freeze"), "0").unwrap();
        fs::write(leaf.join("cgroup.events"), "populated 1\nfrozen 0\n").unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        fs::write(leaf.join("cgroup.procs"), format!("{}\n", child.id())).unwrap();
        let events = leaf.join("cgroup.events");
        let freezer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            fs::write(events, "populated 1\nfrozen 1\n").unwrap();
        });
        let cg = Cgroup::at(&v2_layout(root), Path::new("c"));
        let t = Instant::now();
        cg.kill().unwrap();
        let waited = t.elapsed();
        freezer.join().unwrap();
        assert!(
            waited >= Duration::from_millis(200),
            "signalled after {waited:?}, before the cgroup was frozen"
        );
        assert_eq!(child.wait().unwrap().signal(), Some(9));
        assert_eq!(fs::read_to_string(leaf.join("cgroup.freeze")).unwrap(), "0");
    }

    #[test]
    fn v2_missing_controller_is_an_error_and_creates_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        fake_v2(root, "hugetlb");
        let l = v2_layout(root);
        let limits = Limits {
            pids: Some(10),
            ..Limits::default()
        };
        let e = Cgroup::create(&l, Path::new("davit/x"), Path::new(""), &limits).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Cgroup);
        assert!(!root.join("davit").exists());
    }

    #[test]
    fn delegation_found_and_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        fake_v2(root, "cpu memory pids");
        let svc = root.join("user.slice/user-1000.slice/user@1000.service");
        let scope = svc.join("app.slice/run-1.scope");
        fs::create_dir_all(&scope).unwrap();
        for d in [&svc, &svc.join("app.slice"), &scope] {
            populate(d, "cpu memory pids");
            for f in ["", "cgroup.procs", "cgroup.subtree_control"] {
                let p = if f.is_empty() {
                    d.to_path_buf()
                } else {
                    d.join(f)
                };
                nix::unistd::chown(&p, Some(nix::unistd::Uid::from_raw(1000)), None).unwrap();
            }
        }
        let l = v2_layout(root);
        let pc = "0::/user.slice/user-1000.slice/user@1000.service/app.slice/run-1.scope\n";
        let base = delegation(&l, pc, 1000, &["memory", "pids"]).unwrap();
        assert_eq!(
            base,
            Path::new("user.slice/user-1000.slice/user@1000.service")
        );
        let why = delegation(&l, pc, 1001, &["pids"]).unwrap_err();
        assert!(why.contains("not delegated to uid 1001"), "{why}");
        let why = delegation(&l, pc, 1000, &["io"]).unwrap_err();
        assert!(why.contains("lacks the io"), "{why}");
        let why = delegation(&Layout::from_mountinfo(HYBRID), pc, 1000, &["pids"]).unwrap_err();
        assert!(
            why.contains("no cgroup is delegated to uid 1000 in the v1 and hybrid hierarchies"),
            "{why}"
        );
    }

    /// A v1 or hybrid host where `davit-cgroup` made `/user/u/0` in every
    /// hierarchy, owned by the user, and moved the caller there: the base
    /// is `user/u` everywhere. One hierarchy left out, or a different path
    /// in one, refuses with the hierarchy named.
    #[test]
    fn delegation_on_v1_takes_the_granted_user_tree_in_every_hierarchy() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let mut mi = String::new();
        for (i, (dir, opts)) in [
            ("memory", "memory"),
            ("pids", "pids"),
            ("systemd", "name=systemd"),
        ]
        .iter()
        .enumerate()
        {
            let m = root.join(dir);
            let leaf = m.join("user/u/0");
            fs::create_dir_all(&leaf).unwrap();
            for d in [m.clone(), m.join("user"), m.join("user/u"), leaf.clone()] {
                fs::write(d.join("cgroup.procs"), "").unwrap();
                fs::write(d.join("tasks"), "").unwrap();
            }
            for d in [m.join("user/u"), leaf] {
                for f in ["", "cgroup.procs", "tasks"] {
                    let p = if f.is_empty() { d.clone() } else { d.join(f) };
                    nix::unistd::chown(&p, Some(nix::unistd::Uid::from_raw(1000)), None).unwrap();
                }
            }
            mi += &format!(
                "{} 1 0:{} / {} rw - cgroup cgroup rw,{opts}\n",
                40 + i,
                50 + i,
                m.display()
            );
        }
        let l = Layout::from_mountinfo(&mi);
        let pc = "3:name=systemd:/user/u/0\n2:pids:/user/u/0\n1:memory:/user/u/0\n";
        assert_eq!(
            delegation(&l, pc, 1000, &["memory", "pids"]).unwrap(),
            Path::new("user/u")
        );
        let why = delegation(&l, pc, 1001, &[]).unwrap_err();
        assert!(why.contains("no cgroup is delegated to uid 1001 in the v1 hierarchies: memory (/user/u/0), pids"), "{why}");
        // Not granted in one hierarchy (root owns it there).
        nix::unistd::chown(
            &root.join("pids/user/u/0/tasks"),
            Some(nix::unistd::Uid::from_raw(0)),
            None,
        )
        .unwrap();
        nix::unistd::chown(
            &root.join("pids/user/u/tasks"),
            Some(nix::unistd::Uid::from_raw(0)),
            None,
        )
        .unwrap();
        let why = delegation(&l, pc, 1000, &[]).unwrap_err();
        assert!(why.contains("hierarchy: pids (/user/u/0)"), "{why}");
        // The caller elsewhere in one hierarchy.
        let pc2 = "3:name=systemd:/user/u\n2:pids:/user/u/0\n1:memory:/user/u/0\n";
        nix::unistd::chown(
            &root.join("pids/user/u/tasks"),
            Some(nix::unistd::Uid::from_raw(1000)),
            None,
        )
        .unwrap();
        nix::unistd::chown(
            &root.join("pids/user/u/0/tasks"),
            Some(nix::unistd::Uid::from_raw(1000)),
            None,
        )
        .unwrap();
        assert_eq!(delegation(&l, pc2, 1000, &[]).unwrap(), Path::new("user/u"));
    }

    /// Found in the VM lane (kernel 6.1, cgroup2 alone): a plain user whose
    /// shell sits in the delegated cgroup itself got EBUSY writing that
    /// cgroup's subtree_control, and the start failed. There can be no
    /// limits there; delegation must say so, and placing nothing lets the
    /// container start.
    #[test]
    fn delegation_refuses_a_base_that_holds_processes() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        fake_v2(root, "cpu memory pids");
        let u = root.join("user-1000");
        fs::create_dir_all(u.join("session")).unwrap();
        for d in [u.clone(), u.join("session")] {
            populate(&d, "cpu memory pids");
            for f in ["", "cgroup.procs", "cgroup.subtree_control"] {
                let p = if f.is_empty() { d.clone() } else { d.join(f) };
                nix::unistd::chown(&p, Some(nix::unistd::Uid::from_raw(1000)), None).unwrap();
            }
        }
        let l = v2_layout(root);
        // In the leaf below the base: the base is used.
        fs::write(u.join("session/cgroup.procs"), "42\n").unwrap();
        let pc = "0::/user-1000/session\n";
        assert_eq!(
            delegation(&l, pc, 1000, &["pids"]).unwrap(),
            Path::new("user-1000")
        );
        // In the base itself: refused, with the reason.
        fs::write(u.join("cgroup.procs"), "43\n").unwrap();
        let why = delegation(&l, "0::/user-1000\n", 1000, &["pids"]).unwrap_err();
        assert!(
            why.contains("user-1000 holds processes, this one among them"),
            "{why}"
        );
        // Another process in the base, the caller in the leaf: refused too.
        let why = delegation(&l, pc, 1000, &[]).unwrap_err();
        assert!(why.contains("user-1000 holds processes, and"), "{why}");
    }

    #[test]
    fn sub_cgroups_of_an_init_count_and_are_removed_first() {
        // systemd below our leaf: init.scope and system.slice/x.service.
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("systemd");
        fs::create_dir(&root).unwrap();
        let mi = format!(
            "40 1 0:50 / {} rw - cgroup cgroup rw,xattr,name=systemd\n",
            root.display()
        );
        let l = Layout::from_mountinfo(&mi);
        let cg = Cgroup::at(&l, Path::new("davit/c"));
        assert_eq!(
            cg.named_v1_dir("systemd"),
            Some(root.join("davit/c").as_path())
        );
        let leaf = root.join("davit/c");
        fs::create_dir_all(leaf.join("init.scope")).unwrap();
        fs::create_dir_all(leaf.join("system.slice/x.service")).unwrap();
        fs::write(leaf.join("system.slice/x.service/cgroup.procs"), "42\n").unwrap();
        assert_eq!(cg.procs(), vec![42]);
        assert!(!cg.is_empty());
        fs::remove_file(leaf.join("system.slice/x.service/cgroup.procs")).unwrap();
        assert!(cg.is_empty());
        let d = descendants(&leaf);
        let pos = |p: &str| d.iter().position(|x| x == &leaf.join(p)).unwrap();
        assert!(pos("system.slice/x.service") < pos("system.slice"));
        cg.remove().unwrap();
        assert!(!leaf.exists() && !root.join("davit").exists());
    }

    #[test]
    fn v1_fake_limits_and_stats() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let mut mi = String::new();
        for (i, c) in [
            "cpu", "cpuacct", "cpuset", "memory", "pids", "blkio", "freezer",
        ]
        .iter()
        .enumerate()
        {
            let d = root.join(c);
            fs::create_dir(&d).unwrap();
            mi += &format!(
                "{} 1 0:{} / {} rw - cgroup cgroup rw,{c}\n",
                40 + i,
                50 + i,
                d.display()
            );
        }
        fs::write(root.join("cpuset/cpuset.cpus"), "0-1\n").unwrap();
        fs::write(root.join("cpuset/cpuset.mems"), "0\n").unwrap();
        let l = Layout::from_mountinfo(&mi);
        assert_eq!(l.mode(), Mode::Legacy);
        let limits = Limits {
            memory: Some(1 << 20),
            pids: Some(7),
            cpus: Some(0.5),
        };
        // memsw present: must be written after the limit, with the same value.
        fs::create_dir_all(root.join("memory/davit/c")).unwrap();
        fs::write(root.join("memory/davit/c/memory.memsw.limit_in_bytes"), "").unwrap();
        let cg = Cgroup::create(&l, Path::new("davit/c"), Path::new(""), &limits).unwrap();
        let rd = |p: &str| fs::read_to_string(root.join(p)).unwrap();
        assert_eq!(rd("memory/davit/c/memory.limit_in_bytes"), "1048576");
        assert_eq!(rd("memory/davit/c/memory.memsw.limit_in_bytes"), "1048576");
        assert_eq!(rd("pids/davit/c/pids.max"), "7");
        assert_eq!(rd("cpu/davit/c/cpu.cfs_period_us"), "100000");
        assert_eq!(rd("cpu/davit/c/cpu.cfs_quota_us"), "50000");
        assert_eq!(rd("cpuset/davit/cpuset.cpus"), "0-1");
        assert_eq!(rd("cpuset/davit/c/cpuset.mems"), "0");
        fs::write(root.join("cpuacct/davit/c/cpuacct.usage"), "999\n").unwrap();
        fs::write(root.join("memory/davit/c/memory.usage_in_bytes"), "4096\n").unwrap();
        fs::write(
            root.join("memory/davit/c/memory.kmem.usage_in_bytes"),
            "512\n",
        )
        .unwrap();
        fs::write(
            root.join("blkio/davit/c/blkio.throttle.io_service_bytes"),
            "8:0 Read 10\n8:0 Write 5\n8:0 Total 15\nTotal 15\n",
        )
        .unwrap();
        let s = cg.stats();
        assert_eq!(
            s,
            Stats {
                cpu_ns: Some(999),
                memory: Some(4096),
                kmem: Some(512),
                blkio: Some(15)
            }
        );
        let back = Cgroup::from_paths(&l, &cg.paths());
        assert_eq!(back, cg);
    }
}
