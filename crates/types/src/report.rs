//! Progress without UI: every library reports long work through this
//! trait, and only the CLI shows it.

/// Progress and steps of long work (downloads, unpacks), for the caller's
/// reporter to show; a library never prints.
pub trait Reporter: Sync {
    /// A byte-counted task begins; `len` is its size if known. Returns an id.
    fn start(&self, _what: &str, _len: Option<u64>) -> u64 {
        0
    }
    /// `bytes` more bytes of task `id` are done.
    fn advance(&self, _id: u64, _bytes: u64) {}
    /// Task `id` ended.
    fn finish(&self, _id: u64) {}
    /// A named step begins ("downloading the image index").
    fn step(&self, _what: &str) {}
    /// Something the user must know, though the work goes on.
    fn warn(&self, _what: &str) {}
}

/// A reporter that shows nothing.
pub struct Quiet;
impl Reporter for Quiet {}
