//! davit: fetch, verify and unpack LXC-style system container images, and
//! run them. This binary only parses arguments, picks a reporter, calls the
//! libraries and maps their errors to exit codes.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cmd_console;
mod cmd_create;
mod cmd_docs;
mod cmd_fetch;
mod cmd_manage;
mod cmd_offline;
mod cmd_publish;
mod cmd_run;
mod cmd_serve;
mod cmd_snapshot;
mod paths;
mod relay;
mod report;
mod storage;

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

#[derive(Parser)]
#[command(
    name = "davit",
    version,
    about = "Fetch, verify and unpack LXC-style system container images, and run them"
)]
pub struct Cli {
    /// Print nothing but errors.
    #[arg(long, short, global = true)]
    quiet: bool,
    /// Print one JSON result on stdout.
    #[arg(long, global = true)]
    json: bool,
    /// Refuse an archive member that claims more than this (`64G`, the
    /// default; a sparse file's apparent size counts) when unpacking.
    #[arg(long, global = true, value_name = "SIZE", value_parser = parse_max_file_size)]
    max_file_size: Option<u64>,
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
    /// Copy a verified subset of a server, with its signatures, into a mirror tree.
    Mirror(cmd_offline::MirrorArgs),
    /// Write a cached image into one bundle file that can travel by USB.
    Export(cmd_offline::ExportArgs),
    /// Verify a bundle (or a local rootfs + meta pair) and put it in the cache.
    Import(cmd_offline::ImportArgs),
    /// Show or clean the image cache.
    #[command(subcommand)]
    Cache(cmd_offline::CacheCmd),
    /// Fetch if needed, unpack with shifted ids, write the config, print the create-message.
    Create(cmd_create::CreateArgs),
    /// Remove a container: rootfs, config, cgroups and state.
    Destroy(cmd_create::DestroyArgs),
    /// Clone a stopped container (like lxc-copy); with overlay the clone
    /// shares the base and copies only the upper directory.
    Copy(cmd_create::CopyArgs),
    /// Unpack a rootfs tarball with shifted ids, for other runtimes.
    Unpack(cmd_create::UnpackArgs),
    /// Boot a container's init (or run CMD in its place).
    Start(cmd_run::StartArgs),
    /// Run a command (default: a login shell) inside a running container.
    Attach(cmd_run::AttachArgs),
    /// Attach to a detached container's console (Ctrl-a q detaches), or
    /// print its log (like lxc-console).
    Console(cmd_console::ConsoleArgs),
    /// State, pid and resource use of a container (like lxc-info).
    Info(cmd_run::InfoArgs),
    /// One line per container (like lxc-ls -f).
    List,
    /// Halt a container, killing it after the timeout (exit 2: not running).
    Stop(cmd_run::StopArgs),
    /// Host readiness: namespaces, cgroups, id ranges, helpers (like lxc-checkconfig).
    Check(cmd_run::CheckArgs),
    /// Freeze every task of a running container (like lxc-freeze).
    Freeze(cmd_run::FreezeArgs),
    /// Thaw a frozen container (like lxc-unfreeze).
    Unfreeze(cmd_run::FreezeArgs),
    /// Wait until a container is in a state (like lxc-wait), without polling.
    Wait(cmd_run::WaitArgs),
    /// Change limits (a running container's at once, like lxc-cgroup) and
    /// autostart keys in config.toml.
    Set(cmd_manage::SetArgs),
    /// Snapshot a stopped container (like lxc-snapshot); `list`, `restore`
    /// and `delete` its snapshots.
    Snapshot(cmd_snapshot::SnapshotArgs),
    /// Rename a stopped container (like lxc-copy -R).
    Rename(cmd_manage::RenameArgs),
    /// Start the containers marked autostart, in order (like lxc-autostart);
    /// --stop stops them in reverse.
    Autostart(cmd_manage::AutostartArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(cmd_docs::CompletionsArgs),
    /// Write the man pages (davit.1 and davit-COMMAND.1) into a directory.
    Man(cmd_docs::ManArgs),
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
    pub term: report::Term,
    /// `--max-file-size`, for every unpack.
    pub max_file_size: Option<u64>,
}

fn parse_max_file_size(s: &str) -> Result<u64, String> {
    davit_rootfs::meta::parse_size(s).ok_or_else(|| format!("{s:?} is not a size like 64G"))
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

fn main() -> ExitCode {
    // Re-executed helpers come first: before clap, threads or terminals.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args
        .get(1)
        .is_some_and(|a| a == davit_run::monitor::MONITOR_ARG)
    {
        davit_run::monitor::monitor_main(&args[2..]);
    }
    if args.get(1).is_some_and(|a| a == davit_rootfs::CHILD_ARG) {
        davit_rootfs::userns_child_main();
    }
    let cli = Cli::parse();
    let ctx = Ctx {
        quiet: cli.quiet,
        json: cli.json,
        term: report::Term::new(cli.quiet, cli.json),
        max_file_size: cli.max_file_size,
    };
    let r = match cli.cmd {
        Cmd::Fetch(a) => cmd_fetch::fetch(&ctx, a),
        Cmd::Images(a) => cmd_fetch::images(&ctx, a),
        Cmd::Publish(a) => cmd_publish::publish(&ctx, a),
        Cmd::Serve(a) => cmd_serve::serve(&ctx, a),
        Cmd::Mirror(a) => cmd_offline::mirror(&ctx, a),
        Cmd::Export(a) => cmd_offline::export(&ctx, a),
        Cmd::Import(a) => cmd_offline::import(&ctx, a),
        Cmd::Cache(c) => cmd_offline::cache(&ctx, c),
        Cmd::Create(a) => cmd_create::create(&ctx, a),
        Cmd::Destroy(a) => cmd_create::destroy(&ctx, a),
        Cmd::Unpack(a) => cmd_create::unpack(&ctx, a),
        Cmd::Start(a) => cmd_run::start(&ctx, a),
        Cmd::Attach(a) => cmd_run::attach(&ctx, a),
        Cmd::Console(a) => cmd_console::console(&ctx, a),
        Cmd::Info(a) => cmd_run::info(&ctx, a),
        Cmd::List => cmd_run::list(&ctx),
        Cmd::Stop(a) => cmd_run::stop(&ctx, a),
        Cmd::Check(a) => cmd_run::check(&ctx, a),
        Cmd::Copy(a) => cmd_create::copy(&ctx, a),
        Cmd::Wait(a) => cmd_run::wait(&ctx, a),
        Cmd::Set(a) => cmd_manage::set(&ctx, a),
        Cmd::Rename(a) => cmd_manage::rename(&ctx, a),
        Cmd::Snapshot(a) => cmd_snapshot::snapshot(&ctx, a),
        Cmd::Autostart(a) => cmd_manage::autostart(&ctx, a),
        Cmd::Freeze(a) => cmd_run::freeze(&ctx, a, true),
        Cmd::Unfreeze(a) => cmd_run::freeze(&ctx, a, false),
        Cmd::Completions(a) => cmd_docs::completions(a),
        Cmd::Man(a) => cmd_docs::man(&ctx, a),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            // The only place an error is printed: the whole chain, once.
            if !f.silent {
                // Errors quote names from images and servers: shown, not obeyed.
                eprintln!("error: {}", report::printable(&format!("{:#}", f.err)));
            }
            ExitCode::from(f.code)
        }
    }
}
