//! The monitor: a small re-executed process (`davit __run-monitor …`) that
//! creates the cgroup, spawns init, records the state, reaps init, records
//! its exit status and tears the cgroup down.
#![forbid(unsafe_code)]

use std::ffi::OsString;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::fd::RawFd;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitStatus};

use crate::cgroup::{self, Cgroup, Layout};
use crate::config::ContainerConfig;
use crate::error::{Error, ErrorKind, Result};
use crate::msg::{Channel, Msg};
use crate::ready::{ready_file, report, Report};
use crate::spawn::{spawn_init, InitSpec};
use crate::state::{ProcessRef, State, StateLock, StateStore, Status};
use crate::sys;

pub use crate::reexec::{ensure_sealed, exit_code, MONITOR_ARG};

pub use crate::ready::READY_FD;

/// The descriptor number the console socket gets in the monitor: a unix
/// socket on which the master of init's pseudo-terminal is sent.
pub const CONSOLE_FD: RawFd = 4;

/// Exit code of the monitor when the container could not be started.
pub const EXIT_SETUP_FAILED: i32 = 125;

/// Arguments of the monitor process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitorArgs {
    /// The container config file.
    pub config: PathBuf,
    /// The runtime directory (`/run/davit`); state lives in `RUNTIME/NAME`.
    pub runtime: PathBuf,
    /// The cgroup prefix, `davit` by default: the cgroup is `PREFIX/NAME`.
    pub cgroup_prefix: String,
    /// Replace init with this command (`davit start NAME -- CMD`).
    pub command: Vec<String>,
    /// Report readiness as one JSON line on descriptor [`READY_FD`].
    pub ready_fd: bool,
    /// net: the host config with the `[network]` table; `None` means
    /// [`crate::net::HOST_CONFIG`] (`/etc/davit/config.toml`).
    pub net_config: Option<PathBuf>,
    /// Give init a pseudo-terminal of the container's own and send its
    /// master on descriptor [`CONSOLE_FD`].
    pub console: bool,
    /// Give init a pseudo-terminal of the container's own and keep its
    /// master here: the console log and `davit console` ([`crate::console`]).
    pub hold_console: bool,
    /// The on-disk file the monitor's sealed copy was made from, recorded
    /// in the state so that later starts can share that copy
    /// ([`crate::reexec::monitor_binary`]); set by [`spawn_monitor_via`].
    pub binary: Option<crate::state::BinaryId>,
}

impl MonitorArgs {
    /// Arguments for the monitor, with the defaults.
    pub fn new(config: impl Into<PathBuf>, runtime: impl Into<PathBuf>) -> MonitorArgs {
        MonitorArgs {
            config: config.into(),
            runtime: runtime.into(),
            cgroup_prefix: "davit".into(),
            command: Vec::new(),
            ready_fd: false,
            net_config: None,
            console: false,
            hold_console: false,
            binary: None,
        }
    }

    /// Render as command-line arguments (after [`MONITOR_ARG`]).
    pub fn to_args(&self) -> Vec<OsString> {
        let mut v: Vec<OsString> = vec![
            "--config".into(),
            self.config.clone().into(),
            "--runtime".into(),
            self.runtime.clone().into(),
            "--cgroup-prefix".into(),
            self.cgroup_prefix.clone().into(),
        ];
        if self.ready_fd {
            v.push("--ready-fd".into());
        }
        if self.console {
            v.push("--console".into());
        }
        if self.hold_console {
            v.push("--hold-console".into());
        }
        if let Some(p) = &self.net_config {
            v.push("--net-config".into());
            v.push(p.clone().into());
        }
        if let Some(b) = &self.binary {
            v.push("--binary".into());
            v.push(b.to_string().into());
        }
        if !self.command.is_empty() {
            v.push("--".into());
            v.extend(self.command.iter().map(OsString::from));
        }
        v
    }

    /// Parse what [`MonitorArgs::to_args`] produced.
    ///
    /// # Errors
    /// [`Error::ConfigInvalid`] for unknown or missing arguments.
    pub fn parse(args: &[OsString]) -> Result<MonitorArgs> {
        let bad = |r: String| Error::ConfigInvalid { reason: r };
        let mut out = MonitorArgs::new("", "");
        let mut it = args.iter();
        let mut seen = (false, false);
        while let Some(a) = it.next() {
            let mut val = |name: &str| {
                it.next()
                    .cloned()
                    .ok_or_else(|| bad(format!("monitor argument {name} needs a value")))
            };
            match a.to_str() {
                Some("--config") => {
                    out.config = val("--config")?.into();
                    seen.0 = true;
                }
                Some("--runtime") => {
                    out.runtime = val("--runtime")?.into();
                    seen.1 = true;
                }
                Some("--cgroup-prefix") => {
                    out.cgroup_prefix = val("--cgroup-prefix")?
                        .into_string()
                        .map_err(|_| bad("cgroup prefix is not UTF-8".into()))?;
                }
                Some("--ready-fd") => out.ready_fd = true,
                Some("--console") => out.console = true,
                Some("--hold-console") => out.hold_console = true,
                Some("--net-config") => out.net_config = Some(val("--net-config")?.into()),
                Some("--binary") => {
                    let v = val("--binary")?;
                    let v = v
                        .to_str()
                        .ok_or_else(|| bad("--binary is not UTF-8".into()))?;
                    out.binary = Some(v.parse().map_err(bad)?);
                }
                Some("--") => {
                    out.command = it
                        .by_ref()
                        .map(|s| s.to_string_lossy().into_owned())
                        .collect();
                }
                _ => return Err(bad(format!("unknown monitor argument {a:?}"))),
            }
        }
        if !(seen.0 && seen.1) {
            return Err(bad("the monitor needs --config and --runtime".into()));
        }
        if out.cgroup_prefix.is_empty()
            || out
                .cgroup_prefix
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..")
        {
            return Err(bad(format!("bad cgroup prefix {:?}", out.cgroup_prefix)));
        }
        Ok(out)
    }
}

/// The entry point of a re-executed monitor: `args` are those after
/// [`MONITOR_ARG`]. Exits with init's exit status (128 + signal when
/// killed), or [`EXIT_SETUP_FAILED`] when the container never started; the
/// reason then goes to the ready descriptor, never to the terminal.
pub fn monitor_main(args: &[OsString]) -> ! {
    // Nothing the caller blocked stays blocked in us, and so in init,
    // attach's child and the helpers we start (dnsmasq, pasta, nft).
    let _ = sys::clear_signal_mask();
    // CVE-2019-5736: run from a sealed memfd copy of ourselves so nothing
    // reachable from a container can rewrite the binary. This re-execs once
    // with the same arguments (the ready descriptor survives the exec).
    if let Err(e) = ensure_sealed() {
        let mut ready = if args.iter().any(|a| a == "--ready-fd") {
            ready_file()
        } else {
            None
        };
        report(&mut ready, &Report::Failed(&e));
        std::process::exit(EXIT_SETUP_FAILED);
    }
    // `attach` runs its child from this sealed binary (attach.rs).
    if args.first().is_some_and(|a| a == crate::attach::CHILD_ARG) {
        crate::attach::child_main(&args[1..]);
    }
    // Inherited descriptors must never reach init (CVE-2024-21626).
    let _ = sys::cloexec_from(3);
    let parsed = MonitorArgs::parse(args);
    let ready = match &parsed {
        Ok(a) if a.ready_fd => ready_file(),
        _ => None,
    };
    let mut ready = ready;
    let console = match &parsed {
        Ok(a) if a.console => console_socket(),
        _ => None,
    };
    let code = match parsed.and_then(|a| run_monitor(&a, &mut ready, console)) {
        Ok(code) => code,
        Err(e) => {
            report(&mut ready, &Report::Failed(&e));
            EXIT_SETUP_FAILED
        }
    };
    std::process::exit(code)
}

fn console_socket() -> Option<std::os::unix::net::UnixStream> {
    // The socket handed over by `spawn_monitor_on` as CONSOLE_FD.
    let st = nix::sys::stat::fstat(CONSOLE_FD).ok()?;
    if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return None;
    }
    sys::take_inherited_fd(CONSOLE_FD).map(std::os::unix::net::UnixStream::from)
}

/// Where the cgroup goes: `(leaf, base)` relative to the mount points, or
/// why there is none; and the user manager's scope it lives in, if any.
type Placement = (Option<(PathBuf, PathBuf)>, Option<String>, Option<String>);

/// Where the cgroup goes and why limits may be off.
fn cgroup_placement(layout: &Layout, cfg: &ContainerConfig, prefix: &str) -> Placement {
    let rel_leaf = Path::new(prefix).join(&cfg.name);
    if nix::unistd::geteuid().is_root() {
        return (Some((rel_leaf, PathBuf::new())), None, None);
    }
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let needed = cgroup::needed_controllers(&cfg.limits);
    let uid = nix::unistd::geteuid().as_raw();
    let why = match cgroup::delegation(layout, &own, uid, &needed) {
        Ok(base) => return (Some((base.join(rel_leaf), base)), None, None),
        Err(why) => why.to_string(),
    };
    // cgroup v2 alone, as systemd hosts are: the user's own manager gives
    // a delegated scope (userscope.rs).
    let why = if layout.mode() == cgroup::Mode::Unified {
        match crate::userscope::enter_scope(layout, &cfg.name, &cfg.limits) {
            Ok((scope, unit)) => {
                return (Some((scope.join(rel_leaf), scope)), None, Some(unit));
            }
            Err(e) => format!("{why}; and no transient scope from the user's systemd: {e}"),
        }
    } else {
        why
    };
    let helper = crate::usercgroup::helper_path();
    let grants = Path::new(crate::usercgroup::GRANT_FILE);
    let reason = match crate::usercgroup::grant_route(why.clone(), uid, grants, &helper) {
        crate::usercgroup::Route::Without(full) => full,
        _ => format!(
            "{why}, although you are granted cgroups in {}: this monitor did not come through {}",
            grants.display(),
            helper.display()
        ),
    };
    (None, Some(reason), None)
}

/// The monitor's work, callable in-process by a single-threaded caller.
/// With `args.console`, the master of init's terminal is sent on `console`
/// once init runs. Returns init's exit status.
///
/// # Errors
/// Any error before init runs; afterwards failures only affect cleanup and
/// are folded into the returned status.
pub fn run_monitor(
    args: &MonitorArgs,
    ready: &mut Option<File>,
    console: Option<std::os::unix::net::UnixStream>,
) -> Result<i32> {
    let _ = nix::unistd::chdir("/");
    let mut console = match (args.console, console) {
        (false, _) => None,
        (true, Some(s)) => Some(Channel::from_stream(s)),
        (true, None) => {
            return Err(Error::ConfigInvalid {
                reason: format!("--console needs a unix socket on descriptor {CONSOLE_FD}"),
            })
        }
    };
    let cfg = ContainerConfig::load(&args.config)?;
    let store = StateStore::new(&args.runtime, &cfg.name);
    let layout = Layout::detect()?;
    let me = ProcessRef::of(std::process::id() as i32);
    // net: host-wide settings, needed only when the container has a network.
    let host_net = match cfg.network.mode {
        crate::config::NetworkMode::None => crate::net::HostNet::default(),
        _ => crate::net::HostNet::load(
            args.net_config
                .as_deref()
                .unwrap_or(Path::new(crate::net::HOST_CONFIG)),
        )?,
    };

    let lock = store.lock()?;
    let mut st = lock.load()?;
    if !st.status.can_start() {
        if st.is_stale() {
            recover_locked(&lock, &mut st, &layout)?;
        } else {
            return Err(Error::AlreadyRunning {
                name: cfg.name.clone(),
                status: st.status.as_str().to_lowercase(),
            });
        }
    }
    let (placement, why, scope) = cgroup_placement(&layout, &cfg, &args.cgroup_prefix);
    // A plain user hands the cgroup to container root from a helper user
    // namespace (spawn.rs); what container root makes below is removed
    // the same way.
    let owner = match (nix::unistd::geteuid().is_root(), cfg.privileged) {
        (false, false) => cfg.idmap.host_uid(0).zip(cfg.idmap.host_gid(0)),
        _ => None,
    };
    let cg = match placement {
        Some((rel, base)) => {
            Some(Cgroup::create(&layout, &rel, &base, &cfg.limits)?.handed_to(owner))
        }
        None => None,
    };
    // The device allow list (root only: a plain user may not write it).
    if let (Some(cg), true) = (&cg, nix::unistd::geteuid().is_root()) {
        if let Err(e) = cg.restrict_devices(&crate::devices::DEFAULT_RULES) {
            let _ = cg.destroy(Duration::from_secs(5));
            return Err(e);
        }
    }
    st = State::new(&cfg.name);
    st.status = Status::Starting;
    st.monitor = me;
    st.attach_helper = true;
    st.binary = args.binary;
    st.privileged = cfg.privileged;
    st.no_limits_reason = why;
    st.seccomp = Some(cfg.seccomp_in_force());
    st.scope = scope;
    if let Some(cg) = &cg {
        st.cgroup_owner = owner;
        st.cgroup_paths = cg.paths();
        st.cgroup_mounts = cg
            .dirs()
            .iter()
            .map(|d| d.hierarchy.mountpoint.clone())
            .collect();
    }
    lock.save(&st)?;
    drop(lock);

    // Terminal signals are for init (the CLI forwards them), not for us.
    for s in [Signal::SIGINT, Signal::SIGQUIT, Signal::SIGTSTP] {
        let _ = sys::set_signal_ignored(s, true);
    }
    let spec = InitSpec {
        config: &cfg,
        command: args.command.clone(),
        cgroup: cg.as_ref(),
        layout: &layout,
        console: console.is_some() || args.hold_console,
        ttys: if args.hold_console { cfg.ttys } else { 0 },
    };
    // An attachment whose record could not be written: the failure path
    // below releases it together with whatever is recorded.
    let mut unsaved: Option<crate::net::Attachment> = None;
    let mut on_ready = |sp: &crate::spawn::Spawned| -> Result<()> {
        // net: set up from the host while init still waits to be released.
        let init = ProcessRef {
            pid: sp.pid.as_raw(),
            start_time: sp.start_time,
        };
        let opened;
        let netns = match &sp.netns {
            Some(fd) => fd,
            None => {
                opened = crate::net::rtnl::open_netns(init.pid)?;
                &opened
            }
        };
        let att = crate::net::setup(&host_net, &cfg, init, std::os::fd::AsFd::as_fd(netns))?;
        if let Err(e) = att.save(store.dir()) {
            unsaved = Some(att);
            return Err(e);
        }
        let lock = store.lock()?;
        let mut s = lock.load()?;
        s.status = Status::Running;
        s.notes = sp.notes.clone();
        s.init = Some(ProcessRef {
            pid: sp.pid.as_raw(),
            start_time: sp.start_time,
        });
        lock.save(&s)
    };
    let mut spawned = match spawn_init(&spec, &mut on_ready) {
        Ok(s) => s,
        Err(e) => {
            if let Some(cg) = &cg {
                let _ = cg.destroy(Duration::from_secs(5));
            }
            // net: release what setup made, recorded or not.
            let _ = crate::net::release(store.dir(), &cfg.name, unsaved.as_ref());
            if let Ok(lock) = store.lock() {
                let _ = lock.remove();
            }
            return Err(e);
        }
    };
    // The terminal's master goes to the CLI, which relays it; the monitor
    // keeps no copy.
    if let Some(chan) = console.as_mut() {
        if let Some(master) = spawned.console.take() {
            let _ = chan.send_with_fd(Msg::Console, std::os::fd::AsFd::as_fd(&master));
        }
    }
    drop(console);
    // Only a plain user's attach goes through CMD (root's joins pid 1).
    if !args.command.is_empty() && !nix::unistd::geteuid().is_root() {
        let init = ProcessRef {
            pid: spawned.pid.as_raw(),
            start_time: spawned.start_time,
        };
        if let Some(cmd) = first_child(init, Duration::from_secs(2)) {
            if let Ok(lock) = store.lock() {
                if let Ok(mut s) = lock.load() {
                    s.attach_via = Some(cmd);
                    let _ = lock.save(&s);
                }
            }
        }
    }
    // The console's socket and log exist before `start -d` returns.
    let server = match args.hold_console {
        true => crate::console::Server::bind(store.dir()).ok(),
        false => None,
    };
    report(ready, &Report::Ready(spawned.pid.as_raw()));
    // From here on the monitor only waits: the setup's code need not stay
    // mapped (resident.rs).
    let _ = sys::drop_clean_exe_pages();

    let mut reaped = None;
    if let (Some(server), Some(master)) = (server, spawned.console.take()) {
        let pid = spawned.pid;
        let mut exited = || match waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::EINTR) => false,
            Ok(ws) => match exit_code(ws) {
                Some(c) => {
                    reaped = Some(c);
                    true
                }
                None => false,
            },
            Err(_) => true,
        };
        let pidfd = spawned.pidfd.as_ref().map(std::os::fd::AsFd::as_fd);
        let mut ptys = vec![master];
        ptys.append(&mut spawned.ttys);
        crate::console::serve(server, ptys, pidfd, &mut exited);
    }
    let code = if let Some(c) = reaped {
        c
    } else {
        loop {
            match waitpid(spawned.pid, None) {
                Ok(ws) => {
                    if let Some(c) = exit_code(ws) {
                        break c;
                    }
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => break EXIT_SETUP_FAILED,
            }
        }
    };
    let lock = store.lock()?;
    let mut s = lock.load()?;
    s.status = Status::Stopping;
    lock.save(&s)?;
    // net: lease, leftover veth, user-mode process.
    let _ = crate::net::release(store.dir(), &cfg.name, None);
    // A cgroup that will not go away stays recorded, so that `stop` or the
    // next start retries instead of leaving it behind unnoticed.
    let removed = cg
        .as_ref()
        .is_none_or(|cg| cg.destroy(Duration::from_secs(10)).is_ok());
    s.status = Status::Stopped;
    s.init = None;
    s.monitor = None;
    if removed {
        s.cgroup_paths.clear();
        s.cgroup_mounts.clear();
    }
    s.exit_status = Some(code);
    lock.save(&s)?;
    Ok(code)
}

/// The first child of `parent` (its `PPid` in `/proc/PID/stat`), waiting up
/// to `timeout` for it while `parent` lives: right after start, pid 1's only
/// child is CMD. A CMD that is already gone ends the wait with its pid 1.
fn first_child(init: ProcessRef, timeout: Duration) -> Option<ProcessRef> {
    let parent = init.pid;
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if !init.is_alive() {
            return None;
        }
        let mut found: Option<ProcessRef> = None;
        for e in std::fs::read_dir("/proc").ok()?.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // Fields after the ")" that closes the command name: state, ppid.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<i32>().ok());
            if ppid == Some(parent) {
                if let Some(p) = ProcessRef::of(pid) {
                    if found.is_none_or(|f| p.start_time < f.start_time) {
                        found = Some(p);
                    }
                }
            }
        }
        if found.is_some() || std::time::Instant::now() >= deadline {
            return found;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Clean up after a monitor that died: kill whatever is left in the
/// recorded cgroup, remove it, and mark the state stopped. The caller holds
/// the lock.
///
/// # Errors
/// Cgroup and state write errors.
pub fn recover_locked(lock: &StateLock, st: &mut State, layout: &Layout) -> Result<()> {
    if let Some(init) = st.init {
        if init.is_alive() {
            if let Ok(fd) = sys::pidfd_open(nix::unistd::Pid::from_raw(init.pid)) {
                if init.is_alive() {
                    let _ = sys::pidfd_send_signal(
                        std::os::fd::AsFd::as_fd(&fd),
                        Signal::SIGKILL as i32,
                    );
                    let _ = sys::poll_readable(std::os::fd::AsFd::as_fd(&fd), 5000);
                }
            }
        }
    }
    // net: a crashed monitor's lease, veth and user-mode process.
    let _ = crate::net::release(lock.store().dir(), &st.name, None);
    let cg = Cgroup::from_paths(layout, &st.cgroup_paths).handed_to(st.cgroup_owner);
    cg.destroy(Duration::from_secs(10))?;
    st.status = Status::Stopped;
    st.init = None;
    st.monitor = None;
    st.cgroup_paths.clear();
    st.cgroup_mounts.clear();
    lock.save(st)
}

/// A running monitor process, as seen by the CLI.
#[derive(Debug)]
pub struct MonitorHandle {
    /// The monitor process.
    pub child: Child,
    ready: Option<BufReader<File>>,
    console: Option<Channel>,
}

/// The standard descriptors of a monitor, and so of init.
#[derive(Debug)]
pub enum MonitorIo {
    /// The caller's own (`/dev/null` with `detach`). Init replaces any of
    /// them that is a terminal with `/dev/null`.
    Inherit,
    /// These three, as standard input, output and error (pipes the caller
    /// relays, say). Init replaces any that is a terminal.
    Fds([OwnedFd; 3]),
    /// A pseudo-terminal allocated inside the container: the monitor's own
    /// standard descriptors are `/dev/null`, and the master comes back
    /// through [`MonitorHandle::take_console`].
    Console,
    /// Like `Console`, but the monitor keeps the master: it logs the
    /// container's output and serves `davit console` ([`crate::console`]).
    /// The monitor's own standard descriptors are `/dev/null`.
    Hold,
}

/// Start `exe MONITOR_ARG args…` with a ready pipe, in a session of its
/// own (it never has the caller's controlling terminal). With `detach` its
/// standard descriptors are `/dev/null`; otherwise it inherits the
/// caller's, which init then uses.
///
/// # Errors
/// [`Error::Spawn`] if the process cannot be started.
pub fn spawn_monitor(exe: &Path, args: &MonitorArgs, detach: bool) -> Result<MonitorHandle> {
    spawn_monitor_on(exe, args, detach, MonitorIo::Inherit)
}

/// Like [`spawn_monitor`], with the standard descriptors `io` says.
///
/// # Errors
/// [`Error::Spawn`] if the process cannot be started.
pub fn spawn_monitor_on(
    exe: &Path,
    args: &MonitorArgs,
    detach: bool,
    io: MonitorIo,
) -> Result<MonitorHandle> {
    spawn_monitor_via(None, exe, args, detach, io)
}

/// Like [`spawn_monitor_on`], through `via` when given: the setuid
/// `davit-cgroup enter -- EXE …`, which gives a granted plain user a cgroup
/// tree and then execs the monitor with the caller's ids
/// ([`crate::usercgroup`]).
///
/// # Errors
/// [`Error::Spawn`] if the process cannot be started.
pub fn spawn_monitor_via(
    via: Option<&Path>,
    exe: &Path,
    args: &MonitorArgs,
    detach: bool,
    io: MonitorIo,
) -> Result<MonitorHandle> {
    let spawn_err = |program: &str| {
        let program = program.to_owned();
        move |source| Error::Spawn { program, source }
    };
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| Error::sys("pipe2(O_CLOEXEC)", e))?;
    let mut args = args.clone();
    args.ready_fd = true;
    let mut pass = vec![(w, READY_FD)];
    let mut console = None;
    // Without a helper between, the monitor starts from a sealed copy of
    // its binary (CVE-2019-5736), so it need not re-exec itself to make
    // one: one exec fewer per start. That copy is a running monitor's of
    // the same, unchanged file when there is one (shared text, nothing
    // copied), else a new one made here. Through the helper, or should the
    // copy fail, it seals itself as before.
    // The copy is held (close-on-exec, numbered above every descriptor
    // passed below) until the spawn has exec'd it.
    let mut sealed_copy = None;
    let mut cmd = match via {
        Some(helper) => {
            let mut c = Command::new(helper);
            c.args(["enter".as_ref(), "--".as_ref(), exe.as_os_str()]);
            c
        }
        None => match crate::reexec::monitor_binary(&args.runtime, exe) {
            Some((fd, id)) => {
                let mut c = Command::new(format!("/proc/self/fd/{}", fd.as_raw_fd()));
                c.arg0(exe);
                sealed_copy = Some(fd);
                args.binary = Some(id);
                c
            }
            None => Command::new(exe),
        },
    };
    match io {
        MonitorIo::Fds([i, o, e]) => {
            cmd.stdin(Stdio::from(i))
                .stdout(Stdio::from(o))
                .stderr(Stdio::from(e));
        }
        MonitorIo::Console => {
            let (mine, theirs) =
                std::os::unix::net::UnixStream::pair().map_err(spawn_err("socketpair"))?;
            pass.push((OwnedFd::from(theirs), CONSOLE_FD));
            console = Some(Channel::from_stream(mine));
            args.console = true;
            cmd.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
        }
        MonitorIo::Hold => {
            args.hold_console = true;
            cmd.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
        }
        MonitorIo::Inherit if detach => {
            cmd.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
        }
        MonitorIo::Inherit => {}
    }
    cmd.arg(MONITOR_ARG).args(args.to_args());
    sys::command_pass_fds(&mut cmd, pass, true);
    let shown = via.unwrap_or(exe).display().to_string();
    let child = cmd.spawn().map_err(spawn_err(&shown))?;
    drop(cmd);
    drop(sealed_copy);
    Ok(MonitorHandle {
        child,
        ready: Some(BufReader::new(File::from(r))),
        console,
    })
}

impl MonitorHandle {
    /// The master of init's pseudo-terminal, after [`MonitorHandle::wait_ready`]
    /// succeeded for a monitor spawned with [`MonitorIo::Console`].
    ///
    /// # Errors
    /// [`Error::Protocol`] if there is none.
    pub fn take_console(&mut self) -> Result<OwnedFd> {
        match self.console.take() {
            Some(mut c) => c.expect_with_fd(Msg::Console),
            None => Err(Error::Protocol {
                want: "a console",
                got: "a monitor spawned without one".into(),
            }),
        }
    }

    /// Wait for the monitor's report: init's host pid once it runs.
    ///
    /// # Errors
    /// The monitor's error (same kind, message as text), or
    /// [`Error::Protocol`] if it exited without a report.
    pub fn wait_ready(&mut self) -> Result<i32> {
        let Some(mut r) = self.ready.take() else {
            return Err(Error::Protocol {
                want: "a ready report",
                got: "wait_ready called twice".into(),
            });
        };
        let mut line = String::new();
        let _ = r.read_line(&mut line);
        let v: serde_json::Value =
            serde_json::from_str(line.trim()).map_err(|_| Error::Protocol {
                want: "a ready report",
                got: if line.is_empty() {
                    "end of file (the monitor exited)".into()
                } else {
                    line.clone()
                },
            })?;
        if v["ok"].as_bool() == Some(true) {
            return v["pid"].as_i64().map(|p| p as i32).ok_or(Error::Protocol {
                want: "a pid",
                got: line,
            });
        }
        let kind = v["kind"].as_str().unwrap_or("protocol");
        Err(Error::Monitor {
            kind: ErrorKind::parse(kind),
            message: v["error"].as_str().unwrap_or("").to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_round_trip() {
        let mut a = MonitorArgs::new("/c/config", "/run/davit");
        a.command = vec!["/bin/sh".into(), "-c".into(), "exit 7".into()];
        a.ready_fd = true;
        a.cgroup_prefix = "davit-test-1".into();
        a.net_config = Some("/tmp/net.toml".into());
        a.binary = Some(crate::state::BinaryId::of(
            &std::fs::metadata("/proc/self/exe").unwrap(),
        ));
        assert_eq!(MonitorArgs::parse(&a.to_args()).unwrap(), a);
        for bad in ["", "1:2:3", "1:2:3:4:5", "1:2:3:4.5:x.6", "1:2:3:4.5:6.7:8"] {
            let args: Vec<OsString> = ["--config", "/c", "--runtime", "/r", "--binary", bad]
                .iter()
                .map(OsString::from)
                .collect();
            assert!(MonitorArgs::parse(&args).is_err(), "{bad:?} was taken");
        }
        assert!(MonitorArgs::parse(&["--bogus".into()]).is_err());
        let mut b = MonitorArgs::new("/c", "/r");
        b.cgroup_prefix = "../x".into();
        assert!(MonitorArgs::parse(&b.to_args()).is_err());
    }
}
