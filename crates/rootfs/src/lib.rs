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
//! use davit_rootfs::{unpack, IdMap, Quiet, UnpackOptions};
//! use std::path::Path;
//!
//! # fn main() -> Result<(), davit_rootfs::Error> {
//! let maps = IdMap::parse_spec(&["b:0:1000000:65536".to_string()])?;
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
mod copy;
mod decode;
pub mod digest;
mod error;
mod exclude;
pub mod meta;
mod options;
mod report;
mod sys;
mod tarnorm;
pub mod templates;
pub mod text;
mod unpack;
mod userns;
mod xattr;
mod xzpar;

pub use davit_types::{subid, IdMap, IdRange};
pub use error::{Error, ErrorKind, Result};
pub use options::{UnpackOptions, DEFAULT_MAX_FILE_SIZE};
pub use report::{Quiet, Report, Reporter, Skip};
pub use sys::map_large_allocations;
pub use unpack::unpack;
pub use userns::{
    copy_in_userns, digest_in_userns, prepare_upper_in_userns, remove_in_userns,
    rename_host_in_userns, unpack_in_userns, userns_child_main, CHILD_ARG,
};
