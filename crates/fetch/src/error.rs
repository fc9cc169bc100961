//! The one error type of this crate.
#![forbid(unsafe_code)]

use std::io;
use std::path::PathBuf;

/// What kind of failure an [`Error`] is, for callers that branch on it
/// (the CLI maps each kind to a distinct exit code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request itself is wrong: a bad server URL, an unsafe option mix.
    Usage,
    /// The image is not in the index, or not in the cache when offline.
    NotFound,
    /// The server could not be reached or answered with an error.
    Network,
    /// A signature or a digest did not verify, or signed content is malformed.
    Verify,
    /// A local file or directory could not be read or written.
    Io,
}

/// Everything that can go wrong while fetching, caching, publishing or serving.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `--server` could not be understood.
    #[error("invalid server {server:?}: {why}")]
    BadServer {
        /// What the user gave.
        server: String,
        /// Why it was refused.
        why: String,
    },
    /// An option combination that would weaken security or cannot work.
    #[error("{0}")]
    Usage(String),
    /// A download failed.
    #[error("{step}: GET {url} {}", describe_download(*.status, final_url, url, *.received))]
    Download {
        /// The step, e.g. "downloading the rootfs".
        step: String,
        /// The URL asked for.
        url: String,
        /// The URL after redirects (same as `url` when there were none).
        final_url: String,
        /// The HTTP status, when the server answered.
        status: Option<u16>,
        /// How many body bytes arrived before the failure.
        received: u64,
        /// The transport error, when there was one.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// The index does not list the wanted image.
    #[error("{message}")]
    NotFound {
        /// A full sentence naming the image, the index, close matches and hints.
        message: String,
    },
    /// Offline use was asked for but no cached copy exists.
    #[error("no cached copy of {image} in {cache}; run the same command without --offline/--force-cache while the server is reachable, or import a bundle")]
    NotCached {
        /// dist/release/arch/variant.
        image: String,
        /// The cache directory searched.
        cache: PathBuf,
    },
    /// A signature did not verify.
    #[error("signature check of {file} failed: {why}{}", signer.as_ref().map(|s| format!(" (signer {s})")).unwrap_or_default())]
    Signature {
        /// The file whose signature failed (URL or path).
        file: String,
        /// What gpg said, in words.
        why: String,
        /// The signing key's fingerprint or id, when known.
        signer: Option<String>,
    },
    /// A downloaded or cached file does not have the signed digest.
    #[error("sha256 of {file} does not match {against}: want {want}, got {got}")]
    Digest {
        /// The file (URL or path).
        file: String,
        /// What it was checked against (e.g. the signed SHA256SUMS).
        against: String,
        /// The expected digest, hex.
        want: String,
        /// The digest of the bytes received, hex.
        got: String,
    },
    /// Signed content that cannot be used (bad index line, bad meta tarball).
    #[error("{what} in {file} is malformed: {why}")]
    Malformed {
        /// What was being parsed.
        what: String,
        /// The file (URL or path).
        file: String,
        /// Why.
        why: String,
    },
    /// The GnuPG engine failed to run (not a verification failure).
    #[error("gpg: {what}")]
    Gpg {
        /// What was being done.
        what: String,
        /// The gpgme error.
        #[source]
        source: gpgme::Error,
    },
    /// A local file operation failed.
    #[error("cannot {what} {path}")]
    Io {
        /// The operation, e.g. "write".
        what: String,
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

fn describe_download(status: Option<u16>, final_url: &str, url: &str, received: u64) -> String {
    let mut s = match status {
        Some(code) => format!("returned HTTP {code}"),
        None => "failed".to_string(),
    };
    if final_url != url {
        s.push_str(&format!(" (redirected to {final_url})"));
    }
    s.push_str(&format!(" after {received} bytes"));
    s
}

impl Error {
    /// The kind of failure, to branch on.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::BadServer { .. } | Error::Usage(_) => ErrorKind::Usage,
            Error::Download { .. } => ErrorKind::Network,
            Error::NotFound { .. } | Error::NotCached { .. } => ErrorKind::NotFound,
            Error::Signature { .. } | Error::Digest { .. } | Error::Malformed { .. } => {
                ErrorKind::Verify
            }
            Error::Gpg { .. } | Error::Io { .. } => ErrorKind::Io,
        }
    }

    pub(crate) fn io(what: &str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            what: what.to_string(),
            path: path.into(),
            source,
        }
    }

    pub(crate) fn gpg(what: &str, source: gpgme::Error) -> Self {
        Error::Gpg {
            what: what.to_string(),
            source,
        }
    }
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
