//! Thin wrappers over the raw syscalls the unpacker needs.
//!
//! This is the only module of the crate that contains `unsafe`. Every wrapper
//! takes borrowed descriptors and `CStr` names, checks the return value, and
//! turns `-1` into `io::Error::last_os_error()`. Callers never see a raw
//! pointer.

#![allow(unsafe_code)]

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

/// `RESOLVE_*` flags for [`openat2`] (from `linux/openat2.h`).
pub const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
/// Treat the dirfd as `/` (symlinks and `..` are clamped inside it).
pub const RESOLVE_IN_ROOT: u64 = 0x10;

#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Retries a syscall on `EINTR`.
fn retry<F: FnMut() -> libc::c_int>(mut f: F) -> io::Result<libc::c_int> {
    loop {
        match cvt(f()) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

fn owned(fd: libc::c_int) -> OwnedFd {
    // SAFETY: `fd` was just returned by a successful open-like syscall, so it
    // is a valid descriptor that nothing else owns.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// `openat2(dirfd, path, {flags, mode, resolve})`.
pub fn openat2(
    dir: BorrowedFd<'_>,
    path: &CStr,
    flags: libc::c_int,
    mode: libc::mode_t,
    resolve: u64,
) -> io::Result<OwnedFd> {
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: mode as u64,
        resolve,
    };
    let fd = retry(|| {
        // SAFETY: `path` is NUL-terminated, `how` is a live, correctly laid
        // out `struct open_how` and we pass its exact size.
        unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir.as_raw_fd(),
                path.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            ) as libc::c_int
        }
    })?;
    Ok(owned(fd))
}

/// `openat(dirfd, name, flags | O_CLOEXEC, mode)`.
pub fn openat(
    dir: BorrowedFd<'_>,
    name: &CStr,
    flags: libc::c_int,
    mode: libc::mode_t,
) -> io::Result<OwnedFd> {
    // SAFETY: `name` is NUL-terminated and `dir` is a live descriptor.
    let fd = retry(|| unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    })?;
    Ok(owned(fd))
}

/// `open(path, flags | O_CLOEXEC)`.
pub fn open(path: &CStr, flags: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: `path` is NUL-terminated.
    let fd = retry(|| unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC) })?;
    Ok(owned(fd))
}

/// `mkdirat(dirfd, name, mode)`.
pub fn mkdirat(dir: BorrowedFd<'_>, name: &CStr, mode: libc::mode_t) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated and `dir` is a live descriptor.
    retry(|| unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode) }).map(drop)
}

/// `mknodat(dirfd, name, mode, dev)`.
pub fn mknodat(
    dir: BorrowedFd<'_>,
    name: &CStr,
    mode: libc::mode_t,
    major: u32,
    minor: u32,
) -> io::Result<()> {
    let dev = libc::makedev(major, minor);
    // SAFETY: `name` is NUL-terminated and `dir` is a live descriptor.
    retry(|| unsafe { libc::mknodat(dir.as_raw_fd(), name.as_ptr(), mode, dev) }).map(drop)
}

/// `symlinkat(target, dirfd, name)`: the link is created, never followed.
pub fn symlinkat(target: &CStr, dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    // SAFETY: both strings are NUL-terminated and `dir` is a live descriptor.
    retry(|| unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) }).map(drop)
}

/// `linkat(olddir, oldname, newdir, newname, 0)`: without
/// `AT_SYMLINK_FOLLOW`, so a symlink target is linked, not followed.
pub fn linkat(
    olddir: BorrowedFd<'_>,
    oldname: &CStr,
    newdir: BorrowedFd<'_>,
    newname: &CStr,
) -> io::Result<()> {
    // SAFETY: both names are NUL-terminated and both dirs are live descriptors.
    retry(|| unsafe {
        libc::linkat(
            olddir.as_raw_fd(),
            oldname.as_ptr(),
            newdir.as_raw_fd(),
            newname.as_ptr(),
            0,
        )
    })
    .map(drop)
}

/// `ioctl(dst, FICLONE, src)`: `dst` shares `src`'s blocks (btrfs, XFS);
/// `EOPNOTSUPP`, `EXDEV` or `EINVAL` where the filesystem cannot.
pub fn ficlone(dst: BorrowedFd<'_>, src: BorrowedFd<'_>) -> io::Result<()> {
    // FICLONE = _IOW(0x94, 9, int)
    const FICLONE: libc::c_ulong = 0x4004_9409;
    // SAFETY: FICLONE takes the source descriptor as an integer argument;
    // both descriptors are live.
    cvt(unsafe { libc::ioctl(dst.as_raw_fd(), FICLONE, src.as_raw_fd()) }).map(drop)
}

/// `renameat2(AT_FDCWD, a, AT_FDCWD, b, RENAME_EXCHANGE)`: swaps two
/// paths in one step.
pub fn rename_exchange(a: &CStr, b: &CStr) -> io::Result<()> {
    // SAFETY: valid C strings; integer flags.
    cvt(unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    })
    .map(drop)
}

pub fn unlinkat(dir: BorrowedFd<'_>, name: &CStr, flags: libc::c_int) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated and `dir` is a live descriptor.
    retry(|| unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) }).map(drop)
}

/// `fstatat(dirfd, name, AT_SYMLINK_NOFOLLOW)`.
pub fn lstatat(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<libc::stat> {
    // SAFETY: an all-zero `struct stat` is a valid value of a plain C struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `name` is NUL-terminated, `st` is a valid out-pointer.
    retry(|| unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok(st)
}

/// `fstat(fd)`.
pub fn fstat(fd: BorrowedFd<'_>) -> io::Result<libc::stat> {
    // SAFETY: an all-zero `struct stat` is a valid value of a plain C struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is live and `st` is a valid out-pointer.
    retry(|| unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    Ok(st)
}

/// The call failed with `ENOENT`.
pub fn is_enoent(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ENOENT)
}

/// The call failed with `EEXIST`.
pub fn is_eexist(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EEXIST)
}

/// `st` describes a directory.
pub fn is_dir(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

/// `fchownat(dirfd, name, uid, gid, AT_SYMLINK_NOFOLLOW)`.
pub fn lchownat(dir: BorrowedFd<'_>, name: &CStr, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated and `dir` is a live descriptor.
    retry(|| unsafe {
        libc::fchownat(
            dir.as_raw_fd(),
            name.as_ptr(),
            uid,
            gid,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .map(drop)
}

/// `fchown(fd, uid, gid)`.
pub fn fchown(fd: BorrowedFd<'_>, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: `fd` is a live descriptor.
    retry(|| unsafe { libc::fchown(fd.as_raw_fd(), uid, gid) }).map(drop)
}

/// `fchmod(fd, mode)`.
pub fn fchmod(fd: BorrowedFd<'_>, mode: u32) -> io::Result<()> {
    // SAFETY: `fd` is a live descriptor.
    retry(|| unsafe { libc::fchmod(fd.as_raw_fd(), mode as libc::mode_t) }).map(drop)
}

/// `fchmodat2(dirfd, name, mode, AT_SYMLINK_NOFOLLOW)` (Linux 6.6+), falling
/// back to `fchmodat` without the flag on older kernels. Only used on nodes
/// we have just created and checked are not symlinks.
pub fn lchmodat(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> io::Result<()> {
    const SYS_FCHMODAT2: libc::c_long = 452;
    let r = retry(|| {
        // SAFETY: `name` is NUL-terminated and `dir` is a live descriptor;
        // fchmodat2 takes (int, const char *, mode_t, unsigned int).
        unsafe {
            libc::syscall(
                SYS_FCHMODAT2,
                dir.as_raw_fd(),
                name.as_ptr(),
                mode as libc::mode_t,
                libc::AT_SYMLINK_NOFOLLOW as libc::c_uint,
            ) as libc::c_int
        }
    });
    match r {
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
            // SAFETY: as above.
            retry(|| unsafe {
                libc::fchmodat(dir.as_raw_fd(), name.as_ptr(), mode as libc::mode_t, 0)
            })
            .map(drop)
        }
        r => r.map(drop),
    }
}

/// A timestamp for [`futimens`] / [`lutimensat`]; `None` leaves it unchanged.
pub type Time = Option<(i64, u32)>;

fn timespecs(atime: Time, mtime: Time) -> [libc::timespec; 2] {
    let ts = |t: Time| match t {
        Some((s, ns)) => libc::timespec {
            tv_sec: s as libc::time_t,
            tv_nsec: ns as libc::c_long,
        },
        None => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
    };
    [ts(atime), ts(mtime)]
}

/// `futimens(fd, [atime, mtime])`.
pub fn futimens(fd: BorrowedFd<'_>, atime: Time, mtime: Time) -> io::Result<()> {
    let t = timespecs(atime, mtime);
    // SAFETY: `fd` is live and `t` points at two timespecs.
    retry(|| unsafe { libc::futimens(fd.as_raw_fd(), t.as_ptr()) }).map(drop)
}

/// `utimensat(dirfd, name, [atime, mtime], AT_SYMLINK_NOFOLLOW)`.
pub fn lutimensat(dir: BorrowedFd<'_>, name: &CStr, atime: Time, mtime: Time) -> io::Result<()> {
    let t = timespecs(atime, mtime);
    // SAFETY: `name` is NUL-terminated, `dir` is live and `t` points at two
    // timespecs.
    retry(|| unsafe {
        libc::utimensat(
            dir.as_raw_fd(),
            name.as_ptr(),
            t.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .map(drop)
}

/// `fsetxattr(fd, name, value, 0)`.
pub fn fsetxattr(fd: BorrowedFd<'_>, name: &CStr, value: &[u8]) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated and `value` is a live slice whose
    // length we pass.
    retry(|| unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })
    .map(drop)
}

/// `lsetxattr(path, name, value, 0)`: does not follow a final symlink.
pub fn lsetxattr(path: &CStr, name: &CStr, value: &[u8]) -> io::Result<()> {
    // SAFETY: both strings are NUL-terminated and `value` is a live slice.
    retry(|| unsafe {
        libc::lsetxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })
    .map(drop)
}

/// CRC32 (the xz variant) of `buf`.
pub fn crc32(buf: &[u8]) -> u32 {
    crc32_update(buf, 0)
}

/// Continues a CRC32 over `buf`.
pub fn crc32_update(buf: &[u8], crc: u32) -> u32 {
    // SAFETY: liblzma reads exactly `buf.len()` bytes from a live slice.
    unsafe { liblzma_sys::lzma_crc32(buf.as_ptr(), buf.len(), crc) }
}

/// Continues a CRC64 (ECMA-182, as in xz) over `buf`.
pub fn crc64_update(buf: &[u8], crc: u64) -> u64 {
    // SAFETY: liblzma reads exactly `buf.len()` bytes from a live slice.
    unsafe { liblzma_sys::lzma_crc64(buf.as_ptr(), buf.len(), crc) }
}

/// Real uid of the calling process.
pub fn getuid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

/// Real gid of the calling process.
pub fn getgid() -> u32 {
    // SAFETY: getgid has no preconditions and cannot fail.
    unsafe { libc::getgid() }
}

/// `setresgid(0,0,0)`, `setgroups(0, NULL)` (best effort) and
/// `setresuid(0,0,0)`.
pub fn become_root() -> io::Result<()> {
    // SAFETY: plain syscalls with integer arguments.
    cvt(unsafe { libc::setresgid(0, 0, 0) })?;
    // SAFETY: a zero-length list with a null pointer is allowed.
    let _ = unsafe { libc::setgroups(0, std::ptr::null()) };
    // SAFETY: plain syscall with integer arguments.
    cvt(unsafe { libc::setresuid(0, 0, 0) })?;
    Ok(())
}

/// Creates a pipe with `O_CLOEXEC`; returns `(read, write)`.
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` is a valid two-int out array.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    Ok((owned(fds[0]), owned(fds[1])))
}

/// `PR_SET_PDEATHSIG(SIGKILL)`, then a check that `parent` is still our
/// parent (it may have died before the prctl). Async-signal-safe.
fn die_with(parent: libc::pid_t) -> io::Result<()> {
    // SAFETY: prctl with integer arguments; getppid has no preconditions.
    cvt(unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        )
    })?;
    // SAFETY: as above.
    if unsafe { libc::getppid() } != parent {
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    }
    Ok(())
}

/// Makes `cmd`'s child die (SIGKILL) when this process does: a helper
/// (`cp`, the user-namespace child) must not go on writing into a tree
/// after a killed davit, whose next run removes what it left.
pub fn die_with_parent(cmd: &mut Command) {
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the hook calls only prctl and getppid, async-signal-safe,
    // and allocates nothing.
    unsafe {
        cmd.pre_exec(move || die_with(parent));
    }
}

/// Installs the user-namespace handshake into `cmd`'s `pre_exec`:
///
/// 1. close the parent's ends (`close_in_child`) so EOF can be seen;
/// 2. `unshare(CLONE_NEWUSER)`;
/// 3. write our pid (4 bytes, native endian) to `pid_w`;
/// 4. block reading one byte from `go_r` (EOF means the parent gave up);
/// 5. become root in the new namespace, so the capabilities survive `execve`.
/// 6. die (SIGKILL) with the parent, so a killed davit leaves no helper
///    writing behind it.
///
/// Only async-signal-safe syscalls run between fork and exec.
pub fn userns_pre_exec(cmd: &mut Command, pid_w: RawFd, go_r: RawFd, close_in_child: [RawFd; 2]) {
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    let hook = move || -> io::Result<()> {
        for fd in close_in_child {
            // SAFETY: these are the parent's pipe ends, duplicated into this
            // freshly forked child; closing them here affects only the child.
            unsafe { libc::close(fd) };
        }
        // SAFETY: unshare takes an integer flag set.
        cvt(unsafe { libc::unshare(libc::CLONE_NEWUSER) })?;
        // SAFETY: getpid has no preconditions.
        let pid = unsafe { libc::getpid() }.to_ne_bytes();
        // SAFETY: `pid` is a live 4-byte buffer; `pid_w` is an open pipe end.
        let n = unsafe { libc::write(pid_w, pid.as_ptr().cast(), pid.len()) };
        if n != pid.len() as isize {
            return Err(io::Error::last_os_error());
        }
        let mut b = [0u8; 1];
        loop {
            // SAFETY: `b` is a live 1-byte buffer; `go_r` is an open pipe end.
            let n = unsafe { libc::read(go_r, b.as_mut_ptr().cast(), 1) };
            if n == 1 {
                break;
            }
            if n == -1 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            // EPIPE: the parent did not map the namespace (no allocation
            // here, we are between fork and exec).
            return Err(io::Error::from_raw_os_error(libc::EPIPE));
        }
        become_root()?;
        // After the id switch, which clears it.
        die_with(parent)
    };
    // SAFETY: the hook only calls async-signal-safe syscalls (close, unshare,
    // getpid, write, read, setresgid, setgroups, setresuid, prctl, getppid)
    // and allocates nothing.
    unsafe {
        cmd.pre_exec(hook);
    }
}

/// `flock(fd, LOCK_EX)`: waits for an exclusive lock, held until `fd` closes.
pub fn flock_exclusive(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: `fd` is a live descriptor; flock takes integers only.
    retry(|| unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX) }).map(drop)
}

/// Allocations of this size or more get pages of their own.
const MAP_LARGE: libc::c_int = 512 << 10;

/// Makes malloc give every allocation of 512 KiB or more a mapping of its
/// own, returned to the kernel when it is freed (glibc's
/// `M_MMAP_THRESHOLD`, fixed). The binary calls it first thing; it changes
/// how the whole process allocates, so no library function calls it.
///
/// By default glibc raises that threshold to the size of the largest
/// mapped block freed so far. An unpack frees an 8 MiB xz dictionary after
/// every block, so from the second block on the dictionaries come from the
/// decoder threads' arenas, whose holes stay resident: a cold `create`
/// peaked at 68-70 MiB where 61 MiB are in use (docs/PERFORMANCE.md).
pub fn map_large_allocations() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt takes two integers and no pointers, and glibc
    // serialises it against every arena.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MAP_LARGE);
    }
}
