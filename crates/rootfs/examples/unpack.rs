//! A tiny front end used by the tests and the benchmark until `davit unpack`
//! exists:
//!
//! `unpack [--userns] [--map u:C:H:L]... [--exclude PAT]... [--skip-devices]
//!  [--threads N] [--max-file-size BYTES] ARCHIVE DEST`
//!
//! Prints the report as JSON on stdout; exits 1 with `error: KIND: CHAIN`
//! on stderr.
use davit_rootfs::{unpack, unpack_in_userns, IdMap, Quiet, UnpackOptions, CHILD_ARG};
use std::path::PathBuf;

fn main() {
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().map(String::as_str) == Some(CHILD_ARG) {
        davit_rootfs::userns_child_main();
    }
    let (mut userns, mut maps, mut opts, mut pos) =
        (false, Vec::new(), UnpackOptions::default(), Vec::new());
    while let Some(a) = args.next() {
        match a.as_str() {
            "--userns" => userns = true,
            "--map" => maps.push(args.next().expect("--map needs a value")),
            "--exclude" => opts
                .excludes
                .push(args.next().expect("--exclude needs a value")),
            "--skip-devices" => opts.skip_devices = true,
            "--max-file-size" => {
                opts.max_file_size = args.next().and_then(|t| t.parse().ok());
                assert!(opts.max_file_size.is_some(), "--max-file-size BYTES");
            }
            "--threads" => {
                opts.threads = args
                    .next()
                    .and_then(|t| t.parse().ok())
                    .expect("--threads N")
            }
            _ => pos.push(PathBuf::from(a)),
        }
    }
    assert_eq!(pos.len(), 2, "usage: unpack [options] ARCHIVE DEST");
    let res = IdMap::parse_spec(&maps)
        .map_err(davit_rootfs::Error::from)
        .and_then(|m| {
            opts.maps = (!maps.is_empty()).then_some(m);
            if userns {
                let exe = std::env::current_exe().expect("current_exe");
                unpack_in_userns(&exe, &pos[0], &pos[1], &opts, &Quiet)
            } else {
                unpack(&pos[0], &pos[1], &opts, &Quiet)
            }
        });
    match res {
        Ok(r) => println!("{}", serde_json::to_string(&r).unwrap()),
        Err(e) => {
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(&format!(": {s}"));
                src = s.source();
            }
            eprintln!("error: {:?}: {msg}", e.kind());
            std::process::exit(1);
        }
    }
}
