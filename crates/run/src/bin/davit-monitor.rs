//! `davit-monitor`: the container monitor as a small binary of its own.
//!
//! `davit start` runs it (from beside the `davit` binary) instead of
//! re-executing the whole CLI: the monitor runs from a sealed copy of its
//! binary on every start (CVE-2019-5736; `start` makes it, or the monitor
//! re-executes itself from one), and copying this binary is several times
//! cheaper than copying the CLI with its HTTP, TLS and GnuPG code. It takes
//! exactly the arguments `davit __run-monitor` does; `attach` runs its child
//! from the same sealed copy.
#![forbid(unsafe_code)]

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args
        .get(1)
        .is_some_and(|a| a == davit_run::monitor::MONITOR_ARG)
    {
        davit_run::monitor::monitor_main(&args[2..]);
    }
    eprintln!("davit-monitor is started by `davit start`; it is not meant to be run by hand");
    std::process::exit(2);
}
