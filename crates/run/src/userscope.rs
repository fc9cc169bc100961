//! cgroup v2 with systemd, most users' hosts: a plain user's monitor asks
//! the user's own systemd manager, over the user bus, for a transient
//! scope with `Delegate=yes`, as LXC 6, podman and runc's systemd driver
//! do, and the container's cgroup lives below it:
//!
//! ```text
//! …/user@UID.service/app.slice/davit-NAME-PID.scope/   the user's (Delegate=yes)
//!     monitor/        the monitor moves itself here (no process may stay in
//!                     a cgroup whose controllers are enabled for children)
//!     davit/NAME/     the container
//! ```
//!
//! The scope is stopped and removed by systemd once its last process, the
//! monitor, is gone. A plain user's `attach` joins the scope's `monitor`
//! leaf through `AttachProcessesToUnit` first. cgroup v2 lets a process
//! move only between cgroups whose common ancestor it may write, and the
//! user manager asks the system manager when it may not move the caller
//! itself.
//!
//! The D-Bus client (zbus) runs threads, and the monitor and `attach` must
//! stay single-threaded (they clone and `setns`). So each call is made
//! from a forked child that reports back over a pipe and exits.
#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::cgroup::{needed_controllers, own_path, Layout};
use crate::config::Limits;
use crate::sys;

/// The leaf in the scope that holds the monitor (and, for a moment, an
/// attaching process).
pub const MONITOR_LEAF: &str = "monitor";

/// How long a D-Bus call and systemd's move may take.
const TIMEOUT: Duration = Duration::from_secs(15);

/// The scope's unit name for container `name` run by monitor `pid`
/// (container names are already valid in unit names).
pub fn unit_name(name: &str, pid: u32) -> String {
    format!("davit-{name}-{pid}.scope")
}

/// The user bus: `DBUS_SESSION_BUS_ADDRESS`, else the `bus` socket in
/// `$XDG_RUNTIME_DIR` or `/run/user/UID` (where systemd puts it).
pub fn bus_address() -> Option<String> {
    if let Some(a) = std::env::var_os("DBUS_SESSION_BUS_ADDRESS") {
        if !a.is_empty() {
            return a.into_string().ok();
        }
    }
    let uid = nix::unistd::getuid().as_raw();
    let dirs = [
        std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from),
        Some(PathBuf::from(format!("/run/user/{uid}"))),
    ];
    dirs.into_iter().flatten().find_map(|d| {
        let p = d.join("bus");
        use std::os::unix::fs::FileTypeExt;
        std::fs::metadata(&p)
            .is_ok_and(|m| m.file_type().is_socket())
            .then(|| format!("unix:path={}", p.display()))
    })
}

fn manager(
    addr: &str,
) -> zbus::Result<(zbus::blocking::Connection, zbus::blocking::Proxy<'static>)> {
    let conn = zbus::blocking::connection::Builder::address(addr)?.build()?;
    let proxy = zbus::blocking::Proxy::new(
        &conn,
        "org.freedesktop.systemd1",
        "/org/freedesktop/systemd1",
        "org.freedesktop.systemd1.Manager",
    )?;
    Ok((conn, proxy))
}

/// Run `call` in a forked child; its error text comes back over a pipe.
fn in_child(call: impl FnOnce() -> Result<(), String>) -> Result<(), String> {
    let (r, w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe2: {e}"))?;
    match sys::fork().map_err(|e| format!("fork: {e}"))? {
        sys::Cloned::Child => {
            drop(r);
            let mut w = std::fs::File::from(w);
            let code = match call() {
                Ok(()) => {
                    let _ = w.write_all(b"ok");
                    0
                }
                Err(e) => {
                    let _ = w.write_all(e.as_bytes());
                    1
                }
            };
            sys::exit_now(code)
        }
        sys::Cloned::Parent { pid, pidfd, .. } => {
            drop(w);
            let ready = sys::poll_readable(r.as_fd(), TIMEOUT.as_millis() as i32).unwrap_or(false);
            let mut text = String::new();
            if ready {
                let _ = std::fs::File::from(r).read_to_string(&mut text);
            }
            if !ready {
                if let Some(fd) = &pidfd {
                    let _ = sys::pidfd_send_signal(fd.as_fd(), libc::SIGKILL);
                }
            }
            let _ = nix::sys::wait::waitpid(pid, None);
            match (ready, text.as_str()) {
                (false, _) => Err(format!(
                    "the user's systemd manager did not answer within {} s",
                    TIMEOUT.as_secs()
                )),
                (true, "ok") => Ok(()),
                (true, "") => Err("the D-Bus client ended without a word".into()),
                (true, e) => Err(e.to_owned()),
            }
        }
    }
}

/// `StartTransientUnit(unit, "fail", [Description, PIDs=[pid],
/// Delegate=yes, CollectMode=inactive-or-failed], [])` on the user manager.
///
/// # Errors
/// Why, as a sentence for the user (no bus, systemd's refusal).
pub fn start_scope(addr: &str, unit: &str, pid: u32, description: &str) -> Result<(), String> {
    in_child(|| {
        use zbus::zvariant::Value;
        let (_conn, m) = manager(addr).map_err(|e| format!("cannot reach {addr}: {e}"))?;
        let props: Vec<(&str, Value<'_>)> = vec![
            ("Description", Value::from(description)),
            ("PIDs", Value::from(vec![pid])),
            ("Delegate", Value::from(true)),
            ("CollectMode", Value::from("inactive-or-failed")),
        ];
        let aux: Vec<(&str, Vec<(&str, Value<'_>)>)> = Vec::new();
        let _job: zbus::zvariant::OwnedObjectPath = m
            .call("StartTransientUnit", &(unit, "fail", props, aux))
            .map_err(|e| format!("StartTransientUnit({unit}): {e}"))?;
        Ok(())
    })
}

/// `AttachProcessesToUnit(unit, subcgroup, [pid])` on the user manager.
///
/// # Errors
/// Why, as a sentence.
pub fn attach_to_unit(addr: &str, unit: &str, subcgroup: &str, pid: u32) -> Result<(), String> {
    in_child(|| {
        let (_conn, m) = manager(addr).map_err(|e| format!("cannot reach {addr}: {e}"))?;
        m.call::<_, _, ()>("AttachProcessesToUnit", &(unit, subcgroup, vec![pid]))
            .map_err(|e| format!("AttachProcessesToUnit({unit}, {subcgroup}): {e}"))
    })
}

/// This process's v2 cgroup, relative to the mount (no leading `/`).
fn own_v2(layout: &Layout) -> Option<PathBuf> {
    let h = layout.unified()?;
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let own = own_path(&text, h)?;
    let rel = own.strip_prefix(&h.root).unwrap_or(&own);
    Some(rel.strip_prefix("/").unwrap_or(rel).to_path_buf())
}

/// For the monitor of container `name`: start its scope, wait until
/// systemd has moved this process there, move on into the scope's
/// [`MONITOR_LEAF`], and check the controllers `limits` need. Returns the
/// scope's cgroup (relative to the v2 mount) and the unit's name.
///
/// # Errors
/// Why there is no scope, as a sentence.
pub fn enter_scope(
    layout: &Layout,
    name: &str,
    limits: &Limits,
) -> Result<(PathBuf, String), String> {
    let h = layout
        .unified()
        .ok_or("no cgroup v2 hierarchy is mounted")?;
    let addr = bus_address().ok_or(
        "no user bus (neither DBUS_SESSION_BUS_ADDRESS nor $XDG_RUNTIME_DIR/bus nor /run/user/UID/bus; `loginctl enable-linger` starts a user manager)",
    )?;
    let pid = std::process::id();
    let unit = unit_name(name, pid);
    start_scope(&addr, &unit, pid, &format!("davit container {name}"))?;
    let deadline = Instant::now() + Duration::from_secs(5);
    let scope = loop {
        if let Some(p) =
            own_v2(layout).filter(|p| p.file_name().is_some_and(|f| f == unit.as_str()))
        {
            break p;
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "systemd started {unit} but did not move the monitor into it"
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let dir = h.mountpoint.join(&scope);
    let leaf = dir.join(MONITOR_LEAF);
    std::fs::create_dir(&leaf).map_err(|e| format!("mkdir {}: {e}", leaf.display()))?;
    std::fs::write(leaf.join("cgroup.procs"), pid.to_string())
        .map_err(|e| format!("cannot move the monitor into {}: {e}", leaf.display()))?;
    let avail = std::fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
    let missing: Vec<&str> = needed_controllers(limits)
        .into_iter()
        .filter(|c| !avail.split_whitespace().any(|a| a == *c))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "the scope {unit} lacks the {} controller(s) (the user manager delegates only `{}`; an admin adds more with a drop-in for user@.service: Delegate=cpu cpuset io memory pids)",
            missing.join(", "),
            avail.trim()
        ));
    }
    Ok((scope, unit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_names_are_unique_per_monitor() {
        assert_eq!(unit_name("web", 42), "davit-web-42.scope");
    }
}
