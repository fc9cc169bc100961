//! Test driver for davit-run: hosts the monitor (`driver __run-monitor …`)
//! and attach (`driver attach|attach-here RUNTIME NAME -- CMD…`) in a single-threaded
//! process, the way the davit binary does.
use std::ffi::OsString;
use std::path::Path;

fn main() {
    let args: Vec<OsString> = std::env::args_os().collect();
    match args.get(1).and_then(|a| a.to_str()) {
        Some(davit_run::monitor::MONITOR_ARG) => davit_run::monitor::monitor_main(&args[2..]),
        // `attach-here`: the fallback, from a sealed copy of this binary
        // rather than the monitor's.
        Some(how @ ("attach" | "attach-here")) if args.len() >= 4 => {
            let runner = if how == "attach" {
                davit_run::attach::runner(Path::new(&args[2]), &args[3].to_string_lossy())
            } else {
                davit_run::monitor::ensure_sealed().map(|()| davit_run::attach::Runner::Here)
            };
            let runner = runner.unwrap_or_else(|e| {
                eprintln!("attach: {e}");
                std::process::exit(125);
            });
            let command: Vec<String> = args
                .iter()
                .skip(4)
                .skip_while(|a| *a == "--")
                .map(|a| a.to_string_lossy().into_owned())
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
                Path::new(&args[2]),
                &args[3].to_string_lossy(),
                opts,
                &mut |_| {},
            ) {
                Ok(code) => std::process::exit(code),
                Err(e) => {
                    eprintln!("attach failed ({}): {e}", e.kind());
                    let mut src = std::error::Error::source(&e);
                    while let Some(s) = src {
                        eprintln!("  caused by: {s}");
                        src = s.source();
                    }
                    std::process::exit(125)
                }
            }
        }
        _ => {
            eprintln!(
                "usage: driver __run-monitor ARGS | driver attach|attach-here RUNTIME NAME -- CMD"
            );
            std::process::exit(2)
        }
    }
}
