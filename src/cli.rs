//! The command line: every command and global flag, as clap parses them
//! (completions and man pages are made from these definitions).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::{
    cmd_console, cmd_create, cmd_fetch, cmd_manage, cmd_offline, cmd_publish, cmd_run, cmd_serve,
    cmd_snapshot,
};

#[derive(Parser)]
#[command(
    name = "davit",
    version,
    about = "Fetch, verify and unpack LXC-style system container images, and run them"
)]
pub struct Cli {
    /// Print nothing but errors.
    #[arg(long, short, global = true)]
    pub quiet: bool,
    /// Print one JSON result on stdout.
    #[arg(long, global = true)]
    pub json: bool,
    /// Refuse an archive member that claims more than this (`64G`, the
    /// default; a sparse file's apparent size counts) when unpacking.
    #[arg(long, global = true, value_name = "SIZE", value_parser = parse_max_file_size)]
    pub max_file_size: Option<u64>,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand)]
pub enum Cmd {
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
    /// The bridges, their addresses, leases and published ports, and
    /// whether NAT, DHCP/DNS and IPv6 are up.
    Network,
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
    Completions(CompletionsArgs),
    /// Write the man pages (davit.1 and davit-COMMAND.1) into a directory.
    Man(ManArgs),
}

#[derive(Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    pub shell: clap_complete::Shell,
}

#[derive(Args)]
pub struct ManArgs {
    /// Where to write `davit.1` and one `davit-COMMAND.1` per command.
    pub dir: PathBuf,
}

fn parse_max_file_size(s: &str) -> Result<u64, String> {
    davit_rootfs::meta::parse_size(s).ok_or_else(|| format!("{s:?} is not a size like 64G"))
}
