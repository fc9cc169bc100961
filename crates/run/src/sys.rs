//! Every `unsafe` block of the crate lives here, each with a `// SAFETY:` note.
//!
//! The wrappers are safe functions: raw syscalls that `nix` 0.29 lacks
//! (`clone3`, `openat2`, `close_range`, `pidfd_*`, `open_tree`, `move_mount`),
//! `fork`, `_exit`, and the `pre_exec` hook used to hand a descriptor to a
//! re-executed monitor.

#![allow(unsafe_code)]

use std::ffi::CString;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use nix::errno::Errno;
use nix::unistd::Pid;

/// `RESOLVE_NO_XDEV` for [`openat2`].
pub const RESOLVE_NO_XDEV: u64 = 0x01;
/// `RESOLVE_NO_MAGICLINKS` for [`openat2`].
pub const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
/// `RESOLVE_NO_SYMLINKS` for [`openat2`].
pub const RESOLVE_NO_SYMLINKS: u64 = 0x04;
/// `RESOLVE_BENEATH` for [`openat2`].
pub const RESOLVE_BENEATH: u64 = 0x08;
/// `RESOLVE_IN_ROOT` for [`openat2`].
pub const RESOLVE_IN_ROOT: u64 = 0x10;

const CLONE_PIDFD: u64 = 0x1000;
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
const OPEN_TREE_CLONE: libc::c_uint = 1;
const AT_RECURSIVE: libc::c_uint = 0x8000;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;
/// `mount_attr` flags (linux/mount.h).
pub const MOUNT_ATTR_RDONLY: u64 = 0x1;
/// See [`MOUNT_ATTR_RDONLY`].
pub const MOUNT_ATTR_NOSUID: u64 = 0x2;
/// See [`MOUNT_ATTR_RDONLY`].
pub const MOUNT_ATTR_NODEV: u64 = 0x4;
/// See [`MOUNT_ATTR_RDONLY`].
pub const MOUNT_ATTR_NOEXEC: u64 = 0x8;
/// See [`MOUNT_ATTR_RDONLY`]; the atime bits.
pub const MOUNT_ATTR_ATIME_MASK: u64 = 0x70;
/// See [`MOUNT_ATTR_RDONLY`].
pub const MOUNT_ATTR_NOATIME: u64 = 0x10;

fn cpath(p: &Path) -> Result<CString, Errno> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| Errno::EINVAL)
}

/// Number of threads in this process, from `/proc/self/stat` field 20.
pub fn thread_count() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    // rest starts at field 3 (state); num_threads is field 20.
    rest.split_whitespace().nth(17)?.parse().ok()
}

fn ensure_single_threaded() -> Result<(), Errno> {
    match thread_count() {
        Some(1) => Ok(()),
        // A threaded process must not fork except to exec: refuse.
        _ => Err(Errno::EDEADLK),
    }
}

/// Result of [`clone_process`] and [`fork`].
#[derive(Debug)]
pub enum Cloned {
    /// We are the new process.
    Child,
    /// We are the caller; here is the child.
    Parent {
        /// The child's pid (in our pid namespace).
        pid: Pid,
        /// A pidfd for the child, when the kernel gave one.
        pidfd: Option<OwnedFd>,
        /// Whether `CLONE_INTO_CGROUP` placed the child.
        into_cgroup: bool,
    },
}

#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// Clone a child process that behaves like `fork` (same stack, copy of the
/// address space) with the extra `CLONE_NEW*` `flags`.
///
/// Tries `clone3` with `CLONE_PIDFD` (and `CLONE_INTO_CGROUP` when `cgroup`
/// is given; on failure of that alone it retries without). Falls back to the
/// legacy `clone` plus `pidfd_open` when `clone3` is `ENOSYS`.
///
/// Refuses with `EDEADLK` when the process has more than one thread.
pub fn clone_process(flags: u64, cgroup: Option<BorrowedFd<'_>>) -> Result<Cloned, Errno> {
    ensure_single_threaded()?;
    let mut pidfd: libc::c_int = -1;
    let mut args = CloneArgs {
        flags: flags | CLONE_PIDFD,
        pidfd: std::ptr::addr_of_mut!(pidfd) as u64,
        exit_signal: libc::SIGCHLD as u64,
        ..Default::default()
    };
    if let Some(fd) = cgroup {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = fd.as_raw_fd() as u64;
    }
    // SAFETY: clone3 without CLONE_VM and without a stack behaves like fork:
    // the child gets a private copy of the address space and returns here.
    // We checked above that the process is single-threaded, so no lock can be
    // held by a thread that does not exist in the child. `args` and `pidfd`
    // outlive the call.
    let mut r = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            std::ptr::addr_of_mut!(args),
            std::mem::size_of::<CloneArgs>(),
        )
    };
    let mut into_cgroup = cgroup.is_some();
    if r == -1 && cgroup.is_some() && Errno::last() != Errno::ENOSYS {
        // CLONE_INTO_CGROUP can fail on hybrid hosts (LXC falls back too).
        args.flags &= !CLONE_INTO_CGROUP;
        args.cgroup = 0;
        into_cgroup = false;
        // SAFETY: as above.
        r = unsafe {
            libc::syscall(
                libc::SYS_clone3,
                std::ptr::addr_of_mut!(args),
                std::mem::size_of::<CloneArgs>(),
            )
        };
    }
    if r == -1 && Errno::last() == Errno::ENOSYS {
        // SAFETY: legacy clone with a NULL stack is fork with namespace flags;
        // single-threaded as checked above. No pointers are passed.
        let r2 = unsafe {
            libc::syscall(
                libc::SYS_clone,
                (flags as libc::c_ulong) | libc::SIGCHLD as libc::c_ulong,
                0usize,
                0usize,
                0usize,
                0usize,
            )
        };
        return match r2 {
            -1 => Err(Errno::last()),
            0 => Ok(Cloned::Child),
            pid => {
                let pid = Pid::from_raw(pid as i32);
                Ok(Cloned::Parent {
                    pid,
                    pidfd: pidfd_open(pid).ok(),
                    into_cgroup: false,
                })
            }
        };
    }
    match r {
        -1 => Err(Errno::last()),
        0 => Ok(Cloned::Child),
        pid => Ok(Cloned::Parent {
            pid: Pid::from_raw(pid as i32),
            // SAFETY: the kernel stored a fresh pidfd that nobody else owns.
            pidfd: (pidfd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(pidfd) }),
            into_cgroup,
        }),
    }
}

/// Proof, checked through `/proc/self/stat`, that the process was
/// single-threaded when it was made. Not `Send`, so it stays on the thread
/// that checked. Needed to fork where `/proc/self` may no longer resolve
/// (after `setns` into a container's mount namespace).
#[derive(Debug)]
pub struct SingleThreaded(std::marker::PhantomData<*const ()>);

/// A [`SingleThreaded`] token if the process has exactly one thread now.
pub fn single_threaded() -> Option<SingleThreaded> {
    (thread_count() == Some(1)).then_some(SingleThreaded(std::marker::PhantomData))
}

/// `fork()`, refused with `EDEADLK` in a multi-threaded process.
pub fn fork() -> Result<Cloned, Errno> {
    ensure_single_threaded()?;
    fork_checked(&SingleThreaded(std::marker::PhantomData))
}

/// `fork()` on the strength of an earlier [`single_threaded`] check; the
/// caller must not have started threads since.
pub fn fork_checked(_proof: &SingleThreaded) -> Result<Cloned, Errno> {
    // SAFETY: single-threaded (checked), so the child may run arbitrary code.
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Child => Ok(Cloned::Child),
        nix::unistd::ForkResult::Parent { child } => Ok(Cloned::Parent {
            pid: child,
            pidfd: pidfd_open(child).ok(),
            into_cgroup: false,
        }),
    }
}

/// `fork()`: `Some(child)` in the parent, `None` in the child. For the
/// container's pid-1 shim only.
pub fn fork_process() -> Result<Option<Pid>, Errno> {
    // SAFETY: called only in the container's init, a single-threaded
    // process (a fresh clone), so the child may run any code.
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Parent { child } => Ok(Some(child)),
        nix::unistd::ForkResult::Child => Ok(None),
    }
}

/// `ioctl(fd, TIOCSCTTY, 0)`: make the terminal on `fd` the caller's
/// controlling terminal (after `setsid`).
pub fn set_controlling_tty(fd: RawFd) -> Result<(), Errno> {
    // SAFETY: TIOCSCTTY takes an integer argument; a bad fd is an error.
    Errno::result(unsafe { libc::ioctl(fd, libc::TIOCSCTTY, 0) }).map(drop)
}

/// `_exit(code)`: leave a forked child without running atexit handlers or
/// flushing buffers shared with the parent.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit is always safe to call; it never returns.
    unsafe { libc::_exit(code) }
}

/// `pidfd_open(pid, 0)`.
pub fn pidfd_open(pid: Pid) -> Result<OwnedFd, Errno> {
    // SAFETY: plain syscall with integer arguments.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if r < 0 {
        return Err(Errno::last());
    }
    // SAFETY: the kernel returned a new descriptor we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(r as RawFd) })
}

/// `pidfd_send_signal(pidfd, sig, NULL, 0)`.
pub fn pidfd_send_signal(pidfd: BorrowedFd<'_>, sig: i32) -> Result<(), Errno> {
    // SAFETY: integer arguments and a NULL siginfo, which the kernel accepts.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if r < 0 {
        Err(Errno::last())
    } else {
        Ok(())
    }
}

/// Wait until `fd` is readable (a pidfd becomes readable when the process
/// exits). `timeout_ms < 0` waits forever. Returns whether it became readable.
pub fn poll_readable(fd: BorrowedFd<'_>, timeout_ms: i32) -> Result<bool, Errno> {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: one valid pollfd on the stack.
        let r = unsafe { libc::poll(&mut p, 1, timeout_ms) };
        match r {
            -1 if Errno::last() == Errno::EINTR => continue,
            -1 => return Err(Errno::last()),
            0 => return Ok(false),
            _ => return Ok(true),
        }
    }
}

#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// `openat2(dirfd, path, {flags, mode, resolve})`. `O_CLOEXEC` is always added.
pub fn openat2(
    dirfd: BorrowedFd<'_>,
    path: &Path,
    flags: i32,
    mode: u32,
    resolve: u64,
) -> Result<OwnedFd, Errno> {
    let c = cpath(path)?;
    let mut how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: u64::from(mode),
        resolve,
    };
    loop {
        // SAFETY: `c` is a valid C string and `how` a valid open_how; both
        // outlive the call.
        let r = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dirfd.as_raw_fd(),
                c.as_ptr(),
                std::ptr::addr_of_mut!(how),
                std::mem::size_of::<OpenHow>(),
            )
        };
        if r >= 0 {
            // SAFETY: new descriptor owned by us.
            return Ok(unsafe { OwnedFd::from_raw_fd(r as RawFd) });
        }
        match Errno::last() {
            // openat2 returns EAGAIN when a rename race happened during
            // RESOLVE_IN_ROOT resolution; retrying is the documented answer.
            Errno::EAGAIN | Errno::EINTR => continue,
            e => return Err(e),
        }
    }
}

/// Mark every descriptor `>= first` close-on-exec (`close_range` with
/// `CLOSE_RANGE_CLOEXEC`, CVE-2024-21626 hardening).
pub fn cloexec_from(first: u32) -> Result<(), Errno> {
    // SAFETY: integer arguments only; marking fds CLOEXEC cannot invalidate
    // any Rust object.
    let r = unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, CLOSE_RANGE_CLOEXEC) };
    if r < 0 {
        Err(Errno::last())
    } else {
        Ok(())
    }
}

/// `close_range(first, ~0U, 0)`: close every descriptor from `first` on.
pub fn close_from(first: u32) -> Result<(), Errno> {
    // SAFETY: integer arguments only. Callers (the pid-1 shim) own no Rust
    // object that wraps a descriptor past stdio once this runs.
    let r = unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, 0) };
    if r < 0 {
        Err(Errno::last())
    } else {
        Ok(())
    }
}

/// `open_tree(dirfd, path, OPEN_TREE_CLONE | AT_RECURSIVE | OPEN_TREE_CLOEXEC)`:
/// a detached recursive copy of the mount tree at `path`.
pub fn open_tree_clone(dirfd: BorrowedFd<'_>, path: &Path) -> Result<OwnedFd, Errno> {
    let c = cpath(path)?;
    let flags = OPEN_TREE_CLONE | AT_RECURSIVE | libc::O_CLOEXEC as libc::c_uint;
    // SAFETY: valid C string; integer flags.
    let r = unsafe { libc::syscall(libc::SYS_open_tree, dirfd.as_raw_fd(), c.as_ptr(), flags) };
    if r < 0 {
        return Err(Errno::last());
    }
    // SAFETY: new descriptor owned by us.
    Ok(unsafe { OwnedFd::from_raw_fd(r as RawFd) })
}

/// `open_tree(fd, "", OPEN_TREE_CLONE | AT_EMPTY_PATH [| AT_RECURSIVE])`:
/// a detached copy of the mount at the file or directory `fd` (an
/// `O_PATH` descriptor does), with its submounts when `recursive`.
pub fn open_tree_clone_fd(fd: BorrowedFd<'_>, recursive: bool) -> Result<OwnedFd, Errno> {
    let empty = CString::default();
    let mut flags =
        OPEN_TREE_CLONE | libc::AT_EMPTY_PATH as libc::c_uint | libc::O_CLOEXEC as libc::c_uint;
    if recursive {
        flags |= AT_RECURSIVE;
    }
    // SAFETY: an empty C string; integer flags.
    let r = unsafe { libc::syscall(libc::SYS_open_tree, fd.as_raw_fd(), empty.as_ptr(), flags) };
    if r < 0 {
        return Err(Errno::last());
    }
    // SAFETY: new descriptor owned by us.
    Ok(unsafe { OwnedFd::from_raw_fd(r as RawFd) })
}

/// `move_mount(tree, "", to_dirfd, to_path, MOVE_MOUNT_F_EMPTY_PATH)`: attach
/// the detached tree `tree` on top of `to_path` (an empty `to_path`: on
/// `to_dirfd` itself, file or directory).
pub fn move_mount_onto(
    tree: BorrowedFd<'_>,
    to_dirfd: BorrowedFd<'_>,
    to_path: &Path,
) -> Result<(), Errno> {
    let empty = CString::default();
    let to = cpath(to_path)?;
    // SAFETY: valid C strings; integer flags.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            empty.as_ptr(),
            to_dirfd.as_raw_fd(),
            to.as_ptr(),
            if to_path.as_os_str().is_empty() {
                MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH
            } else {
                MOVE_MOUNT_F_EMPTY_PATH
            },
        )
    };
    if r < 0 {
        Err(Errno::last())
    } else {
        Ok(())
    }
}

/// Arrange for `cmd`'s child to receive each `(fd, target)` as descriptor
/// number `target` (without close-on-exec), and optionally to call `setsid`.
/// A source numbered like another's target is moved up first, so no
/// `dup2` overwrites a descriptor still to be passed.
pub fn command_pass_fds(cmd: &mut Command, fds: Vec<(OwnedFd, RawFd)>, setsid: bool) {
    let targets: Vec<RawFd> = fds.iter().map(|(_, t)| *t).collect();
    let fds: Vec<(OwnedFd, RawFd)> = fds
        .into_iter()
        .map(|(fd, t)| {
            let clash = targets.iter().any(|&o| o != t && o == fd.as_raw_fd());
            match clash {
                true => match dup_at_least(std::os::fd::AsFd::as_fd(&fd), 64) {
                    Ok(up) => (up, t),
                    Err(_) => (fd, t),
                },
                false => (fd, t),
            }
        })
        .collect();
    let hook = move || -> std::io::Result<()> {
        for (fd, target) in &fds {
            let src = fd.as_raw_fd();
            if src == *target {
                // SAFETY: fcntl on a descriptor we own; async-signal-safe.
                let flags = unsafe { libc::fcntl(src, libc::F_GETFD) };
                // SAFETY: as above.
                if flags < 0
                    || unsafe { libc::fcntl(src, libc::F_SETFD, flags & !libc::FD_CLOEXEC) } < 0
                {
                    return Err(std::io::Error::last_os_error());
                }
            // SAFETY: dup2 is async-signal-safe; the new fd has no CLOEXEC.
            } else if unsafe { libc::dup2(src, *target) } < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        // SAFETY: setsid is async-signal-safe.
        if setsid && unsafe { libc::setsid() } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    };
    // SAFETY: the hook only calls async-signal-safe functions (fcntl, dup2,
    // setsid) and allocates nothing, as required between fork and exec.
    unsafe {
        cmd.pre_exec(hook);
    }
}

/// Set `sig` to `SIG_IGN` (`ignore`) or `SIG_DFL`. No handler code is
/// involved, so this is safe at any time.
pub fn set_signal_ignored(sig: nix::sys::signal::Signal, ignore: bool) -> Result<(), Errno> {
    use nix::sys::signal::{signal, SigHandler};
    let h = if ignore {
        SigHandler::SigIgn
    } else {
        SigHandler::SigDfl
    };
    // SAFETY: SIG_IGN and SIG_DFL install no Rust handler, so no
    // async-signal-safety requirement arises.
    unsafe { signal(sig, h) }.map(|_| ())
}

/// Unblock every signal in the calling thread. A blocked signal survives
/// fork and exec, and std's `Command` leaves the mask as it is: whatever
/// the caller blocked (the CLI blocks SIGINT, SIGQUIT, SIGTERM and SIGHUP
/// to forward them) would stay blocked in every process we start, and a
/// dnsmasq with SIGTERM and SIGHUP blocked neither stops nor reloads.
pub fn clear_signal_mask() -> Result<(), Errno> {
    nix::sys::signal::SigSet::empty().thread_set_mask()
}

/// Whether the kernel has `clone3` (probe with an invalid size: `EINVAL` or
/// `E2BIG` means present, `ENOSYS` absent).
pub fn clone3_supported() -> bool {
    // SAFETY: a NULL pointer with size 0 is rejected before any access.
    let r = unsafe { libc::syscall(libc::SYS_clone3, std::ptr::null::<u8>(), 0usize) };
    !(r == -1 && Errno::last() == Errno::ENOSYS)
}

/// `struct mount_attr` (linux/mount.h), which libc does not define.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

/// `mount_setattr(tree, "", AT_EMPTY_PATH|AT_RECURSIVE, {MOUNT_ATTR_IDMAP,
/// userns})`: make the detached mount `tree` (from [`open_tree_clone`])
/// show its files' ids through the id map of the user namespace `userns`.
///
/// See also [`mount_setattr_flags`].
/// Needs `CAP_SYS_ADMIN` over the filesystem, i.e. root for a host disk.
pub fn mount_setattr_idmap(tree: BorrowedFd<'_>, userns: BorrowedFd<'_>) -> Result<(), Errno> {
    mount_setattr(
        tree,
        &MountAttr {
            attr_set: MOUNT_ATTR_IDMAP,
            attr_clr: 0,
            propagation: 0,
            userns_fd: userns.as_raw_fd() as u64,
        },
    )
}

/// `mount_setattr(tree, "", AT_EMPTY_PATH | AT_RECURSIVE, attr)`.
fn mount_setattr(tree: BorrowedFd<'_>, attr: &MountAttr) -> Result<(), Errno> {
    let empty = CString::default();
    // SAFETY: a valid descriptor, an empty C string and a live, correctly
    // laid out `mount_attr` whose size we pass.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_EMPTY_PATH | AT_RECURSIVE as libc::c_int,
            attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r < 0 {
        Err(Errno::last())
    } else {
        Ok(())
    }
}

/// Whether the kernel has `mount_setattr` (needed for idmapped mounts).
pub fn mount_setattr_supported() -> bool {
    // SAFETY: fd -1 and NULL arguments are rejected with EBADF/EINVAL
    // before any memory access.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            -1,
            std::ptr::null::<libc::c_char>(),
            0,
            std::ptr::null::<u8>(),
            0usize,
        )
    };
    !(r == -1 && Errno::last() == Errno::ENOSYS)
}

/// Adopt descriptor `fd`, inherited from the parent process (the monitor's
/// ready pipe), if it is open. Marks it close-on-exec.
///
/// Call once per number at process start, before anything else could have
/// taken ownership of it.
pub fn take_inherited_fd(fd: RawFd) -> Option<OwnedFd> {
    nix::fcntl::fcntl(
        fd,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .ok()?;
    // SAFETY: the descriptor is open (F_SETFD succeeded) and, per the
    // documented contract, nothing else in this process owns it.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

// --- net: namespace ioctls (ioctl_ns(2)) ---
const NS_GET_USERNS: libc::c_ulong = 0xb701;
const NS_GET_OWNER_UID: libc::c_ulong = 0xb704;

/// `ioctl(ns, NS_GET_USERNS)`: the user namespace that owns namespace `ns`.
pub fn ns_get_userns(ns: BorrowedFd<'_>) -> Result<OwnedFd, Errno> {
    // SAFETY: NS_GET_USERNS takes no argument and returns a new descriptor.
    let r = unsafe { libc::ioctl(ns.as_raw_fd(), NS_GET_USERNS as _) };
    if r < 0 {
        return Err(Errno::last());
    }
    // SAFETY: the kernel returned a new descriptor we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(r) })
}

/// `ioctl(userns, NS_GET_OWNER_UID, &uid)`: the uid (in the caller's user
/// namespace) of the creator of user namespace `userns`.
pub fn ns_get_owner_uid(userns: BorrowedFd<'_>) -> Result<u32, Errno> {
    let mut uid: libc::uid_t = u32::MAX;
    // SAFETY: NS_GET_OWNER_UID writes one uid_t to the pointer, which points
    // at a live local of that type.
    let r = unsafe {
        libc::ioctl(
            userns.as_raw_fd(),
            NS_GET_OWNER_UID as _,
            std::ptr::addr_of_mut!(uid),
        )
    };
    if r < 0 {
        return Err(Errno::last());
    }
    Ok(uid)
}

const NS_GET_NSTYPE: libc::c_ulong = 0xb703;

/// `ioctl(ns, NS_GET_NSTYPE)`: the `CLONE_NEW*` type of namespace `ns`.
pub fn ns_get_nstype(ns: BorrowedFd<'_>) -> Result<i32, Errno> {
    // SAFETY: NS_GET_NSTYPE takes no argument and returns an integer.
    let r = unsafe { libc::ioctl(ns.as_raw_fd(), NS_GET_NSTYPE as _) };
    if r < 0 {
        Err(Errno::last())
    } else {
        Ok(r)
    }
}

/// Duplicate `fd` to a close-on-exec descriptor numbered at least `min`
/// (`F_DUPFD_CLOEXEC`), so descriptors handed to a child with
/// [`command_pass_fds`] cannot collide with the target numbers.
pub fn dup_at_least(fd: BorrowedFd<'_>, min: RawFd) -> Result<OwnedFd, Errno> {
    let r = nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(min))?;
    // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor that we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(r) })
}

/// A child in a new, unmapped user namespace that only waits: it exits
/// (status 0) once the returned pipe end is closed. It runs nothing but
/// `close`, `read` and `_exit`, so a process with threads may make one,
/// and nothing is executed (the idmapped-mount probe needed a `cat` from
/// `PATH` before). The caller writes its maps, uses `/proc/PID/ns/user`,
/// closes the pipe and reaps it.
pub fn userns_waiter() -> Result<(Pid, OwnedFd), Errno> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let (rfd, wfd) = (r.as_raw_fd(), w.as_raw_fd());
    // SAFETY: a fork-like clone (NULL stack, SIGCHLD): the child shares no
    // memory with the parent and, below, calls only close(2), read(2) and
    // _exit(2), which are async-signal-safe, so it is sound even when the
    // parent has other threads. No pointers are passed.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (libc::CLONE_NEWUSER | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    match pid {
        -1 => Err(Errno::last()),
        0 => {
            // SAFETY: closes the child's copy of the write end, so that the
            // parent's close is the end of the pipe.
            unsafe { libc::close(wfd) };
            let mut b = 0u8;
            loop {
                // SAFETY: reads at most one byte into a local.
                let n = unsafe { libc::read(rfd, (&mut b as *mut u8).cast(), 1) };
                if n == 0 || (n < 0 && Errno::last() != Errno::EINTR) {
                    break;
                }
            }
            // SAFETY: _exit never returns and runs no atexit handlers.
            unsafe { libc::_exit(0) }
        }
        pid => {
            drop(r);
            Ok((Pid::from_raw(pid as i32), w))
        }
    }
}

/// `keyctl(KEYCTL_JOIN_SESSION_KEYRING, NULL)`: this process (and what it
/// execs) gets a new, anonymous session keyring instead of the caller's,
/// as `lxc.keyring.session` and runc do. `Ok(false)` when the kernel has
/// no key support (`ENOSYS`) or a seccomp filter around davit itself
/// forbids keyctl (`EACCES`, `EPERM`, as when davit runs nested): LXC
/// goes on in those cases too.
pub fn join_new_session_keyring() -> Result<bool, Errno> {
    // SAFETY: KEYCTL_JOIN_SESSION_KEYRING with a NULL name reads no memory;
    // the other arguments are integers the kernel ignores for this command.
    let r = unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            libc::KEYCTL_JOIN_SESSION_KEYRING,
            std::ptr::null::<libc::c_char>(),
            0usize,
            0usize,
            0usize,
        )
    };
    if r >= 0 {
        return Ok(true);
    }
    match Errno::last() {
        Errno::ENOSYS | Errno::EACCES | Errno::EPERM => Ok(false),
        e => Err(e),
    }
}

// --- the v2 device allow list (devices.rs) ---
const BPF_PROG_LOAD: libc::c_int = 5;
const BPF_PROG_ATTACH: libc::c_int = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

/// The `BPF_PROG_LOAD` part of `union bpf_attr` (the kernel zero-fills
/// the rest up to the size it knows).
#[repr(C)]
struct BpfProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
}

/// The `BPF_PROG_ATTACH` part of `union bpf_attr`.
#[repr(C)]
struct BpfProgAttach {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
}

/// `bpf(BPF_PROG_LOAD)` of a `BPF_PROG_TYPE_CGROUP_DEVICE` program given as
/// encoded instructions; with the verifier's log when it refuses.
pub fn bpf_prog_load_cgroup_device(
    insns: &[[u8; 8]],
    license: &str,
) -> (Result<OwnedFd, Errno>, String) {
    let code: Vec<u8> = insns.iter().flatten().copied().collect();
    let Ok(lic) = CString::new(license) else {
        return (Err(Errno::EINVAL), String::new());
    };
    let mut log = vec![0u8; 64 * 1024];
    let attr = BpfProgLoad {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: insns.len() as u32,
        insns: code.as_ptr() as u64,
        license: lic.as_ptr() as u64,
        log_level: 1,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
        kern_version: 0,
        prog_flags: 0,
    };
    // SAFETY: attr points at live buffers (code, lic, log) that outlive
    // the call and whose lengths it states; the kernel writes only into
    // log, within log_size.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            &attr as *const BpfProgLoad,
            std::mem::size_of::<BpfProgLoad>(),
        )
    };
    let text = String::from_utf8_lossy(&log[..log.iter().position(|&b| b == 0).unwrap_or(0)])
        .trim()
        .to_owned();
    if r < 0 {
        return (Err(Errno::last()), text);
    }
    // SAFETY: BPF_PROG_LOAD returned a new descriptor that we now own.
    (Ok(unsafe { OwnedFd::from_raw_fd(r as RawFd) }), text)
}

/// `bpf(BPF_PROG_ATTACH)` of device program `prog` to cgroup directory
/// `cgroup`, `BPF_F_ALLOW_MULTI`.
pub fn bpf_prog_attach_cgroup_device(
    cgroup: BorrowedFd<'_>,
    prog: BorrowedFd<'_>,
) -> Result<(), Errno> {
    let attr = BpfProgAttach {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
    };
    // SAFETY: attr is a plain struct read by the kernel during the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_ATTACH,
            &attr as *const BpfProgAttach,
            std::mem::size_of::<BpfProgAttach>(),
        )
    };
    Errno::result(r).map(drop)
}

/// `mount_setattr(tree, "", AT_EMPTY_PATH | AT_RECURSIVE, {set, clr})`: set
/// and clear `MOUNT_ATTR_*` flags on every mount of `tree`.
pub fn mount_setattr_flags(tree: BorrowedFd<'_>, set: u64, clr: u64) -> Result<(), Errno> {
    mount_setattr(
        tree,
        &MountAttr {
            attr_set: set,
            attr_clr: clr,
            propagation: 0,
            userns_fd: 0,
        },
    )
}

/// Drops this process's page-table entries for the clean read-only
/// mappings of its own binary ([`crate::resident::clean_ranges`]): a
/// monitor whose container runs keeps only what it touches from then on.
/// Returns the bytes of address space so released; 0 if `/proc/self`
/// cannot be read.
pub fn drop_clean_exe_pages() -> usize {
    use std::os::unix::fs::MetadataExt;
    let Ok(exe) = std::fs::metadata("/proc/self/exe") else {
        return 0;
    };
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return 0;
    };
    let dev = (libc::major(exe.dev()) as u64, libc::minor(exe.dev()) as u64);
    let mut dropped = 0;
    for (start, end) in crate::resident::clean_ranges(&smaps, dev, exe.ino()) {
        // SAFETY: the range is one whole private, read-only mapping of our
        // own binary that smaps showed with no anonymous page, and no code
        // of ours remaps, unprotects or writes such a mapping. On it
        // MADV_DONTNEED only removes page-table entries: a later access
        // faults in the same page-cache bytes of the file that any page
        // not yet touched would show (the file is a sealed memfd), so no
        // memory the process reads changes. An error leaves it as it was.
        let r =
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
        if r == 0 {
            dropped += end - start;
        }
    }
    dropped
}
