//! The errors of the shared types: a bad id map, a missing subordinate
//! range, a map the kernel did not take. Each crate turns them into its own
//! error's variant with the same message.

use std::io;
use std::path::PathBuf;

/// What went wrong with an id map.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A `--map` spec could not be parsed.
    #[error("invalid id map {spec:?}: {why}")]
    MapSpec {
        /// The spec as given.
        spec: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The id map breaks a safety rule ([`crate::IdMap::validate`]).
    #[error("id map refused: {why}")]
    MapRefused {
        /// Which rule.
        why: String,
    },
    /// The user has no usable subordinate id range.
    #[error(
        "no range of at least 65536 ids for {user} in {file}; add the line `{line}` to {file}"
    )]
    NoSubid {
        /// User name.
        user: String,
        /// `/etc/subuid` or `/etc/subgid`.
        file: PathBuf,
        /// The exact line to add.
        line: String,
    },
    /// Reading `/etc/subuid`, `/etc/subgid` or `/etc/passwd` failed.
    #[error("cannot read {path}")]
    ReadSubid {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Writing `/proc/PID/uid_map` or `gid_map` failed.
    #[error("cannot write {path}")]
    MapWrite {
        /// The map file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Reading a map back failed.
    #[error("cannot read {path}")]
    MapRead {
        /// The map file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// `newuidmap` or `newgidmap` could not be run.
    #[error("cannot run {program} {args}")]
    MapSpawn {
        /// The helper.
        program: String,
        /// Its arguments.
        args: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// `newuidmap` or `newgidmap` refused the map.
    #[error("{program} {args} failed ({status}): {stderr}")]
    MapHelper {
        /// The helper.
        program: String,
        /// Its arguments.
        args: String,
        /// Its exit status.
        status: String,
        /// Its standard error, trimmed.
        stderr: String,
    },
    /// The kernel's map differs from the one written.
    #[error("{path} reads back {got:?}, not {want:?}")]
    MapReadBack {
        /// The child whose map it is.
        pid: u32,
        /// `uid_map` or `gid_map`.
        file: &'static str,
        /// The map file.
        path: PathBuf,
        /// What was written.
        want: String,
        /// What the kernel holds.
        got: String,
    },
}

/// `Result` with the shared types' [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
