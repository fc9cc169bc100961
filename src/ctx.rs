//! What every command shares: the exit codes, the error with the code it
//! maps to (one `From` per library error), and the context a command runs
//! in (quiet, JSON, the terminal reporter).

/// Exit codes, documented in the README.
pub mod exit {
    /// Anything not covered below.
    pub const FAILURE: u8 = 1;
    /// Bad arguments or an unsafe combination of options.
    pub const USAGE: u8 = 2;
    /// The image is not in the index, or not cached when offline.
    pub const NOT_FOUND: u8 = 3;
    /// The server could not be reached or answered with an error.
    pub const NETWORK: u8 = 4;
    /// A signature or checksum did not verify.
    pub const VERIFY: u8 = 5;
    /// A local file could not be read or written.
    pub const IO: u8 = 6;
    /// The image needs an id outside the id map.
    pub const UNMAPPED: u8 = 7;
    /// `stop`: the container was not running (as `lxc-stop`).
    pub const NOT_RUNNING: u8 = 2;
}

/// An error with the exit code it maps to.
pub struct Failure {
    pub code: u8,
    pub err: anyhow::Error,
    /// The exit code speaks for itself (a container's own exit status).
    pub silent: bool,
}

impl From<davit_fetch::Error> for Failure {
    fn from(e: davit_fetch::Error) -> Self {
        use davit_fetch::ErrorKind as K;
        let code = match e.kind() {
            K::Usage => exit::USAGE,
            K::NotFound => exit::NOT_FOUND,
            K::Network => exit::NETWORK,
            K::Verify => exit::VERIFY,
            K::Io => exit::IO,
        };
        Failure::new(code, e.into())
    }
}

impl From<davit_rootfs::Error> for Failure {
    fn from(e: davit_rootfs::Error) -> Self {
        use davit_rootfs::ErrorKind as K;
        let code = match e.kind() {
            K::Unsafe | K::Corrupt => exit::VERIFY,
            K::Io => exit::IO,
            K::Map => exit::USAGE,
            K::Unmapped => exit::UNMAPPED,
            _ => exit::FAILURE,
        };
        Failure::new(code, e.into())
    }
}

impl From<davit_run::Error> for Failure {
    fn from(e: davit_run::Error) -> Self {
        use davit_run::ErrorKind as K;
        let code = match e.kind() {
            K::NotRunning => exit::NOT_RUNNING,
            K::Io => exit::IO,
            _ => exit::FAILURE,
        };
        Failure::new(code, e.into())
    }
}

impl From<davit_types::Error> for Failure {
    /// An id-map error, exactly as the unpacker reports it.
    fn from(e: davit_types::Error) -> Self {
        davit_rootfs::Error::from(e).into()
    }
}

impl From<davit_store::Error> for Failure {
    fn from(e: davit_store::Error) -> Self {
        use davit_store::Error as E;
        match e {
            E::Rootfs(e) => e.into(),
            E::Run(e) => e.into(),
            E::Usage(_) => Failure::new(exit::USAGE, e.into()),
            E::NotFound(_) => Failure::new(exit::NOT_FOUND, e.into()),
            E::Io { .. } => Failure::new(exit::IO, e.into()),
        }
    }
}

impl Failure {
    pub fn new(code: u8, err: anyhow::Error) -> Failure {
        Failure {
            code,
            err,
            silent: false,
        }
    }
    pub fn usage(msg: impl Into<String>) -> Failure {
        Failure::new(exit::USAGE, anyhow::anyhow!(msg.into()))
    }
    pub fn io(err: anyhow::Error) -> Failure {
        Failure::new(exit::IO, err)
    }
    /// The exit code speaks for itself; print no error line.
    pub fn silent(mut self) -> Failure {
        self.silent = true;
        self
    }
}

pub struct Ctx {
    pub quiet: bool,
    pub json: bool,
    pub term: crate::report::Term,
    /// `--max-file-size`, for every unpack.
    pub max_file_size: Option<u64>,
}

/// Seconds since the epoch (0 if the clock is before it).
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Ctx {
    /// Prints a JSON value on stdout.
    pub fn print_json(&self, v: &impl serde::Serialize) {
        println!("{}", serde_json::to_string_pretty(v).expect("serialisable"));
    }
}
