//! `davit create`, `davit destroy` and `davit unpack`.

use std::fs;
use std::path::{Path, PathBuf};

use clap::Args;
use davit_rootfs::idmap::IdMaps;
use davit_rootfs::meta::{self, LxcConfig};
use davit_rootfs::{subid, UnpackOptions};
use davit_run::config::{IdMap, IdRange, ImageRef, Limits, MountEntry};
use davit_run::ContainerConfig;
use nix::fcntl::{Flock, FlockArg};
use serde_json::json;

use crate::cmd_fetch::{wanted, SourceArgs};
use crate::cmd_run::{check_name, stop_container, Container};
use crate::{exit, paths, Ctx, Failure};

impl From<davit_rootfs::Error> for Failure {
    fn from(e: davit_rootfs::Error) -> Self {
        use davit_rootfs::ErrorKind as K;
        let code = match e.kind() {
            K::Unsafe | K::Corrupt => exit::VERIFY,
            K::Io => exit::IO,
            K::Map => exit::USAGE,
            _ => exit::FAILURE,
        };
        Failure::new(code, e.into())
    }
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> Failure {
    move |e| Failure::io(anyhow::anyhow!(e).context(what))
}

/// The id map of a new container: the invoking user's first subordinate
/// ranges (`root`'s when run as root), unless privileged.
pub fn default_maps() -> Result<IdMaps, Failure> {
    let subuid = std::env::var_os("DAVIT_SUBUID")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/etc/subuid".into());
    let subgid = std::env::var_os("DAVIT_SUBGID")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/etc/subgid".into());
    Ok(subid::default_maps(
        &paths::user_name(),
        nix::unistd::getuid().as_raw(),
        &subuid,
        &subgid,
    )?)
}

fn unpack_any(
    archive: &Path,
    dest: &Path,
    opts: &UnpackOptions,
    ctx: &Ctx,
) -> Result<davit_rootfs::Report, Failure> {
    if paths::is_root() {
        Ok(davit_rootfs::unpack(archive, dest, opts, &ctx.term)?)
    } else {
        let exe = std::env::current_exe().map_err(io("cannot find the davit binary".into()))?;
        Ok(davit_rootfs::unpack_in_userns(
            &exe, archive, dest, opts, &ctx.term,
        )?)
    }
}

/// Removes a tree that may be owned by subordinate ids.
pub fn remove_tree(path: &Path, maps: Option<&IdMaps>) -> Result<(), Failure> {
    if !path.exists() {
        return Ok(());
    }
    match maps {
        Some(m) if !paths::is_root() => {
            let exe = std::env::current_exe().map_err(io("cannot find the davit binary".into()))?;
            davit_rootfs::remove_in_userns(&exe, path, m)?;
            Ok(())
        }
        _ => fs::remove_dir_all(path).map_err(io(format!("cannot remove {}", path.display()))),
    }
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
    #[command(flatten)]
    pub source: SourceArgs,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum NetArg {
    None,
    Bridge,
    User,
}

fn to_run_map(m: &IdMaps) -> IdMap {
    let conv = |v: &Vec<davit_rootfs::IdMapping>| {
        v.iter()
            .map(|r| IdRange {
                container: r.container,
                host: r.host,
                len: r.len,
            })
            .collect()
    };
    IdMap {
        uid: conv(&m.uid),
        gid: conv(&m.gid),
    }
}

fn read_lines(p: Option<PathBuf>) -> Vec<String> {
    p.and_then(|p| fs::read_to_string(p).ok())
        .map(|t| {
            t.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

pub fn create(ctx: &Ctx, a: CreateArgs) -> Result<(), Failure> {
    check_name(&a.name)?;
    let root = paths::containers_dir();
    fs::create_dir_all(&root).map_err(io(format!("cannot create {}", root.display())))?;
    let lockp = root.join(format!(".{}.lock", a.name));
    let lf = fs::File::create(&lockp).map_err(io(format!("cannot create {}", lockp.display())))?;
    let _lock = Flock::lock(lf, FlockArg::LockExclusive).map_err(|(_, e)| {
        Failure::io(anyhow::anyhow!(e).context(format!("cannot lock {}", lockp.display())))
    })?;
    let dir = root.join(&a.name);
    let maps = if a.privileged {
        None
    } else {
        Some(default_maps()?)
    };
    // Leftovers of a killed create of this name.
    for e in fs::read_dir(&root)
        .map_err(io(format!("cannot read {}", root.display())))?
        .flatten()
    {
        if e.file_name()
            .to_string_lossy()
            .starts_with(&format!(".{}.creating-", a.name))
        {
            remove_tree(&e.path(), maps.as_ref())?;
        }
    }
    if dir.exists() {
        if !a.force {
            return Err(Failure::usage(format!("container {:?} already exists in {}; pass --force to replace it, or `davit destroy {}`", a.name, root.display(), a.name)));
        }
        destroy_container(&a.name, &dir)?;
    }

    let client = a.source.client(ctx)?;
    let want = wanted(ctx, &client, a.dist, a.release, a.arch, &a.variant)?;
    let got = client.fetch(&want, &ctx.term)?;
    let entry = &got.entry;
    let user_mode = maps.is_some();

    let staging = tempfile::Builder::new()
        .prefix(&format!(".{}.creating-", a.name))
        .tempdir_in(&root)
        .map_err(io(format!(
            "cannot create a staging directory in {}",
            root.display()
        )))?;
    let rootfs = staging.path().join("rootfs");
    fs::create_dir(&rootfs).map_err(io(format!("cannot create {}", rootfs.display())))?;
    let vars = vec![
        ("LXC_NAME".to_string(), a.name.clone()),
        ("LXC_PATH".to_string(), dir.display().to_string()),
        (
            "LXC_ROOTFS".to_string(),
            dir.join("rootfs").display().to_string(),
        ),
        (
            "LXC_TEMPLATE_CONFIG".to_string(),
            "/usr/share/lxc/config".to_string(),
        ),
        (
            "LXC_HOOK_DIR".to_string(),
            "/usr/share/lxc/hooks".to_string(),
        ),
    ];
    let opts = UnpackOptions {
        maps: maps.clone(),
        excludes: read_lines(entry.relevant_file("excludes", user_mode, None)),
        skip_devices: user_mode,
        threads: 0,
        templates: read_lines(entry.relevant_file("templates", user_mode, None)),
        template_vars: vars.clone(),
    };
    ctx.term.say("unpacking the rootfs");
    let report = match unpack_any(&entry.rootfs(), &rootfs, &opts, ctx) {
        Ok(r) => r,
        Err(e) => {
            let _ = remove_tree(staging.path(), maps.as_ref());
            return Err(e);
        }
    };

    let lxc = entry
        .relevant_file("config", user_mode, None)
        .and_then(|p| fs::read_to_string(p).ok())
        .map(|t| LxcConfig::parse(&meta::substitute(&t, &vars)))
        .unwrap_or_default();
    let mut cfg = ContainerConfig::new(&a.name, dir.join("rootfs"));
    let i = &entry.manifest.image;
    cfg.image = ImageRef {
        dist: i.dist.clone(),
        release: i.release.clone(),
        arch: i.arch.clone(),
        variant: i.variant.clone(),
        build: i.build.clone(),
    };
    cfg.privileged = a.privileged;
    if let Some(m) = &maps {
        cfg.idmap = to_run_map(m);
    }
    cfg.hostname = Some(a.name.clone());
    if let Some(init) = &lxc.init_cmd {
        cfg.init = init.clone();
    }
    cfg.mounts = lxc
        .mounts
        .iter()
        .map(|m| MountEntry {
            source: m.source.clone(),
            target: format!("/{}", m.target.trim_start_matches('/')).into(),
            fstype: m.fstype.clone(),
            options: m.options.clone(),
        })
        .collect();
    cfg.limits = Limits {
        memory: a.memory.or(lxc.memory_limit()),
        pids: a.pids.or(lxc.pids_limit()),
        cpus: a.cpus.or(lxc.cpus()),
    };
    let host = davit_run::net::HostNet::load(&crate::cmd_run::net_config_path())?;
    cfg.network.mode = match a.network {
        Some(NetArg::None) => davit_run::config::NetworkMode::None,
        Some(NetArg::Bridge) => davit_run::config::NetworkMode::Bridge,
        Some(NetArg::User) => davit_run::config::NetworkMode::User,
        None => davit_run::net::default_mode(nix::unistd::geteuid().as_raw(), &host),
    };
    if let Some(addr) = &a.address {
        cfg.network.address = Some(addr.clone());
    }
    let mut ignored = lxc.ignored.clone();
    if !lxc.idmap.is_empty() {
        ignored.push("lxc.idmap (davit maps the invoking user's /etc/subuid range)".into());
    }
    if !lxc.net.is_empty() {
        ignored.push("lxc.net.0.* (set networking with davit's own config)".into());
    }
    let text = cfg.to_toml()?;
    let cfgp = staging.path().join("config.toml");
    fs::write(&cfgp, text).map_err(io(format!("cannot write {}", cfgp.display())))?;
    let staged = staging.keep();
    fs::rename(&staged, &dir).map_err(io(format!(
        "cannot move the new container to {}",
        dir.display()
    )))?;

    let message = entry
        .relevant_file("create-message", user_mode, None)
        .and_then(|p| fs::read_to_string(p).ok());
    if ctx.json {
        ctx.print_json(&json!({
            "name": a.name, "dir": dir, "image": entry.manifest.image, "fetch": got.outcome,
            "unprivileged": user_mode, "idmap": cfg.idmap, "unpack": report, "ignored_lxc_keys": ignored,
        }));
    } else if !ctx.quiet {
        if !ignored.is_empty() {
            ctx.term.warning(&format!(
                "{} ignored these lines of the image's LXC config: {}",
                a.name,
                ignored.join("; ")
            ));
        }
        if !report.skipped.is_empty() {
            ctx.term.say(&format!("skipped {} entries (device nodes cannot be made unprivileged; davit builds /dev at start)", report.skipped.len()));
        }
        if let Some(m) = message {
            println!("\n---\n{}", m.trim_end());
        }
    }
    Ok(())
}

/// Stops (halt, then kill after 10 s) and removes a container: its rootfs,
/// config, cgroups and state.
fn destroy_container(name: &str, dir: &Path) -> Result<(), Failure> {
    let c = Container {
        name: name.to_string(),
        dir: dir.to_path_buf(),
    };
    let cfg = ContainerConfig::load(&c.config_path()).ok();
    match stop_container(name, 10, false) {
        Ok(_) => {}
        Err(e) if e.kind() == davit_run::ErrorKind::NotRunning => {}
        Err(e) => return Err(e.into()),
    }
    let maps = cfg.filter(|c| !c.privileged).map(|c| IdMaps {
        uid: c
            .idmap
            .uid
            .iter()
            .map(|r| davit_rootfs::IdMapping {
                container: r.container,
                host: r.host,
                len: r.len,
            })
            .collect(),
        gid: c
            .idmap
            .gid
            .iter()
            .map(|r| davit_rootfs::IdMapping {
                container: r.container,
                host: r.host,
                len: r.len,
            })
            .collect(),
    });
    remove_tree(&c.rootfs(), maps.as_ref())?;
    fs::remove_dir_all(dir).map_err(io(format!("cannot remove {}", dir.display())))?;
    Ok(())
}

#[derive(Args)]
pub struct DestroyArgs {
    pub name: String,
    /// Stop a running container first.
    #[arg(short, long)]
    pub force: bool,
}

pub fn destroy(ctx: &Ctx, a: DestroyArgs) -> Result<(), Failure> {
    let c = crate::cmd_run::container(&a.name)?;
    let info = davit_run::info::info(
        &paths::runtime_dir(),
        &c.name,
        &davit_run::cgroup::Layout::detect()?,
    )?;
    if info.status != davit_run::state::Status::Stopped && !a.force {
        return Err(Failure::usage(format!(
            "{} is {}; stop it first, or pass -f to stop and destroy it",
            c.name,
            info.status.as_str()
        )));
    }
    destroy_container(&c.name, &c.dir)?;
    if ctx.json {
        ctx.print_json(&json!({"name": c.name, "destroyed": true}));
    } else {
        ctx.term.say(&format!("destroyed {}", c.name));
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
    let maps = if a.privileged {
        None
    } else if a.maps.is_empty() {
        Some(default_maps()?)
    } else {
        Some(IdMaps::parse_spec(&a.maps)?)
    };
    if !paths::is_root() && maps.is_none() {
        return Err(Failure::usage("a plain user cannot unpack with --privileged: ids can only be shifted into your /etc/subuid range"));
    }
    let fresh = !a.dir.exists();
    if fresh {
        fs::create_dir_all(&a.dir).map_err(io(format!("cannot create {}", a.dir.display())))?;
    } else if fs::read_dir(&a.dir)
        .map_err(io(format!("cannot read {}", a.dir.display())))?
        .next()
        .is_some()
    {
        return Err(Failure::usage(format!(
            "{} is not empty; unpack into an empty or new directory",
            a.dir.display()
        )));
    }
    let opts = UnpackOptions {
        maps: maps.clone(),
        excludes: read_lines(a.exclude_file.clone()),
        skip_devices: !paths::is_root(),
        threads: 0,
        templates: Vec::new(),
        template_vars: Vec::new(),
    };
    let report = match unpack_any(&a.tarball, &a.dir, &opts, ctx) {
        Ok(r) => r,
        Err(e) => {
            // Never leave a half-written tree behind.
            if fresh {
                let _ = remove_tree(&a.dir, maps.as_ref());
            }
            return Err(e);
        }
    };
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
