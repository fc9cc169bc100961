//! `davit publish`.

use std::path::PathBuf;

use clap::Args;
use davit_fetch::publish::{publish as run, PublishOptions};
use davit_fetch::verify::Signer;

use crate::ctx::{Ctx, Failure};

#[derive(Args)]
pub struct PublishArgs {
    /// A built rootfs: a directory, or a tarball (plain, xz, gzip or zstd).
    pub rootfs: PathBuf,
    #[arg(long)]
    pub dist: String,
    #[arg(long)]
    pub release: String,
    /// Debian-style architecture [default: the host's].
    #[arg(long)]
    pub arch: Option<String>,
    #[arg(long, default_value = "default")]
    pub variant: String,
    /// Signing key: fingerprint, key id or user id of a secret key.
    #[arg(long)]
    pub key: String,
    /// GnuPG home that holds the secret key [default: gpg's own].
    #[arg(long, env = "GNUPGHOME")]
    pub gnupg_home: Option<PathBuf>,
    /// The server tree to write into.
    #[arg(long)]
    pub to: PathBuf,
    /// Build id [default: now, %Y%m%d_%H:%M UTC].
    #[arg(long)]
    pub build: Option<String>,
    /// How many builds of this image to keep.
    #[arg(long, default_value_t = 3)]
    pub keep: usize,
    /// When the image expires, e.g. 30d, 12h, 3600s.
    #[arg(long, default_value = "30d", value_parser = parse_duration)]
    pub expiry: i64,
    /// The meta `config` file [default: LXC's common.conf and lxc.arch].
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The meta `config-user` file [default: config plus userns.conf].
    #[arg(long)]
    pub config_user: Option<PathBuf>,
    /// A file whose text is printed after `davit create`.
    #[arg(long)]
    pub create_message: Option<PathBuf>,
    /// Files in the rootfs that get LXC_NAME substitution; repeatable.
    #[arg(long = "template", default_values_t = ["/etc/hostname".to_string(), "/etc/hosts".to_string()])]
    pub templates: Vec<String>,
    /// Leave the image out of index-user (it does not work unprivileged).
    #[arg(long)]
    pub no_user: bool,
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(0..=9))]
    pub xz_preset: u32,
    /// xz block size, e.g. 24M (xz -T0 -6 uses 24 MiB).
    #[arg(long, default_value = "24M", value_parser = parse_size)]
    pub xz_block_size: u64,
    /// Replace a build with the same id.
    #[arg(long)]
    pub force: bool,
}

pub fn parse_duration(s: &str) -> Result<i64, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: i64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 30d, 12h or 3600s"))?;
    let mul = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        "w" => 7 * 86400,
        _ => {
            return Err(format!(
                "unknown unit {unit:?} in {s:?}; use s, m, h, d or w"
            ))
        }
    };
    Ok(n * mul)
}

pub fn parse_size(s: &str) -> Result<u64, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size like 512M"))?;
    let mul = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KIB" => 1 << 10,
        "M" | "MIB" => 1 << 20,
        "G" | "GIB" => 1 << 30,
        _ => return Err(format!("unknown unit {unit:?} in {s:?}; use K, M or G")),
    };
    Ok(n * mul)
}

fn read_opt(p: &Option<PathBuf>) -> Result<Option<String>, Failure> {
    p.as_ref()
        .map(|p| {
            std::fs::read_to_string(p).map_err(|e| {
                Failure::io(anyhow::anyhow!(e).context(format!("cannot read {}", p.display())))
            })
        })
        .transpose()
}

pub fn publish(ctx: &Ctx, a: PublishArgs) -> Result<(), Failure> {
    let mut signer = Signer::new(a.gnupg_home.as_deref(), &a.key)?;
    let o = PublishOptions {
        rootfs: a.rootfs,
        dist: a.dist,
        release: a.release,
        arch: davit_fetch::normalize_arch(&a.arch.unwrap_or_else(davit_fetch::host_arch)),
        variant: a.variant,
        build: a.build,
        to: a.to,
        keep: a.keep,
        expiry_secs: a.expiry,
        config: read_opt(&a.config)?,
        config_user: read_opt(&a.config_user)?,
        create_message: read_opt(&a.create_message)?,
        templates: a.templates,
        user: !a.no_user,
        xz_preset: a.xz_preset,
        xz_block_size: a.xz_block_size,
        force: a.force,
    };
    let p = run(&o, &mut signer, &ctx.term)?;
    if ctx.json {
        ctx.print_json(&p);
    } else {
        ctx.term.say(&format!(
            "published {} build {} in {} (signed by {})",
            p.image.tuple(),
            p.image.build,
            p.dir.display(),
            p.signer
        ));
    }
    Ok(())
}
