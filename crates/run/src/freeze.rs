//! `freeze` and `unfreeze` (as `lxc-freeze`/`lxc-unfreeze`): every task of
//! a running container stopped, or let go, through the cgroup freezer (the
//! v1 `freezer` controller, or v2's `cgroup.freeze`). `info` and `list`
//! then show FROZEN.
#![forbid(unsafe_code)]

use std::path::Path;
use std::time::Duration;

use crate::cgroup::{Cgroup, Layout};
use crate::error::{Error, Result};
use crate::state::{StateStore, Status};

/// Freezes (`freeze`) or thaws running container `name`, and returns once
/// the kernel reports every task so.
///
/// # Errors
/// [`Error::NotRunning`]; [`Error::CgroupState`] when the container has no
/// cgroup of its own (a plain user without delegation: its cgroup is the
/// user's, whose other processes would freeze too) or the host no freezer;
/// [`Error::Cgroup`], [`Error::Timeout`].
pub fn set_frozen(runtime: &Path, name: &str, freeze: bool) -> Result<()> {
    let st = StateStore::new(runtime, name)
        .peek()?
        .filter(|st| st.status == Status::Running && st.is_alive())
        .ok_or_else(|| Error::NotRunning { name: name.into() })?;
    if let Some(why) = &st.no_limits_reason {
        return Err(Error::CgroupState {
            reason: format!(
                "{name} has no cgroup of its own ({why}), so it cannot be frozen alone"
            ),
        });
    }
    let cg = Cgroup::from_paths(&Layout::detect()?, &st.cgroup_paths);
    cg.set_frozen(freeze, Duration::from_secs(10))
}
