//! The crate's one error type.
#![forbid(unsafe_code)]

use std::io;
use std::path::PathBuf;

/// What kind of failure an [`Error`] is, for callers that branch on it
/// (exit codes, retries, messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorKind {
    /// Reading the archive or writing the tree failed at the OS level.
    Io,
    /// The archive is truncated, corrupt or not a supported format.
    Corrupt,
    /// The archive tried to reach outside the destination, or an entry is
    /// otherwise refused for safety.
    Unsafe,
    /// An id map is malformed, too small, maps host root or is missing from
    /// `/etc/subuid`.
    Map,
    /// An owner (or ACL or capability id) in the archive is outside the id
    /// map: the archive and the map do not fit each other.
    Unmapped,
    /// `newuidmap`/`newgidmap` or the user-namespace child failed.
    Helper,
}

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The archive file could not be opened or sniffed.
    #[error("cannot open archive {path}")]
    OpenArchive {
        /// The archive.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The destination directory could not be opened or is not usable.
    #[error("cannot open destination {path}")]
    OpenDest {
        /// The destination.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The destination directory is not empty.
    #[error("destination {path} is not empty")]
    DestNotEmpty {
        /// The destination.
        path: PathBuf,
    },
    /// Reading or decoding the archive failed (corrupt data, bad header,
    /// decompression error).
    #[error("cannot read archive {archive} at byte {offset} (entry {entry})")]
    Read {
        /// The archive.
        archive: PathBuf,
        /// The entry being read, or the last entry before the failure.
        entry: String,
        /// Offset in the decompressed tar stream.
        offset: u64,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The archive ended inside an entry.
    #[error("archive {archive} is truncated in entry {entry} at byte {offset}")]
    Truncated {
        /// The archive.
        archive: PathBuf,
        /// The entry whose data is short.
        entry: String,
        /// Offset in the decompressed tar stream where data ran out.
        offset: u64,
    },
    /// An entry was refused because it would escape or subvert the
    /// destination.
    #[error("unsafe entry {entry} at byte {offset}: {why}")]
    Unsafe {
        /// The entry name as stored in the archive.
        entry: String,
        /// Offset of the entry's header.
        offset: u64,
        /// What was refused.
        why: &'static str,
    },
    /// An entry of an unsupported shape (bad name bytes, unknown type that
    /// cannot be skipped).
    #[error("bad entry {entry} at byte {offset}: {why}")]
    BadEntry {
        /// The entry name.
        entry: String,
        /// Offset of the entry's header.
        offset: u64,
        /// What is wrong.
        why: &'static str,
    },
    /// A member claims more bytes than the cap allows.
    #[error("entry {entry} at byte {offset} claims {size} bytes, over the cap of {cap} (raise it with --max-file-size)")]
    TooBig {
        /// The entry name.
        entry: String,
        /// Offset of the entry's header.
        offset: u64,
        /// What it claims (its apparent size, for a sparse file).
        size: u64,
        /// The cap.
        cap: u64,
    },
    /// A hardlink names a target that does not exist (yet).
    #[error("hardlink {entry} at byte {offset}: target {target} does not exist")]
    LinkTarget {
        /// The link entry.
        entry: String,
        /// Offset of the entry's header.
        offset: u64,
        /// The target it names.
        target: String,
    },
    /// A filesystem operation on an entry failed.
    #[error("cannot {step} {path}")]
    Write {
        /// The operation, strace-style (`mkdirat`, `fchown`, ...).
        step: &'static str,
        /// The path inside the destination.
        path: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// An owner (or ACL/capability id) in the archive is outside the id map.
    #[error("{which} {id} of entry {entry} is outside the id map; unpack with a map that covers it (`--map`, or a larger range in /etc/subuid and /etc/subgid)")]
    Unmapped {
        /// The entry.
        entry: String,
        /// `uid`, `gid`, `acl uid`, `acl gid` or `capability rootid`.
        which: &'static str,
        /// The container-side id.
        id: u64,
    },
    /// An id map: a bad `--map` spec, a map refused by the safety rules, no
    /// subordinate range (with the line to add), or a map the kernel did
    /// not take (davit-types' errors, their messages unchanged).
    #[error(transparent)]
    Ids(#[from] davit_types::Error),
    /// Running a helper (`newuidmap`, `newgidmap`, the userns child) failed.
    #[error("cannot run {helper}")]
    Helper {
        /// The helper and its arguments.
        helper: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A helper exited unsuccessfully.
    #[error("{helper} failed ({status}): {stderr}")]
    HelperStatus {
        /// The helper and its arguments.
        helper: String,
        /// Its exit status.
        status: String,
        /// Its standard error, trimmed.
        stderr: String,
    },
    /// A template file could not be rewritten.
    #[error("cannot substitute placeholders in {path}")]
    Template {
        /// The template path inside the rootfs.
        path: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A tree could not be removed.
    #[error("cannot remove {path}")]
    Remove {
        /// The tree.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A base (a shared read-only rootfs) could not be read or written.
    #[error("{what} {path}")]
    Base {
        /// What was being done, e.g. `cannot write`.
        what: String,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A base no longer matches the digest recorded when it was made.
    #[error("the base {path} was modified since it was unpacked: {}{}", changes.join("; "), if *more > 0 { format!(" (and {more} more)") } else { String::new() })]
    Tampered {
        /// The base's tree.
        path: PathBuf,
        /// The first differences, one per path.
        changes: Vec<String>,
        /// How many more differences there are.
        more: usize,
    },
    /// The user-namespace child reported an error (its message, full chain).
    #[error("the user namespace child failed: {message}")]
    Child {
        /// The child's error kind.
        kind: ErrorKind,
        /// The child's error, with causes, as text.
        message: String,
    },
}

impl Error {
    /// The kind of failure, to branch on.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::OpenArchive { .. }
            | Error::OpenDest { .. }
            | Error::Write { .. }
            | Error::Template { .. }
            | Error::Remove { .. }
            | Error::Base { .. } => ErrorKind::Io,
            Error::Tampered { .. } => ErrorKind::Corrupt,
            Error::DestNotEmpty { .. } => ErrorKind::Unsafe,
            Error::Read { source, .. } => match source.kind() {
                io::ErrorKind::InvalidData
                | io::ErrorKind::UnexpectedEof
                | io::ErrorKind::InvalidInput
                | io::ErrorKind::Other => ErrorKind::Corrupt,
                _ => ErrorKind::Io,
            },
            Error::Truncated { .. } | Error::BadEntry { .. } | Error::LinkTarget { .. } => {
                ErrorKind::Corrupt
            }
            Error::Unsafe { .. } | Error::TooBig { .. } => ErrorKind::Unsafe,
            Error::Unmapped { .. } => ErrorKind::Unmapped,
            // A helper that could not run or failed is the helper's; the
            // rest (spec, rules, subordinate ranges, read-back) the map's.
            Error::Ids(
                davit_types::Error::MapSpawn { .. }
                | davit_types::Error::MapHelper { .. }
                | davit_types::Error::MapRead { .. }
                | davit_types::Error::MapWrite { .. },
            ) => ErrorKind::Helper,
            Error::Ids(_) => ErrorKind::Map,
            Error::Helper { .. } | Error::HelperStatus { .. } => ErrorKind::Helper,
            Error::Child { kind, .. } => *kind,
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The error and all its causes, joined with `: `.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
