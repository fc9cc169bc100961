//! The monitor's ready pipe (descriptor [`READY_FD`]): one JSON line that
//! says the container runs (with init's pid) or why it failed. The
//! monitor writes it, and so does `davit-cgroup` for a failure before the
//! monitor runs; `spawn_monitor`'s handle reads it.
#![forbid(unsafe_code)]

use std::fs::File;
use std::io::Write;
use std::os::fd::RawFd;

use crate::error::Error;
use crate::sys;

/// The descriptor number the ready pipe gets in the monitor.
pub const READY_FD: RawFd = 3;

pub(crate) fn ready_file() -> Option<File> {
    // The pipe handed over by `spawn_monitor` as READY_FD; check it is one.
    let st = nix::sys::stat::fstat(READY_FD).ok()?;
    if st.st_mode & libc::S_IFMT != libc::S_IFIFO {
        return None;
    }
    sys::take_inherited_fd(READY_FD).map(File::from)
}

/// For `davit-cgroup`, which runs before the monitor on the same ready
/// pipe: report its failure there, as the monitor would, so the caller
/// reads why (a detached start has no stderr). Nothing when descriptor
/// [`READY_FD`] is not a pipe.
pub(crate) fn report_failure_before_monitor(e: &Error) {
    let mut ready = ready_file();
    report(&mut ready, &Report::Failed(e));
}

pub(crate) enum Report<'a> {
    Ready(i32),
    Failed(&'a Error),
}

fn json_str(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

pub(crate) fn report(ready: &mut Option<File>, r: &Report<'_>) {
    let Some(mut f) = ready.take() else { return };
    let line = match r {
        Report::Ready(pid) => format!("{{\"ok\":true,\"pid\":{pid}}}\n"),
        Report::Failed(e) => {
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(*e);
            while let Some(s) = src {
                msg += ": ";
                msg += &s.to_string();
                src = s.source();
            }
            format!(
                "{{\"ok\":false,\"kind\":{},\"error\":{}}}\n",
                json_str(e.kind().as_str()),
                json_str(&msg)
            )
        }
    };
    let _ = f.write_all(line.as_bytes());
}
