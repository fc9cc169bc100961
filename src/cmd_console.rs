//! `davit console NAME` (as `lxc-console`): the console a detached
//! container's monitor holds, relayed on this terminal until `Ctrl-a q`;
//! `--log [--follow]` prints what it wrote there.

use std::io::{Read, Write};
use std::time::Duration;

use clap::Args;
use davit_run::console::{frame, winsize_frame, FRAME_INPUT, FRAME_SELECT};
use davit_term::{console, relay};

use crate::ctx::{Ctx, Failure};
use crate::paths;

#[derive(Args)]
pub struct ConsoleArgs {
    pub name: String,
    /// Print the console log of the last detached start instead (escape
    /// sequences shown, not obeyed).
    #[arg(long)]
    pub log: bool,
    /// With --log: keep printing what arrives until the container stops.
    #[arg(long, short, requires = "log")]
    pub follow: bool,
    /// Attach to /dev/ttyN instead of /dev/console (1 to `ttys` in
    /// config.toml, 4 by default).
    #[arg(long, value_name = "N", default_value_t = 0, conflicts_with = "log")]
    pub tty: u8,
}

pub fn console(ctx: &Ctx, a: ConsoleArgs) -> Result<(), Failure> {
    let c = paths::store()?.container(&a.name)?;
    let runtime = paths::runtime_dir();
    if a.log {
        return print_log(&runtime, &c.name, a.follow);
    }
    if a.tty > 0 {
        let cfg = c.load_config()?;
        if u32::from(a.tty) > cfg.ttys {
            return Err(Failure::usage(format!(
                "{} has {} terminals besides its console (ttys in {}); give --tty 1 to {}",
                c.name,
                cfg.ttys,
                c.config_path().display(),
                cfg.ttys
            )));
        }
    }
    let sock = davit_run::console::connect(&runtime, &c.name)?;
    let tty = relay::mode() == relay::Mode::Pty;
    let which = match a.tty {
        0 => "console".to_owned(),
        n => format!("tty{n}"),
    };
    if tty && !ctx.quiet {
        eprintln!(
            "Connected to {}'s {which}; type Ctrl-a q to detach.\r",
            crate::report::printable(&c.name)
        );
    }
    let framing = console::Framing {
        select: frame(FRAME_SELECT, &[a.tty]),
        input: |keys| frame(FRAME_INPUT, keys),
        winsize: winsize_frame,
    };
    let ended = console::session(sock, tty, &framing)
        .map_err(|e| Failure::io(anyhow::anyhow!(e).context("cannot use the console socket")))?;
    let detached = ended == console::Ended::Detached;
    if tty && !ctx.quiet {
        // One write: the message is never split on the terminal.
        let msg = if detached {
            format!(
                "\r\nDetached from {}'s {which}.\n",
                crate::report::printable(&c.name)
            )
        } else {
            format!(
                "\r\nThe {which} of {} closed (it stopped, or another `davit console` took it).\n",
                crate::report::printable(&c.name)
            )
        };
        let _ = std::io::stderr().write_all(msg.as_bytes());
    }
    Ok(())
}

/// The log, `\r\n` as `\n` and every other control character escaped.
fn show(text: &[u8]) -> String {
    let t = String::from_utf8_lossy(text).replace("\r\n", "\n");
    crate::report::printable(&t).into_owned()
}

fn print_log(runtime: &std::path::Path, name: &str, follow: bool) -> Result<(), Failure> {
    let files = davit_run::console::log_paths(runtime, name)?;
    if files.is_empty() && !follow {
        return Err(Failure::new(
            crate::ctx::exit::NOT_FOUND,
            anyhow::anyhow!("{name} has no console log: only a detached start (`davit start -d {name}`) writes one"),
        ));
    }
    let mut out = std::io::stdout().lock();
    let mut last = None;
    for f in &files {
        let data = std::fs::read(f).map_err(|e| {
            Failure::io(anyhow::anyhow!(e).context(format!("cannot read {}", f.display())))
        })?;
        let _ = out.write_all(show(&data).as_bytes());
        last = Some((f.clone(), data.len() as u64));
    }
    let _ = out.flush();
    if !follow {
        return Ok(());
    }
    // Like `tail -f`: new bytes of the current log, until the container
    // stops (and its last words are printed).
    let store = davit_run::state::StateStore::new(runtime, name);
    let log = store.dir().join(davit_run::console::LOG);
    let mut at = match &last {
        Some((p, n)) if *p == log => *n,
        _ => 0,
    };
    loop {
        let running = store
            .peek()
            .ok()
            .flatten()
            .is_some_and(|s| s.status != davit_run::state::Status::Stopped && s.is_alive());
        if let Ok(mut f) = std::fs::File::open(&log) {
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            if len < at {
                at = 0; // rotated or a new boot
            }
            if len > at {
                use std::io::Seek;
                let mut data = Vec::new();
                if f.seek(std::io::SeekFrom::Start(at)).is_ok() && f.read_to_end(&mut data).is_ok()
                {
                    at += data.len() as u64;
                    let _ = out.write_all(show(&data).as_bytes());
                    let _ = out.flush();
                }
            }
        }
        if !running {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
