//! `davit console NAME` (as `lxc-console`): the console a detached
//! container's monitor holds, relayed on this terminal until `Ctrl-a q`;
//! `--log [--follow]` prints what it wrote there.

use std::io::{IsTerminal, Read, Write};
use std::time::Duration;

use clap::Args;
use davit_run::console::{frame, winsize_frame, FRAME_INPUT, FRAME_SELECT};
use davit_term::console::keys;
use davit_term::relay;

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
    let tty = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
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
    let _ = relay::winch().thread_block();
    let raw = tty.then(relay::RawMode::enter);
    let mut out_sock = sock
        .try_clone()
        .map_err(|e| Failure::io(anyhow::anyhow!(e).context("cannot use the console socket")))?;
    out_sock
        .write_all(&frame(FRAME_SELECT, &[a.tty]))
        .map_err(|e| Failure::io(anyhow::anyhow!(e).context("cannot use the console socket")))?;
    if tty {
        if let Ok(ws) = rustix::termios::tcgetwinsize(std::io::stdin()) {
            let _ = out_sock.write_all(&winsize_frame(ws.ws_row, ws.ws_col));
        }
        if let Ok(mut resize) = sock.try_clone() {
            std::thread::spawn(move || loop {
                if relay::winch().wait() == Ok(nix::sys::signal::Signal::SIGWINCH) {
                    if let Ok(ws) = rustix::termios::tcgetwinsize(std::io::stdin()) {
                        let _ = resize.write_all(&winsize_frame(ws.ws_row, ws.ws_col));
                    }
                }
            });
        }
    }
    let (tx, rx) = std::sync::mpsc::channel::<bool>();
    let keys_tx = tx.clone();
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = [0u8; 4096];
        let mut armed = false;
        loop {
            let n = match stdin.read(&mut buf) {
                Ok(0) | Err(_) => {
                    let _ = keys_tx.send(true);
                    return;
                }
                Ok(n) => n,
            };
            let (send, detach) = keys(&buf[..n], &mut armed);
            if !send.is_empty() && out_sock.write_all(&frame(FRAME_INPUT, &send)).is_err() {
                let _ = keys_tx.send(false);
                return;
            }
            if detach {
                let _ = keys_tx.send(true);
                return;
            }
        }
    });
    // Kept to end the output relay on detach, before our own message: the
    // relay and the message share the terminal, and a prompt the container
    // printed in the meantime once landed inside "Detached from …".
    let stop_output = sock.try_clone().ok();
    let mut from = sock;
    let output = std::thread::spawn(move || {
        let mut stdout = std::io::stdout();
        let mut buf = [0u8; 16 << 10];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if stdout
                        .write_all(&buf[..n])
                        .and_then(|()| stdout.flush())
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
        // The monitor closed it: the container stopped, or another
        // console took over.
        let _ = tx.send(false);
    });
    let detached = rx.recv().unwrap_or(false);
    if let Some(s) = stop_output {
        let _ = s.shutdown(std::net::Shutdown::Read);
        let _ = output.join();
    }
    drop(raw);
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
