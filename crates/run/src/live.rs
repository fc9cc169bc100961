//! `davit set NAME --memory/--pids/--cpus` on a running container (as
//! `lxc-cgroup`): the new limits are written to its cgroup at once.
//! `config.toml` is the CLI's to update.
#![forbid(unsafe_code)]

use std::path::Path;

use crate::cgroup::{Cgroup, Layout};
use crate::config::Limits;
use crate::error::{Error, Result};
use crate::state::{StateStore, Status};

/// Writes `change` to running container `name`'s cgroup: a `Some` limit
/// is set (`0` removes it), a `None` one is left as it is. Returns
/// `false`, touching nothing, when the container is not running.
///
/// # Errors
/// [`Error::CgroupState`] when the container has no cgroup of its own (a
/// plain user without delegation), [`Error::CgroupNoDir`] when the host
/// lacks the controller;
/// [`Error::Cgroup`] naming the file the kernel refused (a memory limit
/// below what the container holds and cannot reclaim, on v1).
pub fn set_limits(runtime: &Path, name: &str, change: &Limits) -> Result<bool> {
    let store = StateStore::new(runtime, name);
    let _lock = store.lock()?;
    let Some(st) = store.peek()?.filter(|st| st.is_alive()) else {
        return Ok(false);
    };
    if st.status != Status::Running {
        return Err(Error::CgroupState {
            reason: format!(
                "{name} is {}; run `davit set` again once it is RUNNING to change its limits now",
                st.status.as_str()
            ),
        });
    }
    if let Some(why) = &st.no_limits_reason {
        return Err(Error::CgroupState {
            reason: format!(
                "{name} runs without a cgroup of its own ({why}), so its limits cannot change; stop it, then start it where cgroups are delegated"
            ),
        });
    }
    let cg = Cgroup::from_paths(&Layout::detect()?, &st.cgroup_paths);
    cg.apply_limits(change)?;
    Ok(true)
}
