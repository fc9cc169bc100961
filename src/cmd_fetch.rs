//! `davit fetch` and `davit images`.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use davit_fetch::{
    CacheMode, Client, HttpOptions, IndexKind, KeyOptions, Options, Retry, Server, Wanted,
};

use crate::ctx::{Ctx, Failure};
use crate::paths;

#[derive(Clone, Copy, ValueEnum)]
pub enum IndexArg {
    System,
    User,
}

/// Where images come from and how they are trusted and cached.
#[derive(Args, Clone)]
pub struct SourceArgs {
    /// Image server: https://host[:port][/prefix], host[/prefix] (https),
    /// http://... (only with signature checks) or file:///dir.
    #[arg(long, env = "DAVIT_SERVER", default_value = davit_fetch::DEFAULT_SERVER)]
    pub server: String,
    /// Extra trusted signing keys (armoured or binary); repeatable.
    #[arg(long = "keyring", value_name = "FILE")]
    pub keyrings: Vec<PathBuf>,
    /// Do not trust the built-in linuxcontainers.org key.
    #[arg(long)]
    pub no_builtin_key: bool,
    /// Skip signature checks (prints a warning every time).
    #[arg(long)]
    pub no_validate: bool,
    /// Extra CA certificate (PEM) to trust for HTTPS; repeatable.
    #[arg(long = "ca-cert", value_name = "FILE")]
    pub ca_certs: Vec<PathBuf>,
    /// Cache directory [default: /var/cache/davit as root, $XDG_CACHE_HOME/davit as a user].
    #[arg(long, env = "DAVIT_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Download again even when the cache is up to date.
    #[arg(long, conflicts_with = "offline")]
    pub flush_cache: bool,
    /// Use the cache only, with no network at all.
    #[arg(long, alias = "force-cache")]
    pub offline: bool,
    /// Which index to read [default: system as root, user as a plain user].
    #[arg(long, value_enum)]
    pub index: Option<IndexArg>,
    /// The most a rootfs.tar.xz may be, e.g. 20G [default: 16G]; a larger
    /// one (or an endless stream) is refused, never retried.
    #[arg(long, env = "DAVIT_MAX_DOWNLOAD", value_name = "SIZE", value_parser = crate::cmd_publish::parse_size)]
    pub max_download: Option<u64>,
    /// Seconds a server may send nothing before the request is retried,
    /// resuming where it stopped [default: 60].
    #[arg(long, env = "DAVIT_READ_TIMEOUT", value_name = "SECS")]
    pub read_timeout: Option<u64>,
    /// Legacy LXC flag, accepted and ignored: keys are never fetched from keyservers.
    #[arg(long, hide = true)]
    pub keyserver: Option<String>,
    /// Legacy LXC flag, accepted and ignored: use --keyring FILE to trust another key.
    #[arg(long, hide = true)]
    pub keyid: Option<String>,
}

impl SourceArgs {
    pub fn index_kind(&self) -> IndexKind {
        match self.index {
            Some(IndexArg::System) => IndexKind::System,
            Some(IndexArg::User) => IndexKind::User,
            None if paths::is_root() => IndexKind::System,
            None => IndexKind::User,
        }
    }

    pub fn client(&self, ctx: &Ctx) -> Result<Client, Failure> {
        Ok(Client::new(self.options(ctx)?)?)
    }

    /// The fetch options these flags mean; warns about ignored legacy flags.
    pub fn options(&self, ctx: &Ctx) -> Result<Options, Failure> {
        if self.keyserver.is_some() {
            ctx.term.warning("--keyserver is ignored: davit never fetches keys from keyservers; trust a key with --keyring FILE");
        }
        if self.keyid.is_some() {
            ctx.term.warning("--keyid is ignored: trust a key with --keyring FILE or put it in the keys directory");
        }
        if self.no_validate {
            // Always shown, even with --quiet: this is the one way past verification.
            eprintln!("warning: --no-validate: signatures are NOT checked; a tampered or substituted image would not be noticed");
        }
        let retry = match std::env::var("DAVIT_RETRY_BASE_MS")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
        {
            Some(ms) => Retry {
                base: Duration::from_millis(ms),
                ..Retry::default()
            },
            None => Retry::default(),
        };
        let opts = Options {
            server: Server::parse(&self.server)?,
            http: HttpOptions {
                ca_certs: self.ca_certs.clone(),
                read_timeout: self.read_timeout.map(Duration::from_secs),
                max_image: self.max_download,
            },
            keys: KeyOptions {
                builtin: !self.no_builtin_key,
                files: self.keyrings.clone(),
                dirs: paths::key_dirs(),
            },
            validate: !self.no_validate,
            cache_dir: self.cache_dir.clone().unwrap_or_else(paths::cache_dir),
            mode: if self.offline {
                CacheMode::Offline
            } else if self.flush_cache {
                CacheMode::Flush
            } else {
                CacheMode::Normal
            },
            index: self.index_kind(),
            retry,
            label: None,
        };
        Ok(opts)
    }
}

#[derive(Args)]
pub struct FetchArgs {
    /// Also seed LXC's download cache, so `lxc-create -t download -- ... --force-cache` works offline.
    #[arg(long)]
    pub lxc_cache: bool,
    /// LXC's cache root [default: $LXC_CACHE_PATH, /var/cache/lxc as root, ~/.cache/lxc as a user].
    #[arg(long, requires = "lxc_cache")]
    pub lxc_cache_dir: Option<PathBuf>,
    /// Distribution, e.g. debian (case-insensitive).
    pub dist: Option<String>,
    /// Release, e.g. bookworm (case-insensitive).
    pub release: Option<String>,
    /// Architecture [default: the host's]; x86_64, aarch64, armv7l, i686 and ppc64le are understood.
    pub arch: Option<String>,
    /// Image variant.
    #[arg(long, default_value = "default")]
    pub variant: String,
    #[command(flatten)]
    pub source: SourceArgs,
}

#[derive(Args)]
pub struct ImagesArgs {
    pub dist: Option<String>,
    pub release: Option<String>,
    pub arch: Option<String>,
    /// Only this variant (all variants are listed by default).
    #[arg(long)]
    pub variant: Option<String>,
    #[command(flatten)]
    pub source: SourceArgs,
}

fn table(images: &[&davit_fetch::Image]) -> String {
    let head = ["DIST", "RELEASE", "ARCH", "VARIANT", "BUILD"];
    let rows: Vec<[&str; 5]> = images
        .iter()
        .map(|i| [i.dist.as_str(), &i.release, &i.arch, &i.variant, &i.build])
        .collect();
    let mut w = [0usize; 5];
    for r in std::iter::once(&head).chain(rows.iter()) {
        for (k, c) in r.iter().enumerate() {
            w[k] = w[k].max(c.len());
        }
    }
    let mut out = String::new();
    for r in std::iter::once(&head).chain(rows.iter()) {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(k, c)| format!("{c:<width$}", width = w[k]))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

pub fn images(ctx: &Ctx, a: ImagesArgs) -> Result<(), Failure> {
    let client = a.source.client(ctx)?;
    let index = client.index(&ctx.term)?;
    let list = index.filter(
        a.dist.as_deref(),
        a.release.as_deref(),
        a.arch.as_deref(),
        a.variant.as_deref(),
    );
    if ctx.json {
        ctx.print_json(&list);
    } else if !ctx.quiet {
        print!("{}", table(&list));
    }
    Ok(())
}

fn prompt(what: &str, default: Option<&str>) -> Result<String, Failure> {
    let mut err = std::io::stderr();
    match default {
        Some(d) => write!(err, "{what} [{d}]: "),
        None => write!(err, "{what}: "),
    }
    .and_then(|_| err.flush())
    .map_err(|e| Failure::io(e.into()))?;
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| Failure::io(e.into()))?;
    let v = line.trim().to_string();
    match (v.is_empty(), default) {
        (true, Some(d)) => Ok(d.to_string()),
        (true, None) => Err(Failure::usage(format!("no {} given", what.to_lowercase()))),
        _ => Ok(v),
    }
}

/// Resolves DIST RELEASE ARCH, prompting on a TTY when some are missing.
pub fn wanted(
    ctx: &Ctx,
    client: &Client,
    dist: Option<String>,
    release: Option<String>,
    arch: Option<String>,
    variant: &str,
) -> Result<Wanted, Failure> {
    if let (Some(d), Some(r)) = (&dist, &release) {
        let arch = arch.unwrap_or_else(davit_fetch::host_arch);
        return Ok(Wanted::new(d, r, &arch, variant));
    }
    let missing: Vec<&str> = [("DIST", dist.is_none()), ("RELEASE", release.is_none())]
        .iter()
        .filter(|(_, m)| *m)
        .map(|(n, _)| *n)
        .collect();
    if !std::io::stdin().is_terminal() || ctx.json {
        return Err(Failure::usage(format!(
            "missing {}: run `davit fetch DIST RELEASE [ARCH]`; `davit images` lists what the server has",
            missing.join(" and ")
        )));
    }
    let index = client.index(&ctx.term)?;
    let all = index.filter(dist.as_deref(), None, None, Some(variant));
    eprint!("{}", table(&all));
    let d = match dist {
        Some(d) => d,
        None => prompt("Distribution", None)?,
    };
    let r = match release {
        Some(r) => r,
        None => prompt("Release", None)?,
    };
    let host = davit_fetch::host_arch();
    let a = match arch {
        Some(a) => a,
        None => prompt("Architecture", Some(&host))?,
    };
    Ok(Wanted::new(&d, &r, &a, variant))
}

pub fn fetch(ctx: &Ctx, a: FetchArgs) -> Result<(), Failure> {
    let client = a.source.client(ctx)?;
    let want = wanted(ctx, &client, a.dist, a.release, a.arch, &a.variant)?;
    let got = client.fetch(&want, &ctx.term)?;
    let lxc = if a.lxc_cache {
        let root = a.lxc_cache_dir.clone().unwrap_or_else(paths::lxc_cache_dir);
        let d = davit_fetch::bundle::seed_lxc_cache(&got.entry, &root)?;
        ctx.term
            .say(&format!("seeded LXC's cache at {}", d.display()));
        Some(d)
    } else {
        None
    };
    if ctx.json {
        let mut v = serde_json::to_value(&got).expect("serialisable");
        if let Some(d) = lxc {
            v["lxc_cache"] = serde_json::json!(d);
        }
        ctx.print_json(&v);
    } else {
        let m = &got.entry.manifest;
        let how = match got.outcome {
            davit_fetch::Outcome::Downloaded => "downloaded",
            davit_fetch::Outcome::UpToDate => "up to date",
            davit_fetch::Outcome::Offline => "used offline",
            davit_fetch::Outcome::Stale => "used from the cache (server unreachable)",
        };
        let by = match &m.signer {
            Some(s) => format!("verified by {s} ({})", m.verified),
            None => "NOT verified".to_string(),
        };
        ctx.term.say(&format!(
            "{} build {}: {how}, {by}\n  {}",
            m.image.tuple(),
            m.image.build,
            got.entry.dir.display()
        ));
    }
    Ok(())
}
