//! What an unpack did ([`Report`]); progress goes through the shared
//! [`Reporter`] (davit-types).

use serde::{Deserialize, Serialize};
use std::time::Duration;

pub use davit_types::{Quiet, Reporter};

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
