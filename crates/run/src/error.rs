//! The crate's single error type and the kinds callers branch on.
#![forbid(unsafe_code)]

use std::fmt;
use std::io;
use std::path::PathBuf;

use nix::errno::Errno;

/// What went wrong, coarsely, for callers that branch (exit codes, retries).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The container configuration is unreadable or invalid.
    Config,
    /// A file could not be read or written.
    Io,
    /// A system call failed.
    Syscall,
    /// A cgroup operation failed or no usable hierarchy exists.
    Cgroup,
    /// The state file is unreadable or inconsistent.
    State,
    /// The container is not running.
    NotRunning,
    /// The container is already running (or starting).
    AlreadyRunning,
    /// The id map is invalid or could not be applied.
    IdMap,
    /// The image tried something unsafe (a symlinked `/proc`, a path escape).
    Unsafe,
    /// The kernel or host lacks a needed feature.
    Unsupported,
    /// The parent and child disagreed on the sync protocol.
    Protocol,
    /// A wait ran out of time.
    Timeout,
    /// Container networking failed: netlink, addresses, quota, helpers.
    Network,
}

impl ErrorKind {
    const ALL: [ErrorKind; 13] = [
        ErrorKind::Config,
        ErrorKind::Io,
        ErrorKind::Syscall,
        ErrorKind::Cgroup,
        ErrorKind::State,
        ErrorKind::NotRunning,
        ErrorKind::AlreadyRunning,
        ErrorKind::IdMap,
        ErrorKind::Unsafe,
        ErrorKind::Unsupported,
        ErrorKind::Protocol,
        ErrorKind::Timeout,
        ErrorKind::Network,
    ];

    /// A stable byte for this kind, used on the parent/child sync socket.
    pub fn to_u8(self) -> u8 {
        Self::ALL.iter().position(|k| *k == self).unwrap_or(0) as u8
    }

    /// The inverse of [`ErrorKind::to_u8`]; unknown bytes map to `Protocol`.
    pub fn from_u8(b: u8) -> ErrorKind {
        Self::ALL
            .get(usize::from(b))
            .copied()
            .unwrap_or(ErrorKind::Protocol)
    }

    /// The inverse of [`ErrorKind::as_str`]; unknown names map to `Protocol`.
    pub fn parse(s: &str) -> ErrorKind {
        Self::ALL
            .iter()
            .copied()
            .find(|k| k.as_str() == s)
            .unwrap_or(ErrorKind::Protocol)
    }

    /// A short lowercase name (`"not-running"`), stable for JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Config => "config",
            ErrorKind::Io => "io",
            ErrorKind::Syscall => "syscall",
            ErrorKind::Cgroup => "cgroup",
            ErrorKind::State => "state",
            ErrorKind::NotRunning => "not-running",
            ErrorKind::AlreadyRunning => "already-running",
            ErrorKind::IdMap => "idmap",
            ErrorKind::Unsafe => "unsafe",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Protocol => "protocol",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Network => "network",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The step of the container-side setup that failed; crosses the sync socket
/// as one byte so the parent can name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum InitStep {
    /// Waiting for or talking to the parent.
    Sync,
    /// `setresgid`/`setresuid`/`setgroups` to container root.
    SetIds,
    /// `unshare(CLONE_NEWCGROUP)` after the parent moved us into the cgroup.
    CgroupNs,
    /// Making `/` rslave.
    Propagation,
    /// Cloning the rootfs onto itself.
    RootfsBind,
    /// Mounting `/proc`.
    Proc,
    /// Mounting `/sys`.
    Sys,
    /// Building `/dev`.
    Dev,
    /// Masking `/proc` paths.
    Mask,
    /// Mounting `/sys/fs/cgroup`.
    CgroupFs,
    /// The config's extra mount entries.
    UserMounts,
    /// `sethostname`.
    Hostname,
    /// `pivot_root` and detaching the old root.
    PivotRoot,
    /// `chdir("/")` and the `getcwd` check.
    Cwd,
    /// Dropping capabilities.
    Capabilities,
    /// Closing inherited descriptors.
    CloseFds,
    /// `execve` of init.
    Exec,
    /// Opening the overlay layers and mounting the overlay root.
    Overlay,
    /// Joining a session keyring of the container's own.
    Keyring,
    /// The container's terminal: a pty from its own devpts, or a session
    /// of its own without the host's terminal.
    Console,
    /// Loading the seccomp filter.
    Seccomp,
    /// `attach --user`: switching to the requested ids.
    User,
    /// `attach --cwd`: changing to the requested directory.
    Chdir,
}

impl InitStep {
    const ALL: [InitStep; 23] = [
        InitStep::Sync,
        InitStep::SetIds,
        InitStep::CgroupNs,
        InitStep::Propagation,
        InitStep::RootfsBind,
        InitStep::Proc,
        InitStep::Sys,
        InitStep::Dev,
        InitStep::Mask,
        InitStep::CgroupFs,
        InitStep::UserMounts,
        InitStep::Hostname,
        InitStep::PivotRoot,
        InitStep::Cwd,
        InitStep::Capabilities,
        InitStep::CloseFds,
        InitStep::Exec,
        InitStep::Overlay,
        InitStep::Keyring,
        InitStep::Console,
        InitStep::Seccomp,
        InitStep::User,
        InitStep::Chdir,
    ];

    /// A stable byte for the sync socket.
    pub fn to_u8(self) -> u8 {
        Self::ALL.iter().position(|k| *k == self).unwrap_or(0) as u8
    }

    /// Inverse of [`InitStep::to_u8`]; unknown bytes map to `Sync`.
    pub fn from_u8(b: u8) -> InitStep {
        Self::ALL
            .get(usize::from(b))
            .copied()
            .unwrap_or(InitStep::Sync)
    }

    fn as_str(self) -> &'static str {
        match self {
            InitStep::Sync => "sync with the runner",
            InitStep::SetIds => "switch to container root",
            InitStep::CgroupNs => "cgroup namespace",
            InitStep::Propagation => "make / rslave",
            InitStep::RootfsBind => "bind the rootfs",
            InitStep::Proc => "mount /proc",
            InitStep::Sys => "mount /sys",
            InitStep::Dev => "build /dev",
            InitStep::Mask => "mask /proc paths",
            InitStep::CgroupFs => "mount /sys/fs/cgroup",
            InitStep::UserMounts => "config mounts",
            InitStep::Hostname => "set the hostname",
            InitStep::PivotRoot => "pivot_root",
            InitStep::Cwd => "check the working directory",
            InitStep::Capabilities => "drop capabilities",
            InitStep::CloseFds => "close inherited descriptors",
            InitStep::Exec => "exec init",
            InitStep::Keyring => "join a new session keyring",
            InitStep::Console => "set up the container's terminal",
            InitStep::User => "switch to the user given with --user (is it in the container's id map?)",
            InitStep::Chdir => "change to the directory given with --cwd (does it exist in the container?)",
            InitStep::Seccomp => "load the seccomp filter (`[seccomp]` in config.toml; `davit info` shows the rules)",
            InitStep::Overlay => "mount the overlay root from its base, upper and work directories (`davit check` says what this host supports; `davit create --storage dir` needs no overlay)",
        }
    }
}

impl fmt::Display for InitStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Every failure in davit-run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The config file could not be parsed.
    #[error("cannot parse container config {path}")]
    ConfigParse {
        /// The config file.
        path: PathBuf,
        /// The TOML error.
        #[source]
        source: Box<toml::de::Error>,
    },
    /// The config could not be serialised.
    #[error("cannot serialise the container config")]
    ConfigSerialize {
        /// The TOML error.
        #[source]
        source: toml::ser::Error,
    },
    /// The config is well-formed but not usable.
    #[error("invalid container config: {reason}")]
    ConfigInvalid {
        /// What is wrong, in words.
        reason: String,
    },
    /// Reading a file failed.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Writing a file failed.
    #[error("cannot write {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A system call failed; `call` is strace-style, e.g. `mount("proc", "/proc", …)`.
    #[error("{call}")]
    Syscall {
        /// The call and its main arguments.
        call: String,
        /// The errno.
        #[source]
        source: Errno,
    },
    /// Running a helper program failed.
    #[error("cannot run {program}")]
    Spawn {
        /// The program.
        program: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A cgroup file operation failed.
    #[error("cgroup: cannot {op} {path}")]
    Cgroup {
        /// The operation (`mkdir`, `write pids.max`, `rmdir`...).
        op: String,
        /// The cgroup file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A cgroup is not in the state we need (no hierarchy, not empty, bad file).
    #[error("cgroup: {reason}")]
    CgroupState {
        /// What is wrong.
        reason: String,
    },
    /// Creating a cgroup: a limit needs a controller that no mounted
    /// hierarchy has.
    #[error("cgroup: no mounted cgroup hierarchy has the {controller} controller")]
    CgroupNoHierarchy {
        /// The controller (`memory`, `pids`, `cpu`).
        controller: String,
    },
    /// Writing a limit: the container's cgroup has no directory in the
    /// hierarchy of its controller (it was made where the host had none).
    #[error("cgroup: no cgroup directory for the {controller} controller")]
    CgroupNoDir {
        /// The controller.
        controller: String,
    },
    /// A runtime state directory belongs to someone else, is a link, or is
    /// writable by others: its state files cannot be trusted (another
    /// user could forge one naming a pid for `stop` to kill).
    #[error("will not trust the runtime state in {path}: {why}; remove it (or set XDG_RUNTIME_DIR to a directory of your own, mode 0700) and try again")]
    UntrustedStateDir {
        /// The directory.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// The state file is malformed.
    #[error("cannot parse state file {path}")]
    StateParse {
        /// The state file.
        path: PathBuf,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// The container is not running.
    #[error("container {name} is not running")]
    NotRunning {
        /// The container name.
        name: String,
    },
    /// The container is already running or in transition.
    #[error("container {name} is already {status}")]
    AlreadyRunning {
        /// The container name.
        name: String,
        /// Its current status.
        status: String,
    },
    /// The id map is not acceptable.
    #[error("bad id map: {reason}")]
    IdMap {
        /// What is wrong.
        reason: String,
    },
    /// `newuidmap`/`newgidmap` exited unsuccessfully.
    #[error("{program} failed with {status}")]
    MapHelper {
        /// The helper.
        program: String,
        /// Its exit status, as text.
        status: String,
    },
    /// The map read back from `/proc` is not what was written.
    #[error("{path} reads back {got:?}, expected {want:?}")]
    MapReadBack {
        /// The map file.
        path: PathBuf,
        /// What we asked for.
        want: String,
        /// What the kernel holds.
        got: String,
    },
    /// A path in the image is a symlink where a plain directory is required.
    #[error("refusing {path} in the image: it is a symlink")]
    Symlink {
        /// The in-container path.
        path: PathBuf,
    },
    /// A path in the image has the wrong type.
    #[error("refusing {path} in the image: it is not a {want}")]
    WrongType {
        /// The in-container path.
        path: PathBuf,
        /// The type we need.
        want: &'static str,
    },
    /// The container-side setup failed; the kind and errno crossed the sync socket.
    #[error("container init failed to {step} ({kind})")]
    Init {
        /// The failing step.
        step: InitStep,
        /// The kind of the child's error.
        kind: ErrorKind,
        /// The errno, when there was one.
        #[source]
        source: Option<Errno>,
    },
    /// The sync protocol broke.
    #[error("sync protocol: expected {want}, got {got}")]
    Protocol {
        /// The expected message.
        want: &'static str,
        /// What arrived.
        got: String,
    },
    /// The kernel lacks a feature we need.
    #[error("unsupported: {what}")]
    Unsupported {
        /// The missing feature.
        what: String,
    },
    /// The monitor process reported an error (its kind and full message).
    #[error("{message}")]
    Monitor {
        /// The kind the monitor reported.
        kind: ErrorKind,
        /// The monitor's error chain as text.
        message: String,
    },
    // --- net (crates/run/src/net) ---
    /// A netlink request failed; `op` names it (`RTM_NEWLINK veth vethab12cd ...`).
    #[error("netlink: {op}")]
    Netlink {
        /// The request, strace-style.
        op: String,
        /// The errno the kernel answered.
        #[source]
        source: Errno,
    },
    /// Every address of the bridge's subnet is leased.
    #[error("no free address left in {subnet}")]
    AddressExhausted {
        /// The subnet.
        subnet: String,
    },
    /// A static address is already leased to another running container.
    #[error("address {addr} is already used by container {holder}")]
    AddressInUse {
        /// The address.
        addr: std::net::Ipv4Addr,
        /// The container holding it.
        holder: String,
    },
    /// A published host port is already forwarded to another running
    /// container.
    #[error("host port {port} is already published by container {holder}: stop it, or publish another host port")]
    PortInUse {
        /// The port as given (`[HOSTIP:]HOSTPORT/PROTO`).
        port: String,
        /// The container holding it.
        holder: String,
    },
    /// A plain user has used up the veth quota of `/etc/davit/usernet`.
    #[error(
        "network quota reached: {user} may have {count} veth(s) on {bridge} (/etc/davit/usernet)"
    )]
    Quota {
        /// The user.
        user: String,
        /// The bridge.
        bridge: String,
        /// The allowed number.
        count: u32,
    },
    /// A plain user has no veth quota at all on that bridge.
    #[error("no veth quota for {user} on {bridge} in /etc/davit/usernet")]
    NoQuota {
        /// The user.
        user: String,
        /// The bridge.
        bridge: String,
    },
    /// The setuid helper refused the request. Deliberately uniform: it does
    /// not say whether the process exists or why it is not the caller's.
    #[error("network helper: request refused (no such process, or not a container of yours)")]
    Refused,
    /// The setuid helper or a user-mode network tool failed.
    #[error("{program}: {message}")]
    NetHelper {
        /// The program.
        program: String,
        /// What it said.
        message: String,
    },
    /// A plain user has no cgroup grant in `/etc/davit/cgroups`.
    #[error("{user} is not granted cgroups: an admin adds the line `{user}` to /etc/davit/cgroups (see docs/CGROUPS.md)")]
    NotGranted {
        /// The user.
        user: String,
    },
    /// A wait ran out.
    #[error("timed out after {secs}s waiting for {what}")]
    Timeout {
        /// What we waited for.
        what: String,
        /// How long.
        secs: f64,
    },
}

impl From<davit_types::Error> for Error {
    /// The shared id-map errors, as this crate has always named them.
    fn from(e: davit_types::Error) -> Self {
        use davit_types::Error as T;
        match e {
            T::MapRefused { why } => Error::IdMap { reason: why },
            e @ (T::MapSpec { .. } | T::NoSubid { .. }) => Error::IdMap {
                reason: e.to_string(),
            },
            T::ReadSubid { path, source } | T::MapRead { path, source } => {
                Error::Read { path, source }
            }
            T::MapWrite { path, source } => Error::Write { path, source },
            T::MapSpawn {
                program, source, ..
            } => Error::Spawn { program, source },
            T::MapHelper {
                program,
                status,
                stderr,
                ..
            } => Error::MapHelper {
                program,
                status: format!("{status} ({stderr})"),
            },
            T::MapReadBack {
                path, want, got, ..
            } => Error::MapReadBack { path, want, got },
        }
    }
}

impl Error {
    /// The coarse kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::ConfigParse { .. }
            | Error::ConfigSerialize { .. }
            | Error::ConfigInvalid { .. } => ErrorKind::Config,
            Error::Read { .. } | Error::Write { .. } | Error::Spawn { .. } => ErrorKind::Io,
            Error::Syscall { .. } => ErrorKind::Syscall,
            Error::Cgroup { .. }
            | Error::CgroupState { .. }
            | Error::CgroupNoHierarchy { .. }
            | Error::CgroupNoDir { .. }
            | Error::NotGranted { .. } => ErrorKind::Cgroup,
            Error::StateParse { .. } | Error::UntrustedStateDir { .. } => ErrorKind::State,
            Error::NotRunning { .. } => ErrorKind::NotRunning,
            Error::AlreadyRunning { .. } => ErrorKind::AlreadyRunning,
            Error::IdMap { .. } | Error::MapHelper { .. } | Error::MapReadBack { .. } => {
                ErrorKind::IdMap
            }
            Error::Symlink { .. } | Error::WrongType { .. } => ErrorKind::Unsafe,
            Error::Init { kind, .. } => *kind,
            Error::Protocol { .. } => ErrorKind::Protocol,
            Error::Unsupported { .. } => ErrorKind::Unsupported,
            Error::Timeout { .. } => ErrorKind::Timeout,
            Error::Monitor { kind, .. } => *kind,
            Error::Netlink { .. }
            | Error::AddressExhausted { .. }
            | Error::AddressInUse { .. }
            | Error::PortInUse { .. }
            | Error::Quota { .. }
            | Error::NoQuota { .. }
            | Error::Refused
            | Error::NetHelper { .. } => ErrorKind::Network,
        }
    }

    /// The errno behind this error, if it came from a system call.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            Error::Syscall { source, .. } | Error::Netlink { source, .. } => Some(*source),
            Error::Init { source, .. } => *source,
            Error::Read { source, .. }
            | Error::Write { source, .. }
            | Error::Spawn { source, .. }
            | Error::Cgroup { source, .. } => source.raw_os_error().map(Errno::from_raw),
            _ => None,
        }
    }

    pub(crate) fn sys(call: impl Into<String>, source: Errno) -> Error {
        Error::Syscall {
            call: call.into(),
            source,
        }
    }
}

/// Shorthand for results in this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
