//! davit: fetch, verify and unpack LXC-style system container images, and
//! run them. This binary only parses arguments, picks a reporter, calls the
//! libraries and maps their errors to exit codes.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cmd_fetch;
mod cmd_publish;
mod cmd_serve;
mod paths;
mod report;

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
}

#[derive(Parser)]
#[command(
    name = "davit",
    version,
    about = "Fetch, verify and unpack LXC-style system container images, and run them"
)]
struct Cli {
    /// Print nothing but errors.
    #[arg(long, short, global = true)]
    quiet: bool,
    /// Print one JSON result on stdout.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Download, verify and cache the newest build of an image; unpack nothing.
    Fetch(cmd_fetch::FetchArgs),
    /// List the images on the server (every variant unless one is given).
    Images(cmd_fetch::ImagesArgs),
    /// Build a signed LXC-layout server tree from a rootfs directory or tarball.
    Publish(cmd_publish::PublishArgs),
    /// Serve an LXC-layout tree over HTTP or HTTPS.
    Serve(cmd_serve::ServeArgs),
}

/// An error with the exit code it maps to.
pub struct Failure {
    pub code: u8,
    pub err: anyhow::Error,
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
        Failure {
            code,
            err: e.into(),
        }
    }
}

impl Failure {
    pub fn usage(msg: impl Into<String>) -> Failure {
        Failure {
            code: exit::USAGE,
            err: anyhow::anyhow!(msg.into()),
        }
    }
    pub fn io(err: anyhow::Error) -> Failure {
        Failure {
            code: exit::IO,
            err,
        }
    }
}

pub struct Ctx {
    pub quiet: bool,
    pub json: bool,
    pub term: report::Term,
}

impl Ctx {
    /// Prints a JSON value on stdout.
    pub fn print_json(&self, v: &impl serde::Serialize) {
        println!("{}", serde_json::to_string_pretty(v).expect("serialisable"));
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let ctx = Ctx {
        quiet: cli.quiet,
        json: cli.json,
        term: report::Term::new(cli.quiet, cli.json),
    };
    let r = match cli.cmd {
        Cmd::Fetch(a) => cmd_fetch::fetch(&ctx, a),
        Cmd::Images(a) => cmd_fetch::images(&ctx, a),
        Cmd::Publish(a) => cmd_publish::publish(&ctx, a),
        Cmd::Serve(a) => cmd_serve::serve(&ctx, a),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            // The only place an error is printed: the whole chain, once.
            eprintln!("error: {:#}", f.err);
            ExitCode::from(f.code)
        }
    }
}
