//! Usage counters of a container's cgroup, for `info`.
#![forbid(unsafe_code)]

use std::fs;

use super::files::{keyed, read_u64};
use super::layout::Version;
use super::Cgroup;

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

impl Cgroup {
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
}

#[cfg(test)]
mod tests {
    use super::super::layout::fake::{fake_v2, populate, v2_layout};
    use super::*;
    use std::path::Path;

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
}
