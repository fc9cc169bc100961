//! davit-fetch: the client and server side of the LXC image-server protocol.
//!
//! It downloads the signed index (`meta/1.0/index-system` or `index-user`),
//! verifies it with gpgme against pinned keys, picks the newest build,
//! downloads `rootfs.tar.xz` and `meta.tar.xz`, verifies them (one signed
//! `SHA256SUMS`, or a detached `.asc` per file), and commits them atomically
//! to a versioned offline cache. It also publishes signed trees
//! ([`publish`]) and serves them ([`serve`]).
//!
//! The crate never prints: progress and warnings go through [`Reporter`].
//!
//! ```no_run
//! use davit_fetch::{Client, Options, CacheMode, IndexKind, Server, Wanted, Quiet};
//! let client = Client::new(Options {
//!     server: Server::parse("file:///srv/images")?,
//!     http: Default::default(),
//!     keys: davit_fetch::KeyOptions { builtin: true, ..Default::default() },
//!     validate: true,
//!     cache_dir: "/var/cache/davit".into(),
//!     mode: CacheMode::Normal,
//!     index: IndexKind::System,
//!     retry: Default::default(),
//!     label: None,
//! })?;
//! let got = client.fetch(&Wanted::new("busybox", "1.36", "x86_64", "default"), &Quiet)?;
//! println!("{}", got.entry.rootfs().display());
//! # Ok::<(), davit_fetch::Error>(())
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod bundle;
pub mod cache;
mod client;
mod error;
pub mod index;
pub mod mirror;
pub mod publish;
pub mod serve;
pub mod transport;
pub mod verify;

pub use cache::{Cache, Entry, Manifest};
pub use client::{parse_sums, CacheMode, Client, Fetched, Options, Outcome, SignedIndex};
pub use error::{Error, ErrorKind, Result};
pub use index::{host_arch, normalize_arch, Image, Index, IndexKind, Wanted};
pub use transport::{HttpOptions, Retry, Server, DEFAULT_SERVER};
pub use verify::{KeyOptions, Keyring, OFFICIAL_FINGERPRINT};

pub use davit_types::{Quiet, Reporter};
