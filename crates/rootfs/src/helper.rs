//! Running a host helper program (`newuidmap`, `cp`): no stdin, dies with
//! its parent, and a failure names the whole command line with its stderr.
#![forbid(unsafe_code)]

use crate::error::{Error, Result};
use crate::sys;
use std::process::{Command, Stdio};

/// Runs `program args…` with no stdin and checks its exit status; errors
/// name the whole command line and carry its stderr.
pub(crate) fn run_helper<A: AsRef<std::ffi::OsStr>>(program: &str, args: &[A]) -> Result<()> {
    let cmdline = format!(
        "{program} {}",
        args.iter()
            .map(|a| a.as_ref().to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let mut cmd = Command::new(program);
    cmd.args(args).stdin(Stdio::null());
    sys::die_with_parent(&mut cmd);
    let out = cmd.output().map_err(|source| Error::Helper {
        helper: cmdline.clone(),
        source,
    })?;
    if !out.status.success() {
        return Err(Error::HelperStatus {
            helper: cmdline,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(())
}
