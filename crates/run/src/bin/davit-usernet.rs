//! `davit-usernet`: the setuid-root helper that gives a plain user's
//! container a veth on a bridge within the quota of `/etc/davit/usernet`.
//! All logic lives in `davit_run::net::usernet`; this only prints.
#![forbid(unsafe_code)]

use std::io::Write;

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let (code, out, err) = davit_run::net::usernet::helper_main(&args);
    let _ = std::io::stdout().write_all(out.as_bytes());
    let _ = std::io::stderr().write_all(err.as_bytes());
    std::process::exit(code)
}
