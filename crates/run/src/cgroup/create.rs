//! Making a container's cgroup in each hierarchy: its directories, the
//! controllers enabled above it, its limits and device rules, and moving
//! tasks into it.
#![forbid(unsafe_code)]

use std::fs;
use std::io;
use std::path::{Component, Path};

use super::files::{cg_err, join_rel, read_file, read_u64, write_file};
use super::layout::{own_path, Layout, Version};
use super::{Cgroup, CgroupDir};
use crate::config::Limits;
use crate::error::{Error, Result};

/// The controllers davit manages on v2 (enabled top-down in ancestors).
pub const V2_CONTROLLERS: [&str; 4] = ["cpu", "memory", "pids", "io"];

/// The CFS period davit uses for CPU limits, in microseconds.
pub const CPU_PERIOD_US: u64 = 100_000;

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

impl Cgroup {
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
    /// [`Error::Cgroup`] naming the file, [`Error::CgroupNoHierarchy`] when
    /// a limit needs a controller no hierarchy has, or
    /// [`Error::CgroupState`] when no cgroup filesystem is mounted.
    pub fn create(
        layout: &Layout,
        rel: &Path,
        writable_from: &Path,
        limits: &Limits,
    ) -> Result<Cgroup> {
        for c in needed_controllers(limits) {
            if layout.hierarchy_for(c).is_none() {
                return Err(Error::CgroupNoHierarchy {
                    controller: c.to_owned(),
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
                let made = match fs::create_dir(&cur) {
                    Ok(()) => true,
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
                    Err(e) => return Err(cg_err("mkdir", &cur, e)),
                };
                // A v1 cpuset directory takes no task until it has CPUs and
                // memory nodes. One that already exists may be another
                // start's, made a moment ago and not filled yet (parallel
                // starts share the prefix): fill ours either way, as the
                // copy writes only what is still empty.
                if h.version == Version::V1 && h.has("cpuset") && (made || i >= skip) {
                    copy_cpuset(&parent, &cur)?;
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
    /// container uses and cannot reclaim reads `EBUSY` on v1), or
    /// [`Error::CgroupNoDir`] when the cgroup has no directory for a
    /// limit's controller.
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
        self.find(controller).ok_or_else(|| Error::CgroupNoDir {
            controller: controller.to_owned(),
        })
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
    use super::super::layout::fake::{fake_v2, populate, v2_layout};
    use super::super::layout::Mode;
    use super::super::Stats;
    use super::*;

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

    /// The typed errors keep the messages of the `CgroupState` reasons
    /// they replace.
    #[test]
    fn create_without_the_controller_names_it() {
        let tmp = tempfile::tempdir().unwrap();
        fake_v2(tmp.path(), "hugetlb pids");
        let limits = Limits {
            pids: Some(10),
            memory: Some(1 << 20),
            ..Limits::default()
        };
        let e = Cgroup::create(
            &v2_layout(tmp.path()),
            Path::new("davit/x"),
            Path::new(""),
            &limits,
        )
        .unwrap_err();
        assert!(
            matches!(&e, Error::CgroupNoHierarchy { controller } if controller == "memory"),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            "cgroup: no mounted cgroup hierarchy has the memory controller"
        );
    }

    #[test]
    fn limit_without_a_directory_for_its_controller_names_it() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        fake_v2(root, "pids");
        let leaf = root.join("c");
        fs::create_dir(&leaf).unwrap();
        populate(&leaf, "pids");
        let cg = Cgroup::at(&v2_layout(root), Path::new("c"));
        let e = cg
            .apply_limits(&Limits {
                memory: Some(1 << 20),
                ..Limits::default()
            })
            .unwrap_err();
        assert!(
            matches!(&e, Error::CgroupNoDir { controller } if controller == "memory"),
            "{e:?}"
        );
        assert_eq!(e.kind(), crate::ErrorKind::Cgroup);
        assert_eq!(
            e.to_string(),
            "cgroup: no cgroup directory for the memory controller"
        );
        assert_eq!(fs::read_to_string(leaf.join("memory.max")).unwrap(), "max");
    }

    #[test]
    fn v1_cpuset_prefix_another_start_has_not_filled_yet_is_filled() {
        // 50 parallel starts: one has made the shared prefix directory
        // (the kernel gives it an empty cpuset.cpus and cpuset.mems) but
        // not filled it yet when another makes its own leaf below. That
        // leaf copied the empty values, and joining it failed ENOSPC.
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let d = root.join("cpuset");
        fs::create_dir_all(d.join("davit")).unwrap();
        fs::write(d.join("cpuset.cpus"), "0-1\n").unwrap();
        fs::write(d.join("cpuset.mems"), "0\n").unwrap();
        fs::write(d.join("davit/cpuset.cpus"), "\n").unwrap();
        fs::write(d.join("davit/cpuset.mems"), "\n").unwrap();
        let mi = format!("40 1 0:50 / {} rw - cgroup cgroup rw,cpuset\n", d.display());
        let l = Layout::from_mountinfo(&mi);
        Cgroup::create(&l, Path::new("davit/c"), Path::new(""), &Limits::default()).unwrap();
        let rd = |p: &str| fs::read_to_string(d.join(p)).unwrap();
        assert_eq!(rd("davit/cpuset.cpus"), "0-1");
        assert_eq!(rd("davit/cpuset.mems"), "0");
        assert_eq!(rd("davit/c/cpuset.cpus"), "0-1");
        assert_eq!(rd("davit/c/cpuset.mems"), "0");
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
