//! Progress without UI ([`Reporter`]) and what an unpack did ([`Report`]).

use serde::{Deserialize, Serialize};
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
