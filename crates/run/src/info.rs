//! `info` and `list`: what `lxc-info` and `lxc-ls -f` show, from the state
//! file and the cgroup counters. Read-only: leftovers of a dead monitor are
//! reported as stopped and left for the next start or stop to clean.
#![forbid(unsafe_code)]

use std::path::Path;

use crate::cgroup::{Cgroup, Layout, Stats};
use crate::error::{Error, Result};
use crate::state::{StateStore, Status};

/// One container's runtime information.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    /// Container name.
    pub name: String,
    /// Status; a record whose init and monitor are both gone reads `Stopped`.
    pub status: Status,
    /// Host pid of init while running.
    pub pid: Option<i32>,
    /// Usage counters (all `None` when stopped or without a cgroup).
    pub stats: Stats,
    /// Whether it runs without a user namespace.
    pub privileged: bool,
    /// Why limits are off, when they are.
    pub no_limits_reason: Option<String>,
    /// Exit status of the last run, when known.
    pub exit_status: Option<i32>,
    /// net: IP, Link and TX/RX/Total bytes (container's view) while running.
    pub net: Option<crate::net::NetInfo>,
    /// The seccomp policy of the running container.
    pub seccomp: Option<crate::seccomp::Seccomp>,
    /// The console log of the last detached start, when there is one
    /// (`davit console NAME --log` reads it).
    pub console_log: Option<std::path::PathBuf>,
}

/// Information on container `name` (stopped if it has no state).
///
/// # Errors
/// [`Error::StateParse`] or [`Error::Read`] for a broken state file.
pub fn info(runtime: &Path, name: &str, layout: &Layout) -> Result<Info> {
    let st = StateStore::new(runtime, name).peek()?;
    let console_log = Some(runtime.join(name).join(crate::console::LOG)).filter(|p| p.is_file());
    let Some(st) = st else {
        return Ok(Info {
            name: name.to_owned(),
            status: Status::Stopped,
            pid: None,
            stats: Stats::default(),
            privileged: false,
            no_limits_reason: None,
            exit_status: None,
            net: None,
            seccomp: None,
            console_log,
        });
    };
    let alive = st.is_alive();
    let cg = Cgroup::from_paths(layout, &st.cgroup_paths);
    let status = if st.is_stale() {
        Status::Stopped
    } else if st.status == Status::Running && cg.frozen() == Some(true) {
        Status::Frozen
    } else {
        st.status
    };
    let stats = if alive { cg.stats() } else { Stats::default() };
    Ok(Info {
        name: st.name.clone(),
        status,
        pid: st.init.filter(|_| alive).map(|p| p.pid),
        stats,
        privileged: st.privileged,
        no_limits_reason: st.no_limits_reason.clone(),
        exit_status: st.exit_status,
        net: if alive {
            crate::net::net_info(&runtime.join(name)).ok().flatten()
        } else {
            None
        },
        seccomp: st.seccomp.clone().filter(|_| alive),
        console_log,
    })
}

/// Information on every container with a state directory under `runtime`,
/// sorted by name.
///
/// # Errors
/// [`Error::Read`] if `runtime` exists but cannot be listed.
pub fn list(runtime: &Path, layout: &Layout) -> Result<Vec<Info>> {
    let rd = match std::fs::read_dir(runtime) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(Error::Read {
                path: runtime.to_owned(),
                source,
            })
        }
    };
    let mut names: Vec<String> = rd
        .flatten()
        .filter(|e| e.path().join("state.json").exists())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| crate::config::valid_name(n))
        .collect();
    names.sort();
    names.iter().map(|n| info(runtime, n, layout)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{ProcessRef, State};

    #[test]
    fn stale_record_reads_stopped_and_missing_reads_stopped() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = Layout::default();
        let i = info(tmp.path(), "none", &layout).unwrap();
        assert_eq!(i.status, Status::Stopped);
        let store = StateStore::new(tmp.path(), "dead");
        let lock = store.lock().unwrap();
        let mut st = State::new("dead");
        st.status = Status::Running;
        st.init = Some(ProcessRef {
            pid: i32::MAX,
            start_time: 1,
        });
        lock.save(&st).unwrap();
        drop(lock);
        let i = info(tmp.path(), "dead", &layout).unwrap();
        assert_eq!(i.status, Status::Stopped);
        assert_eq!(i.pid, None);
        let all = list(tmp.path(), &layout).unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].name, "dead");
    }
}
