//! davit: fetch, verify and unpack LXC-style system container images, and
//! run them. This binary only parses arguments, picks a reporter, calls the
//! libraries and maps their errors to exit codes.

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Cmd};
use ctx::Ctx;

mod cli;
mod cmd_console;
mod cmd_create;
mod cmd_docs;
mod cmd_fetch;
mod cmd_manage;
mod cmd_network;
mod cmd_offline;
mod cmd_publish;
mod cmd_run;
mod cmd_serve;
mod cmd_snapshot;
mod ctx;
mod paths;
mod report;

fn main() -> ExitCode {
    // Re-executed helpers come first: before clap, threads or terminals.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args
        .get(1)
        .is_some_and(|a| a == davit_run::monitor::MONITOR_ARG)
    {
        davit_run::monitor::monitor_main(&args[2..]);
    }
    // Not for the monitor, which allocates little and stays small.
    davit_rootfs::map_large_allocations();
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
        Cmd::Network => cmd_network::network(&ctx),
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
