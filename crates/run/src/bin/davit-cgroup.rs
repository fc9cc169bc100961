//! `davit-cgroup`: the setuid-root helper that gives a user granted in
//! `/etc/davit/cgroups` a cgroup tree of their own in every hierarchy and
//! then runs PROGRAM (davit's monitor) in it with the caller's ids. All
//! logic lives in `davit_run::usercgroup`; this only prints.
#![forbid(unsafe_code)]

use std::io::Write;

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let (code, err) = davit_run::usercgroup::helper_main(&args);
    let _ = std::io::stderr().write_all(err.as_bytes());
    std::process::exit(code)
}
