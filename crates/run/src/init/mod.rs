//! The container side of the start sequence (security.md (a) 9-23): runs in
//! the cloned child, inside the new namespaces, until it execs init.
//!
//! Every in-rootfs path is resolved with `openat2(RESOLVE_IN_ROOT)` relative
//! to the rootfs mount and every mount targets the resulting descriptor
//! (`/proc/self/fd/N`), never a path string that a symlink could redirect.
#![forbid(unsafe_code)]

mod cgroupfs;
mod dev;
mod exec;
mod fdmount;
mod inroot;
mod layers;
mod mounts;
mod pseudofs;
mod shim;

use std::convert::Infallible;
use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;

use nix::mount::{mount, MsFlags};
use nix::sys::stat::Mode;
use nix::unistd::{Gid, Uid};

use self::cgroupfs::mount_cgroupfs;
use self::dev::{bind_console, build_dev};
pub(crate) use self::exec::drop_caps;
use self::exec::find_exe;
pub use self::exec::DROPPED_CAPS;
use self::layers::{clone_rootfs, OverlayLayers};
use self::mounts::{check_cwd, open_bind_sources, pivot, user_mount};
use self::pseudofs::{mask_paths, mount_proc, mount_sys};
pub use self::pseudofs::{MASKED_PATHS, READONLY_PATHS};
use self::shim::shim;
use crate::cgroup::Layout;
use crate::config::{Backend, ContainerConfig};
use crate::error::{Error, InitStep, Result};
use crate::msg::{Channel, Msg};
use crate::{sys, tty};

/// Everything the child needs, prepared by the parent before the clone so
/// the child allocates little and decides nothing on its own.
pub(crate) struct Plan<'a> {
    pub cfg: &'a ContainerConfig,
    pub argv: Vec<CString>,
    pub envp: Vec<CString>,
    pub path_dirs: Vec<PathBuf>,
    pub userns: bool,
    pub layout: &'a Layout,
    /// Mount the v2 hierarchy read-write (the leaf was chowned to container root).
    pub cgroup2_rw: bool,
    /// Mount the v1 `name=systemd` hierarchy read-write (its leaf was
    /// chowned to container root): systemd's own tree on a hybrid host.
    pub systemd_v1_rw: bool,
    /// Run the command as pid 2 under a small pid-1 shim that forwards
    /// signals and reaps orphans (a command, not an init, is being run).
    pub shim: bool,
    /// Give init a pseudo-terminal from the container's own devpts, bound
    /// on `/dev/console`, and send its master to the parent.
    pub console: bool,
    /// With `console`: this many more, bound on `/dev/tty1..N`, each
    /// master sent after the console's.
    pub ttys: u32,
    /// The host's `/dev/null`, put in place of any standard descriptor that
    /// is a terminal when there is no console.
    pub null: OwnedFd,
    /// Whether init has a cgroup of its own; without one `/sys/fs/cgroup`
    /// is an empty read-only tmpfs, never the host's tree.
    pub own_cgroup: bool,
    /// The seccomp filter, loaded just before exec; `None` when unconfined.
    pub seccomp: Option<libseccomp::ScmpFilterContext>,
}

type StepResult<T> = std::result::Result<T, (InitStep, Error)>;

trait At<T> {
    fn at(self, step: InitStep) -> StepResult<T>;
}

impl<T> At<T> for Result<T> {
    fn at(self, step: InitStep) -> StepResult<T> {
        self.map_err(|e| (step, e))
    }
}

/// Child entry point after the clone: never returns.
pub(crate) fn child_main(mut chan: Channel, plan: &Plan<'_>) -> ! {
    match setup(&mut chan, plan) {
        Ok(never) => match never {},
        Err((step, e)) => {
            let _ = chan.send(Msg::Failed {
                step,
                kind: e.kind(),
                errno: e.errno().map(|e| e as i32).unwrap_or(0),
            });
            sys::exit_now(127)
        }
    }
}

fn setup(chan: &mut Channel, plan: &Plan<'_>) -> StepResult<Infallible> {
    // Signals the monitor ignores must not stay ignored in init.
    for s in [
        nix::sys::signal::Signal::SIGINT,
        nix::sys::signal::Signal::SIGQUIT,
        nix::sys::signal::Signal::SIGTSTP,
        nix::sys::signal::Signal::SIGPIPE,
    ] {
        let _ = sys::set_signal_ignored(s, false);
    }
    nix::sys::stat::umask(Mode::empty());
    let idmapped =
        if plan.cfg.storage.backend == Backend::Overlay && plan.cfg.storage.idmapped_lower {
            Some(chan.expect_maps_done_with_fd().at(InitStep::Sync)?)
        } else {
            chan.expect_maps_done().at(InitStep::Sync)?;
            None
        };
    // Overlay layers are opened now, in our new mount namespace (overlayfs
    // only takes layers from the caller's own namespace) and while we still
    // hold the invoking user's host ids, which may search the directories
    // above them; container root often may not.
    let layers = match plan.cfg.storage.backend {
        Backend::Overlay => Some(OverlayLayers::open(plan.cfg).at(InitStep::Overlay)?),
        Backend::Dir => None,
    };
    // Host directories to bind, opened now for the same reason.
    let sources = open_bind_sources(plan.cfg).at(InitStep::UserMounts)?;
    // The parent's idmapped copies of the binds marked `idmap`, in order.
    let mut trees = Vec::with_capacity(plan.cfg.mounts.len());
    for m in &plan.cfg.mounts {
        trees.push(if plan.userns && m.wants_idmap() {
            chan.expect_host_mount().at(InitStep::Sync)?
        } else {
            None
        });
    }
    // Non-dumpable from now until exec (CVE-2016-9962); exec resets it.
    // Not earlier: a rootless parent's newuidmap must open our /proc files,
    // which a non-dumpable process hands to root.
    nix::sys::prctl::set_dumpable(false)
        .map_err(|e| Error::sys("prctl(PR_SET_DUMPABLE, 0)", e))
        .at(InitStep::Sync)?;

    if plan.userns {
        // Until now we run as an unmapped id (65534) with full capabilities.
        let root_g = Gid::from_raw(0);
        let root_u = Uid::from_raw(0);
        nix::unistd::setresgid(root_g, root_g, root_g)
            .map_err(|e| Error::sys("setresgid(0, 0, 0)", e))
            .at(InitStep::SetIds)?;
        nix::unistd::setresuid(root_u, root_u, root_u)
            .map_err(|e| Error::sys("setresuid(0, 0, 0)", e))
            .at(InitStep::SetIds)?;
    }
    nix::unistd::setgroups(&[])
        .map_err(|e| Error::sys("setgroups(0, [])", e))
        .at(InitStep::SetIds)?;
    // Not the admin's session keyring: container root could read and add
    // keys in it. A new one, owned by container root (after the id switch).
    sys::join_new_session_keyring()
        .map_err(|e| Error::sys("keyctl(KEYCTL_JOIN_SESSION_KEYRING, NULL)", e))
        .at(InitStep::Keyring)?;
    // The parent has moved us into the container's cgroup: a cgroup
    // namespace made now is rooted there (LXC's late unshare).
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWCGROUP)
        .map_err(|e| Error::sys("unshare(CLONE_NEWCGROUP)", e))
        .at(InitStep::CgroupNs)?;

    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .map_err(|e| Error::sys("mount(NULL, \"/\", NULL, MS_REC|MS_SLAVE, NULL)", e))
    .at(InitStep::Propagation)?;

    let root = match layers {
        Some(l) => l.mount(idmapped, plan.userns).at(InitStep::Overlay)?,
        None => clone_rootfs().at(InitStep::RootfsBind)?,
    };
    let root = root.as_fd();
    mount_proc(root).at(InitStep::Proc)?;
    mount_sys(root).at(InitStep::Sys)?;
    build_dev(root, !plan.userns).at(InitStep::Dev)?;
    mask_paths(root).at(InitStep::Mask)?;
    // Never the host's terminal: init gets a session of its own, and the
    // container's own pty or no terminal at all.
    if plan.console {
        let (master, slave) = tty::open_pty_at(root, "dev/pts/ptmx").at(InitStep::Console)?;
        bind_console(root, &slave, "console").at(InitStep::Console)?;
        tty::take_terminal(&slave, !plan.shim).at(InitStep::Console)?;
        chan.send_with_fd(Msg::Console, master.as_fd())
            .at(InitStep::Sync)?;
        for i in 1..=plan.ttys {
            let (master, slave) = tty::open_pty_at(root, "dev/pts/ptmx").at(InitStep::Console)?;
            bind_console(root, &slave, &format!("tty{i}")).at(InitStep::Console)?;
            chan.send_with_fd(Msg::Console, master.as_fd())
                .at(InitStep::Sync)?;
        }
    } else {
        tty::leave_terminals(plan.null.as_fd()).at(InitStep::Console)?;
    }
    mount_cgroupfs(
        root,
        plan.own_cgroup.then_some(plan.layout),
        plan.cgroup2_rw,
        plan.systemd_v1_rw,
    )
    .at(InitStep::CgroupFs)?;
    for ((m, source), tree) in plan.cfg.mounts.iter().zip(sources).zip(trees) {
        user_mount(root, m, source, tree).at(InitStep::UserMounts)?;
    }
    nix::unistd::sethostname(plan.cfg.hostname())
        .map_err(|e| Error::sys(format!("sethostname({:?})", plan.cfg.hostname()), e))
        .at(InitStep::Hostname)?;
    pivot(root).at(InitStep::PivotRoot)?;
    check_cwd().at(InitStep::Cwd)?;
    drop_caps().at(InitStep::Capabilities)?;
    let exe = find_exe(plan).at(InitStep::Exec)?;
    nix::sys::stat::umask(Mode::from_bits_truncate(0o022));
    // CVE-2024-21626: nothing but stdio may survive the exec.
    sys::cloexec_from(3)
        .map_err(|e| Error::sys("close_range(3, ~0U, CLOSE_RANGE_CLOEXEC)", e))
        .at(InitStep::CloseFds)?;
    chan.send(Msg::Ready).at(InitStep::Sync)?;
    chan.expect_start().at(InitStep::Sync)?;
    // Last: nothing of ours runs under the filter but the exec (or the
    // shim's fork and waits).
    if let Some(f) = &plan.seccomp {
        crate::seccomp::load(f).at(InitStep::Seccomp)?;
    }
    if plan.shim {
        shim(&exe, plan, chan);
    }
    let e = nix::unistd::execve(&exe, &plan.argv, &plan.envp).unwrap_err();
    Err((InitStep::Exec, Error::sys(format!("execve({exe:?}, …)"), e)))
}
