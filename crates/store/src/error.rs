//! The store's one error type: each variant names what failed; the
//! libraries' own errors pass through with their kinds.

use std::io;

/// What went wrong, for the CLI to map to an exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A request that cannot be done as asked (a bad name, a container
    /// that exists or runs): the message says what to do instead.
    Usage,
    /// No such container, base or snapshot.
    NotFound,
    /// A local file could not be read or written.
    Io,
    /// From davit-rootfs: see [`Error::Rootfs`].
    Rootfs(davit_rootfs::ErrorKind),
    /// From davit-run: see [`Error::Run`].
    Run(davit_run::ErrorKind),
}

/// An error of the container store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request the store refuses; the message says what to do.
    #[error("{0}")]
    Usage(String),
    /// A container, base or snapshot that is not there.
    #[error("{0}")]
    NotFound(String),
    /// A file operation; `what` names the step and the path.
    #[error("{what}")]
    Io {
        /// The step and the path, e.g. "cannot create /var/lib/davit".
        what: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Unpacking, shifting, bases or user-namespace work failed.
    #[error(transparent)]
    Rootfs(#[from] davit_rootfs::Error),
    /// Config, state or the runtime failed.
    #[error(transparent)]
    Run(#[from] davit_run::Error),
}

impl Error {
    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Usage(_) => ErrorKind::Usage,
            Error::NotFound(_) => ErrorKind::NotFound,
            Error::Io { .. } => ErrorKind::Io,
            Error::Rootfs(e) => ErrorKind::Rootfs(e.kind()),
            Error::Run(e) => ErrorKind::Run(e.kind()),
        }
    }

    pub(crate) fn usage(msg: impl Into<String>) -> Error {
        Error::Usage(msg.into())
    }
}

/// `Result` with the store's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Maps an `io::Error` to [`Error::Io`] naming the step.
pub(crate) fn io(what: String) -> impl FnOnce(io::Error) -> Error {
    move |source| Error::Io { what, source }
}
