//! `davit create`, `davit destroy` and `davit unpack`.

use std::fs;
use std::path::{Path, PathBuf};

use clap::Args;
use davit_rootfs::idmap::IdMaps;
use davit_rootfs::meta::{self, LxcConfig};
use davit_rootfs::{subid, UnpackOptions};
use davit_run::config::{Backend, ImageRef, Limits, MountEntry, Storage};
use davit_run::ContainerConfig;
use nix::fcntl::{Flock, FlockArg};
use serde_json::json;

use crate::cmd_fetch::{wanted, SourceArgs};
use crate::cmd_run::{check_name, stop_container, Container};
use crate::storage::{self, to_run_map, StorageArg};
use crate::{exit, paths, Ctx, Failure};

impl From<davit_rootfs::Error> for Failure {
    fn from(e: davit_rootfs::Error) -> Self {
        use davit_rootfs::ErrorKind as K;
        let code = match e.kind() {
            K::Unsafe | K::Corrupt => exit::VERIFY,
            K::Io => exit::IO,
            K::Map => exit::USAGE,
            K::Unmapped => exit::UNMAPPED,
            _ => exit::FAILURE,
        };
        Failure::new(code, e.into())
    }
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> Failure {
    move |e| Failure::io(anyhow::anyhow!(e).context(what))
}

/// `/etc/subuid` and `/etc/subgid` (`DAVIT_SUBUID`, `DAVIT_SUBGID` override them).
fn subid_paths() -> (PathBuf, PathBuf) {
    let subuid = std::env::var_os("DAVIT_SUBUID")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/etc/subuid".into());
    let subgid = std::env::var_os("DAVIT_SUBGID")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/etc/subgid".into());
    (subuid, subgid)
}

/// Who else can act as the ids of `maps`: overlapping subid ranges of
/// other users and host accounts inside the range (see
/// `subid::conflicts`). Each can write the files of a container that uses
/// the map.
pub fn map_conflicts(maps: &IdMaps) -> Result<Vec<String>, Failure> {
    let (subuid, subgid) = subid_paths();
    Ok(subid::conflicts(
        &paths::user_name(),
        nix::unistd::getuid().as_raw(),
        maps,
        &subuid,
        &subgid,
        Path::new("/etc/passwd"),
    )?)
}

/// The id map of a new container: the invoking user's first subordinate
/// ranges (`root`'s when run as root), unless privileged.
pub fn default_maps() -> Result<IdMaps, Failure> {
    let (subuid, subgid) = subid_paths();
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
        let exe = paths::davit_exe()?;
        Ok(davit_rootfs::unpack_in_userns(
            &exe, archive, dest, opts, &ctx.term,
        )?)
    }
}

/// Unpacks into `dir` all or nothing. As root: into a staging directory
/// beside it (`.NAME.davit-unpack-XXXXXX`, with the mode and owner of `dir`
/// if it exists), renamed onto `dir` (a new one, or the existing empty one)
/// only once the whole archive is in; a failed unpack removes the staging
/// directory and leaves `dir` as it was, a killed one leaves only the
/// dot-directory. As a plain user (whose unpacked root belongs to a
/// subordinate id, which the user cannot rename in a sticky directory such
/// as /tmp), or when `dir` is a mount point (no rename reaches it): into
/// `dir` itself, and a failure removes it again if it was new, or empties
/// it.
fn unpack_staged(
    archive: &Path,
    dir: &Path,
    existing: Option<&fs::Metadata>,
    opts: &UnpackOptions,
    ctx: &Ctx,
) -> Result<davit_rootfs::Report, Failure> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let parent = match dir.parent() {
        Some(p) if p.as_os_str().is_empty() => Path::new("."),
        Some(p) => p,
        None => Path::new("/"),
    };
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned());
    let mount_point = match (existing, fs::metadata(parent)) {
        (Some(m), Ok(p)) => m.dev() != p.dev(),
        _ => false,
    };
    let maps = opts.maps.as_ref();
    let mode = existing.map_or(0o755, |m| m.mode() & 0o7777);
    let name = match name {
        Some(n) if paths::is_root() && !mount_point => n,
        _ => {
            if existing.is_none() {
                fs::create_dir_all(dir).map_err(io(format!("cannot create {}", dir.display())))?;
            }
            return unpack_any(archive, dir, opts, ctx).inspect_err(|_| {
                if existing.is_none() {
                    let _ = remove_tree(dir, maps);
                } else {
                    empty_dir(dir, maps, mode);
                }
            });
        }
    };
    if existing.is_none() {
        fs::create_dir_all(parent).map_err(io(format!("cannot create {}", parent.display())))?;
    }
    let stage = tempfile::Builder::new()
        .prefix(&format!(".{name}.davit-unpack-"))
        .tempdir_in(parent)
        .map_err(io(format!(
            "cannot make a staging directory in {}",
            parent.display()
        )))?
        .keep();
    let prepare = || -> std::io::Result<()> {
        fs::set_permissions(&stage, fs::Permissions::from_mode(mode))?;
        if let Some(m) = existing {
            std::os::unix::fs::chown(&stage, Some(m.uid()), Some(m.gid()))?;
        }
        Ok(())
    };
    let res = prepare()
        .map_err(io(format!("cannot prepare {}", stage.display())))
        .and_then(|()| unpack_any(archive, &stage, opts, ctx))
        .and_then(|r| {
            fs::rename(&stage, dir)
                .map_err(io(format!(
                    "cannot rename {} to {}",
                    stage.display(),
                    dir.display()
                )))
                .map(|()| r)
        });
    if res.is_err() {
        let _ = remove_tree(&stage, maps);
    }
    res
}

/// Removes everything inside `dir` (which was empty, with `mode`, before
/// a failed unpack), best effort.
fn empty_dir(dir: &Path, maps: Option<&IdMaps>, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    if paths::is_root() {
        for e in fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            let _ = if e.file_type().is_ok_and(|t| t.is_dir()) {
                fs::remove_dir_all(&p)
            } else {
                fs::remove_file(&p)
            };
        }
    } else if remove_tree(dir, maps).is_ok() {
        // A plain user's unpacked entries belong to subordinate ids: only
        // the user namespace can remove them, and it takes the directory.
        let _ = fs::create_dir(dir);
    }
    // Mode and owner of `dir` itself may have come from the archive.
    let _ = fs::set_permissions(dir, fs::Permissions::from_mode(mode));
}

/// Removes a tree that may be owned by subordinate ids.
pub fn remove_tree(path: &Path, maps: Option<&IdMaps>) -> Result<(), Failure> {
    if !path.exists() {
        return Ok(());
    }
    match maps {
        Some(m) if !paths::is_root() => {
            let exe = paths::davit_exe()?;
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

/// The containers directory, private to its owner (0700), made so or
/// tightened: a container's rootfs holds setuid programs (setuid root in a
/// privileged one) and device nodes, which no other host user may reach.
/// Init opens the rootfs before it takes the container's ids, so nothing
/// inside needs to search it either.
fn private_dir(root: &Path) -> Result<(), Failure> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if !root.is_dir() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root)
            .map_err(io(format!("cannot create {}", root.display())))?;
    }
    let md = fs::metadata(root).map_err(io(format!("cannot read {}", root.display())))?;
    if md.permissions().mode() & 0o077 != 0 {
        fs::set_permissions(root, fs::Permissions::from_mode(0o700)).map_err(io(format!(
            "cannot make {} private (chmod 0700); other users could reach the containers' setuid programs",
            root.display()
        )))?;
    }
    Ok(())
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

/// `--mount`s as config entries, each host path made absolute and checked
/// to exist now, before anything is unpacked.
fn host_mounts(list: &[(PathBuf, PathBuf, bool)]) -> Result<Vec<MountEntry>, Failure> {
    list.iter()
        .map(|(host, path, ro)| {
            let src = fs::canonicalize(host).map_err(io(format!(
                "--mount {}: cannot use the host path (make it first, or fix the path)",
                host.display()
            )))?;
            Ok(MountEntry {
                source: src.to_string_lossy().into_owned(),
                target: path.clone(),
                fstype: "bind".into(),
                options: format!("idmap,nosuid,nodev{}", if *ro { ",ro" } else { "" }),
            })
        })
        .collect()
}

pub fn create(ctx: &Ctx, a: CreateArgs) -> Result<(), Failure> {
    check_name(&a.name)?;
    let host_mounts = host_mounts(&a.mounts)?;
    let root = paths::containers_dir();
    private_dir(&root)?;
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
    let id_conflicts = match &maps {
        Some(m) => map_conflicts(m)?,
        None => Vec::new(),
    };
    if !ctx.json {
        for c in &id_conflicts {
            ctx.term.warning(&format!(
                "{}: someone else can act as this container's ids: {c}; they could write its files. Give {} a range of its own in /etc/subuid and /etc/subgid (`davit check` lists every overlap)",
                a.name,
                paths::user_name()
            ));
        }
    }
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

    let chosen = storage::choose(a.storage, a.privileged, maps.as_ref())?;
    let overlay = chosen.backend == Backend::Overlay;
    // The ids a base is shifted into: none for a raw (idmapped or
    // privileged) base.
    let shifted = if chosen.raw_base { None } else { maps.clone() };
    let (entry, outcome) = match cached_with_base(ctx, &a, overlay, shifted.as_ref())? {
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
    let entry = &entry;
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
    let templates = read_lines(entry.relevant_file("templates", user_mode, None));
    let mut storage_cfg = Storage::default();
    let mut base_lock = None;
    let mut base_json = serde_json::Value::Null;
    let report = if overlay {
        let excludes = read_lines(entry.relevant_file("excludes", !chosen.raw_base, None));
        // The base's lock is held until the container is in place, so a
        // concurrent `cache prune` cannot take the base in between.
        let made = (|| -> Result<(Option<davit_rootfs::Report>, davit_rootfs::base::BaseLock), Failure> {
            let (base, lock, fresh) = storage::ensure_base(ctx, entry, shifted.as_ref(), excludes)?;
            let ov = staging.path().join("overlay");
            fs::create_dir(&ov).map_err(io(format!("cannot create {}", ov.display())))?;
            let shift = if chosen.idmapped { maps.as_ref() } else { None };
            storage::prepare_upper(
                &base,
                &ov.join("upper"),
                &ov.join("work"),
                &templates,
                &vars,
                shift,
            )?;
            storage::store().add_ref(&base, &dir, &lock)?;
            storage_cfg = Storage {
                backend: Backend::Overlay,
                base: Some(base.rootfs()),
                upper: Some(dir.join("overlay/upper")),
                work: Some(dir.join("overlay/work")),
                idmapped_lower: chosen.idmapped,
            };
            base_json = json!({"key": base.key, "dir": base.dir, "made": fresh.is_some(), "digest": base.meta.digest, "idmapped": chosen.idmapped, "shifted": base.meta.shifted});
            Ok((fresh, lock))
        })();
        match made {
            Ok((r, lock)) => {
                base_lock = Some(lock);
                r
            }
            Err(e) => {
                let _ = remove_tree(staging.path(), maps.as_ref());
                return Err(e);
            }
        }
    } else {
        let opts = UnpackOptions {
            maps: maps.clone(),
            excludes: read_lines(entry.relevant_file("excludes", user_mode, None)),
            skip_devices: user_mode,
            threads: 0,
            templates: templates.clone(),
            template_vars: vars.clone(),
            max_file_size: ctx.max_file_size,
        };
        ctx.term.say("unpacking the rootfs");
        match unpack_any(&entry.rootfs(), &rootfs, &opts, ctx) {
            Ok(r) => Some(r),
            Err(e) => {
                let _ = remove_tree(staging.path(), maps.as_ref());
                return Err(e);
            }
        }
    };
    if let Some(n) = &chosen.note {
        ctx.term.say(n);
    }

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
    cfg.storage = storage_cfg;
    if let Some(m) = &maps {
        cfg.idmap = to_run_map(m);
    }
    cfg.hostname = Some(a.name.clone());
    if let Some(init) = &lxc.init_cmd {
        cfg.init = init.clone();
    }
    // An image is untrusted: it may mount pseudo-filesystems only.
    let mut refused_mounts = Vec::new();
    let mut mounts = Vec::new();
    for m in &lxc.mounts {
        match m.refused_for_an_image() {
            Some(why) => refused_mounts.push(format!(
                "lxc.mount.entry = {} {} {} {}: {why}",
                m.source, m.target, m.fstype, m.options
            )),
            None => mounts.push(m),
        }
    }
    cfg.mounts = mounts
        .into_iter()
        .map(|m| MountEntry {
            source: m.source.clone(),
            target: format!("/{}", m.target.trim_start_matches('/')).into(),
            fstype: m.fstype.clone(),
            options: m.options.clone(),
        })
        .collect();
    cfg.mounts.extend(host_mounts);
    cfg.limits = Limits {
        memory: a.memory.or(lxc.memory_limit()),
        // A default, so that no container can empty the host's pid table;
        // `--pids 0` asks for none.
        pids: match a.pids.or(lxc.pids_limit()) {
            Some(0) => None,
            Some(n) => Some(n),
            None => Some(davit_run::config::DEFAULT_PIDS),
        },
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
    // The image's terminals, at most davit's cap.
    cfg.ttys = lxc.tty_max.map_or(davit_run::config::DEFAULT_TTYS, |n| {
        n.min(davit_run::config::MAX_TTYS)
    });
    cfg.autostart = a.autostart;
    cfg.autostart_order = a.autostart_order;
    cfg.autostart_delay = a.autostart_delay;
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
    drop(base_lock);

    let message = entry
        .relevant_file("create-message", user_mode, None)
        .and_then(|p| fs::read_to_string(p).ok());
    if ctx.json {
        ctx.print_json(&json!({
            "name": a.name, "dir": dir, "image": entry.manifest.image, "fetch": outcome,
            "unprivileged": user_mode, "idmap": cfg.idmap, "unpack": report, "ignored_lxc_keys": ignored,
            "refused_lxc_mounts": refused_mounts, "limits": cfg.limits, "id_conflicts": id_conflicts,
            "storage": cfg.storage.backend.as_str(), "base": base_json, "note": chosen.note,
        }));
    } else if !ctx.quiet {
        if !ignored.is_empty() {
            ctx.term.warning(&format!(
                "{} ignored these lines of the image's LXC config: {}",
                a.name,
                ignored.join("; ")
            ));
        }
        if a.pids.is_none() && lxc.pids_limit().is_none() {
            ctx.term.say(&format!(
                "limits: at most {} tasks (the default; --pids N to change, --pids 0 for none)",
                davit_run::config::DEFAULT_PIDS
            ));
        }
        if !refused_mounts.is_empty() {
            ctx.term.warning(&format!(
                "{} refused these mounts of the image's LXC config (an image may mount only pseudo-filesystems; host directories are the admin's, in config.toml's [[mounts]]): {}",
                a.name,
                refused_mounts.join("; ")
            ));
        }
        for n in crate::cmd_run::host_mount_notes(&cfg) {
            ctx.term.warning(&format!("{}: {n}", a.name));
        }
        if let Some(report) = report.as_ref().filter(|r| !r.skipped.is_empty()) {
            ctx.term.say(&format!("skipped {} entries (device nodes cannot be made unprivileged; davit builds /dev at start)", report.skipped.len()));
        }
        if let Some(m) = message {
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
    overlay: bool,
    shifted: Option<&IdMaps>,
) -> Result<Option<davit_fetch::Entry>, Failure> {
    let (Some(d), Some(r)) = (&a.dist, &a.release) else {
        return Ok(None);
    };
    if !overlay || a.source.flush_cache {
        return Ok(None);
    }
    let cache_dir = a.source.cache_dir.clone().unwrap_or_else(paths::cache_dir);
    let arch = a.arch.clone().unwrap_or_else(davit_fetch::host_arch);
    let want = davit_fetch::Wanted::new(d, r, &arch, &a.variant);
    let Some(entry) = davit_fetch::Cache::new(&cache_dir).find(&want) else {
        return Ok(None);
    };
    let offline = a.source.offline;
    if (entry.expired(crate::now()) && !offline) || entry.verify_meta().is_err() {
        return Ok(None);
    }
    let key = davit_rootfs::base::BaseStore::key(&storage::base_image(&entry), shifted);
    if storage::store().get(&key).is_none() {
        return Ok(None);
    }
    ctx.term.say(&format!(
        "using the cached build {} and its base (`davit fetch` checks the server for a newer one)",
        entry.manifest.image.build
    ));
    Ok(Some(entry))
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
    // The last console log goes with it.
    if let Ok(l) = davit_run::state::StateStore::new(&paths::runtime_dir(), name).lock() {
        let _ = l.purge();
    }
    let maps = cfg.as_ref().and_then(storage::container_maps);
    remove_tree(&c.rootfs(), maps.as_ref())?;
    // An overlay container's own layers; its base stays for the others
    // (and for the next create) until `davit cache prune`.
    remove_tree(&dir.join("overlay"), maps.as_ref())?;
    remove_tree(&dir.join("snapshots"), maps.as_ref())?;
    fs::remove_dir_all(dir).map_err(io(format!("cannot remove {}", dir.display())))?;
    if let Some(base) = cfg.as_ref().and_then(|c| c.storage.base.as_ref()) {
        storage::unref(base, dir)?;
    }
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
    let src = crate::cmd_run::container(&a.name)?;
    check_name(&a.new)?;
    let root = paths::containers_dir();
    private_dir(&root)?;
    let lockp = root.join(format!(".{}.lock", a.new));
    let lf = fs::File::create(&lockp).map_err(io(format!("cannot create {}", lockp.display())))?;
    let _lock = Flock::lock(lf, FlockArg::LockExclusive).map_err(|(_, e)| {
        Failure::io(anyhow::anyhow!(e).context(format!("cannot lock {}", lockp.display())))
    })?;
    let dir = root.join(&a.new);
    if dir.exists() {
        return Err(Failure::usage(format!(
            "container {:?} already exists in {}; pick another name or `davit destroy {}`",
            a.new,
            root.display(),
            a.new
        )));
    }
    // The source's state lock, held until the copy is in place: a `start`
    // of the source waits instead of writing into what is being copied.
    let _src_lock = davit_run::state::StateStore::new(&paths::runtime_dir(), &src.name).lock()?;
    let info = davit_run::info::info(
        &paths::runtime_dir(),
        &src.name,
        &davit_run::cgroup::Layout::detect()?,
    )?;
    if info.status != davit_run::state::Status::Stopped {
        return Err(Failure::usage(format!(
            "{} is {}: stop it first (`davit stop {}`), so the copy is consistent",
            src.name,
            info.status.as_str(),
            src.name
        )));
    }
    let mut cfg = ContainerConfig::load(&src.config_path())?;
    let overlay = cfg.storage.backend == Backend::Overlay;
    if a.snapshot && !overlay {
        return Err(Failure::usage(format!(
            "{} uses dir storage, so a snapshot would copy the whole rootfs; run `davit copy {} {}` without --snapshot for a full copy",
            src.name, src.name, a.new
        )));
    }
    let maps = storage::container_maps(&cfg);
    let staging = tempfile::Builder::new()
        .prefix(&format!(".{}.creating-", a.new))
        .tempdir_in(&root)
        .map_err(io(format!(
            "cannot create a staging directory in {}",
            root.display()
        )))?;
    let started = std::time::Instant::now();
    let copied = (|| -> Result<(), Failure> {
        let exe = paths::davit_exe()?;
        let what = if overlay { "overlay" } else { "rootfs" };
        let from = src.dir.join(what);
        let to = staging.path().join(what);
        // As lxc-copy does, /etc/hostname naming the old container is
        // rewritten in the copy, and so is that name in /etc/hosts (in the
        // clone's own layer for overlay).
        let tree = if overlay {
            to.join("upper")
        } else {
            to.clone()
        };
        let rename = (cfg.name.clone(), a.new.clone());
        match &maps {
            Some(m) if !paths::is_root() => {
                davit_rootfs::copy_in_userns(&exe, &from, &to, &tree, m, &rename)?
            }
            _ => {
                davit_rootfs::base::copy_tree(&from, &to)?;
                davit_rootfs::templates::rename_host(&tree, &rename.0, &rename.1)?;
            }
        }
        if overlay {
            let r = staging.path().join("rootfs");
            fs::create_dir(&r).map_err(io(format!("cannot create {}", r.display())))?;
        }
        Ok(())
    })();
    if let Err(e) = copied {
        let _ = remove_tree(staging.path(), maps.as_ref());
        return Err(e);
    }
    let old = cfg.name.clone();
    cfg.name = a.new.clone();
    if cfg.hostname.as_deref().is_none_or(|h| h == old) {
        cfg.hostname = Some(a.new.clone());
    }
    cfg.rootfs = dir.join("rootfs");
    if overlay {
        cfg.storage.upper = Some(dir.join("overlay/upper"));
        cfg.storage.work = Some(dir.join("overlay/work"));
    }
    let mut notes = Vec::new();
    if cfg.network.address.take().is_some() {
        notes.push(format!("the static address was not copied (two containers cannot share one); set network.address in {}", dir.join("config.toml").display()));
    }
    cfg.network.veth = None;
    cfg.network.hwaddr = None;
    let cfgp = staging.path().join("config.toml");
    fs::write(&cfgp, cfg.to_toml()?).map_err(io(format!("cannot write {}", cfgp.display())))?;
    let mut base_lock = None;
    if let Some(base) = &cfg.storage.base {
        let store = storage::store();
        let b = store.find_by_rootfs(base).ok_or_else(|| {
            Failure::new(
                exit::NOT_FOUND,
                anyhow::anyhow!("{}'s base {} is missing", src.name, base.display()),
            )
        });
        let b = match b {
            Ok(b) => b,
            Err(e) => {
                let _ = remove_tree(staging.path(), maps.as_ref());
                return Err(e);
            }
        };
        let lock = store.lock(&b.key)?;
        store.add_ref(&b, &dir, &lock)?;
        base_lock = Some(lock);
    }
    let staged = staging.keep();
    fs::rename(&staged, &dir).map_err(io(format!("cannot move the copy to {}", dir.display())))?;
    drop(base_lock);
    if ctx.json {
        ctx.print_json(&json!({"name": a.new, "from": src.name, "dir": dir, "storage": cfg.storage.backend.as_str(),
            "base": cfg.storage.base, "seconds": started.elapsed().as_secs_f64(), "notes": notes}));
    } else {
        for n in &notes {
            ctx.term.warning(n);
        }
        ctx.term.say(&format!(
            "copied {} to {} ({} storage{}) in {:.2}s",
            src.name,
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
    if fs::symlink_metadata(&a.dir).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(Failure::usage(format!(
            "{} is a symbolic link; davit unpack never follows one (give the directory itself)",
            a.dir.display()
        )));
    }
    let existing = match fs::symlink_metadata(&a.dir) {
        Ok(m) if !m.is_dir() => {
            return Err(Failure::usage(format!(
                "{} is not a directory; unpack into an empty or new directory",
                a.dir.display()
            )))
        }
        Ok(m) => {
            if fs::read_dir(&a.dir)
                .map_err(io(format!("cannot read {}", a.dir.display())))?
                .next()
                .is_some()
            {
                return Err(Failure::usage(format!(
                    "{} is not empty; unpack into an empty or new directory",
                    a.dir.display()
                )));
            }
            Some(m)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io(format!("cannot read {}", a.dir.display()))(e)),
    };
    let opts = UnpackOptions {
        maps: maps.clone(),
        excludes: read_lines(a.exclude_file.clone()),
        skip_devices: !paths::is_root(),
        threads: 0,
        templates: Vec::new(),
        template_vars: Vec::new(),
        max_file_size: ctx.max_file_size,
    };
    let report = unpack_staged(&a.tarball, &a.dir, existing.as_ref(), &opts, ctx)?;
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
