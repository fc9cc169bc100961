//! davit-rootfs: turns an image tarball into a container root filesystem.
//!
//! It streams the archive (multi-block or concatenated xz decoded on two
//! threads in about 50 MiB, gzip, zstd or plain tar, sniffed by magic),
//! parses it with the `tar` crate (pax records are re-parsed here because the
//! crate splits them on newlines) and writes every entry itself, relative to
//! a descriptor of the destination, never following a link that came from
//! the archive. Before the crate sees the stream, `tarnorm` reads every
//! header as GNU tar reads it (sizes, repeated extension headers, pax
//! globals, v7 directories, dumpdirs, every sparse format), so the tree is
//! what `tar -t` lists. Pax `SCHILY.xattr.*`, `SCHILY.acl.*` (numeric), GNU
//! long names, sparse files (holes never written), hardlinks, symlinks,
//! fifos and device nodes are supported. Owners are shifted into the
//! container's subordinate ids in one of two ways:
//!
//! - **as root**, [`unpack`] chowns each entry to the shifted id, then
//!   chmods (restoring setuid), rewrites `security.capability` as v3 with the
//!   host root id and shifts POSIX ACL ids;
//! - **as a plain user**, [`unpack_in_userns`] runs the same code inside a
//!   user namespace mapped by `newuidmap`/`newgidmap`, so the kernel shifts.
//!
//! Hostile archives (`..`, symlink tricks, hardlinks out, size desync,
//! truncation) are errors of kind [`ErrorKind::Unsafe`] or
//! [`ErrorKind::Corrupt`], and nothing is written outside the destination.
//!
//! ```no_run
//! use davit_rootfs::{idmap::IdMaps, unpack, Quiet, UnpackOptions};
//! use std::path::Path;
//!
//! # fn main() -> Result<(), davit_rootfs::Error> {
//! let maps = IdMaps::parse_spec(&["b:0:1000000:65536".to_string()])?;
//! let opts = UnpackOptions {
//!     maps: Some(maps),
//!     excludes: vec!["./dev/null".into()],
//!     skip_devices: false,
//!     threads: 0,
//!     ..Default::default()
//! };
//! std::fs::create_dir("/tmp/rootfs").ok();
//! let report = unpack(Path::new("rootfs.tar.xz"), Path::new("/tmp/rootfs"), &opts, &Quiet)?;
//! assert!(report.skipped.iter().all(|s| s.reason != ""));
//! # Ok(()) }
//! ```
#![deny(missing_docs)]
#![deny(unsafe_code)]

pub mod base;
mod decode;
pub mod digest;
mod error;
mod exclude;
mod helper;
pub mod idmap;
pub mod meta;
mod sys;
mod tarnorm;
pub mod templates;
pub mod text;
mod unpack;
mod userns;
mod xattr;
mod xzpar;

pub use error::{Error, ErrorKind, Result};
pub use idmap::subid;
pub use idmap::{IdMapping, IdMaps};
pub use userns::{
    copy_in_userns, digest_in_userns, prepare_upper_in_userns, remove_in_userns,
    rename_host_in_userns, unpack_in_userns, userns_child_main, CHILD_ARG,
};

use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Duration;

/// Progress sink. Libraries report through it and never print.
pub trait Reporter: Sync {
    /// A task starts; `len` is its size in bytes if known. Returns an id.
    fn start(&self, _what: &str, _len: Option<u64>) -> u64 {
        0
    }
    /// `bytes` more of task `id` are done (compressed archive bytes).
    fn advance(&self, _id: u64, _bytes: u64) {}
    /// Task `id` is finished.
    fn finish(&self, _id: u64) {}
}

/// A [`Reporter`] that ignores everything.
pub struct Quiet;
impl Reporter for Quiet {}

/// How to unpack.
#[derive(Debug, Clone, Default)]
pub struct UnpackOptions {
    /// Container → host id map. `None` writes ids as stored (a privileged
    /// container). With [`unpack_in_userns`] it is required.
    pub maps: Option<IdMaps>,
    /// LXC exclude patterns (`./dev/null`), matched like GNU tar
    /// `--anchored --exclude`, with or without the leading `./`.
    pub excludes: Vec<String>,
    /// Skip character and block devices (always on in a user namespace).
    pub skip_devices: bool,
    /// Decompression threads; 0 means one per CPU.
    pub threads: usize,
    /// Files inside the rootfs whose placeholders are substituted after the
    /// unpack (the meta `templates` list, e.g. `/etc/hostname`).
    pub templates: Vec<String>,
    /// Placeholder -> value (`LXC_NAME` -> the container name, ...).
    pub template_vars: Vec<(String, String)>,
    /// The most bytes one member may claim, its apparent size for a sparse
    /// file; a larger one is refused. `None`: [`DEFAULT_MAX_FILE_SIZE`].
    pub max_file_size: Option<u64>,
}

/// The default cap on one member's size: 64 GiB. Holes in a sparse member
/// cost nothing to write, but a tree with a terabyte file is a trap for
/// whatever copies or backs it up later.
pub const DEFAULT_MAX_FILE_SIZE: u64 = 64 << 30;

/// An entry that was deliberately not unpacked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skip {
    /// The cleaned member name (`dev/null`).
    pub path: String,
    /// Why it was skipped.
    pub reason: String,
}

/// What an unpack did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Members written (including directories and links).
    pub entries: u64,
    /// Regular-file bytes written.
    pub bytes: u64,
    /// Members skipped (devices, excludes, unsupported types).
    pub skipped: Vec<Skip>,
    /// Wall time.
    pub elapsed: Duration,
}

/// Unpacks `archive` into the existing, empty directory `dest` as root,
/// shifting ids through `opts.maps`.
///
/// Creates `dev/pts` at the end. Directory modes and times are applied after
/// their children.
///
/// # Errors
/// [`ErrorKind::Unsafe`] for an entry that would escape or subvert `dest`,
/// or that claims more than `opts.max_file_size`; [`ErrorKind::Corrupt`]
/// for a truncated or malformed archive (with entry and offset);
/// [`ErrorKind::Map`] for an unsafe map; [`ErrorKind::Unmapped`] for an id
/// outside it; [`ErrorKind::Io`] when a write fails. On error `dest` holds a partial
/// tree that the caller should remove.
pub fn unpack(
    archive: &Path,
    dest: &Path,
    opts: &UnpackOptions,
    rep: &dyn Reporter,
) -> Result<Report> {
    if let Some(m) = &opts.maps {
        m.validate()?;
    }
    let mode = unpack::Mode {
        maps: opts.maps.clone(),
        kernel_shifts: false,
    };
    let report = unpack::run(archive, dest, opts, &mode, rep)?;
    templates::apply(dest, &opts.templates, &opts.template_vars)?;
    Ok(report)
}
