//! The container side of the start sequence (security.md (a) 9-23): runs in
//! the cloned child, inside the new namespaces, until it execs init.
//!
//! Every in-rootfs path is resolved with `openat2(RESOLVE_IN_ROOT)` relative
//! to the rootfs mount and every mount targets the resulting descriptor
//! (`/proc/self/fd/N`), never a path string that a symlink could redirect.
#![forbid(unsafe_code)]

use std::convert::Infallible;
use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{fchmodat, fstat, makedev, mkdirat, mknodat, FchmodatFlags, Mode, SFlag};
use nix::sys::statvfs::{fstatvfs, FsFlags};
use nix::unistd::{Gid, Uid};

use crate::cgroup::{Layout, Version};
use crate::config::{Backend, ContainerConfig, MountEntry};
use crate::error::{Error, InitStep, Result};
use crate::msg::{Channel, Msg};
use crate::{sys, tty};

/// The capabilities removed from the bounding set, as LXC's default config.
pub const DROPPED_CAPS: [caps::Capability; 5] = [
    caps::Capability::CAP_SYS_MODULE,
    caps::Capability::CAP_SYS_TIME,
    caps::Capability::CAP_MAC_ADMIN,
    caps::Capability::CAP_MAC_OVERRIDE,
    caps::Capability::CAP_SYS_RAWIO,
];

/// `/proc` files hidden behind `/dev/null` and directories behind an empty
/// read-only tmpfs (runc's and LXC's lists).
pub const MASKED_PATHS: [&str; 11] = [
    "proc/acpi",
    "proc/asound",
    "proc/kcore",
    "proc/keys",
    "proc/latency_stats",
    "proc/timer_list",
    "proc/timer_stats",
    "proc/sched_debug",
    "proc/scsi",
    "sys/firmware",
    "sys/devices/virtual/powercap",
];

/// `/proc` paths remounted read-only.
pub const READONLY_PATHS: [&str; 5] = [
    "proc/bus",
    "proc/fs",
    "proc/irq",
    "proc/sys",
    "proc/sysrq-trigger",
];

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

/// Signals pid 1 passes on to the command.
const FORWARDED: [nix::sys::signal::Signal; 9] = {
    use nix::sys::signal::Signal::*;
    [
        SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGPWR, SIGWINCH, SIGCONT,
    ]
};

/// `davit start NAME -- CMD`: like `lxc-execute`'s lxc-init, pid 1 stays a
/// tiny reaper that forwards signals, and CMD runs as pid 2 in its own
/// session with the terminal (if any) as its controlling tty. A command as
/// pid 1 would ignore every signal it has no handler for, so Ctrl-C and
/// `kill` would do nothing. Exits with CMD's status (128 + signal).
fn shim(exe: &std::ffi::CStr, plan: &Plan<'_>, chan: &Channel) -> ! {
    use nix::sys::signal::{SigSet, SigmaskHow, Signal};
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    let mut set = SigSet::empty();
    for s in FORWARDED {
        set.add(s);
    }
    set.add(Signal::SIGCHLD);
    // Blocked before the fork: no signal or exit can slip past the wait below.
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None);
    // Pid 1 is a fork of the monitor that never execs. Under root's monitor
    // it stays non-dumpable: its memory (the monitor's, with host paths and
    // the admin's environment) cannot be ptraced or read through
    // /proc/1/{mem,environ} by container root, who has no capability in the
    // user namespace that owns it. /proc/1/cmdline is readable by anyone,
    // so the arguments and the environment are overwritten in place, before
    // CMD exists to look. CMD gets its own copies (plan.argv, plan.envp).
    scrub_args_and_environ();
    let child = match sys::fork_process() {
        Ok(Some(pid)) => pid,
        Ok(None) => {
            let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&set), None);
            let _ = nix::unistd::setsid();
            if nix::unistd::isatty(0).unwrap_or(false) {
                let _ = sys::set_controlling_tty(0);
            }
            let _ = nix::unistd::execve(exe, &plan.argv, &plan.envp);
            sys::exit_now(127)
        }
        Err(_) => sys::exit_now(126),
    };
    // The monitor waits for end of file on the sync socket, which an exec
    // would give it; pid 1 never execs, so end the conversation here.
    chan.shutdown();
    // What exec would have done for pid 1: drop every descriptor but stdio
    // (CVE-2024-21626).
    let _ = sys::close_from(3);
    // pid 1 stays non-dumpable for good, under a plain user's monitor too:
    // that user's attach joins CMD's namespaces instead (the monitor
    // records CMD as `attach_via`), which needs no ptrace access to pid 1.
    loop {
        let Ok(sig) = set.wait() else { continue };
        if sig != Signal::SIGCHLD {
            // To CMD's whole process group, as a terminal would.
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(-child.as_raw()), sig);
            continue;
        }
        // Reap every zombie (orphans reparent to us); leave when CMD is gone.
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) if pid == child => sys::exit_now(code),
                Ok(WaitStatus::Signaled(pid, s, _)) if pid == child => {
                    sys::exit_now(128 + s as i32)
                }
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => continue,
            }
        }
    }
}

/// Overwrites this process's argument and environment strings (the
/// regions `/proc/self/stat` names) with `davit-shim` and NULs, so
/// `/proc/1/cmdline` and `/proc/1/environ` of the shim show nothing of the
/// monitor's host arguments and environment. `process_vm_writev` to
/// ourselves, because `/proc/self/mem` of a non-dumpable process belongs to
/// the host's root, whom container root cannot act as. Best effort: a
/// failure leaves the non-dumpable guard in place. Nothing reads the
/// arguments or the environment after this.
fn scrub_args_and_environ() {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return;
    };
    // Fields 48-51 of proc(5) (arg_start, arg_end, env_start, env_end);
    // what follows the parenthesised command name starts at field 3.
    let f: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let field = |n: usize| f.get(n - 3).and_then(|x| x.parse::<usize>().ok());
    let (Some(arg_start), Some(arg_end), Some(env_start), Some(env_end)) =
        (field(48), field(49), field(50), field(51))
    else {
        return;
    };
    let me = nix::unistd::getpid();
    for (start, end, name) in [
        (arg_start, arg_end, &b"davit-shim"[..]),
        (env_start, env_end, &b""[..]),
    ] {
        let Some(len) = end.checked_sub(start).filter(|l| *l > 0) else {
            continue;
        };
        let mut buf = vec![0u8; len];
        let n = name.len().min(len - 1);
        buf[..n].copy_from_slice(&name[..n]);
        let _ = nix::sys::uio::process_vm_writev(
            me,
            &[std::io::IoSlice::new(&buf)],
            &[nix::sys::uio::RemoteIoVec { base: start, len }],
        );
    }
}

fn fd_path(fd: BorrowedFd<'_>) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

fn flag_names(f: MsFlags) -> String {
    let names: Vec<String> = f.iter_names().map(|(n, _)| n.to_owned()).collect();
    if names.is_empty() {
        "0".to_owned()
    } else {
        names.join("|")
    }
}

/// `mount(src, <fd of target>, fstype, flags, data)`, reported with the
/// in-container path.
fn mount_on(
    src: Option<&str>,
    target: BorrowedFd<'_>,
    shown: &str,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<()> {
    mount(src, fd_path(target).as_str(), fstype, flags, data).map_err(|e| {
        Error::sys(
            format!(
                "mount({:?}, {:?}, {:?}, {}, {:?})",
                src.unwrap_or("NULL"),
                shown,
                fstype.unwrap_or("NULL"),
                flag_names(flags),
                data.unwrap_or("NULL")
            ),
            e,
        )
    })
}

const IN_ROOT: u64 = sys::RESOLVE_IN_ROOT | sys::RESOLVE_NO_MAGICLINKS;

fn open_in(root: BorrowedFd<'_>, path: &str, flags: OFlag) -> std::result::Result<OwnedFd, Errno> {
    sys::openat2(root, Path::new(path), flags.bits(), 0, IN_ROOT)
}

fn open_path(root: BorrowedFd<'_>, path: &str) -> Result<OwnedFd> {
    open_in(root, path, OFlag::O_PATH | OFlag::O_NOFOLLOW).map_err(|e| {
        Error::sys(
            format!("openat2(rootfs, {path:?}, O_PATH|O_NOFOLLOW, RESOLVE_IN_ROOT)"),
            e,
        )
    })
}

/// Open (creating if missing) a directory that must not be a symlink
/// anywhere on its path: `/proc`, `/sys`, `/dev` and friends
/// (CVE-2019-16884 family, CVE-2026-41579).
fn plain_dir(root: BorrowedFd<'_>, path: &str) -> Result<OwnedFd> {
    let resolve = IN_ROOT | sys::RESOLVE_NO_SYMLINKS;
    let open = || {
        sys::openat2(
            root,
            Path::new(path),
            (OFlag::O_PATH | OFlag::O_NOFOLLOW).bits(),
            0,
            resolve,
        )
    };
    let fd = match open() {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => {
            let (parent, name) = match path.rsplit_once('/') {
                Some((p, n)) => (Some(p), n),
                None => (None, path),
            };
            let pfd = match parent {
                Some(p) => Some(plain_dir(root, p)?),
                None => None,
            };
            let dirfd = pfd
                .as_ref()
                .map(|f| f.as_raw_fd())
                .unwrap_or(root.as_raw_fd());
            match mkdirat(Some(dirfd), name, Mode::from_bits_truncate(0o755)) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(Error::sys(format!("mkdirat(rootfs, {path:?}, 0755)"), e)),
            }
            open().map_err(|e| Error::sys(format!("openat2(rootfs, {path:?}, O_PATH)"), e))?
        }
        Err(Errno::ELOOP) => {
            return Err(Error::Symlink {
                path: PathBuf::from("/").join(path),
            })
        }
        Err(e) => {
            return Err(Error::sys(
                format!(
                "openat2(rootfs, {path:?}, O_PATH|O_NOFOLLOW, RESOLVE_IN_ROOT|RESOLVE_NO_SYMLINKS)"
            ),
                e,
            ))
        }
    };
    let st = fstat(fd.as_raw_fd()).map_err(|e| Error::sys(format!("fstat({path:?})"), e))?;
    match SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) {
        SFlag::S_IFDIR => Ok(fd),
        SFlag::S_IFLNK => Err(Error::Symlink {
            path: PathBuf::from("/").join(path),
        }),
        _ => Err(Error::WrongType {
            path: PathBuf::from("/").join(path),
            want: "directory",
        }),
    }
}

/// Clone the rootfs (our cwd, set by the parent before the clone and moved
/// into the new mount namespace by the kernel) onto itself with
/// `open_tree(OPEN_TREE_CLONE|AT_RECURSIVE)` + `move_mount`. No path string
/// is looked up, so no host directory above the rootfs needs to be
/// searchable by the container's root.
fn clone_rootfs() -> Result<OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt;
    let here = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
        .open(".")
        .map_err(|source| Error::Read {
            path: PathBuf::from("."),
            source,
        })?;
    let tree = sys::open_tree_clone(here.as_fd(), Path::new("."))
        .map_err(|e| Error::sys("open_tree(rootfs, \".\", OPEN_TREE_CLONE|AT_RECURSIVE)", e))?;
    sys::move_mount_onto(tree.as_fd(), here.as_fd(), Path::new(".")).map_err(|e| {
        Error::sys(
            "move_mount(tree, \"\", rootfs, \".\", MOVE_MOUNT_F_EMPTY_PATH)",
            e,
        )
    })?;
    Ok(tree)
}

/// The layers of an overlay root, opened in the container's mount namespace.
struct OverlayLayers {
    /// The base, unless it arrives as an idmapped mount from the parent.
    base: Option<OwnedFd>,
    upper: OwnedFd,
    work: OwnedFd,
}

fn open_dir_path(p: &Path) -> Result<OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(p)
        .map(OwnedFd::from)
        .map_err(|source| Error::Read {
            path: p.to_owned(),
            source,
        })
}

impl OverlayLayers {
    fn open(cfg: &ContainerConfig) -> Result<OverlayLayers> {
        let (base, upper, work) = cfg.storage.overlay_dirs()?;
        Ok(OverlayLayers {
            base: if cfg.storage.idmapped_lower {
                None
            } else {
                Some(open_dir_path(base)?)
            },
            upper: open_dir_path(upper)?,
            work: open_dir_path(work)?,
        })
    }

    /// Mounts the overlay on the rootfs mount point (our cwd) and returns
    /// the new mount. An idmapped base (a detached mount from the parent) is
    /// first attached there, because overlayfs refuses layers outside the
    /// caller's mount namespace. In a user namespace the overlay keeps its
    /// whiteouts and opaque markers in `user.overlay.*` xattrs (`userxattr`).
    fn mount(self, idmapped: Option<OwnedFd>, userns: bool) -> Result<OwnedFd> {
        use rustix::mount::{
            fsconfig_create, fsconfig_set_flag, fsconfig_set_string, fsmount, fsopen, move_mount,
            FsMountFlags, FsOpenFlags, MountAttrFlags, MoveMountFlags,
        };
        let here = open_dir_path(Path::new("."))?;
        let lower = match (idmapped, self.base) {
            (Some(tree), _) => {
                sys::move_mount_onto(tree.as_fd(), here.as_fd(), Path::new("."))
                    .map_err(|e| Error::sys("move_mount(idmapped base, \"\", rootfs, \".\")", e))?;
                tree
            }
            (None, Some(base)) => base,
            (None, None) => {
                return Err(Error::ConfigInvalid {
                    reason: "the idmapped base did not arrive".into(),
                })
            }
        };
        let errno = |what: String| {
            move |e: rustix::io::Errno| Error::sys(what, Errno::from_raw(e.raw_os_error()))
        };
        let fs = fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC)
            .map_err(errno("fsopen(\"overlay\")".into()))?;
        let fd_path = |fd: &OwnedFd| format!("/proc/self/fd/{}", fd.as_raw_fd());
        for (key, fd) in [
            ("lowerdir", &lower),
            ("upperdir", &self.upper),
            ("workdir", &self.work),
        ] {
            let v = fd_path(fd);
            fsconfig_set_string(&fs, key, v.as_str())
                .map_err(errno(format!("fsconfig(overlay, {key}={v})")))?;
        }
        if userns {
            fsconfig_set_flag(&fs, "userxattr")
                .map_err(errno("fsconfig(overlay, userxattr)".into()))?;
        }
        fsconfig_create(&fs).map_err(errno(format!(
            "fsconfig(overlay, FSCONFIG_CMD_CREATE) with lowerdir={}, upperdir={}, workdir={}",
            self_path(&lower),
            self_path(&self.upper),
            self_path(&self.work)
        )))?;
        let mnt = fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, MountAttrFlags::empty())
            .map_err(errno("fsmount(overlay)".into()))?;
        move_mount(
            &mnt,
            "",
            &here,
            ".",
            MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
        )
        .map_err(errno("move_mount(overlay, \"\", rootfs, \".\")".into()))?;
        Ok(mnt)
    }
}

/// The path a descriptor refers to, for error messages.
fn self_path(fd: &OwnedFd) -> String {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "?".into())
}

fn mount_proc(root: BorrowedFd<'_>) -> Result<()> {
    let fd = plain_dir(root, "proc")?;
    mount_on(
        Some("proc"),
        fd.as_fd(),
        "/proc",
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None,
    )
}

fn mount_sys(root: BorrowedFd<'_>) -> Result<()> {
    let fd = plain_dir(root, "sys")?;
    let flags = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    match mount_on(
        Some("sysfs"),
        fd.as_fd(),
        "/sys",
        Some("sysfs"),
        flags,
        None,
    ) {
        Ok(()) => Ok(()),
        Err(e) if e.errno() == Some(Errno::EPERM) => {
            // No netns of our own: bind the host's /sys read-only instead.
            mount_on(
                Some("/sys"),
                fd.as_fd(),
                "/sys",
                None,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None,
            )?;
            remount_ro(root, "sys")
        }
        Err(e) => Err(e),
    }
}

/// Remount the mount now on top of `path` read-only, keeping its locked
/// flags (a user namespace may add restrictions, never drop them).
fn remount_ro(root: BorrowedFd<'_>, path: &str) -> Result<()> {
    let fd = open_path(root, path)?;
    let vfs = fstatvfs(fd.as_fd()).map_err(|e| Error::sys(format!("fstatvfs({path:?})"), e))?;
    let mut flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
    for (f, m) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if vfs.flags().contains(f) {
            flags |= m;
        }
    }
    mount_on(None, fd.as_fd(), &format!("/{path}"), None, flags, None)
}

const DEVICES: [(&str, u64, u64); 6] = [
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

fn build_dev(root: BorrowedFd<'_>, privileged: bool) -> Result<()> {
    let fd = plain_dir(root, "dev")?;
    mount_on(
        Some("tmpfs"),
        fd.as_fd(),
        "/dev",
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("mode=755,size=65536k"),
    )?;
    drop(fd);
    // Reopen: the name now leads onto the fresh tmpfs.
    let dev = plain_dir(root, "dev")?;
    let d = dev.as_raw_fd();
    for (name, major, minor) in DEVICES {
        let shown = format!("/dev/{name}");
        if privileged {
            mknodat(
                Some(d),
                name,
                SFlag::S_IFCHR,
                Mode::from_bits_truncate(0o666),
                makedev(major, minor),
            )
            .map_err(|e| {
                Error::sys(
                    format!("mknodat(dev, {name:?}, S_IFCHR|0666, {major}:{minor})"),
                    e,
                )
            })?;
        } else {
            // mknod is EPERM in a user namespace: bind the host node onto
            // an empty file instead.
            let f = sys::openat2(
                dev.as_fd(),
                Path::new(name),
                (OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW).bits(),
                0o666,
                sys::RESOLVE_BENEATH | sys::RESOLVE_NO_SYMLINKS,
            )
            .map_err(|e| Error::sys(format!("openat2(dev, {name:?}, O_CREAT|O_EXCL)"), e))?;
            drop(f);
            let t = sys::openat2(
                dev.as_fd(),
                Path::new(name),
                (OFlag::O_PATH | OFlag::O_NOFOLLOW).bits(),
                0,
                sys::RESOLVE_BENEATH | sys::RESOLVE_NO_SYMLINKS,
            )
            .map_err(|e| Error::sys(format!("openat2(dev, {name:?}, O_PATH)"), e))?;
            mount_on(
                Some(shown.as_str()),
                t.as_fd(),
                &shown,
                None,
                MsFlags::MS_BIND,
                None,
            )?;
        }
    }
    let mk = |name: &str, mode: u32| -> Result<OwnedFd> {
        mkdirat(Some(d), name, Mode::from_bits_truncate(mode))
            .map_err(|e| Error::sys(format!("mkdirat(dev, {name:?}, {mode:o})"), e))?;
        sys::openat2(
            dev.as_fd(),
            Path::new(name),
            (OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW).bits(),
            0,
            sys::RESOLVE_BENEATH | sys::RESOLVE_NO_SYMLINKS,
        )
        .map_err(|e| Error::sys(format!("openat2(dev, {name:?}, O_PATH)"), e))
    };
    let pts = mk("pts", 0o755)?;
    mount_on(
        Some("devpts"),
        pts.as_fd(),
        "/dev/pts",
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
    )?;
    let shm = mk("shm", 0o1777)?;
    mount_on(
        Some("shm"),
        shm.as_fd(),
        "/dev/shm",
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=1777,size=65536k"),
    )?;
    let mq = mk("mqueue", 0o755)?;
    mount_on(
        Some("mqueue"),
        mq.as_fd(),
        "/dev/mqueue",
        Some("mqueue"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None,
    )?;
    for (link, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        nix::unistd::symlinkat(target, Some(d), link)
            .map_err(|e| Error::sys(format!("symlinkat({target:?}, dev, {link:?})"), e))?;
    }
    fchmodat(
        Some(d),
        ".",
        Mode::from_bits_truncate(0o755),
        FchmodatFlags::FollowSymlink,
    )
    .map_err(|e| Error::sys("fchmodat(dev, \".\", 0755)", e))?;
    Ok(())
}

/// `/dev/console` is the container's terminal (as LXC binds its pty there).
/// Binds the pty `slave` on `/dev/NAME` (a new empty file in init's own
/// `/dev` tmpfs): `console`, or `ttyN`.
fn bind_console(root: BorrowedFd<'_>, slave: &OwnedFd, name: &str) -> Result<()> {
    let dev = plain_dir(root, "dev")?;
    let f = sys::openat2(
        dev.as_fd(),
        Path::new(name),
        (OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW).bits(),
        0o600,
        sys::RESOLVE_BENEATH | sys::RESOLVE_NO_SYMLINKS,
    )
    .map_err(|e| Error::sys(format!("openat2(dev, {name:?}, O_CREAT|O_EXCL)"), e))?;
    drop(f);
    let t = sys::openat2(
        dev.as_fd(),
        Path::new(name),
        (OFlag::O_PATH | OFlag::O_NOFOLLOW).bits(),
        0,
        sys::RESOLVE_BENEATH | sys::RESOLVE_NO_SYMLINKS,
    )
    .map_err(|e| Error::sys(format!("openat2(dev, {name:?}, O_PATH)"), e))?;
    mount_on(
        Some(fd_path(slave.as_fd()).as_str()),
        t.as_fd(),
        &format!("/dev/{name}"),
        None,
        MsFlags::MS_BIND,
        None,
    )
}

/// Mask and read-only paths. `/dev/null` is opened `O_PATH` and checked to
/// be char 1:3 before it is bound anywhere (CVE-2025-31133).
fn mask_paths(root: BorrowedFd<'_>) -> Result<()> {
    let null = open_path(root, "dev/null")?;
    let st = fstat(null.as_raw_fd()).map_err(|e| Error::sys("fstat(\"/dev/null\")", e))?;
    if st.st_mode & SFlag::S_IFMT.bits() != SFlag::S_IFCHR.bits() || st.st_rdev != makedev(1, 3) {
        return Err(Error::WrongType {
            path: "/dev/null".into(),
            want: "character device 1:3",
        });
    }
    let null_src = fd_path(null.as_fd());
    for p in MASKED_PATHS {
        let t = match open_in(root, p, OFlag::O_PATH | OFlag::O_NOFOLLOW) {
            Ok(t) => t,
            Err(Errno::ENOENT) => continue,
            Err(e) => {
                return Err(Error::sys(
                    format!("openat2(rootfs, {p:?}, O_PATH|O_NOFOLLOW)"),
                    e,
                ))
            }
        };
        let st = fstat(t.as_raw_fd()).map_err(|e| Error::sys(format!("fstat({p:?})"), e))?;
        let shown = format!("/{p}");
        if st.st_mode & SFlag::S_IFMT.bits() == SFlag::S_IFDIR.bits() {
            mount_on(
                Some("tmpfs"),
                t.as_fd(),
                &shown,
                Some("tmpfs"),
                MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                Some("size=0,mode=555"),
            )?;
        } else {
            mount_on(
                Some(null_src.as_str()),
                t.as_fd(),
                &shown,
                None,
                MsFlags::MS_BIND,
                None,
            )?;
        }
    }
    for p in READONLY_PATHS {
        let t = match open_in(root, p, OFlag::O_PATH | OFlag::O_NOFOLLOW) {
            Ok(t) => t,
            Err(Errno::ENOENT) => continue,
            Err(e) => {
                return Err(Error::sys(
                    format!("openat2(rootfs, {p:?}, O_PATH|O_NOFOLLOW)"),
                    e,
                ))
            }
        };
        let src = fd_path(t.as_fd());
        mount_on(
            Some(src.as_str()),
            t.as_fd(),
            &format!("/{p}"),
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
        )?;
        drop(t);
        remount_ro(root, p)?;
    }
    Ok(())
}

/// `/sys/fs/cgroup` inside: the container's own cgroup through the cgroup
/// namespace. v2 alone: one `cgroup2` mount. v1 or hybrid: a tmpfs holding
/// one mount per hierarchy, named as on the host. v1 controllers are always
/// read-only (CVE-2022-0492 `release_agent`); v2 and the controller-less
/// `name=systemd` hierarchy are writable only when delegated (the mount
/// shows the cgroup namespace root, our own leaf, never the hierarchy root
/// that holds `release_agent`).
/// `/sys/fs/cgroup`: the container's own cgroups (the namespace made
/// after joining them roots every hierarchy there), or with `layout`
/// `None` (no cgroup of its own: a plain user without delegation) an empty
/// read-only tmpfs, since its cgroup namespace would be rooted at the
/// caller's cgroup and could show the host's whole tree.
fn mount_cgroupfs(
    root: BorrowedFd<'_>,
    layout: Option<&Layout>,
    v2_rw: bool,
    systemd_rw: bool,
) -> Result<()> {
    let base = match open_in(
        root,
        "sys/fs/cgroup",
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_DIRECTORY,
    ) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(()),
        Err(e) => {
            return Err(Error::sys(
                "openat2(rootfs, \"sys/fs/cgroup\", O_PATH|O_DIRECTORY)",
                e,
            ))
        }
    };
    let common = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let ro = |rw: bool| {
        if rw {
            common
        } else {
            common | MsFlags::MS_RDONLY
        }
    };
    let Some(layout) = layout else {
        return mount_on(
            Some("tmpfs"),
            base.as_fd(),
            "/sys/fs/cgroup",
            Some("tmpfs"),
            common | MsFlags::MS_RDONLY,
            Some("mode=555,size=4k"),
        );
    };
    if layout.hierarchies.iter().all(|h| h.version == Version::V2) {
        if layout.unified().is_some() {
            mount_on(
                Some("cgroup2"),
                base.as_fd(),
                "/sys/fs/cgroup",
                Some("cgroup2"),
                ro(v2_rw),
                None,
            )?;
        }
        return Ok(());
    }
    mount_on(
        Some("tmpfs"),
        base.as_fd(),
        "/sys/fs/cgroup",
        Some("tmpfs"),
        common,
        Some("mode=755,size=64k"),
    )?;
    drop(base);
    let dir = open_in(
        root,
        "sys/fs/cgroup",
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_DIRECTORY,
    )
    .map_err(|e| Error::sys("openat2(rootfs, \"sys/fs/cgroup\", O_PATH)", e))?;
    for h in &layout.hierarchies {
        let Some(name) = h.mountpoint.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if name.contains('/') || name == ".." || name == "." {
            continue;
        }
        mkdirat(Some(dir.as_raw_fd()), name, Mode::from_bits_truncate(0o755))
            .map_err(|e| Error::sys(format!("mkdirat(cgroupfs, {name:?}, 0755)"), e))?;
        let t = sys::openat2(
            dir.as_fd(),
            Path::new(name),
            (OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW).bits(),
            0,
            sys::RESOLVE_BENEATH | sys::RESOLVE_NO_SYMLINKS,
        )
        .map_err(|e| Error::sys(format!("openat2(cgroupfs, {name:?}, O_PATH)"), e))?;
        let shown = format!("/sys/fs/cgroup/{name}");
        match h.version {
            Version::V1 => mount_on(
                Some("cgroup"),
                t.as_fd(),
                &shown,
                Some("cgroup"),
                ro(systemd_rw && h.has("name=systemd")),
                Some(h.mount_options.as_str()),
            )?,
            Version::V2 => mount_on(
                Some("cgroup2"),
                t.as_fd(),
                &shown,
                Some("cgroup2"),
                ro(v2_rw),
                None,
            )?,
        }
    }
    drop(dir);
    remount_ro(root, "sys/fs/cgroup")
}

/// Resolve (creating as needed, never outside the root) the target of a
/// config mount: a directory, or an empty file when `file` is set.
fn mkdir_all_in_root(root: BorrowedFd<'_>, target: &Path, file: bool) -> Result<OwnedFd> {
    let parts: Vec<&std::ffi::OsStr> = target
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n),
            _ => None,
        })
        .collect();
    let mut cur = root.try_clone_to_owned().map_err(|e| {
        Error::sys(
            "dup(rootfs)",
            Errno::from_raw(e.raw_os_error().unwrap_or(0)),
        )
    })?;
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        let p = Path::new(part);
        let next = sys::openat2(cur.as_fd(), p, (OFlag::O_PATH).bits(), 0, IN_ROOT);
        // Re-resolve the whole prefix from the root each step so a symlink
        // can never lead out of it.
        let next = match next {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => {
                if last && file {
                    drop(
                        sys::openat2(
                            cur.as_fd(),
                            p,
                            (OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW)
                                .bits(),
                            0o644,
                            IN_ROOT,
                        )
                        .map_err(|e| {
                            Error::sys(format!("openat2({:?}, O_CREAT|O_EXCL)", target), e)
                        })?,
                    );
                } else {
                    match mkdirat(Some(cur.as_raw_fd()), p, Mode::from_bits_truncate(0o755)) {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(e) => {
                            return Err(Error::sys(format!("mkdirat({:?}, 0755)", target), e))
                        }
                    }
                }
                sys::openat2(cur.as_fd(), p, (OFlag::O_PATH).bits(), 0, IN_ROOT)
                    .map_err(|e| Error::sys(format!("openat2({:?}, O_PATH)", target), e))?
            }
            Err(e) => {
                return Err(Error::sys(
                    format!("openat2({:?}, O_PATH, RESOLVE_IN_ROOT)", target),
                    e,
                ))
            }
        };
        cur = next;
    }
    Ok(cur)
}

/// The source of each bind in `cfg.mounts` (`None` for other mounts and
/// for a missing `optional` one), opened `O_PATH` while init still holds
/// the invoking user's host ids: container root may not search the way
/// to a host directory. The host path is the admin's, so its links are
/// followed.
fn open_bind_sources(cfg: &ContainerConfig) -> Result<Vec<Option<OwnedFd>>> {
    use std::os::unix::fs::OpenOptionsExt;
    cfg.mounts
        .iter()
        .map(|m| {
            if !m.is_bind() {
                return Ok(None);
            }
            match std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
                .open(&m.source)
            {
                Ok(f) => Ok(Some(OwnedFd::from(f))),
                Err(e)
                    if m.options().any(|o| o == "optional")
                        && e.kind() == std::io::ErrorKind::NotFound =>
                {
                    Ok(None)
                }
                Err(source) => Err(Error::Read {
                    path: PathBuf::from(&m.source),
                    source,
                }),
            }
        })
        .collect()
}

fn user_mount(
    root: BorrowedFd<'_>,
    m: &MountEntry,
    source: Option<OwnedFd>,
    idmapped: Option<OwnedFd>,
) -> Result<()> {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    let mut ro = false;
    let bind = m.is_bind();
    let mut recursive = m.fstype == "rbind";
    // mount_setattr flags for a bind's detached tree.
    let (mut set, mut clr) = (0u64, 0u64);
    for o in m.options() {
        match o {
            "ro" => ro = true,
            "rw" | "defaults" | "create=dir" | "create=file" | "bind" | "optional" | "idmap" => {}
            "nosuid" => {
                flags |= MsFlags::MS_NOSUID;
                set |= sys::MOUNT_ATTR_NOSUID;
            }
            "nodev" => {
                flags |= MsFlags::MS_NODEV;
                set |= sys::MOUNT_ATTR_NODEV;
            }
            "noexec" => {
                flags |= MsFlags::MS_NOEXEC;
                set |= sys::MOUNT_ATTR_NOEXEC;
            }
            "noatime" => {
                flags |= MsFlags::MS_NOATIME;
                set |= sys::MOUNT_ATTR_NOATIME;
                clr |= sys::MOUNT_ATTR_ATIME_MASK;
            }
            "relatime" => {
                flags |= MsFlags::MS_RELATIME;
                clr |= sys::MOUNT_ATTR_ATIME_MASK;
            }
            "rbind" => recursive = true,
            other => data.push(other),
        }
    }
    let shown = m.target.to_string_lossy().into_owned();
    if bind {
        // A missing optional source.
        let Some(source) = source else {
            return Ok(());
        };
        let is_dir = nix::sys::stat::fstat(source.as_raw_fd())
            .map(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR)
            .map_err(|e| Error::sys(format!("fstat({:?})", m.source), e))?;
        // Resolved inside the rootfs: a link in the image cannot lead the
        // bind out of it.
        let t = mkdir_all_in_root(root, &m.target, !is_dir)?;
        let tree = match idmapped {
            Some(tree) => tree,
            None => sys::open_tree_clone_fd(source.as_fd(), recursive).map_err(|e| {
                Error::sys(
                    format!(
                        "open_tree({:?}, OPEN_TREE_CLONE{})",
                        m.source,
                        if recursive { "|AT_RECURSIVE" } else { "" }
                    ),
                    e,
                )
            })?,
        };
        if ro {
            set |= sys::MOUNT_ATTR_RDONLY;
        }
        if set != 0 || clr != 0 {
            sys::mount_setattr_flags(tree.as_fd(), set, clr).map_err(|e| {
                Error::sys(
                    format!("mount_setattr({:?}, {:#x}, {:#x})", m.source, set, clr),
                    e,
                )
            })?;
        }
        sys::move_mount_onto(tree.as_fd(), t.as_fd(), Path::new(""))
            .map_err(|e| Error::sys(format!("move_mount({:?}, {shown:?})", m.source), e))
    } else {
        let t = mkdir_all_in_root(root, &m.target, false)?;
        if ro {
            flags |= MsFlags::MS_RDONLY;
        }
        let data = data.join(",");
        mount_on(
            Some(m.source.as_str()),
            t.as_fd(),
            &shown,
            Some(m.fstype.as_str()),
            flags,
            (!data.is_empty()).then_some(data.as_str()),
        )
    }
}

/// `pivot_root(".", ".")` with the rootfs as cwd, then detach the old root
/// after making it rslave so the unmount does not propagate to the host.
fn pivot(root: BorrowedFd<'_>) -> Result<()> {
    nix::unistd::fchdir(root.as_raw_fd()).map_err(|e| Error::sys("fchdir(rootfs)", e))?;
    nix::unistd::pivot_root(".", ".").map_err(|e| Error::sys("pivot_root(\".\", \".\")", e))?;
    mount(
        None::<&str>,
        ".",
        None::<&str>,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| Error::sys("mount(NULL, \".\", NULL, MS_SLAVE|MS_REC, NULL)", e))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| Error::sys("umount2(\".\", MNT_DETACH)", e))?;
    nix::unistd::chdir("/").map_err(|e| Error::sys("chdir(\"/\")", e))
}

/// CVE-2024-21626: the cwd must be inside the new root.
fn check_cwd() -> Result<()> {
    match nix::unistd::getcwd() {
        Ok(p) if p == Path::new("/") => Ok(()),
        Ok(p) => Err(Error::WrongType {
            path: p,
            want: "working directory inside the container",
        }),
        Err(e) => Err(Error::sys("getcwd()", e)),
    }
}

/// Drop the bounding-set capabilities LXC drops and clear inheritable and
/// ambient (CVE-2022-29162).
pub(crate) fn drop_caps() -> Result<()> {
    for c in DROPPED_CAPS {
        match caps::drop(None, caps::CapSet::Bounding, c) {
            Ok(()) => {}
            // An unknown capability on an old kernel is already "dropped".
            Err(_) if !caps::has_cap(None, caps::CapSet::Bounding, c).unwrap_or(true) => {}
            Err(_) => {
                return Err(Error::sys(
                    format!("prctl(PR_CAPBSET_DROP, {c})"),
                    Errno::last(),
                ))
            }
        }
    }
    caps::clear(None, caps::CapSet::Ambient)
        .map_err(|_| Error::sys("prctl(PR_CAP_AMBIENT_CLEAR_ALL)", Errno::last()))?;
    caps::clear(None, caps::CapSet::Inheritable)
        .map_err(|_| Error::sys("capset(inheritable = 0)", Errno::last()))?;
    Ok(())
}

/// Resolve `argv[0]` inside the (pivoted) container through `PATH`.
pub(crate) fn find_exe(plan: &Plan<'_>) -> Result<CString> {
    let arg0 = plan.argv[0].to_bytes();
    let as_path = |p: &Path| {
        CString::new(std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str())).unwrap_or_default()
    };
    if arg0.contains(&b'/') {
        return Ok(plan.argv[0].clone());
    }
    let name = <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(arg0);
    for d in &plan.path_dirs {
        let cand = d.join(name);
        if nix::unistd::access(&cand, nix::unistd::AccessFlags::X_OK).is_ok()
            && std::fs::metadata(&cand)
                .map(|m| m.is_file())
                .unwrap_or(false)
        {
            return Ok(as_path(&cand));
        }
    }
    Err(Error::sys(
        format!("execvp({:?})", String::from_utf8_lossy(arg0)),
        Errno::ENOENT,
    ))
}
