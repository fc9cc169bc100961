//! `attach` (security.md (a2)): run a command in every namespace and the
//! cgroup of a running container.
#![forbid(unsafe_code)]

use std::convert::Infallible;
use std::ffi::{CString, OsString};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sched::CloneFlags;
use nix::sys::wait::waitpid;
use nix::unistd::{Gid, Pid, Uid};

use crate::cgroup::{Cgroup, Layout};
use crate::error::{Error, InitStep, Result};
use crate::init::drop_caps;
use crate::msg::{Channel, Msg};
use crate::reexec::{exit_code, MONITOR_ARG};
use crate::seccomp::Seccomp;
use crate::spawn::{cstrings, path_dirs, DEFAULT_PATH};
use crate::state::StateStore;
use crate::{sys, tty};

/// What to run.
#[derive(Debug)]
pub struct AttachOptions {
    /// The command and arguments, resolved inside the container; empty
    /// means a login shell: the user's shell in the container's
    /// `/etc/passwd` (else `/bin/sh`), with argv[0] `-sh` as login(1) runs it.
    pub command: Vec<String>,
    /// `TERM` to pass (default `linux`).
    pub term: Option<String>,
    /// Its standard descriptors.
    pub io: AttachIo,
    /// The container user and group to run as (default root). Without a
    /// group, the user's group in the container's `/etc/passwd`, else the
    /// uid; `HOME` comes from there too.
    pub user: Option<(u32, Option<u32>)>,
    /// The working directory, resolved inside the container (default `/`).
    pub cwd: Option<std::path::PathBuf>,
    /// Variables set on top of the environment (they win).
    pub env: Vec<(String, String)>,
    /// Start from no environment but `container=davit`, not the clean
    /// default ([`attach_env`]); the host's is never passed.
    pub clear_env: bool,
    /// The binary the child that enters the container runs from
    /// ([`runner`]).
    pub runner: Runner,
}

/// The binary attach's child runs from once it forks: the processes that
/// enter the container are forks of it, so a hostile container must find
/// no writable binary behind their `/proc/PID/exe` (CVE-2019-5736).
#[derive(Debug)]
pub enum Runner {
    /// This process, which already runs from a sealed copy of its binary
    /// ([`crate::monitor::ensure_sealed`]).
    Here,
    /// The container monitor's own sealed copy of its binary, open: the
    /// child execs it, so no copy is made for this attach.
    Monitor(OwnedFd),
}

/// What attach's child runs from: the container monitor's sealed binary
/// when the monitor can serve (it is this version's, alive, and runs from
/// a sealed memfd of the caller's own), else this process, re-executed
/// from a sealed copy of its binary first (this call then does not return
/// in the first process: call it before anything a re-exec would lose).
///
/// # Errors
/// [`Error::Spawn`] when the sealed copy cannot be made.
pub fn runner(runtime: &Path, name: &str) -> Result<Runner> {
    if let Some(exe) = monitor_exe(runtime, name) {
        return Ok(Runner::Monitor(exe));
    }
    crate::reexec::ensure_sealed()?;
    Ok(Runner::Here)
}

/// The running monitor's sealed binary, when it serves attach.
fn monitor_exe(runtime: &Path, name: &str) -> Option<OwnedFd> {
    crate::reexec::monitor_exe(runtime, name, |st| st.attach_helper).map(OwnedFd::from)
}

/// The argument after [`MONITOR_ARG`] that makes a monitor binary attach's
/// child ([`child_main`]); the plan follows it.
pub const CHILD_ARG: &str = "__attach-child";

/// Who the command runs as, and where.
struct Who {
    user: Option<(u32, Option<u32>)>,
    cwd: Option<CString>,
    /// Whether `HOME` is ours to set from the container's passwd.
    home_free: bool,
    /// No command was given: the user's login shell.
    login: bool,
}

/// The standard descriptors of an attached command. In every case it runs
/// in a session of its own and holds no descriptor of the host's terminal.
#[derive(Debug)]
pub enum AttachIo {
    /// The caller's own; any that is a terminal is replaced by `/dev/null`.
    Inherit,
    /// These three as standard input, output and error (pipes the caller
    /// relays, say); any that is a terminal is replaced by `/dev/null`.
    Fds([OwnedFd; 3]),
    /// A pseudo-terminal allocated from the container's own devpts, as
    /// `lxc-attach` and `runc exec -t` do: the command's controlling
    /// terminal; the master is handed to the caller to relay.
    Pty,
}

/// The clean environment of an attached command.
pub fn attach_env(term: Option<&str>) -> Vec<(String, String)> {
    vec![
        ("PATH".into(), DEFAULT_PATH.into()),
        ("TERM".into(), term.unwrap_or("linux").into()),
        ("HOME".into(), "/root".into()),
        ("container".into(), "davit".into()),
    ]
}

/// Run a command inside running container `name` and return its exit
/// status (128 + signal when killed). Must be called from a single-threaded
/// process. `on_running` is called once, when the command has been
/// exec'd, with the master of its terminal for [`AttachIo::Pty`]; the
/// caller may start threads there (to relay) and they may run on while
/// this waits for the command.
///
/// A transient child joins the container's cgroup (while still on the
/// host), opens nothing more, joins every namespace with one
/// `setns(pidfd, …)`, then forks the command, which is pid-namespaced. The
/// command becomes container root, drops the bounding set as init did,
/// sets `no_new_privs`, gets a clean environment, has every other fd closed
/// on exec, and checks its cwd.
///
/// # Errors
/// [`Error::NotRunning`], [`Error::Syscall`], or [`Error::Init`] with the
/// failing step's kind and errno.
pub fn attach(
    runtime: &Path,
    name: &str,
    opts: AttachOptions,
    on_running: &mut dyn FnMut(Option<OwnedFd>),
) -> Result<i32> {
    let store = StateStore::new(runtime, name);
    let st = store
        .peek()?
        .ok_or_else(|| Error::NotRunning { name: name.into() })?;
    let init = match st.init {
        Some(i) if st.status.can_attach() && i.is_alive() => i,
        _ => return Err(Error::NotRunning { name: name.into() }),
    };
    // A plain user may not setns through the shim's pidfd (it is not
    // dumpable): CMD, in the same namespaces, serves instead.
    let init = match st.attach_via {
        Some(cmd) if !nix::unistd::geteuid().is_root() && cmd.is_alive() => cmd,
        _ => init,
    };
    let pidfd = sys::pidfd_open(Pid::from_raw(init.pid))
        .map_err(|e| Error::sys(format!("pidfd_open({})", init.pid), e))?;
    if !init.is_alive() {
        return Err(Error::NotRunning { name: name.into() });
    }
    let mut flags = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWNET
        | CloneFlags::CLONE_NEWCGROUP;
    let ino = |p: String| std::fs::metadata(p).map(|m| m.ino()).ok();
    let userns = ino(format!("/proc/{}/ns/user", init.pid)) != ino("/proc/self/ns/user".into());
    if userns {
        flags |= CloneFlags::CLONE_NEWUSER;
    }
    let layout = Layout::detect()?;
    let cg = Cgroup::from_paths(&layout, &st.cgroup_paths);
    // A plain user's container in a systemd scope: join the scope's
    // monitor leaf first, from where cgroup v2 lets us move on into the
    // container's cgroup (userscope.rs).
    if let (Some(unit), false) = (&st.scope, nix::unistd::geteuid().is_root()) {
        let addr = crate::userscope::bus_address().ok_or_else(|| Error::CgroupState {
            reason: format!("{name} lives in the systemd scope {unit}, but there is no user bus to join it through"),
        })?;
        crate::userscope::attach_to_unit(
            &addr,
            unit,
            &format!("/{}", crate::userscope::MONITOR_LEAF),
            std::process::id(),
        )
        .map_err(|reason| Error::CgroupState { reason })?;
    }
    if cg.frozen() == Some(true) {
        // The command would freeze with the rest as it joins the cgroup.
        return Err(Error::Unsupported {
            what: format!("attaching to {name} while it is frozen; `davit unfreeze {name}` first"),
        });
    }
    let login = opts.command.is_empty();
    // A login shell's own path comes from the container's passwd, read
    // inside it; this one is the fallback.
    let command = if login {
        vec!["/bin/sh".to_owned()]
    } else {
        opts.command.clone()
    };
    let mut env = if opts.clear_env {
        vec![("container".to_owned(), "davit".to_owned())]
    } else {
        attach_env(opts.term.as_deref())
    };
    for (k, v) in &opts.env {
        if k.is_empty() || k.contains('=') || k.contains('\0') {
            return Err(Error::Unsupported {
                what: format!("the environment variable name {k:?}"),
            });
        }
        env.retain(|(k2, _)| k2 != k);
        env.push((k.clone(), v.clone()));
    }
    let who = Who {
        user: opts.user,
        cwd: match &opts.cwd {
            Some(d) if !d.is_absolute() => {
                return Err(Error::Unsupported {
                    what: format!("a relative working directory ({})", d.display()),
                })
            }
            Some(d) => {
                Some(cstrings([d.to_string_lossy().into_owned()], "the directory")?.remove(0))
            }
            None => None,
        },
        home_free: !opts.clear_env && !opts.env.iter().any(|(k, _)| k == "HOME"),
        login,
    };
    let argv = cstrings(command, "the command")?;
    let envp = cstrings(
        env.iter().map(|(k, v)| format!("{k}={v}")),
        "the environment",
    )?;
    let dirs = path_dirs(&env);
    let null = tty::host_null()?;
    // The filter init runs under (a state without one predates seccomp:
    // the default).
    let seccomp = st.seccomp.clone().unwrap_or_default();
    let pty = matches!(opts.io, AttachIo::Pty);
    let fds = match opts.io {
        AttachIo::Fds(fds) => Some(fds),
        _ => None,
    };
    let (mut parent, child) = Channel::pair()?;
    // The monitor's binary runs the child from the plan; here, the filter
    // is built (and checked) before the fork.
    let (io, plan) = match &opts.runner {
        Runner::Here => {
            let io = Io {
                seccomp: seccomp.build()?,
                null,
                pty,
                fds,
            };
            (Some(io), None)
        }
        Runner::Monitor(_) => {
            let plan = Plan {
                chan: child.as_raw_fd(),
                pidfd: pidfd.as_raw_fd(),
                null: null.as_raw_fd(),
                fds: fds.as_ref().map(|f| f.each_ref().map(|fd| fd.as_raw_fd())),
                flags: flags.bits(),
                userns,
                cgroup_paths: st.cgroup_paths.clone(),
                init_pid: init.pid,
                argv: argv.iter().map(|c| c.as_bytes().to_vec()).collect(),
                envp: envp.iter().map(|c| c.as_bytes().to_vec()).collect(),
                dirs: dirs.clone(),
                user: who.user,
                cwd: who.cwd.as_ref().map(|c| c.as_bytes().to_vec()),
                home_free: who.home_free,
                login: who.login,
                pty,
                seccomp,
            };
            // In a memfd, not in argv, where any host user could read
            // the command's environment for as long as it runs.
            let json = serde_json::to_vec(&plan).map_err(|e| Error::Protocol {
                want: "the attach plan as JSON",
                got: e.to_string(),
            })?;
            let text = plan_file(&json)?;
            let mut keep = plan.descriptors();
            keep.push(text.as_raw_fd());
            // Held open until the fork: the plan names them by number.
            (None, Some((keep, text, null, fds)))
        }
    };

    let Some(single) = sys::single_threaded() else {
        return Err(Error::Unsupported {
            what: "attaching from a multi-threaded process".into(),
        });
    };
    let a = match sys::fork_checked(&single) {
        Err(Errno::EDEADLK) => {
            return Err(Error::Unsupported {
                what: "attaching from a multi-threaded process".into(),
            })
        }
        Err(e) => return Err(Error::sys("fork()", e)),
        Ok(sys::Cloned::Child) => {
            drop(parent);
            match (&opts.runner, &io, &plan) {
                (Runner::Monitor(exe), _, Some((keep, text, _, _))) => {
                    exec_child(child, exe, keep, text)
                }
                (_, Some(io), _) => transient(
                    child, &pidfd, flags, userns, &cg, init.pid, &argv, &envp, &dirs, io, &who,
                    &single,
                ),
                _ => sys::exit_now(126),
            }
        }
        Ok(sys::Cloned::Parent { pid, .. }) => pid,
    };
    drop(child);
    // The command's ends of the caller's pipes live on in it alone, so the
    // caller sees end of file when it is done.
    drop(io);
    drop(plan);
    // The monitor's binary says it runs before anything else: without
    // that, end of file would read as a successful exec.
    let mut started = matches!(opts.runner, Runner::Here);
    let reap = || loop {
        match waitpid(a, None) {
            Err(Errno::EINTR) => continue,
            Ok(ws) => break Ok(ws),
            Err(e) => break Err(Error::sys(format!("waitpid({a})"), e)),
        }
    };
    let mut master = None;
    let r = loop {
        match parent.recv_with_fd() {
            Ok(Some((Msg::Ready, None))) if !started => started = true,
            Ok(Some((Msg::Console, Some(fd)))) if master.is_none() && started => master = Some(fd),
            Ok(None) if !started => {
                break Err(Error::Protocol {
                    want: "the monitor's binary to run attach's child",
                    got: "end of file (is the monitor from another davit version?)".into(),
                })
            }
            Ok(None) => break Ok(()),
            Ok(Some((Msg::Failed { step, kind, errno }, _))) => {
                break Err(Error::Init {
                    step,
                    kind,
                    source: (errno != 0).then(|| Errno::from_raw(errno)),
                })
            }
            Ok(Some(_)) => {
                break Err(Error::Protocol {
                    want: "end of file after exec",
                    got: "another message".into(),
                })
            }
            Err(e) => break Err(e),
        }
    };
    if let Err(e) = r {
        let _ = reap();
        return Err(e);
    }
    on_running(master);
    Ok(exit_code(reap()?).unwrap_or(1))
}

/// Everything attach's child needs, handed to the monitor's binary as
/// JSON after [`CHILD_ARG`]: the descriptors by number (inherited across
/// the exec), the rest as [`attach`] worked it out.
#[derive(serde::Serialize, serde::Deserialize)]
struct Plan {
    chan: RawFd,
    pidfd: RawFd,
    null: RawFd,
    fds: Option<[RawFd; 3]>,
    flags: libc::c_int,
    userns: bool,
    cgroup_paths: Vec<PathBuf>,
    init_pid: i32,
    argv: Vec<Vec<u8>>,
    envp: Vec<Vec<u8>>,
    dirs: Vec<PathBuf>,
    user: Option<(u32, Option<u32>)>,
    cwd: Option<Vec<u8>>,
    home_free: bool,
    login: bool,
    pty: bool,
    seccomp: Seccomp,
}

impl Plan {
    fn descriptors(&self) -> Vec<RawFd> {
        let mut v = vec![self.chan, self.pidfd, self.null];
        v.extend(self.fds.iter().flatten());
        v
    }
}

/// In attach's child: tell the parent that `step` failed with `e`, and exit.
fn report_and_exit(chan: &mut Channel, step: InitStep, e: Error) -> ! {
    let _ = chan.send(Msg::Failed {
        step,
        kind: e.kind(),
        errno: e.errno().map(|e| e as i32).unwrap_or(0),
    });
    sys::exit_now(126)
}

/// The plan's JSON in a close-on-exec memfd, read from its start.
fn plan_file(json: &[u8]) -> Result<OwnedFd> {
    use std::io::{Seek, Write};
    let fd = nix::sys::memfd::memfd_create(
        c"davit-attach-plan",
        nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC,
    )
    .map_err(|e| Error::sys("memfd_create(\"davit-attach-plan\")", e))?;
    let mut f = std::fs::File::from(fd);
    f.write_all(json).and_then(|()| f.rewind()).map_err(|e| {
        Error::sys(
            "write(attach plan)",
            Errno::from_raw(e.raw_os_error().unwrap_or(0)),
        )
    })?;
    Ok(f.into())
}

/// In the forked child: exec the monitor's sealed binary as attach's
/// child, with the plan's descriptors (and the plan's own, `text`) kept
/// open across the exec.
fn exec_child(mut chan: Channel, exe: &OwnedFd, keep: &[RawFd], text: &OwnedFd) -> ! {
    let fail = |chan: &mut Channel, e: Errno| -> ! {
        report_and_exit(
            chan,
            InitStep::Sync,
            Error::sys("exec of the monitor's binary", e),
        )
    };
    for &fd in keep {
        use nix::fcntl::{fcntl, FcntlArg, FdFlag};
        if let Err(e) = fcntl(fd, FcntlArg::F_SETFD(FdFlag::empty())) {
            fail(&mut chan, e);
        }
    }
    let args = match cstrings(
        [
            "davit-attach".to_owned(),
            MONITOR_ARG.to_owned(),
            CHILD_ARG.to_owned(),
            text.as_raw_fd().to_string(),
        ],
        "the attach plan",
    ) {
        Ok(a) => a,
        Err(_) => fail(&mut chan, Errno::EINVAL),
    };
    let e = nix::unistd::fexecve(exe.as_raw_fd(), &args, &[] as &[CString]).unwrap_err();
    fail(&mut chan, e)
}

/// The entry point of attach's child in the monitor's sealed binary:
/// `args` are those after [`CHILD_ARG`] (the descriptor of the plan).
/// Never returns; what fails goes to the parent over the plan's channel.
pub(crate) fn child_main(args: &[OsString]) -> ! {
    let Some(plan) = args
        .first()
        .and_then(|a| a.to_str()?.parse::<RawFd>().ok())
        .and_then(sys::take_inherited_fd)
        .and_then(|fd| {
            serde_json::from_reader::<_, Plan>(std::io::BufReader::new(std::fs::File::from(fd)))
                .ok()
        })
    else {
        sys::exit_now(126)
    };
    // Every descriptor but the plan's closes on the command's exec.
    let _ = sys::cloexec_from(3);
    let Some(chan) = sys::take_inherited_fd(plan.chan) else {
        sys::exit_now(126)
    };
    let mut chan = Channel::from_stream(std::os::unix::net::UnixStream::from(chan));
    let fail = report_and_exit;
    if let Err(e) = chan.send(Msg::Ready) {
        fail(&mut chan, InitStep::Sync, e)
    }
    let take = |fd: RawFd| {
        sys::take_inherited_fd(fd).ok_or_else(|| Error::sys(format!("fd {fd}"), Errno::EBADF))
    };
    let prepared = (|| -> Result<_> {
        let pidfd = take(plan.pidfd)?;
        let null = take(plan.null)?;
        let fds = match plan.fds {
            Some([i, o, e]) => Some([take(i)?, take(o)?, take(e)?]),
            None => None,
        };
        let layout = Layout::detect()?;
        let cg = Cgroup::from_paths(&layout, &plan.cgroup_paths);
        let cs = |v: &[Vec<u8>]| {
            v.iter()
                .map(|b| CString::new(b.clone()).map_err(|_| Error::sys("execve", Errno::EINVAL)))
                .collect::<Result<Vec<_>>>()
        };
        let argv = cs(&plan.argv)?;
        let envp = cs(&plan.envp)?;
        let cwd = match &plan.cwd {
            Some(c) => Some(cs(std::slice::from_ref(c))?.remove(0)),
            None => None,
        };
        let io = Io {
            seccomp: plan.seccomp.build()?,
            null,
            pty: plan.pty,
            fds,
        };
        let who = Who {
            user: plan.user,
            cwd,
            home_free: plan.home_free,
            login: plan.login,
        };
        Ok((pidfd, cg, argv, envp, io, who))
    })();
    let (pidfd, cg, argv, envp, io, who) = match prepared {
        Ok(p) => p,
        Err(e) => fail(&mut chan, InitStep::Sync, e),
    };
    let Some(single) = sys::single_threaded() else {
        fail(
            &mut chan,
            InitStep::Sync,
            Error::Unsupported {
                what: "attaching from a multi-threaded process".into(),
            },
        )
    };
    transient(
        chan,
        &pidfd,
        CloneFlags::from_bits_truncate(plan.flags),
        plan.userns,
        &cg,
        plan.init_pid,
        &argv,
        &envp,
        &plan.dirs,
        &io,
        &who,
        &single,
    )
}

/// What the attached command's standard descriptors become.
struct Io {
    seccomp: Option<libseccomp::ScmpFilterContext>,
    null: OwnedFd,
    fds: Option<[OwnedFd; 3]>,
    pty: bool,
}

#[allow(clippy::too_many_arguments)]
fn transient(
    mut chan: Channel,
    pidfd: &OwnedFd,
    flags: CloneFlags,
    userns: bool,
    cg: &Cgroup,
    init_pid: i32,
    argv: &[CString],
    envp: &[CString],
    dirs: &[std::path::PathBuf],
    io: &Io,
    who: &Who,
    single: &sys::SingleThreaded,
) -> ! {
    let fail = report_and_exit;
    // CVE-2016-9962: nothing in the container may ptrace us or open our
    // /proc/PID/exe or fds before the exec (inherited by the fork below).
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        fail(
            &mut chan,
            InitStep::Sync,
            Error::sys("prctl(PR_SET_DUMPABLE, 0)", e),
        );
    }
    // A plain user's container cgroup belongs to container root (handed
    // over at start, `handover.rs`): join the user namespace first, whose
    // capabilities cover those files, and the cgroup from there.
    let mut flags = flags;
    if flags.contains(CloneFlags::CLONE_NEWUSER) && !nix::unistd::geteuid().is_root() {
        if let Err(e) = nix::sched::setns(pidfd.as_fd(), CloneFlags::CLONE_NEWUSER) {
            fail(
                &mut chan,
                InitStep::Sync,
                Error::sys("setns(pidfd, CLONE_NEWUSER)", e),
            );
        }
        flags.remove(CloneFlags::CLONE_NEWUSER);
    }
    // Join the cgroup while the cgroup namespace is still the host's:
    // permission is gone later.
    if let Err(e) = cg.attach_pid(std::process::id() as i32, init_pid) {
        fail(&mut chan, InitStep::CgroupNs, e);
    }
    if let Err(e) = nix::sched::setns(pidfd.as_fd(), flags) {
        fail(
            &mut chan,
            InitStep::Sync,
            Error::sys("setns(pidfd, CLONE_NEW*)", e),
        );
    }
    // The pid namespace applies to children only: fork the command.
    // /proc/self no longer resolves here (the container's procfs does not
    // know us), so fork on the strength of the check made before forking.
    match sys::fork_checked(single) {
        Err(e) => fail(&mut chan, InitStep::Sync, Error::sys("fork()", e)),
        Ok(sys::Cloned::Child) => match grandchild(&mut chan, userns, argv, envp, dirs, io, who) {
            Ok(never) => match never {},
            Err((step, e)) => fail(&mut chan, step, e),
        },
        Ok(sys::Cloned::Parent { pid, .. }) => {
            drop(chan);
            let code = loop {
                match waitpid(pid, None) {
                    Err(Errno::EINTR) => continue,
                    Ok(ws) => break exit_code(ws).unwrap_or(1),
                    Err(_) => break 1,
                }
            };
            sys::exit_now(code)
        }
    }
}

fn grandchild(
    chan: &mut Channel,
    userns: bool,
    argv: &[CString],
    envp: &[CString],
    dirs: &[std::path::PathBuf],
    io: &Io,
    who: &Who,
) -> std::result::Result<Infallible, (InitStep, Error)> {
    let at = |step: InitStep| move |e: Error| (step, e);
    if userns {
        let (u, g) = (Uid::from_raw(0), Gid::from_raw(0));
        nix::unistd::setresgid(g, g, g)
            .map_err(|e| Error::sys("setresgid(0, 0, 0)", e))
            .map_err(at(InitStep::SetIds))?;
        nix::unistd::setresuid(u, u, u)
            .map_err(|e| Error::sys("setresuid(0, 0, 0)", e))
            .map_err(at(InitStep::SetIds))?;
    }
    nix::unistd::setgroups(&[])
        .map_err(|e| Error::sys("setgroups(0, [])", e))
        .map_err(at(InitStep::SetIds))?;
    // As for init: never the caller's session keyring.
    sys::join_new_session_keyring()
        .map_err(|e| Error::sys("keyctl(KEYCTL_JOIN_SESSION_KEYRING, NULL)", e))
        .map_err(at(InitStep::Keyring))?;
    nix::unistd::chdir("/")
        .map_err(|e| Error::sys("chdir(\"/\")", e))
        .map_err(at(InitStep::Cwd))?;
    // The requested user's group and home, from the container's own
    // passwd (we are in its mount namespace and root now).
    let entry = match (who.user, who.login) {
        (Some((uid, _)), _) => passwd_entry(uid),
        (None, true) => passwd_entry(0),
        (None, false) => None,
    };
    if let Some(d) = &who.cwd {
        // Resolved in the container's root: a link in it cannot lead out.
        nix::unistd::chdir(d.as_c_str())
            .map_err(|e| Error::sys(format!("chdir({d:?})"), e))
            .map_err(at(InitStep::Chdir))?;
    }
    match nix::unistd::getcwd() {
        Ok(p) if who.cwd.is_some() && p.is_absolute() => {}
        Ok(p) if p == Path::new("/") => {}
        Ok(p) => {
            return Err((
                InitStep::Cwd,
                Error::WrongType {
                    path: p,
                    want: "working directory inside the container",
                },
            ))
        }
        Err(e) => return Err((InitStep::Cwd, Error::sys("getcwd()", e))),
    }
    // Never the caller's terminal (CVE-2017-5226 class): a session of our
    // own, on the container's own pty or on no terminal at all.
    terminal(chan, io).map_err(at(InitStep::Console))?;
    drop_caps().map_err(at(InitStep::Capabilities))?;
    let mut home_env = None;
    if let Some((uid, gid)) = who.user {
        let gid = gid.or(entry.as_ref().map(|e| e.gid)).unwrap_or(uid);
        let (u, g) = (Uid::from_raw(uid), Gid::from_raw(gid));
        // Every capability goes with the switch from root.
        nix::unistd::setresgid(g, g, g)
            .map_err(|e| Error::sys(format!("setresgid({gid})"), e))
            .map_err(at(InitStep::User))?;
        nix::unistd::setresuid(u, u, u)
            .map_err(|e| Error::sys(format!("setresuid({uid})"), e))
            .map_err(at(InitStep::User))?;
        if who.home_free && uid != 0 {
            let home = entry
                .as_ref()
                .map(|e| e.home.clone())
                .unwrap_or_else(|| b"/".to_vec());
            let mut v = b"HOME=".to_vec();
            v.extend(home);
            home_env = CString::new(v).ok();
        }
    }
    nix::sys::prctl::set_no_new_privs()
        .map_err(|e| Error::sys("prctl(PR_SET_NO_NEW_PRIVS, 1)", e))
        .map_err(at(InitStep::Capabilities))?;
    let login_argv;
    let (exe, argv) = match who.login {
        true => {
            let shell = entry
                .as_ref()
                .map(|e| e.shell.clone())
                .filter(|s| s.starts_with(b"/") && executable(s))
                .unwrap_or_else(|| b"/bin/sh".to_vec());
            let base = shell.rsplit(|&b| b == b'/').next().unwrap_or(b"sh");
            let dash = [b"-", base].concat();
            let exe = CString::new(shell)
                .map_err(|_| (InitStep::Exec, Error::sys("execve", Errno::EINVAL)))?;
            login_argv = vec![CString::new(dash)
                .map_err(|_| (InitStep::Exec, Error::sys("execve", Errno::EINVAL)))?];
            (exe, login_argv.as_slice())
        }
        false => (resolve(argv, dirs).map_err(at(InitStep::Exec))?, argv),
    };
    sys::cloexec_from(3)
        .map_err(|e| Error::sys("close_range(3, ~0U, CLOSE_RANGE_CLOEXEC)", e))
        .map_err(at(InitStep::CloseFds))?;
    // The same filter as init, last before the exec.
    if let Some(f) = &io.seccomp {
        crate::seccomp::load(f).map_err(at(InitStep::Seccomp))?;
    }
    let envp: Vec<CString> = match home_env {
        Some(h) => envp
            .iter()
            .filter(|e| !e.as_bytes().starts_with(b"HOME="))
            .cloned()
            .chain(std::iter::once(h))
            .collect(),
        None => envp.to_vec(),
    };
    let e = nix::unistd::execve(&exe, argv, &envp).unwrap_err();
    Err((InitStep::Exec, Error::sys(format!("execve({exe:?}, …)"), e)))
}

/// A user's line of the container's `/etc/passwd`.
#[derive(Debug, PartialEq, Eq)]
struct PwEntry {
    gid: u32,
    home: Vec<u8>,
    shell: Vec<u8>,
}

fn executable(path: &[u8]) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let p = Path::new(std::ffi::OsStr::from_bytes(path));
    nix::unistd::access(p, nix::unistd::AccessFlags::X_OK).is_ok()
        && std::fs::metadata(p).is_ok_and(|m| m.is_file())
}

/// The group, home directory and shell of `uid` in the container's
/// `/etc/passwd`, read as the hostile text it may be: no link followed and
/// no mount crossed on the way (the tree is container root's; nothing in
/// it is resolved through its links by the attaching process, which
/// still holds what the caller's process held), a regular file only (a
/// fifo there would block the attach), 4 MiB at most. Anything else: no
/// entry.
fn passwd_entry(uid: u32) -> Option<PwEntry> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let root = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
        .open("/")
        .ok()?;
    let fd = sys::openat2(
        root.as_fd(),
        Path::new("etc/passwd"),
        libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_NOFOLLOW,
        0,
        sys::RESOLVE_IN_ROOT
            | sys::RESOLVE_NO_SYMLINKS
            | sys::RESOLVE_NO_MAGICLINKS
            | sys::RESOLVE_NO_XDEV,
    )
    .ok()?;
    let f = std::fs::File::from(fd);
    if !f.metadata().ok()?.is_file() {
        return None;
    }
    let mut text = Vec::new();
    f.take(4 << 20).read_to_end(&mut text).ok()?;
    parse_passwd(&text, uid)
}

fn parse_passwd(text: &[u8], uid: u32) -> Option<PwEntry> {
    text.split(|&b| b == b'\n').find_map(|line| {
        let f: Vec<&[u8]> = line.split(|&b| b == b':').collect();
        let num = |b: &[u8]| std::str::from_utf8(b).ok()?.parse::<u32>().ok();
        (f.len() >= 7 && num(f[2]) == Some(uid))
            .then(|| {
                num(f[3]).map(|gid| PwEntry {
                    gid,
                    home: f[5].to_vec(),
                    shell: f[6].to_vec(),
                })
            })
            .flatten()
    })
}

fn terminal(chan: &mut Channel, io: &Io) -> Result<()> {
    if io.pty {
        // The container's root now: its /dev/pts/ptmx, checked to be one.
        let root = sys::openat2(
            rustix::fs::CWD,
            Path::new("/"),
            (nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY).bits(),
            0,
            0,
        )
        .map_err(|e| Error::sys("open(\"/\", O_PATH)", e))?;
        let (master, slave) = tty::open_pty_at(root.as_fd(), "dev/pts/ptmx")?;
        tty::take_terminal(&slave, true)?;
        return chan.send_with_fd(Msg::Console, master.as_fd());
    }
    if let Some(fds) = &io.fds {
        // Out of the way of 0-2 first, so no dup2 overwrites another.
        let mut high = Vec::with_capacity(3);
        for fd in fds {
            high.push(
                sys::dup_at_least(fd.as_fd(), 10)
                    .map_err(|e| Error::sys("fcntl(F_DUPFD_CLOEXEC)", e))?,
            );
        }
        for (n, fd) in high.iter().enumerate() {
            nix::unistd::dup2(std::os::fd::AsRawFd::as_raw_fd(fd), n as i32)
                .map_err(|e| Error::sys(format!("dup2(…, {n})"), e))?;
        }
    }
    tty::leave_terminals(io.null.as_fd())
}

fn resolve(argv: &[CString], dirs: &[std::path::PathBuf]) -> Result<CString> {
    use std::os::unix::ffi::OsStrExt;
    let a0 = argv[0].as_bytes();
    if a0.contains(&b'/') {
        return Ok(argv[0].clone());
    }
    for d in dirs {
        let c = d.join(std::ffi::OsStr::from_bytes(a0));
        if nix::unistd::access(&c, nix::unistd::AccessFlags::X_OK).is_ok()
            && std::fs::metadata(&c).map(|m| m.is_file()).unwrap_or(false)
        {
            return CString::new(c.as_os_str().as_bytes())
                .map_err(|_| Error::sys("execvp", Errno::EINVAL));
        }
    }
    Err(Error::sys(
        format!("execvp({:?})", String::from_utf8_lossy(a0)),
        Errno::ENOENT,
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwd_lines() {
        let t = b"root:x:0:0:root:/root:/bin/sh\nbad line\napp:x:1234:4321:App:/home/app:/bin/bash\nodd:x:99:zz::/:/bin/sh\n";
        let e = |gid, home: &[u8], shell: &[u8]| {
            Some(super::PwEntry {
                gid,
                home: home.to_vec(),
                shell: shell.to_vec(),
            })
        };
        assert_eq!(
            super::parse_passwd(t, 1234),
            e(4321, b"/home/app", b"/bin/bash")
        );
        assert_eq!(super::parse_passwd(t, 0), e(0, b"/root", b"/bin/sh"));
        assert_eq!(super::parse_passwd(t, 99), None, "a bad gid is no entry");
        assert_eq!(super::parse_passwd(t, 5), None);
    }
}
