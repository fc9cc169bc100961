//! The pid-1 shim for `davit start NAME -- CMD`: forwards signals to CMD,
//! reaps orphans and exits with CMD's status.
#![forbid(unsafe_code)]

use super::Plan;
use crate::msg::Channel;
use crate::sys;

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
pub(super) fn shim(exe: &std::ffi::CStr, plan: &Plan<'_>, chan: &Channel) -> ! {
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
