//! `davit create`, `davit destroy`, `davit copy` and `davit unpack`: the
//! arguments, the fetch (or the cached build), and what the store's result
//! says; the container itself is the store's (davit-store).

use std::path::{Path, PathBuf};

use clap::Args;
use davit_rootfs::base::ImageId;
use davit_run::config::{Backend, NetworkMode};
use davit_store::{CopyRequest, CreateRequest, ImageFiles, UnpackRequest};
use davit_types::IdMap;
use serde_json::json;

use crate::cmd_fetch::{wanted, SourceArgs};
use crate::ctx::{Ctx, Failure};
use crate::paths;

/// `--storage`.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StorageArg {
    /// A full private copy of the image.
    Dir,
    /// A shared read-only base and a private upper directory (overlayfs).
    Overlay,
}

#[derive(Args)]
pub struct CreateArgs {
    /// Container name.
    pub name: String,
    pub dist: Option<String>,
    pub release: Option<String>,
    /// Architecture [default: the host's].
    pub arch: Option<String>,
    #[arg(long, default_value = "default")]
    pub variant: String,
    /// Keep the image's ids unshifted (no user namespace): root in the container is root on the host.
    #[arg(long)]
    pub privileged: bool,
    /// Replace an existing (stopped) container of that name.
    #[arg(long)]
    pub force: bool,
    /// Memory limit, e.g. 512M.
    #[arg(long, value_parser = crate::cmd_publish::parse_size)]
    pub memory: Option<u64>,
    /// Maximum number of tasks.
    #[arg(long)]
    pub pids: Option<u64>,
    /// CPU limit in CPUs, e.g. 1.5.
    #[arg(long)]
    pub cpus: Option<f64>,
    /// Networking [default: bridge as root; user (pasta/slirp4netns) or none as a plain user].
    #[arg(long, value_enum)]
    pub network: Option<NetArg>,
    /// Static IPv4 address on the bridge (bridge mode).
    #[arg(long)]
    pub address: Option<String>,
    /// Forward a host port to the container, `[HOSTIP:]HOSTPORT:PORT[/tcp|udp]`
    /// (repeatable): from outside and from the host itself, while it runs.
    #[arg(
        long = "publish",
        short = 'p',
        value_name = "[HOSTIP:]HOSTPORT:PORT[/PROTO]"
    )]
    pub publish: Vec<davit_run::config::Publish>,
    /// Storage backend [default: overlay where the kernel allows it, else dir].
    #[arg(long, value_enum)]
    pub storage: Option<StorageArg>,
    /// Bind a host directory (or file) at PATH inside (repeatable; `:ro`
    /// for read only). As root it is idmapped where the filesystem allows
    /// it: host uid 1000 shows as uid 1000 inside. PATH is resolved inside
    /// the rootfs, never through a link out of it.
    #[arg(long = "mount", value_name = "HOST:PATH[:ro]", value_parser = parse_mount)]
    pub mounts: Vec<(PathBuf, PathBuf, bool)>,
    /// Start it with `davit autostart` (at boot, through the systemd unit).
    #[arg(long)]
    pub autostart: bool,
    /// With --autostart: lower orders start first and stop last.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 0,
        allow_hyphen_values = true
    )]
    pub autostart_order: i32,
    /// With --autostart: seconds to wait after starting it before the next.
    #[arg(long, value_name = "SECS", default_value_t = 0)]
    pub autostart_delay: u64,
    #[command(flatten)]
    pub source: SourceArgs,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum NetArg {
    None,
    Bridge,
    User,
}

/// A verified cache entry as the store reads an image.
struct Fetched<'a>(&'a davit_fetch::Entry);

/// The build of a cache entry, as a base names it.
fn base_image(entry: &davit_fetch::Entry) -> ImageId {
    let i = &entry.manifest.image;
    ImageId {
        dist: i.dist.clone(),
        release: i.release.clone(),
        arch: i.arch.clone(),
        variant: i.variant.clone(),
        build: i.build.clone(),
    }
}

impl ImageFiles for Fetched<'_> {
    fn image(&self) -> ImageId {
        base_image(self.0)
    }
    fn rootfs(&self) -> PathBuf {
        self.0.rootfs()
    }
    fn rootfs_sha256(&self) -> String {
        self.0
            .manifest
            .files
            .get("rootfs.tar.xz")
            .cloned()
            .unwrap_or_default()
    }
    fn meta_file(&self, name: &str, unprivileged: bool) -> Option<PathBuf> {
        self.0.relevant_file(name, unprivileged, None)
    }
}

/// `HOST:PATH[:ro|:rw]`.
fn parse_mount(s: &str) -> Result<(PathBuf, PathBuf, bool), String> {
    let (rest, ro) = match (s.strip_suffix(":ro"), s.strip_suffix(":rw")) {
        (Some(r), _) => (r, true),
        (_, Some(r)) => (r, false),
        _ => (s, false),
    };
    let Some((host, path)) = rest.rsplit_once(':') else {
        return Err(format!("{s:?} is not HOST:PATH[:ro]"));
    };
    if host.is_empty() || !path.starts_with('/') || Path::new(path) == Path::new("/") {
        return Err(format!(
            "{s:?}: give a host path and an absolute path inside other than / (HOST:PATH[:ro])"
        ));
    }
    if Path::new(path)
        .components()
        .any(|c| c == std::path::Component::ParentDir)
    {
        return Err(format!("{s:?}: the path inside may not contain .."));
    }
    Ok((host.into(), path.into(), ro))
}

pub fn create(ctx: &Ctx, a: CreateArgs) -> Result<(), Failure> {
    let store = paths::store()?;
    let req = CreateRequest {
        name: a.name.clone(),
        privileged: a.privileged,
        force: a.force,
        memory: a.memory,
        pids: a.pids,
        cpus: a.cpus,
        network: a.network.map(|n| match n {
            NetArg::None => NetworkMode::None,
            NetArg::Bridge => NetworkMode::Bridge,
            NetArg::User => NetworkMode::User,
        }),
        address: a.address.clone(),
        publish: a.publish.clone(),
        storage: a.storage.map(|s| match s {
            StorageArg::Dir => Backend::Dir,
            StorageArg::Overlay => Backend::Overlay,
        }),
        mounts: a.mounts.clone(),
        autostart: a.autostart,
        autostart_order: a.autostart_order,
        autostart_delay: a.autostart_delay,
        max_file_size: ctx.max_file_size,
    };
    let pending = store.begin_create(req)?;
    if !ctx.json {
        for c in &pending.id_conflicts {
            ctx.term.warning(&format!(
                "{}: someone else can act as this container's ids: {c}; they could write its files. Give {} a range of its own in /etc/subuid and /etc/subgid (`davit check` lists every overlap)",
                a.name,
                store.user_name()
            ));
        }
    }
    let (entry, outcome) = match cached_with_base(ctx, &a, &pending)? {
        Some(e) => (e, json!("cached-base")),
        None => {
            let client = a.source.client(ctx)?;
            let want = wanted(
                ctx,
                &client,
                a.dist.clone(),
                a.release.clone(),
                a.arch.clone(),
                &a.variant,
            )?;
            let got = client.fetch(&want, &ctx.term)?;
            (got.entry, json!(got.outcome))
        }
    };
    let id_conflicts = pending.id_conflicts.clone();
    let made = pending.finish(&Fetched(&entry), &ctx.term)?;
    let cfg = &made.config;
    if ctx.json {
        ctx.print_json(&json!({
            "name": a.name, "dir": made.dir, "image": entry.manifest.image, "fetch": outcome,
            "unprivileged": made.unprivileged, "idmap": cfg.idmap, "unpack": made.report, "ignored_lxc_keys": made.ignored_lxc_keys,
            "refused_lxc_mounts": made.refused_lxc_mounts, "limits": cfg.limits, "id_conflicts": id_conflicts,
            "storage": cfg.storage.backend.as_str(), "base": made.base, "note": made.storage_note,
        }));
    } else if !ctx.quiet {
        if !made.ignored_lxc_keys.is_empty() {
            ctx.term.warning(&format!(
                "{} ignored these lines of the image's LXC config: {}",
                a.name,
                made.ignored_lxc_keys.join("; ")
            ));
        }
        if made.default_pids {
            ctx.term.say(&format!(
                "limits: at most {} tasks (the default; --pids N to change, --pids 0 for none)",
                davit_run::config::DEFAULT_PIDS
            ));
        }
        if !made.refused_lxc_mounts.is_empty() {
            ctx.term.warning(&format!(
                "{} refused these mounts of the image's LXC config (an image may mount only pseudo-filesystems; host directories are the admin's, in config.toml's [[mounts]]): {}",
                a.name,
                made.refused_lxc_mounts.join("; ")
            ));
        }
        for n in store.host_mount_notes(cfg) {
            ctx.term.warning(&format!("{}: {n}", a.name));
        }
        if let Some(report) = made.report.as_ref().filter(|r| !r.skipped.is_empty()) {
            ctx.term.say(&format!("skipped {} entries (device nodes cannot be made unprivileged; davit builds /dev at start)", report.skipped.len()));
        }
        if let Some(m) = &made.message {
            // The image's own text: its escape sequences are shown, not obeyed.
            println!("\n---\n{}", crate::report::printable(m.trim_end()));
        }
    }
    Ok(())
}

/// The warm path (as `lxc-create` with a cached image): with overlay
/// storage, an unexpired cache entry whose base already exists is used
/// without contacting the server. Its small files are re-hashed; the base
/// carries its own integrity record (`davit cache verify`). `--flush-cache`
/// and a missing DIST or RELEASE take the normal path.
fn cached_with_base(
    ctx: &Ctx,
    a: &CreateArgs,
    pending: &davit_store::PendingCreate<'_>,
) -> Result<Option<davit_fetch::Entry>, Failure> {
    let (Some(d), Some(r)) = (&a.dist, &a.release) else {
        return Ok(None);
    };
    if !pending.overlay() || a.source.flush_cache {
        return Ok(None);
    }
    let cache_dir = a.source.cache_dir.clone().unwrap_or_else(paths::cache_dir);
    let arch = a.arch.clone().unwrap_or_else(davit_fetch::host_arch);
    let want = davit_fetch::Wanted::new(d, r, &arch, &a.variant);
    let Some(entry) = davit_fetch::Cache::new(&cache_dir).find(&want) else {
        return Ok(None);
    };
    let offline = a.source.offline;
    if (entry.expired(crate::ctx::now()) && !offline) || entry.verify_meta().is_err() {
        return Ok(None);
    }
    if !pending.has_base(&base_image(&entry)) {
        return Ok(None);
    }
    ctx.term.say(&format!(
        "using the cached build {} and its base (`davit fetch` checks the server for a newer one)",
        entry.manifest.image.build
    ));
    Ok(Some(entry))
}

#[derive(Args)]
pub struct DestroyArgs {
    pub name: String,
    /// Stop a running container first.
    #[arg(short, long)]
    pub force: bool,
}

pub fn destroy(ctx: &Ctx, a: DestroyArgs) -> Result<(), Failure> {
    let d = paths::store()?.destroy(&a.name, a.force)?;
    if ctx.json {
        ctx.print_json(&json!({"name": d.name, "destroyed": true}));
    } else {
        ctx.term.say(&format!("destroyed {}", d.name));
    }
    Ok(())
}

#[derive(Args)]
pub struct CopyArgs {
    /// The container to clone (stopped).
    pub name: String,
    /// The new container's name.
    pub new: String,
    /// Require a cheap clone that shares the base and copies only the
    /// overlay upper directory (as `lxc-copy -s`); refused for dir storage.
    #[arg(short, long)]
    pub snapshot: bool,
}

pub fn copy(ctx: &Ctx, a: CopyArgs) -> Result<(), Failure> {
    let started = std::time::Instant::now();
    let c = paths::store()?.copy(&CopyRequest {
        from: a.name.clone(),
        to: a.new.clone(),
        snapshot: a.snapshot,
    })?;
    let cfg = &c.config;
    let overlay = cfg.storage.backend == Backend::Overlay;
    if ctx.json {
        ctx.print_json(&json!({"name": a.new, "from": a.name, "dir": c.dir, "storage": cfg.storage.backend.as_str(),
            "base": cfg.storage.base, "seconds": started.elapsed().as_secs_f64(), "notes": c.notes}));
    } else {
        for n in &c.notes {
            ctx.term.warning(n);
        }
        ctx.term.say(&format!(
            "copied {} to {} ({} storage{}) in {:.2}s",
            a.name,
            a.new,
            cfg.storage.backend.as_str(),
            if overlay { ", sharing the base" } else { "" },
            started.elapsed().as_secs_f64()
        ));
    }
    Ok(())
}

#[derive(Args)]
pub struct UnpackArgs {
    /// A rootfs tarball: xz (multi-block or concatenated), gzip, zstd or plain tar.
    pub tarball: PathBuf,
    /// An empty (or missing) directory to unpack into.
    pub dir: PathBuf,
    /// Id map, `u:CONT:HOST:LEN`, `g:...` or `b:...` (repeatable)
    /// [default: the invoking user's first /etc/subuid and /etc/subgid ranges].
    #[arg(long = "map")]
    pub maps: Vec<String>,
    /// Keep ids as stored (no shifting).
    #[arg(long, conflicts_with = "maps")]
    pub privileged: bool,
    /// Skip members listed in this file (LXC's excludes-user format).
    #[arg(long)]
    pub exclude_file: Option<PathBuf>,
}

pub fn unpack(ctx: &Ctx, a: UnpackArgs) -> Result<(), Failure> {
    let store = paths::store()?;
    let maps = if a.privileged {
        None
    } else if a.maps.is_empty() {
        Some(store.default_maps()?)
    } else {
        Some(IdMap::parse_spec(&a.maps)?)
    };
    let report = store.unpack_into(
        &UnpackRequest {
            tarball: a.tarball.clone(),
            dir: a.dir.clone(),
            maps,
            exclude_file: a.exclude_file.clone(),
            max_file_size: ctx.max_file_size,
        },
        &ctx.term,
    )?;
    if ctx.json {
        ctx.print_json(&report);
    } else {
        ctx.term.say(&format!(
            "unpacked {} entries ({} bytes) in {:.2}s; skipped {}",
            report.entries,
            report.bytes,
            report.elapsed.as_secs_f64(),
            report.skipped.len()
        ));
    }
    Ok(())
}
