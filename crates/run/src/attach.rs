//! `attach` (security.md (a2)): run a command in every namespace and the
//! cgroup of a running container.
#![forbid(unsafe_code)]

use std::convert::Infallible;
use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::errno::Errno;
use nix::sched::CloneFlags;
use nix::sys::wait::waitpid;
use nix::unistd::{Gid, Pid, Uid};

use crate::cgroup::{Cgroup, Layout};
use crate::error::{Error, InitStep, Result};
use crate::init::drop_caps;
use crate::monitor::exit_code;
use crate::msg::{Channel, Msg};
use crate::spawn::{cstrings, path_dirs, DEFAULT_PATH};
use crate::state::StateStore;
use crate::sys;

/// What to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachOptions {
    /// The command and arguments, resolved inside the container; empty
    /// means a login shell (`/bin/sh -l`).
    pub command: Vec<String>,
    /// `TERM` to pass (default `linux`).
    pub term: Option<String>,
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
/// process.
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
pub fn attach(runtime: &Path, name: &str, opts: &AttachOptions) -> Result<i32> {
    let store = StateStore::new(runtime, name);
    let st = store
        .peek()?
        .ok_or_else(|| Error::NotRunning { name: name.into() })?;
    let init = match st.init {
        Some(i) if st.status.can_attach() && i.is_alive() => i,
        _ => return Err(Error::NotRunning { name: name.into() }),
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
    let command = if opts.command.is_empty() {
        vec!["/bin/sh".to_owned(), "-l".to_owned()]
    } else {
        opts.command.clone()
    };
    let env = attach_env(opts.term.as_deref());
    let argv = cstrings(command, "the command")?;
    let envp = cstrings(
        env.iter().map(|(k, v)| format!("{k}={v}")),
        "the environment",
    )?;
    let dirs = path_dirs(&env);
    let (mut parent, child) = Channel::pair()?;

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
            transient(
                child, &pidfd, flags, userns, &cg, &argv, &envp, &dirs, &single,
            )
        }
        Ok(sys::Cloned::Parent { pid, .. }) => pid,
    };
    drop(child);
    let r = parent.recv();
    let ws = loop {
        match waitpid(a, None) {
            Err(Errno::EINTR) => continue,
            Ok(ws) => break ws,
            Err(e) => return Err(Error::sys(format!("waitpid({a})"), e)),
        }
    };
    match r? {
        None => {}
        Some(Msg::Failed { step, kind, errno }) => {
            return Err(Error::Init {
                step,
                kind,
                source: (errno != 0).then(|| Errno::from_raw(errno)),
            })
        }
        Some(_) => {
            return Err(Error::Protocol {
                want: "end of file after exec",
                got: "another message".into(),
            })
        }
    }
    Ok(exit_code(ws).unwrap_or(1))
}

#[allow(clippy::too_many_arguments)]
fn transient(
    mut chan: Channel,
    pidfd: &OwnedFd,
    flags: CloneFlags,
    userns: bool,
    cg: &Cgroup,
    argv: &[CString],
    envp: &[CString],
    dirs: &[std::path::PathBuf],
    single: &sys::SingleThreaded,
) -> ! {
    let fail = |chan: &mut Channel, step: InitStep, e: Error| -> ! {
        let _ = chan.send(Msg::Failed {
            step,
            kind: e.kind(),
            errno: e.errno().map(|e| e as i32).unwrap_or(0),
        });
        sys::exit_now(126)
    };
    // CVE-2016-9962: nothing in the container may ptrace us or open our
    // /proc/PID/exe or fds before the exec (inherited by the fork below).
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        fail(
            &mut chan,
            InitStep::Sync,
            Error::sys("prctl(PR_SET_DUMPABLE, 0)", e),
        );
    }
    // Join the cgroup while still on the host: permission is gone later.
    if let Err(e) = cg.add_pid(std::process::id() as i32) {
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
        Ok(sys::Cloned::Child) => match grandchild(userns, argv, envp, dirs) {
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
    userns: bool,
    argv: &[CString],
    envp: &[CString],
    dirs: &[std::path::PathBuf],
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
    match nix::unistd::getcwd() {
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
    drop_caps().map_err(at(InitStep::Capabilities))?;
    nix::sys::prctl::set_no_new_privs()
        .map_err(|e| Error::sys("prctl(PR_SET_NO_NEW_PRIVS, 1)", e))
        .map_err(at(InitStep::Capabilities))?;
    let exe = resolve(argv, dirs).map_err(at(InitStep::Exec))?;
    sys::cloexec_from(3)
        .map_err(|e| Error::sys("close_range(3, ~0U, CLOSE_RANGE_CLOEXEC)", e))
        .map_err(at(InitStep::CloseFds))?;
    let e = nix::unistd::execve(&exe, argv, envp).unwrap_err();
    Err((InitStep::Exec, Error::sys(format!("execve({exe:?}, …)"), e)))
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
