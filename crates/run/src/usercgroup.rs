//! The setuid-root helper `davit-cgroup` that gives a plain user cgroups
//! on a host without a delegating systemd (cgroup v1 or hybrid, or v2
//! without systemd), as `pam_cgfs` does for LXC; and the caller's side.
//!
//! `/etc/davit/cgroups` holds lines `USER` or `@GROUP` (`#` comments),
//! next to the veth quota in `/etc/davit/usernet`. For a granted user,
//! `davit-cgroup enter -- PROGRAM ARGS…` makes in every mounted hierarchy
//! (controllers, `name=systemd` and the unified one):
//!
//! * `/user`, root's (made once; in v2 the controllers davit uses are
//!   enabled in its `cgroup.subtree_control`);
//! * `/user/USER`, the user's: the directory, its task files and on v2 the
//!   kernel's delegate files are chowned to the user, its limit files stay
//!   root's, so an admin may cap the user there and the user cannot lift
//!   it;
//! * `/user/USER/0`, the user's too, where the helper moves itself;
//!
//! copies `cpuset.cpus` and `cpuset.mems` down where they are empty, then
//! drops every uid to the caller's real uid and execs PROGRAM (davit's
//! monitor) with the caller's environment. davit puts each container at
//! `/user/USER/davit/NAME` below that ([`crate::cgroup::delegation`] finds
//! `/user/USER` as the base).
//!
//! Built for hostile callers (security.md (b)):
//! * it takes no path, name or number from the caller, only the program
//!   it execs after the drop; the user name comes from the password
//!   database for the real uid and must be a plain file name;
//! * every directory is opened relative to the hierarchy's mount point
//!   with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_XDEV)`
//!   and must be on a cgroup filesystem (`fstatfs`); a hierarchy whose
//!   mount does not show its root (a cgroup namespace, a bind) is refused;
//! * every `chown` is an `fchown` of a descriptor it opened itself, only
//!   inside `/user/USER`, only to the caller;
//! * during its work its real uid is 0 (the caller's `kill` is refused)
//!   and its environment is empty; the caller's environment and umask come
//!   back only after every uid is the caller's again, just before exec;
//!   rlimits are never raised, since they would survive the exec;
//! * a user without the grant gets one message and exit code 3.
#![forbid(unsafe_code)]

use std::ffi::{CString, OsString};
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::sys::stat::Mode;
use nix::unistd::{Gid, Group, Uid, User};

use crate::cgroup::{Hierarchy, Layout, Version, V2_CONTROLLERS};
use crate::error::{Error, Result};
use crate::sys;

/// The grant file.
pub const GRANT_FILE: &str = "/etc/davit/cgroups";
/// Where `scripts/setup` installs the helper (setuid root).
pub const DEFAULT_HELPER: &str = "/usr/local/libexec/davit-cgroup";
/// The directory below each hierarchy's root that holds the users' trees.
pub const USERS_DIR: &str = "user";
/// The leaf in a user's tree that the helper moves itself (and so the
/// monitor) into.
pub const ENTRY_LEAF: &str = "0";

/// Exit code of the helper for a bad command line.
pub const EXIT_USAGE: i32 = 2;
/// Exit code for a user without the grant.
pub const EXIT_NOT_GRANTED: i32 = 3;
/// Exit code for anything else before the exec.
pub const EXIT_FAILED: i32 = 1;

/// One line of `/etc/davit/cgroups`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// A user name, or a group name when `group`.
    pub who: String,
    /// Whether the line is `@group`.
    pub group: bool,
}

/// Parse the grant file: one `USER` or `@GROUP` a line, `#` comments;
/// anything else on a line makes the line void.
pub fn parse_grants(text: &str) -> Vec<Grant> {
    text.lines()
        .filter_map(|l| {
            let l = l.split('#').next()?.trim();
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() != 1 {
                return None;
            }
            let (who, group) = match f[0].strip_prefix('@') {
                Some(g) => (g, true),
                None => (f[0], false),
            };
            (!who.is_empty()).then(|| Grant {
                who: who.to_owned(),
                group,
            })
        })
        .collect()
}

/// Whether an admin's `USER` or `@GROUP` entry (`who`, `group`) names
/// `user`, a member of `groups` (here and in `/etc/davit/usernet`).
pub fn names(who: &str, group: bool, user: &str, groups: &[String]) -> bool {
    if group {
        groups.iter().any(|g| g == who)
    } else {
        who == user
    }
}

/// Whether `user` (a member of `groups`) is granted by `lines`.
pub fn granted(lines: &[Grant], user: &str, groups: &[String]) -> bool {
    lines.iter().any(|l| names(&l.who, l.group, user, groups))
}

/// The name of `uid` and of its groups (the primary one, and for the
/// calling user this process's own).
pub fn user_and_groups(uid: u32) -> Option<(String, Gid, Vec<String>)> {
    let u = User::from_uid(Uid::from_raw(uid)).ok()??;
    let mut gids: Vec<Gid> = vec![u.gid];
    if uid == nix::unistd::getuid().as_raw() {
        gids.push(nix::unistd::getgid());
        gids.extend(nix::unistd::getgroups().unwrap_or_default());
    }
    let mut groups: Vec<String> = gids
        .iter()
        .filter_map(|g| Group::from_gid(*g).ok().flatten().map(|g| g.name))
        .collect();
    groups.sort();
    groups.dedup();
    Some((u.name, u.gid, groups))
}

/// Whether `uid` (with this process's groups) is granted by `file`.
pub fn caller_granted(file: &Path, uid: u32) -> bool {
    let Ok(text) = std::fs::read_to_string(file) else {
        return false;
    };
    user_and_groups(uid)
        .is_some_and(|(user, _, groups)| granted(&parse_grants(&text), &user, &groups))
}

/// What an admin runs to grant `user` cgroups (for messages).
pub fn admin_line(user: &str) -> String {
    format!("echo {user} >> {GRANT_FILE}")
}

/// A user name that can name a cgroup directory: a plain file name of
/// the characters `useradd` allows.
pub fn valid_user_dir(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'$'))
}

/// How a plain user's container gets its cgroup on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// The caller's own cgroup is already delegated (systemd's
    /// `Delegate=yes`, or `davit-cgroup` ran before): use it.
    Delegated,
    /// Granted: run the monitor through this helper.
    Helper(PathBuf),
    /// None: the reason, with what to do.
    Without(String),
}

/// Decide the [`Route`] for `uid` whose `/proc/self/cgroup` is
/// `proc_self_cgroup`, with `needed` controllers, the grant file `grants`
/// and the helper at `helper`.
pub fn route(
    layout: &Layout,
    proc_self_cgroup: &str,
    uid: u32,
    needed: &[&str],
    grants: &Path,
    helper: &Path,
) -> Route {
    match crate::cgroup::delegation(layout, proc_self_cgroup, uid, needed) {
        Ok(_) => Route::Delegated,
        Err(why) => grant_route(why.to_string(), uid, grants, helper),
    }
}

/// After `why` (no delegation): the helper if `uid` is granted and it is
/// installed, else `why` with what the admin does about it.
pub fn grant_route(why: String, uid: u32, grants: &Path, helper: &Path) -> Route {
    let user = user_and_groups(uid).map_or_else(|| uid.to_string(), |(u, _, _)| u);
    if !caller_granted(grants, uid) {
        return Route::Without(format!(
            "{why}; an admin grants {user} cgroups once with `{}` (davit-cgroup must be installed setuid root at {}; docs/CGROUPS.md)",
            admin_line(&user),
            helper.display()
        ));
    }
    let setuid = std::fs::metadata(helper).is_ok_and(|m| {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        m.uid() == 0 && m.permissions().mode() & 0o4000 != 0
    });
    if setuid {
        Route::Helper(helper.to_path_buf())
    } else {
        Route::Without(format!(
            "{why}; {user} is granted cgroups in {}, but {} is not installed setuid root (scripts/setup installs it)",
            grants.display(),
            helper.display()
        ))
    }
}

/// The helper the CLI runs: `DAVIT_CGROUP_HELPER` (tests point it at a
/// setuid copy), else [`DEFAULT_HELPER`]. Only which program to run comes
/// from there; the helper trusts nothing of the caller's.
pub fn helper_path() -> PathBuf {
    std::env::var_os("DAVIT_CGROUP_HELPER")
        .map(PathBuf::from)
        .unwrap_or_else(|| DEFAULT_HELPER.into())
}

/// What the helper was asked: `enter -- PROGRAM [ARG…]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnterRequest {
    /// What to exec once back to the caller's ids.
    pub program: OsString,
    /// Its arguments (after argv\[0\]).
    pub args: Vec<OsString>,
}

/// Parse the helper's arguments (after the program name).
///
/// # Errors
/// [`Error::ConfigInvalid`] with the usage.
pub fn parse_helper_args(args: &[OsString]) -> Result<EnterRequest> {
    let usage = || Error::ConfigInvalid {
        reason: "usage: davit-cgroup enter -- PROGRAM [ARG...]".into(),
    };
    match args {
        [op, sep, program, rest @ ..] if op == "enter" && sep == "--" && !program.is_empty() => {
            Ok(EnterRequest {
                program: program.clone(),
                args: rest.to_vec(),
            })
        }
        _ => Err(usage()),
    }
}

/// Fixed inputs of the helper; the binary uses [`HelperPaths::system`].
#[derive(Debug, Clone)]
pub struct HelperPaths {
    /// The grant file.
    pub grants: PathBuf,
}

impl HelperPaths {
    /// `/etc/davit/cgroups`.
    pub fn system() -> HelperPaths {
        HelperPaths {
            grants: GRANT_FILE.into(),
        }
    }
}

fn cg_err(op: &str, path: &Path, e: nix::errno::Errno) -> Error {
    Error::Cgroup {
        op: op.to_owned(),
        path: path.to_path_buf(),
        source: std::io::Error::from(e),
    }
}

/// Open `name` below the directory `dir` (shown as `shown`), never
/// leaving it or its mount, and check that it is a cgroup directory.
fn open_below(dir: &OwnedFd, name: &str, shown: &Path, version: Version) -> Result<OwnedFd> {
    let fd = sys::openat2(
        dir.as_fd(),
        Path::new(name),
        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
        0,
        sys::RESOLVE_BENEATH | sys::RESOLVE_NO_SYMLINKS | sys::RESOLVE_NO_XDEV,
    )
    .map_err(|e| cg_err("openat2", &shown.join(name), e))?;
    check_cgroupfs(&fd, &shown.join(name), version)?;
    Ok(fd)
}

fn check_cgroupfs(fd: &OwnedFd, shown: &Path, version: Version) -> Result<()> {
    let st = nix::sys::statfs::fstatfs(fd).map_err(|e| cg_err("fstatfs", shown, e))?;
    let want = match version {
        Version::V1 => nix::sys::statfs::CGROUP_SUPER_MAGIC,
        Version::V2 => nix::sys::statfs::CGROUP2_SUPER_MAGIC,
    };
    if st.filesystem_type() != want {
        return Err(Error::CgroupState {
            reason: format!("{} is not on a cgroup filesystem", shown.display()),
        });
    }
    Ok(())
}

/// `mkdirat` (root's, 0755; there already is fine), then open it.
fn make_below(dir: &OwnedFd, name: &str, shown: &Path, version: Version) -> Result<OwnedFd> {
    match nix::sys::stat::mkdirat(Some(dir.as_raw_fd()), name, Mode::from_bits_truncate(0o755)) {
        Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
        Err(e) => return Err(cg_err("mkdirat", &shown.join(name), e)),
    }
    open_below(dir, name, shown, version)
}

fn read_at(dir: &OwnedFd, name: &str, shown: &Path, version: Version) -> Result<String> {
    let fd = sys::openat2(
        dir.as_fd(),
        Path::new(name),
        libc::O_RDONLY | libc::O_NOFOLLOW,
        0,
        sys::RESOLVE_BENEATH | sys::RESOLVE_NO_SYMLINKS | sys::RESOLVE_NO_XDEV,
    )
    .map_err(|e| cg_err("openat2", &shown.join(name), e))?;
    check_cgroupfs(&fd, &shown.join(name), version)?;
    std::io::read_to_string(File::from(fd)).map_err(|source| Error::Cgroup {
        op: "read".into(),
        path: shown.join(name),
        source,
    })
}

fn write_at(dir: &OwnedFd, name: &str, shown: &Path, version: Version, value: &str) -> Result<()> {
    let fd = sys::openat2(
        dir.as_fd(),
        Path::new(name),
        libc::O_WRONLY | libc::O_NOFOLLOW,
        0,
        sys::RESOLVE_BENEATH | sys::RESOLVE_NO_SYMLINKS | sys::RESOLVE_NO_XDEV,
    )
    .map_err(|e| cg_err("openat2", &shown.join(name), e))?;
    check_cgroupfs(&fd, &shown.join(name), version)?;
    File::from(fd)
        .write_all(value.as_bytes())
        .map_err(|source| Error::Cgroup {
            op: format!("write {value:?}"),
            path: shown.join(name),
            source,
        })
}

/// `fchown` the directory and the files that move tasks (and, on v2,
/// the kernel's delegate files) to the caller.
fn give(dir: &OwnedFd, shown: &Path, version: Version, uid: Uid, gid: Gid) -> Result<()> {
    nix::unistd::fchown(dir.as_raw_fd(), Some(uid), Some(gid))
        .map_err(|e| cg_err("fchown", shown, e))?;
    for f in crate::cgroup::delegated_files(version) {
        let fd = match sys::openat2(
            dir.as_fd(),
            Path::new(&f),
            libc::O_RDONLY | libc::O_NOFOLLOW,
            0,
            sys::RESOLVE_BENEATH | sys::RESOLVE_NO_SYMLINKS | sys::RESOLVE_NO_XDEV,
        ) {
            Ok(fd) => fd,
            Err(nix::errno::Errno::ENOENT) => continue,
            Err(e) => return Err(cg_err("openat2", &shown.join(&f), e)),
        };
        check_cgroupfs(&fd, &shown.join(&f), version)?;
        nix::unistd::fchown(fd.as_raw_fd(), Some(uid), Some(gid))
            .map_err(|e| cg_err("fchown", &shown.join(&f), e))?;
    }
    Ok(())
}

/// cpuset's v1 children start empty, and no task may join an empty one.
fn copy_cpuset(
    h: &Hierarchy,
    parent: &OwnedFd,
    pshown: &Path,
    dir: &OwnedFd,
    shown: &Path,
) -> Result<()> {
    if h.version != Version::V1 || !h.has("cpuset") {
        return Ok(());
    }
    for f in ["cpuset.cpus", "cpuset.mems"] {
        if read_at(dir, f, shown, h.version)?.trim().is_empty() {
            let v = read_at(parent, f, pshown, h.version)?;
            if !v.trim().is_empty() {
                write_at(dir, f, shown, h.version, v.trim())?;
            }
        }
    }
    Ok(())
}

/// Make `/user/USER/0` in `h` (module docs) and move this process there.
fn enter_hierarchy(h: &Hierarchy, user: &str, uid: Uid, gid: Gid) -> Result<()> {
    if h.root != Path::new("/") {
        return Err(Error::CgroupState {
            reason: format!(
                "{} shows {} of its hierarchy, not the root (a cgroup namespace or a bind mount)",
                h.mountpoint.display(),
                h.root.display()
            ),
        });
    }
    let top = sys::openat2(
        File::open("/")
            .map_err(|source| Error::Read {
                path: "/".into(),
                source,
            })?
            .as_fd(),
        h.mountpoint.strip_prefix("/").unwrap_or(&h.mountpoint),
        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
        0,
        sys::RESOLVE_NO_SYMLINKS,
    )
    .map_err(|e| cg_err("openat2", &h.mountpoint, e))?;
    check_cgroupfs(&top, &h.mountpoint, h.version)?;
    let users_shown = h.mountpoint.join(USERS_DIR);
    let users = make_below(&top, USERS_DIR, &h.mountpoint, h.version)?;
    copy_cpuset(h, &top, &h.mountpoint, &users, &users_shown)?;
    if h.version == Version::V2 {
        let avail = read_at(&users, "cgroup.controllers", &users_shown, h.version)?;
        let on = read_at(&users, "cgroup.subtree_control", &users_shown, h.version)?;
        let want: Vec<String> = V2_CONTROLLERS
            .iter()
            .filter(|c| avail.split_whitespace().any(|a| a == **c))
            .filter(|c| !on.split_whitespace().any(|a| a == **c))
            .map(|c| format!("+{c}"))
            .collect();
        if !want.is_empty() {
            write_at(
                &users,
                "cgroup.subtree_control",
                &users_shown,
                h.version,
                &want.join(" "),
            )?;
        }
    }
    let mine_shown = users_shown.join(user);
    let mine = make_below(&users, user, &users_shown, h.version)?;
    copy_cpuset(h, &users, &users_shown, &mine, &mine_shown)?;
    give(&mine, &mine_shown, h.version, uid, gid)?;
    let leaf_shown = mine_shown.join(ENTRY_LEAF);
    let leaf = make_below(&mine, ENTRY_LEAF, &mine_shown, h.version)?;
    copy_cpuset(h, &mine, &mine_shown, &leaf, &leaf_shown)?;
    give(&leaf, &leaf_shown, h.version, uid, gid)?;
    write_at(
        &leaf,
        "cgroup.procs",
        &leaf_shown,
        h.version,
        &std::process::id().to_string(),
    )
}

/// The helper's privileged work for the caller `ruid`: check the grant,
/// then make and enter the user's tree in every hierarchy.
///
/// # Errors
/// [`Error::NotGranted`], or the cgroup step that failed.
pub fn run_enter(paths: &HelperPaths, ruid: u32) -> Result<()> {
    let (user, gid, groups) = user_and_groups(ruid).ok_or_else(|| Error::NotGranted {
        user: ruid.to_string(),
    })?;
    let text = std::fs::read_to_string(&paths.grants).unwrap_or_default();
    if !granted(&parse_grants(&text), &user, &groups) {
        return Err(Error::NotGranted { user });
    }
    if !valid_user_dir(&user) {
        return Err(Error::CgroupState {
            reason: format!("the user name {user:?} cannot name a cgroup directory"),
        });
    }
    let layout = Layout::detect()?;
    if layout.hierarchies.is_empty() {
        return Err(Error::CgroupState {
            reason: "no cgroup filesystem is mounted".into(),
        });
    }
    for h in &layout.hierarchies {
        enter_hierarchy(h, &user, Uid::from_raw(ruid), gid)?;
    }
    Ok(())
}

/// The caller's environment and umask, put away while the helper works as
/// root and given back only after the drop.
struct Caller {
    env: Vec<(OsString, OsString)>,
    umask: Mode,
}

fn put_away() -> Caller {
    let env: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    for (k, _) in &env {
        std::env::remove_var(k);
    }
    std::env::set_var("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    let umask = nix::sys::stat::umask(Mode::from_bits_truncate(0o022));
    Caller { env, umask }
}

/// Every uid and gid back to the caller's real ones, checked.
fn drop_to(ruid: Uid, rgid: Gid) -> Result<()> {
    nix::unistd::setresgid(rgid, rgid, rgid).map_err(|e| Error::sys("setresgid", e))?;
    nix::unistd::setresuid(ruid, ruid, ruid).map_err(|e| Error::sys("setresuid", e))?;
    let u = nix::unistd::getresuid().map_err(|e| Error::sys("getresuid", e))?;
    let g = nix::unistd::getresgid().map_err(|e| Error::sys("getresgid", e))?;
    if [u.real, u.effective, u.saved] != [ruid; 3] || [g.real, g.effective, g.saved] != [rgid; 3] {
        return Err(Error::CgroupState {
            reason: "could not drop every id to the caller's".into(),
        });
    }
    Ok(())
}

/// Whether this process's uid map is the initial namespace's identity map.
fn in_initial_userns() -> bool {
    std::fs::read_to_string("/proc/self/uid_map")
        .is_ok_and(|m| m.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"])
}

fn cstring(s: &std::ffi::OsStr) -> Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| Error::ConfigInvalid {
        reason: "an argument holds a NUL byte".into(),
    })
}

/// The whole helper process. Returns only on failure, with the exit code
/// and what to print; on success it has become PROGRAM.
pub fn helper_main(args: &[OsString]) -> (i32, String) {
    let req = match parse_helper_args(args) {
        Ok(r) => r,
        Err(e) => return (EXIT_USAGE, format!("davit-cgroup: {e}\n")),
    };
    if !nix::unistd::geteuid().is_root() {
        return (
            EXIT_FAILED,
            "davit-cgroup: not installed setuid root\n".into(),
        );
    }
    // In a user namespace of the caller's own, uid 0 is the caller: the
    // setuid bit was ignored and that "root" has no power over the host's
    // cgroups. Said plainly rather than failing on the first mkdir.
    if !in_initial_userns() {
        return (
            EXIT_FAILED,
            "davit-cgroup: not in the initial user namespace (run it from the host, not inside unshare -U or a container)\n".into(),
        );
    }
    let (ruid, rgid) = (nix::unistd::getuid(), nix::unistd::getgid());
    let caller = put_away();
    // The caller may not signal us half-way (a kill needs a uid match on
    // the real or saved uid): real uid 0 while we work.
    let root = Uid::from_raw(0);
    if let Err(e) = nix::unistd::setresuid(root, root, root) {
        return (
            EXIT_FAILED,
            format!("davit-cgroup: setresuid(0, 0, 0): {e}\n"),
        );
    }
    if let Err(e) = run_enter(&HelperPaths::system(), ruid.as_raw()) {
        crate::ready::report_failure_before_monitor(&e);
        let code = match e {
            Error::NotGranted { .. } => EXIT_NOT_GRANTED,
            _ => EXIT_FAILED,
        };
        let mut msg = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            msg += &format!(": {s}");
            src = s.source();
        }
        return (code, format!("davit-cgroup: {msg}\n"));
    }
    if let Err(e) = drop_to(ruid, rgid) {
        return (EXIT_FAILED, format!("davit-cgroup: {e}\n"));
    }
    nix::sys::stat::umask(caller.umask);
    std::env::remove_var("PATH");
    for (k, v) in &caller.env {
        std::env::set_var(k, v);
    }
    let prog = match cstring(&req.program) {
        Ok(p) => p,
        Err(e) => return (EXIT_USAGE, format!("davit-cgroup: {e}\n")),
    };
    let mut argv = vec![prog.clone()];
    for a in &req.args {
        match cstring(a) {
            Ok(c) => argv.push(c),
            Err(e) => return (EXIT_USAGE, format!("davit-cgroup: {e}\n")),
        }
    }
    let e = nix::unistd::execvp(&prog, &argv).unwrap_err();
    (
        EXIT_FAILED,
        format!(
            "davit-cgroup: cannot run {}: {e}\n",
            Path::new(&req.program).display()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grant_lines() {
        let t = "# who may have cgroups\nalice\n@staff  # a group\nbob carol\n@\n\n";
        let l = parse_grants(t);
        assert_eq!(l.len(), 2, "{l:?}");
        assert!(granted(&l, "alice", &[]));
        assert!(granted(&l, "dave", &["staff".into()]));
        assert!(!granted(&l, "bob", &[]));
        assert!(!granted(&l, "carol", &[]));
        assert!(!granted(&l, "staff", &[]));
    }

    #[test]
    fn helper_args_need_enter_and_a_program() {
        let a = |v: &[&str]| parse_helper_args(&v.iter().map(OsString::from).collect::<Vec<_>>());
        assert_eq!(
            a(&["enter", "--", "/usr/bin/davit-monitor", "--x", "y"]).unwrap(),
            EnterRequest {
                program: "/usr/bin/davit-monitor".into(),
                args: vec!["--x".into(), "y".into()]
            }
        );
        for bad in [
            &["enter"][..],
            &["enter", "--"],
            &["enter", "/bin/sh"],
            &["enter", "--", ""],
            &["give", "--", "/bin/sh"],
            &[],
        ] {
            assert!(a(bad).unwrap_err().to_string().contains("usage"), "{bad:?}");
        }
    }

    #[test]
    fn user_dirs_are_plain_names() {
        for ok in ["newbie", "a.b", "svc_1", "x-y", "machine$"] {
            assert!(valid_user_dir(ok), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            ".hidden",
            "-x",
            "a/b",
            "a b",
            "a\nb",
            &"x".repeat(65),
        ] {
            assert!(!valid_user_dir(bad), "{bad:?}");
        }
    }
}
