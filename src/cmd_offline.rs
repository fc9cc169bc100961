//! `davit mirror`, `export`, `import` and `cache`: images without a network.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use davit_fetch::bundle;
use davit_fetch::mirror::{Filters, MirrorOptions};
use davit_fetch::verify::Signer;
use davit_fetch::{Image, Wanted};
use serde_json::json;

use crate::cmd_fetch::SourceArgs;
use crate::cmd_publish::parse_duration;
use crate::ctx::{now, Ctx, Failure};

#[derive(Args)]
pub struct MirrorArgs {
    /// The upstream server (same forms as --server).
    #[arg(long)]
    pub from: String,
    /// The mirror tree to create or update.
    #[arg(long)]
    pub to: PathBuf,
    /// Only these distributions (repeatable).
    #[arg(long)]
    pub dist: Vec<String>,
    /// Only these releases (repeatable).
    #[arg(long)]
    pub release: Vec<String>,
    /// Only these architectures (repeatable).
    #[arg(long)]
    pub arch: Vec<String>,
    /// Only these variants (repeatable).
    #[arg(long)]
    pub variant: Vec<String>,
    /// Builds to keep per image.
    #[arg(long, default_value_t = 2)]
    pub keep: usize,
    /// Re-sign a filtered index with this local key instead of keeping upstream's.
    #[arg(long)]
    pub sign_key: Option<String>,
    /// GnuPG home holding --sign-key.
    #[arg(long)]
    pub gnupg_home: Option<PathBuf>,
    #[command(flatten)]
    pub source: SourceArgs,
}

pub fn mirror(ctx: &Ctx, mut a: MirrorArgs) -> Result<(), Failure> {
    a.source.server = a.from.clone();
    let client = a.source.client(ctx)?;
    let sign = match &a.sign_key {
        Some(k) => Some(Signer::new(a.gnupg_home.as_deref(), k)?),
        None => None,
    };
    let mut o = MirrorOptions {
        to: a.to,
        filters: Filters {
            dist: a.dist,
            release: a.release,
            arch: a.arch,
            variant: a.variant,
        },
        keep: a.keep,
        sign,
    };
    let r = client.mirror(&mut o, &ctx.term)?;
    if ctx.json {
        ctx.print_json(&r);
    } else {
        ctx.term.say(&format!(
            "mirrored {} image(s) into {}: {} new build(s), {} already present, {} pruned{}",
            r.images.len(),
            o.to.display(),
            r.downloaded.len(),
            r.present.len(),
            r.pruned.len(),
            if r.resigned { ", index re-signed" } else { "" }
        ));
    }
    Ok(())
}

#[derive(Args)]
pub struct ExportArgs {
    pub dist: String,
    pub release: String,
    pub arch: Option<String>,
    #[arg(long, default_value = "default")]
    pub variant: String,
    /// The bundle file to write.
    #[arg(short, long)]
    pub output: PathBuf,
    #[command(flatten)]
    pub source: SourceArgs,
}

pub fn export(ctx: &Ctx, a: ExportArgs) -> Result<(), Failure> {
    let client = a.source.client(ctx)?;
    let arch = a.arch.unwrap_or_else(davit_fetch::host_arch);
    let want = Wanted::new(&a.dist, &a.release, &arch, &a.variant);
    let Some(entry) = client.cache().find(&want) else {
        return Err(davit_fetch::Error::NotCached {
            image: want.tuple(),
            cache: client.cache().root().to_path_buf(),
        }
        .into());
    };
    let info = bundle::export(&entry, &a.output)?;
    if ctx.json {
        ctx.print_json(&json!({"bundle": a.output, "image": info.image, "index": info.index}));
    } else {
        ctx.term.say(&format!(
            "wrote {} build {} to {}",
            info.image.tuple(),
            info.image.build,
            a.output.display()
        ));
    }
    Ok(())
}

#[derive(Args)]
pub struct ImportArgs {
    /// A bundle written by `davit export`.
    #[arg(required_unless_present = "rootfs", conflicts_with_all = ["rootfs", "meta"])]
    pub bundle: Option<PathBuf>,
    /// A local rootfs tarball (with --meta), as lxc-local takes; FILE.asc beside it is checked.
    #[arg(long, requires_all = ["meta", "dist", "release"])]
    pub rootfs: Option<PathBuf>,
    /// The local meta tarball that goes with --rootfs.
    #[arg(long)]
    pub meta: Option<PathBuf>,
    #[arg(long)]
    pub dist: Option<String>,
    #[arg(long)]
    pub release: Option<String>,
    #[arg(long)]
    pub arch: Option<String>,
    #[arg(long, default_value = "default")]
    pub variant: String,
    /// Build id for a local pair [default: local_ and the current time].
    #[arg(long)]
    pub build: Option<String>,
    #[command(flatten)]
    pub source: SourceArgs,
}

pub fn import(ctx: &Ctx, a: ImportArgs) -> Result<(), Failure> {
    let opts = a.source.options(ctx)?;
    let got = match (&a.bundle, &a.rootfs, &a.meta) {
        (Some(b), _, _) => bundle::import_bundle(&opts, b, &ctx.term)?,
        (None, Some(r), Some(m)) => {
            let arch =
                davit_fetch::normalize_arch(&a.arch.clone().unwrap_or_else(davit_fetch::host_arch));
            let dist = a.dist.clone().unwrap_or_default();
            let release = a.release.clone().unwrap_or_default();
            let build = a
                .build
                .clone()
                .unwrap_or_else(|| format!("local_{}", now()));
            let image = Image {
                path: format!("/images/{dist}/{release}/{arch}/{}/{build}/", a.variant),
                id: davit_types::ImageId {
                    dist,
                    release,
                    arch,
                    variant: a.variant.clone(),
                    build,
                },
            };
            davit_fetch::Index::parse(
                &format!(
                    "{};{};{};{};{};{}\n",
                    image.dist, image.release, image.arch, image.variant, image.build, image.path
                ),
                "--dist/--release/--arch/--variant/--build",
            )?;
            bundle::import_local(&opts, r, m, &image, &ctx.term)?
        }
        _ => {
            return Err(Failure::usage(
                "give a bundle file, or --rootfs with --meta, --dist and --release",
            ))
        }
    };
    if ctx.json {
        ctx.print_json(&got);
    } else {
        let m = &got.entry.manifest;
        ctx.term.say(&format!(
            "imported {} build {} ({}) into {}",
            m.image.tuple(),
            m.image.build,
            m.verified,
            got.entry.dir.display()
        ));
    }
    Ok(())
}

#[derive(Subcommand)]
pub enum CacheCmd {
    /// Show the cached images.
    List(CacheArgs),
    /// Remove cached images (all, or those not seen on a server for a while)
    /// and every base no container uses.
    Prune(PruneArgs),
    /// Re-hash every cached image and every base against its record.
    Verify(CacheArgs),
}

#[derive(Args)]
pub struct CacheArgs {
    /// Cache directory [default: /var/cache/davit as root, $XDG_CACHE_HOME/davit as a user].
    #[arg(long, env = "DAVIT_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
}

#[derive(Args)]
pub struct PruneArgs {
    /// Only images whose server last listed them longer ago than this (e.g. 30d).
    #[arg(long, value_parser = parse_duration)]
    pub older_than: Option<i64>,
    #[command(flatten)]
    pub cache: CacheArgs,
}

pub fn cache(ctx: &Ctx, c: CacheCmd) -> Result<(), Failure> {
    match c {
        CacheCmd::List(a) => {
            let cache =
                davit_fetch::Cache::new(a.cache_dir.unwrap_or_else(crate::paths::cache_dir));
            let list = cache.list();
            if ctx.json {
                let v: Vec<serde_json::Value> = list
                    .iter()
                    .map(|e| {
                        json!({"image": e.manifest.image, "dir": e.dir, "server": e.manifest.server, "verified": e.manifest.verified,
                        "signer": e.manifest.signer, "size": e.size(), "fetched_at": e.manifest.fetched_at,
                        "last_checked": e.last_checked, "expiry": e.expiry, "expired": e.expired(now())})
                    })
                    .collect();
                let bases: Vec<serde_json::Value> = crate::paths::store()?
                    .bases()
                    .list()
                    .iter()
                    .map(|b| json!({"key": b.key, "dir": b.dir, "image": b.meta.image, "digest": b.meta.digest,
                        "entries": b.meta.entries, "bytes": b.meta.bytes, "shifted": b.meta.shifted, "users": b.refs()}))
                    .collect();
                ctx.print_json(&json!({"images": v, "bases": bases}));
            } else {
                println!(
                    "{:<40} {:<16} {:>10}  {:<10}  SERVER",
                    "IMAGE", "BUILD", "SIZE", "VERIFIED"
                );
                for e in &list {
                    let m = &e.manifest;
                    let exp = if e.expired(now()) { " (expired)" } else { "" };
                    println!(
                        "{:<40} {:<16} {:>10}  {:<10}  {}{exp}",
                        m.image.tuple(),
                        m.image.build,
                        e.size(),
                        m.verified,
                        m.server
                    );
                }
                let bases = crate::paths::store()?.bases().list();
                if !bases.is_empty() {
                    println!("\n{:<72} {:>10}  USERS", "BASE", "BYTES");
                    for b in &bases {
                        println!("{:<72} {:>10}  {}", b.key, b.meta.bytes, b.refs().len());
                    }
                }
            }
        }
        CacheCmd::Verify(a) => {
            let cache =
                davit_fetch::Cache::new(a.cache_dir.unwrap_or_else(crate::paths::cache_dir));
            let mut results = Vec::new();
            let mut bad = 0;
            for e in cache.list() {
                let r = e.verify();
                bad += usize::from(r.is_err());
                results.push(json!({"kind": "image", "name": format!("{} {}", e.manifest.image.tuple(), e.manifest.image.build),
                    "dir": e.dir, "ok": r.is_ok(), "error": r.err().map(|e| e.to_string())}));
            }
            let store = crate::paths::store()?;
            for b in store.bases().list() {
                let r = store.verify_base(&b).map_err(Failure::from);
                bad += usize::from(r.is_err());
                results.push(
                    json!({"kind": "base", "name": b.key, "dir": b.dir, "ok": r.is_ok(),
                    "digest": b.meta.digest, "error": r.err().map(|e| format!("{:#}", e.err))}),
                );
            }
            if ctx.json {
                ctx.print_json(&results);
            } else {
                for r in &results {
                    let ok = r["ok"].as_bool().unwrap_or(false);
                    println!(
                        "{:<6} {:<5} {}{}",
                        r["kind"].as_str().unwrap_or(""),
                        if ok { "OK" } else { "BAD" },
                        r["name"].as_str().unwrap_or(""),
                        r["error"]
                            .as_str()
                            .map(|e| format!(": {e}"))
                            .unwrap_or_default()
                    );
                }
            }
            if bad > 0 {
                return Err(Failure::new(
                    crate::ctx::exit::VERIFY,
                    anyhow::anyhow!("{bad} of {} cached images and bases failed verification; `davit fetch --flush-cache` re-downloads an image, and `davit cache prune` removes an unused base so the next create unpacks it again", results.len()),
                ));
            }
        }
        CacheCmd::Prune(a) => {
            let cache =
                davit_fetch::Cache::new(a.cache.cache_dir.unwrap_or_else(crate::paths::cache_dir));
            let removed = cache.prune(a.older_than, now())?;
            let bases = crate::paths::store()?.prune_bases()?;
            if ctx.json {
                let v: Vec<&Image> = removed.iter().map(|e| &e.manifest.image).collect();
                ctx.print_json(&json!({"removed": v, "bases": bases}));
            } else {
                for k in &bases.removed {
                    ctx.term.say(&format!("removed base {k}"));
                }
                for (k, users) in &bases.in_use {
                    ctx.term.say(&format!(
                        "kept base {k}: in use by {}",
                        users
                            .iter()
                            .map(|u| u.display().to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
                for e in &removed {
                    ctx.term.say(&format!(
                        "removed {} build {}",
                        e.manifest.image.tuple(),
                        e.manifest.image.build
                    ));
                }
            }
        }
    }
    Ok(())
}
