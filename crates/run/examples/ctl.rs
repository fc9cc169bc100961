//! A small control tool over davit-run for systemd boots and benchmarks,
//! until `davit start/stop` land: it hosts the monitor itself (re-executed
//! as `ctl __run-monitor …`, the way the davit binary does).
//!
//! ```text
//! ctl start CONFIG RUNTIME [--prefix P] [-d] [-- CMD…]   foreground: exit code of init
//! ctl attach RUNTIME NAME [-- CMD…]
//! ctl stop RUNTIME NAME [-t SECS] [-k]                   prints halted|killed|recovered
//! ```
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use davit_run::monitor::{spawn_monitor, MonitorArgs};

fn fail(what: &str, e: &davit_run::Error) -> ! {
    eprintln!("{what} failed ({}): {e}", e.kind());
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        eprintln!("  caused by: {s}");
        src = s.source();
    }
    std::process::exit(125)
}

fn usage() -> ! {
    eprintln!(
        "usage: ctl start CONFIG RUNTIME [--prefix P] [-d] [-- CMD…] | \
         ctl attach RUNTIME NAME [-- CMD…] | ctl stop RUNTIME NAME [-t SECS] [-k]"
    );
    std::process::exit(2)
}

fn strs(a: &[OsString]) -> Vec<String> {
    a.iter().map(|s| s.to_string_lossy().into_owned()).collect()
}

fn start(args: &[OsString]) -> ! {
    let a = strs(args);
    if a.len() < 2 {
        usage()
    }
    let mut margs = MonitorArgs::new(PathBuf::from(&a[0]), PathBuf::from(&a[1]));
    let mut detach = false;
    let mut i = 2;
    while i < a.len() {
        match a[i].as_str() {
            "--prefix" if i + 1 < a.len() => {
                margs.cgroup_prefix = a[i + 1].clone();
                i += 1;
            }
            "-d" => detach = true,
            "--" => {
                margs.command = a[i + 1..].to_vec();
                break;
            }
            _ => usage(),
        }
        i += 1;
    }
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
    let mut h = match spawn_monitor(&exe, &margs, detach) {
        Ok(h) => h,
        Err(e) => fail("start", &e),
    };
    match h.wait_ready() {
        Ok(pid) if detach => {
            println!("{pid}");
            std::process::exit(0)
        }
        Ok(_) => {}
        Err(e) => {
            let _ = h.child.wait();
            fail("start", &e)
        }
    }
    let st = h
        .child
        .wait()
        .map(|s| s.code().unwrap_or(125))
        .unwrap_or(125);
    std::process::exit(st)
}

fn attach(args: &[OsString]) -> ! {
    if args.len() < 2 {
        usage()
    }
    let runner = davit_run::attach::runner(Path::new(&args[0]), &args[1].to_string_lossy())
        .unwrap_or_else(|e| fail("attach", &e));
    let command: Vec<String> = strs(&args[2..])
        .into_iter()
        .skip_while(|a| a == "--")
        .collect();
    let opts = davit_run::attach::AttachOptions {
        command,
        term: None,
        io: davit_run::attach::AttachIo::Inherit,
        user: None,
        cwd: None,
        env: Vec::new(),
        clear_env: false,
        runner,
    };
    match davit_run::attach::attach(
        Path::new(&args[0]),
        &args[1].to_string_lossy(),
        opts,
        &mut |_| {},
    ) {
        Ok(code) => std::process::exit(code),
        Err(e) => fail("attach", &e),
    }
}

fn stop(args: &[OsString]) -> ! {
    let a = strs(args);
    if a.len() < 2 {
        usage()
    }
    let mut opts = davit_run::stop::StopOptions::default();
    let mut i = 2;
    while i < a.len() {
        match a[i].as_str() {
            "-t" if i + 1 < a.len() => {
                let secs: f64 = a[i + 1].parse().unwrap_or_else(|_| usage());
                opts.timeout = (secs >= 0.0).then(|| Duration::from_secs_f64(secs));
                i += 1;
            }
            "-k" => opts.kill = true,
            _ => usage(),
        }
        i += 1;
    }
    match davit_run::stop::stop(Path::new(&a[0]), &a[1], &opts) {
        Ok(o) => {
            println!("{}", format!("{o:?}").to_lowercase());
            std::process::exit(0)
        }
        Err(e) if e.kind() == davit_run::ErrorKind::NotRunning => {
            eprintln!("stop: {e}");
            std::process::exit(2)
        }
        Err(e) => fail("stop", &e),
    }
}

fn main() {
    let args: Vec<OsString> = std::env::args_os().collect();
    match args.get(1).and_then(|a| a.to_str()) {
        Some(davit_run::monitor::MONITOR_ARG) => davit_run::monitor::monitor_main(&args[2..]),
        Some("start") => start(&args[2..]),
        Some("attach") => attach(&args[2..]),
        Some("stop") => stop(&args[2..]),
        _ => usage(),
    }
}
