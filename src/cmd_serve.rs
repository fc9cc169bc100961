//! `davit serve`.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use clap::Args;
use davit_fetch::serve::{serve as run, ServeOptions};

use crate::ctx::{Ctx, Failure};

#[derive(Args)]
pub struct ServeArgs {
    /// The tree to serve (as written by `davit publish` or `davit mirror`).
    pub dir: PathBuf,
    /// Address to listen on; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// PEM certificate chain for HTTPS.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for HTTPS.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Append one line per request (`METHOD PATH STATUS`) to this file.
    #[arg(long)]
    pub access_log: Option<PathBuf>,
}

pub fn serve(ctx: &Ctx, a: ServeArgs) -> Result<(), Failure> {
    let log: Option<davit_fetch::serve::AccessLog> = match &a.access_log {
        Some(p) => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|e| {
                    Failure::io(
                        anyhow::anyhow!(e)
                            .context(format!("cannot open the access log {}", p.display())),
                    )
                })?;
            let f = Arc::new(Mutex::new(f));
            Some(Arc::new(move |line: &str| {
                let _ = writeln!(f.lock().expect("lock"), "{line}");
            }))
        }
        None if !ctx.quiet => Some(Arc::new(|line: &str| println!("{line}"))),
        None => None,
    };
    let scheme = if a.tls_cert.is_some() {
        "https"
    } else {
        "http"
    };
    let tls = a.tls_cert.clone().zip(a.tls_key.clone());
    let quiet = ctx.quiet;
    let dir = a.dir.clone();
    run(
        ServeOptions {
            dir: a.dir,
            listen: a.listen,
            tls,
            log,
        },
        |addr| {
            if !quiet {
                println!("serving {} on {scheme}://{addr}", dir.display());
                let _ = std::io::stdout().flush();
            }
        },
    )?;
    Ok(())
}
