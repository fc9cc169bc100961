//! The types davit's crates share, so that none of them translates
//! another's: one id map ([`IdMap`], with its parser, its safety rules,
//! the `/etc/subuid` lookup and the one writer of `/proc/PID/uid_map`), one
//! image identity ([`ImageId`], with the key of its base), one mount entry
//! ([`MountEntry`]) and one progress [`Reporter`].
//!
//! It depends on nothing of davit's, and nothing here prints.
//!
//! ```
//! use davit_types::{IdMap, ImageId};
//! let map = IdMap::parse_spec(&["b:0:100000:65536".to_string()])?;
//! assert_eq!(map.host_uid(1000), Some(101000));
//! map.validate()?;
//! let image = ImageId { dist: "debian".into(), release: "trixie".into(), ..ImageId::default() };
//! assert!(image.base_key(Some(&map)).starts_with("debian_trixie_"));
//! # Ok::<(), davit_types::Error>(())
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod error;
pub mod idmap;
mod image;
mod mount;
mod report;

pub use error::{Error, Result};
pub use idmap::{subid, IdMap, IdRange};
pub use image::ImageId;
pub use mount::MountEntry;
pub use report::{Quiet, Reporter};
