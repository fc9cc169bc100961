//! The host side of the start sequence (security.md (a) 1-8 and 24): clone
//! init into new namespaces, map its ids, put it in its cgroup, release it.
#![forbid(unsafe_code)]

use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sched::CloneFlags;
use nix::sys::signal::Signal;
use nix::sys::wait::waitpid;
use nix::unistd::Pid;

use crate::cgroup::handover::Handover;
use crate::cgroup::{Cgroup, Layout};
use crate::config::{Backend, ContainerConfig};
use crate::error::{Error, Result};
use crate::init::{child_main, Plan};
use crate::msg::{Channel, Msg};
use crate::state::start_time;
use crate::sys;

/// The default `PATH` given to init and attached commands.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What to start.
#[derive(Debug)]
pub struct InitSpec<'a> {
    /// The container's config (validated here again).
    pub config: &'a ContainerConfig,
    /// The command to exec as pid 1; empty means `config.init`.
    pub command: Vec<String>,
    /// The cgroup to put init in, already created with its limits.
    pub cgroup: Option<&'a Cgroup>,
    /// The host's cgroup layout, for `/sys/fs/cgroup` inside.
    pub layout: &'a Layout,
    /// Give init a pseudo-terminal from the container's own devpts (bound
    /// on `/dev/console`); its master comes back in [`Spawned::console`].
    /// Without it init still gets a session of its own and no standard
    /// descriptor that is a terminal.
    pub console: bool,
    /// With `console`: this many more terminals, `/dev/tty1..N`, whose
    /// masters come back in [`Spawned::ttys`].
    pub ttys: u32,
}

/// A started init.
#[derive(Debug)]
pub struct Spawned {
    /// Host pid of init.
    pub pid: Pid,
    /// A pidfd for init, when the kernel gave one.
    pub pidfd: Option<OwnedFd>,
    /// Start time of init (field 22 of `/proc/PID/stat`).
    pub start_time: u64,
    /// Init's network namespace (`/proc/PID/ns/net`), opened while init was
    /// still dumpable so a plain user's monitor can hand it to the network
    /// helper (net module).
    pub netns: Option<OwnedFd>,
    /// The master of init's terminal, with [`InitSpec::console`].
    pub console: Option<OwnedFd>,
    /// The masters of `/dev/tty1..N`, with [`InitSpec::ttys`].
    pub ttys: Vec<OwnedFd>,
    /// For the state: each `idmap` bind that is a plain bind, and why.
    pub notes: Vec<String>,
}

/// The environment init starts with: `PATH`, `TERM`, `HOME`,
/// `container=davit`, then the config's `env` (which may override).
pub fn init_env(cfg: &ContainerConfig) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = vec![
        ("PATH".into(), DEFAULT_PATH.into()),
        ("TERM".into(), "linux".into()),
        ("HOME".into(), "/root".into()),
        ("container".into(), "davit".into()),
    ];
    for (k, v) in &cfg.env {
        env.retain(|(ek, _)| ek != k);
        env.push((k.clone(), v.clone()));
    }
    env
}

pub(crate) fn cstrings<I: IntoIterator<Item = String>>(it: I, what: &str) -> Result<Vec<CString>> {
    it.into_iter()
        .map(|s| {
            CString::new(s).map_err(|_| Error::ConfigInvalid {
                reason: format!("{what} contains a NUL byte"),
            })
        })
        .collect()
}

pub(crate) fn path_dirs(env: &[(String, String)]) -> Vec<PathBuf> {
    let path = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str())
        .unwrap_or(DEFAULT_PATH);
    path.split(':')
        .filter(|d| d.starts_with('/'))
        .map(PathBuf::from)
        .collect()
}

/// Clone init with NEWUSER (unless privileged), NEWNS, NEWPID, NEWUTS,
/// NEWIPC and NEWNET, from a single-threaded process (refused otherwise).
///
/// The parent writes the id maps (directly as root, else through
/// `newuidmap`/`newgidmap`), moves init into `spec.cgroup` (with
/// `CLONE_INTO_CGROUP` on a pure v2 host), and releases it. Init makes its
/// own cgroup namespace, builds its mounts and pivots (see `init.rs`), then
/// reports ready; `on_ready` runs then (record the state), and only after it
/// returns is init told to exec. On any failure init is killed and reaped.
///
/// # Errors
/// [`Error::ConfigInvalid`]/[`Error::IdMap`] for a bad config,
/// [`Error::Syscall`] for the clone, map and cgroup errors, and
/// [`Error::Init`] carrying the step, kind and errno of a container-side
/// failure.
pub fn spawn_init(
    spec: &InitSpec<'_>,
    on_ready: &mut dyn FnMut(&Spawned) -> Result<()>,
) -> Result<Spawned> {
    let cfg = spec.config;
    cfg.validate()?;
    let userns = !cfg.privileged;
    let command = if spec.command.is_empty() {
        cfg.init.clone()
    } else {
        spec.command.clone()
    };
    let ttys = if spec.console { spec.ttys } else { 0 };
    let mut env = init_env(cfg);
    if ttys > 0 {
        // The console is the devpts's first pty (pts/0), the terminals the
        // next ones; systemd's getty generator starts a getty on each.
        let names: Vec<String> = (1..=ttys).map(|i| format!("pts/{i}")).collect();
        env.retain(|(k, _)| k != "container_ttys");
        env.push(("container_ttys".into(), names.join(" ")));
    }
    let plan = Plan {
        cfg,
        argv: cstrings(command, "the init command")?,
        envp: cstrings(
            env.iter().map(|(k, v)| format!("{k}={v}")),
            "the environment",
        )?,
        path_dirs: path_dirs(&env),
        userns,
        layout: spec.layout,
        cgroup2_rw: false,
        systemd_v1_rw: false,
        shim: !spec.command.is_empty(),
        console: spec.console,
        ttys,
        null: crate::tty::host_null()?,
        own_cgroup: spec.cgroup.is_some(),
        seccomp: cfg.seccomp_in_force().build()?,
    };
    let mut plan = plan;

    // The rootfs must be a real directory; we hand it to the child as its
    // cwd (the kernel moves the cwd into the new mount namespace).
    let rootfs = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(&cfg.rootfs)
        .map_err(|source| Error::Read {
            path: cfg.rootfs.clone(),
            source,
        })?;

    // The leaf is handed to container root once init is in it (release),
    // so that a plain user can still move init there first. Whether
    // `/sys/fs/cgroup` is writable inside is decided now; should the
    // handover fail, a writable mount of a tree container root does not
    // own grants it nothing.
    let mut v2_fd = None;
    if let Some(cg) = spec.cgroup {
        plan.cgroup2_rw = cg.v2_dir().is_some();
        plan.systemd_v1_rw = cg.named_v1_dir("systemd").is_some();
        if cg.v2_only() {
            if let Some(v2) = cg.v2_dir() {
                v2_fd = std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
                    .open(v2)
                    .ok();
            }
        }
    }

    let mut flags = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWNET;
    if userns {
        flags |= CloneFlags::CLONE_NEWUSER;
    }
    let (parent_chan, child_chan) = Channel::pair()?;
    let old_cwd = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
        .open(".")
        .map_err(|source| Error::Read {
            path: ".".into(),
            source,
        })?;
    nix::unistd::fchdir(std::os::fd::AsRawFd::as_raw_fd(&rootfs))
        .map_err(|e| Error::sys(format!("fchdir({:?})", cfg.rootfs), e))?;
    let cloned = sys::clone_process(flags.bits() as u64, v2_fd.as_ref().map(|f| f.as_fd()));
    let cloned = match cloned {
        Ok(c) => c,
        Err(e) => {
            let _ = nix::unistd::fchdir(std::os::fd::AsRawFd::as_raw_fd(&old_cwd));
            return Err(if e == Errno::EDEADLK {
                Error::Unsupported {
                    what: "starting a container from a multi-threaded process".into(),
                }
            } else {
                Error::sys(format!("clone3({})", clone_flag_names(flags)), e)
            });
        }
    };
    let (pid, pidfd, into_cgroup) = match cloned {
        sys::Cloned::Child => {
            drop(parent_chan);
            child_main(child_chan, &plan)
        }
        sys::Cloned::Parent {
            pid,
            pidfd,
            into_cgroup,
        } => (pid, pidfd, into_cgroup),
    };
    drop(child_chan);
    let _ = nix::unistd::fchdir(std::os::fd::AsRawFd::as_raw_fd(&old_cwd));
    let mut spawned = Spawned {
        pid,
        pidfd,
        start_time: 0,
        netns: None,
        console: None,
        ttys: Vec::new(),
        notes: Vec::new(),
    };
    let r = release(spec, &mut spawned, parent_chan, into_cgroup, on_ready);
    if let Err(e) = r {
        kill_and_reap(&spawned);
        return Err(e);
    }
    Ok(spawned)
}

fn release(
    spec: &InitSpec<'_>,
    spawned: &mut Spawned,
    mut chan: Channel,
    into_cgroup: bool,
    on_ready: &mut dyn FnMut(&Spawned) -> Result<()>,
) -> Result<()> {
    let cfg = spec.config;
    if !cfg.privileged {
        davit_types::idmap::write_maps(
            spawned.pid.as_raw() as u32,
            &cfg.idmap,
            nix::unistd::geteuid().is_root(),
        )?;
    }
    if let Some(cg) = spec.cgroup {
        cg.add_pid_except(spawned.pid.as_raw(), into_cgroup)?;
        // Hand the leaf in every hierarchy to container root, as LXC's
        // cgfsng_chown does (directory 0775, task files 0664, the v2
        // delegate files), so an init like systemd can manage its own
        // subtree: on v2, and on v1 in the controller-less `name=systemd`
        // hierarchy, the only ones mounted writable inside (LXC's
        // `cgroup:mixed`). A plain user does it from a helper user
        // namespace (`handover.rs`).
        if let (false, Some(owner)) = (
            cfg.privileged,
            cfg.idmap.host_uid(0).zip(cfg.idmap.host_gid(0)),
        ) {
            let dirs: Vec<Handover> = cg
                .dirs()
                .iter()
                .map(|d| Handover::of(&d.path, d.hierarchy.version))
                .collect();
            if let Err(e) = crate::cgroup::handover::hand_over(&dirs, owner) {
                spawned.notes.push(format!(
                    "its cgroup could not be handed to container root ({e}), so an init like systemd cannot make its own cgroups"
                ));
            }
        }
    }
    // net: open the netns now, while init is dumpable (it turns
    // non-dumpable on MapsDone), so a plain user may open it too.
    spawned.netns = crate::net::rtnl::open_netns(spawned.pid.as_raw()).ok();
    if cfg.storage.backend == Backend::Overlay && cfg.storage.idmapped_lower {
        let tree = idmapped_base(cfg, spawned.pid)?;
        chan.send_with_fd(Msg::MapsDone, tree.as_fd())?;
    } else {
        chan.send(Msg::MapsDone)?;
    }
    if !cfg.privileged {
        let root = nix::unistd::geteuid().is_root();
        let root_host = cfg.idmap.host_uid(0).unwrap_or(65534);
        for m in cfg.mounts.iter().filter(|m| m.wants_idmap()) {
            // Not idmapped (a plain user, or a filesystem that refuses):
            // init binds it plainly, and `start` says why.
            let why = match root.then(|| idmapped_bind(m, spawned.pid)) {
                Some(Ok(tree)) => {
                    chan.send_with_fd(Msg::HostMount, tree.as_fd())?;
                    continue;
                }
                Some(Err(e)) => format!("not idmapped ({e})"),
                None => "since only root can make an idmapped mount".to_owned(),
            };
            chan.send(Msg::HostMount)?;
            spawned.notes.push(m.plain_bind_note(&why, root_host));
        }
    }
    if spec.console {
        spawned.console = Some(chan.expect_with_fd(Msg::Console)?);
        for _ in 0..spec.ttys {
            spawned.ttys.push(chan.expect_with_fd(Msg::Console)?);
        }
    }
    chan.expect_ready()?;
    spawned.start_time = start_time(spawned.pid.as_raw()).ok_or(Error::NotRunning {
        name: cfg.name.clone(),
    })?;
    on_ready(spawned)?;
    chan.send(Msg::Start)?;
    chan.expect_exec()
}

/// A detached copy of the base mount, idmapped through init's user
/// namespace: the base keeps the image's own ids on disk and init's root
/// sees them as its own (security.md (d) 6). Host root only.
fn idmapped_base(cfg: &ContainerConfig, pid: Pid) -> Result<OwnedFd> {
    let (base, _, _) = cfg.storage.overlay_dirs()?;
    idmapped_tree(base, libc::O_DIRECTORY | libc::O_NOFOLLOW, true, pid, " (an idmapped base needs kernel 5.12+ and a filesystem that supports idmapped mounts; recreate the container with --storage dir)")
}

/// A detached copy of host directory (or file) `m.source`, idmapped
/// through init's user namespace: on-disk uid N reads as container uid N
/// inside (Incus's `shift=true`). Host root only.
fn idmapped_bind(m: &crate::config::MountEntry, pid: Pid) -> Result<OwnedFd> {
    let recursive = m.fstype == "rbind" || m.options().any(|o| o == "rbind");
    idmapped_tree(Path::new(&m.source), 0, recursive, pid, "")
}

/// `open_tree(path, OPEN_TREE_CLONE)` (with its submounts when
/// `recursive`), idmapped through the user namespace of `pid`; `hint` ends
/// the error of the idmap.
fn idmapped_tree(
    path: &Path,
    flags: i32,
    recursive: bool,
    pid: Pid,
    hint: &str,
) -> Result<OwnedFd> {
    let src = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | flags)
        .open(path)
        .map_err(|source| Error::Read {
            path: path.to_owned(),
            source,
        })?;
    let ns_path = format!("/proc/{pid}/ns/user");
    let userns = std::fs::File::open(&ns_path).map_err(|source| Error::Read {
        path: ns_path.clone().into(),
        source,
    })?;
    let tree = sys::open_tree_clone_fd(src.as_fd(), recursive)
        .map_err(|e| Error::sys(format!("open_tree({}, OPEN_TREE_CLONE)", path.display()), e))?;
    sys::mount_setattr_idmap(tree.as_fd(), userns.as_fd()).map_err(|e| {
        Error::sys(
            format!(
                "mount_setattr({}, MOUNT_ATTR_IDMAP, {ns_path}){hint}",
                path.display()
            ),
            e,
        )
    })?;
    Ok(tree)
}

fn kill_and_reap(s: &Spawned) {
    match &s.pidfd {
        Some(fd) => {
            let _ = sys::pidfd_send_signal(fd.as_fd(), Signal::SIGKILL as i32);
        }
        None => {
            let _ = nix::sys::signal::kill(s.pid, Signal::SIGKILL);
        }
    }
    let _ = waitpid(s.pid, None);
}

fn clone_flag_names(f: CloneFlags) -> String {
    f.iter_names().map(|(n, _)| n).collect::<Vec<_>>().join("|") + "|CLONE_PIDFD"
}
