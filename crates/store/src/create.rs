//! `create` and `copy`: a new container made whole in a staging directory
//! (`.NAME.creating-XXXXXX`) and renamed into place, so a failure or a
//! kill never leaves a half-made container under its name.

use std::fs;
use std::path::{Path, PathBuf};

use davit_rootfs::base::{BaseLock, ImageId};
use davit_rootfs::meta::{self, LxcConfig};
use davit_rootfs::{IdMap, UnpackOptions};
use davit_run::config::{Backend, Limits, MountEntry, NetworkMode, Storage};
use davit_run::ContainerConfig;

use crate::bases::Chosen;
use crate::container::{private_dir, NameLock};
use crate::error::{io, Error, Result};
use crate::{check_name, Reporter, Store};

/// An image's files as fetched and verified (the CLI gets them from the
/// cache; the store never fetches).
pub trait ImageFiles {
    /// Which build it is.
    fn image(&self) -> ImageId;
    /// The rootfs tarball.
    fn rootfs(&self) -> PathBuf;
    /// The rootfs tarball's verified sha256.
    fn rootfs_sha256(&self) -> String;
    /// The meta file `name` (`config`, `templates`, `excludes`,
    /// `create-message`) for a privileged (`false`) or unprivileged
    /// (`true`) container, if the image has one.
    fn meta_file(&self, name: &str, unprivileged: bool) -> Option<PathBuf>;
}

/// What `davit create` asks for.
#[derive(Debug, Clone, Default)]
pub struct CreateRequest {
    /// The container's name.
    pub name: String,
    /// Keep the image's ids (no user namespace).
    pub privileged: bool,
    /// Replace an existing, stopped container of that name.
    pub force: bool,
    /// Memory limit in bytes.
    pub memory: Option<u64>,
    /// Task limit (`Some(0)`: none).
    pub pids: Option<u64>,
    /// CPU limit.
    pub cpus: Option<f64>,
    /// Networking (`None`: the default for this user and host).
    pub network: Option<NetworkMode>,
    /// A static IPv4 address on the bridge.
    pub address: Option<String>,
    /// Host ports forwarded to the container.
    pub publish: Vec<davit_run::config::Publish>,
    /// The backend (`None`: overlay where the kernel allows it).
    pub storage: Option<Backend>,
    /// Host binds: (host path, path inside, read only).
    pub mounts: Vec<(PathBuf, PathBuf, bool)>,
    /// Start it with `davit autostart`.
    pub autostart: bool,
    /// Autostart order.
    pub autostart_order: i32,
    /// Seconds to wait after starting it.
    pub autostart_delay: u64,
    /// `--max-file-size` for the unpack.
    pub max_file_size: Option<u64>,
}

/// A create that has its name locked, its ids and backend chosen, and
/// waits for the image (which the CLI fetches, or takes from the cache).
pub struct PendingCreate<'s> {
    store: &'s Store,
    req: CreateRequest,
    host_mounts: Vec<MountEntry>,
    _lock: NameLock,
    dir: PathBuf,
    maps: Option<IdMap>,
    /// Who else can act as the container's ids (each can write its files).
    pub id_conflicts: Vec<String>,
    chosen: Chosen,
}

/// The base a new overlay container uses.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BaseUsed {
    /// The base's key.
    pub key: String,
    /// Its directory.
    pub dir: PathBuf,
    /// Whether this create made it.
    pub made: bool,
    /// The digest of its record.
    pub digest: String,
    /// Whether it is attached idmapped.
    pub idmapped: bool,
    /// The id range it is shifted into.
    pub shifted: Option<IdMap>,
}

/// What a create made, for the CLI to report.
#[derive(Debug)]
pub struct Created {
    /// Its directory.
    pub dir: PathBuf,
    /// Its config as written.
    pub config: ContainerConfig,
    /// Whether it runs in a user namespace.
    pub unprivileged: bool,
    /// The unpack, when this create unpacked (dir storage, or a new base).
    pub report: Option<davit_rootfs::Report>,
    /// The base (overlay).
    pub base: Option<BaseUsed>,
    /// Lines of the image's LXC config davit ignored.
    pub ignored_lxc_keys: Vec<String>,
    /// Mounts of the image's LXC config refused (an image mounts only
    /// pseudo-filesystems).
    pub refused_lxc_mounts: Vec<String>,
    /// Neither the request nor the image set a task limit: the default holds.
    pub default_pids: bool,
    /// A fallback in the storage choice, and why.
    pub storage_note: Option<String>,
    /// The image's create-message, as it is (the CLI escapes it).
    pub message: Option<String>,
}

/// What `davit copy` asks for.
#[derive(Debug, Clone)]
pub struct CopyRequest {
    /// The container to clone (stopped).
    pub from: String,
    /// The new name.
    pub to: String,
    /// Require a clone that shares the base (overlay).
    pub snapshot: bool,
}

/// What a copy made.
#[derive(Debug)]
pub struct Copied {
    /// The new container's directory.
    pub dir: PathBuf,
    /// Its config.
    pub config: ContainerConfig,
    /// What the copy did not take, and where to set it.
    pub notes: Vec<String>,
}

/// The non-empty lines of a file, trimmed (none if it is missing).
pub(crate) fn read_lines(p: Option<PathBuf>) -> Vec<String> {
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

/// `--mount`s as config entries, each host path made absolute and checked
/// to exist now, before anything is unpacked.
fn host_mounts(list: &[(PathBuf, PathBuf, bool)]) -> Result<Vec<MountEntry>> {
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

impl Store {
    /// The first step of a create: checks the name and the host binds,
    /// takes the name's lock, picks the id map and the backend, removes
    /// what a killed create of this name left, and destroys an existing
    /// container of that name if `force` (refuses otherwise).
    ///
    /// # Errors
    /// [`Error::Usage`] for a bad name, an existing container without
    /// `force`, or an unavailable backend; [`Error::Io`] for a missing
    /// host path.
    pub fn begin_create(&self, req: CreateRequest) -> Result<PendingCreate<'_>> {
        check_name(&req.name)?;
        let host_mounts = host_mounts(&req.mounts)?;
        let root = self.layout.containers.clone();
        private_dir(&root)?;
        let lock = NameLock::take(&root, &req.name)?;
        let dir = root.join(&req.name);
        let maps = if req.privileged {
            None
        } else {
            Some(self.default_maps()?)
        };
        let id_conflicts = match &maps {
            Some(m) => self.map_conflicts(m)?,
            None => Vec::new(),
        };
        // Leftovers of a killed create of this name.
        for e in fs::read_dir(&root)
            .map_err(io(format!("cannot read {}", root.display())))?
            .flatten()
        {
            if e.file_name()
                .to_string_lossy()
                .starts_with(&format!(".{}.creating-", req.name))
            {
                self.remove_tree(&e.path(), maps.as_ref())?;
            }
        }
        if dir.exists() {
            if !req.force {
                return Err(Error::usage(format!("container {:?} already exists in {}; pass --force to replace it, or `davit destroy {}`", req.name, root.display(), req.name)));
            }
            self.destroy_dir(&req.name, &dir)?;
        }
        let chosen = self.choose_backend(req.storage, req.privileged, maps.as_ref())?;
        Ok(PendingCreate {
            store: self,
            req,
            host_mounts,
            _lock: lock,
            dir,
            maps,
            id_conflicts,
            chosen,
        })
    }
}

impl PendingCreate<'_> {
    /// Whether the container gets overlay storage.
    pub fn overlay(&self) -> bool {
        self.chosen.backend == Backend::Overlay
    }

    /// The ids a base is shifted into: none for a raw (idmapped or
    /// privileged) base.
    pub fn shifted(&self) -> Option<&IdMap> {
        if self.chosen.raw_base {
            None
        } else {
            self.maps.as_ref()
        }
    }

    /// The id map the container will have (`None`: privileged).
    pub fn maps(&self) -> Option<&IdMap> {
        self.maps.as_ref()
    }

    /// Whether a base for `image` already exists for this create, so the
    /// warm path needs no server.
    pub fn has_base(&self, image: &ImageId) -> bool {
        self.overlay() && self.store.has_base(image, self.shifted())
    }

    /// Makes the container from `image`: unpacks it (dir) or makes or
    /// reuses its base and an upper directory (overlay), translates the
    /// image's LXC config, writes config.toml, and renames the staging
    /// directory into place.
    ///
    /// # Errors
    /// What unpacking, the base or the config write fail with; the staging
    /// directory is removed and nothing is left under the name.
    pub fn finish(self, image: &dyn ImageFiles, r: &dyn Reporter) -> Result<Created> {
        let store = self.store;
        let req = &self.req;
        let dir = &self.dir;
        let maps = self.maps.as_ref();
        let chosen = &self.chosen;
        let root = &store.layout.containers;
        let user_mode = maps.is_some();
        let staging = tempfile::Builder::new()
            .prefix(&format!(".{}.creating-", req.name))
            .tempdir_in(root)
            .map_err(io(format!(
                "cannot create a staging directory in {}",
                root.display()
            )))?;
        let rootfs = staging.path().join("rootfs");
        fs::create_dir(&rootfs).map_err(io(format!("cannot create {}", rootfs.display())))?;
        let vars = vec![
            ("LXC_NAME".to_string(), req.name.clone()),
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
        let templates = read_lines(image.meta_file("templates", user_mode));
        let mut storage_cfg = Storage::default();
        let mut base_lock: Option<BaseLock> = None;
        let mut base_used = None;
        let report = if self.overlay() {
            let excludes = read_lines(image.meta_file("excludes", !chosen.raw_base));
            // The base's lock is held until the container is in place, so a
            // concurrent `cache prune` cannot take the base in between.
            let made = (|| -> Result<(Option<davit_rootfs::Report>, BaseLock)> {
                let (base, lock, fresh) =
                    store.ensure_base(image, self.shifted(), excludes, req.max_file_size, r)?;
                let ov = staging.path().join("overlay");
                fs::create_dir(&ov).map_err(io(format!("cannot create {}", ov.display())))?;
                let shift = if chosen.idmapped { maps } else { None };
                store.prepare_upper(
                    &base,
                    &ov.join("upper"),
                    &ov.join("work"),
                    &templates,
                    &vars,
                    shift,
                )?;
                store.bases().add_ref(&base, dir, &lock)?;
                storage_cfg = Storage {
                    backend: Backend::Overlay,
                    base: Some(base.rootfs()),
                    upper: Some(dir.join("overlay/upper")),
                    work: Some(dir.join("overlay/work")),
                    idmapped_lower: chosen.idmapped,
                };
                base_used = Some(BaseUsed {
                    key: base.key.clone(),
                    dir: base.dir.clone(),
                    made: fresh.is_some(),
                    digest: base.meta.digest.clone(),
                    idmapped: chosen.idmapped,
                    shifted: base.meta.shifted.clone(),
                });
                Ok((fresh, lock))
            })();
            match made {
                Ok((rep, lock)) => {
                    base_lock = Some(lock);
                    rep
                }
                Err(e) => {
                    let _ = store.remove_tree(staging.path(), maps);
                    return Err(e);
                }
            }
        } else {
            let opts = UnpackOptions {
                maps: maps.cloned(),
                excludes: read_lines(image.meta_file("excludes", user_mode)),
                skip_devices: user_mode,
                threads: 0,
                templates: templates.clone(),
                template_vars: vars.clone(),
                max_file_size: req.max_file_size,
            };
            r.step("unpacking the rootfs");
            match store.tree().unpack(&image.rootfs(), &rootfs, &opts, r) {
                Ok(rep) => Some(rep),
                Err(e) => {
                    let _ = store.remove_tree(staging.path(), maps);
                    return Err(e);
                }
            }
        };
        if let Some(n) = &chosen.note {
            r.step(n);
        }

        let lxc = image
            .meta_file("config", user_mode)
            .and_then(|p| fs::read_to_string(p).ok())
            .map(|t| LxcConfig::parse(&meta::substitute(&t, &vars)))
            .unwrap_or_default();
        let mut cfg = ContainerConfig::new(&req.name, dir.join("rootfs"));
        cfg.image = image.image();
        cfg.privileged = req.privileged;
        cfg.storage = storage_cfg;
        if let Some(m) = maps {
            cfg.idmap = m.clone();
        }
        cfg.hostname = Some(req.name.clone());
        if let Some(init) = &lxc.init_cmd {
            cfg.init = init.clone();
        }
        // An image is untrusted: it may mount pseudo-filesystems only.
        let mut refused_mounts = Vec::new();
        let mut mounts = Vec::new();
        for m in &lxc.mounts {
            match meta::refused_for_an_image(m) {
                // As the image wrote it: the target relative to the rootfs.
                Some(why) => refused_mounts.push(format!(
                    "lxc.mount.entry = {} {} {} {}: {why}",
                    m.source,
                    m.target.to_string_lossy().trim_start_matches('/'),
                    m.fstype,
                    m.options
                )),
                None => mounts.push(m.clone()),
            }
        }
        cfg.mounts = mounts;
        cfg.mounts.extend(self.host_mounts.iter().cloned());
        cfg.limits = Limits {
            memory: req.memory.or(lxc.memory_limit()),
            // A default, so that no container can empty the host's pid table;
            // `--pids 0` asks for none.
            pids: match req.pids.or(lxc.pids_limit()) {
                Some(0) => None,
                Some(n) => Some(n),
                None => Some(davit_run::config::DEFAULT_PIDS),
            },
            cpus: req.cpus.or(lxc.cpus()),
        };
        let host = davit_run::net::HostNet::load(&store.layout.net_config)?;
        cfg.network.mode = match req.network {
            Some(m) => m,
            None => davit_run::net::default_mode(nix::unistd::geteuid().as_raw(), &host),
        };
        if let Some(addr) = &req.address {
            cfg.network.address = Some(addr.clone());
        }
        cfg.network.publish = req.publish.clone();
        // The image's terminals, at most davit's cap.
        cfg.ttys = lxc.tty_max.map_or(davit_run::config::DEFAULT_TTYS, |n| {
            n.min(davit_run::config::MAX_TTYS)
        });
        cfg.autostart = req.autostart;
        cfg.autostart_order = req.autostart_order;
        cfg.autostart_delay = req.autostart_delay;
        let mut ignored = lxc.ignored.clone();
        if !(lxc.idmap.uid.is_empty() && lxc.idmap.gid.is_empty()) {
            ignored.push("lxc.idmap (davit maps the invoking user's /etc/subuid range)".into());
        }
        if !lxc.net.is_empty() {
            ignored.push("lxc.net.0.* (set networking with davit's own config)".into());
        }
        let text = cfg.to_toml()?;
        let cfgp = staging.path().join("config.toml");
        fs::write(&cfgp, text).map_err(io(format!("cannot write {}", cfgp.display())))?;
        let staged = staging.keep();
        fs::rename(&staged, dir).map_err(io(format!(
            "cannot move the new container to {}",
            dir.display()
        )))?;
        drop(base_lock);

        let message = image
            .meta_file("create-message", user_mode)
            .and_then(|p| fs::read_to_string(p).ok());
        Ok(Created {
            dir: dir.clone(),
            default_pids: req.pids.is_none() && lxc.pids_limit().is_none(),
            config: cfg,
            unprivileged: user_mode,
            report,
            base: base_used,
            ignored_lxc_keys: ignored,
            refused_lxc_mounts: refused_mounts,
            storage_note: chosen.note.clone(),
            message,
        })
    }
}

impl Store {
    /// Clones a stopped container: the whole rootfs (dir) or only the
    /// overlay upper directory, sharing the base (as `lxc-copy -s`). The
    /// copy's `/etc/hostname` and `/etc/hosts` name the new container.
    ///
    /// # Errors
    /// [`Error::Usage`] for a bad or taken name, a running source, or
    /// `snapshot` of dir storage; what copying fails with (nothing is left
    /// under the new name).
    pub fn copy(&self, req: &CopyRequest) -> Result<Copied> {
        let src = self.container(&req.from)?;
        check_name(&req.to)?;
        let root = self.layout.containers.clone();
        private_dir(&root)?;
        let _lock = NameLock::take(&root, &req.to)?;
        let dir = root.join(&req.to);
        if dir.exists() {
            return Err(Error::usage(format!(
                "container {:?} already exists in {}; pick another name or `davit destroy {}`",
                req.to,
                root.display(),
                req.to
            )));
        }
        // The source's state lock, held until the copy is in place: a `start`
        // of the source waits instead of writing into what is being copied.
        let _src_lock = self.state(&src.name).lock()?;
        self.require_stopped(&src, "copy")?;
        let mut cfg = ContainerConfig::load(&src.config_path())?;
        let overlay = cfg.storage.backend == Backend::Overlay;
        if req.snapshot && !overlay {
            return Err(Error::usage(format!(
                "{} uses dir storage, so a snapshot would copy the whole rootfs; run `davit copy {} {}` without --snapshot for a full copy",
                src.name, src.name, req.to
            )));
        }
        let maps = crate::bases::container_maps(&cfg);
        let staging = tempfile::Builder::new()
            .prefix(&format!(".{}.creating-", req.to))
            .tempdir_in(&root)
            .map_err(io(format!(
                "cannot create a staging directory in {}",
                root.display()
            )))?;
        let copied = (|| -> Result<()> {
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
            let rename = (cfg.name.clone(), req.to.clone());
            self.tree()
                .copy(&from, &to, &tree, maps.as_ref(), &rename)?;
            if overlay {
                let r = staging.path().join("rootfs");
                fs::create_dir(&r).map_err(io(format!("cannot create {}", r.display())))?;
            }
            Ok(())
        })();
        if let Err(e) = copied {
            let _ = self.remove_tree(staging.path(), maps.as_ref());
            return Err(e);
        }
        let old = cfg.name.clone();
        cfg.name = req.to.clone();
        if cfg.hostname.as_deref().is_none_or(|h| h == old) {
            cfg.hostname = Some(req.to.clone());
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
        if !cfg.network.publish.is_empty() {
            let ports: Vec<String> = cfg.network.publish.iter().map(|p| p.to_string()).collect();
            notes.push(format!("the published ports ({}) were not copied (a host port forwards to one container); add them in {}", ports.join(", "), dir.join("config.toml").display()));
            cfg.network.publish.clear();
        }
        cfg.network.veth = None;
        cfg.network.hwaddr = None;
        let cfgp = staging.path().join("config.toml");
        fs::write(&cfgp, cfg.to_toml()?).map_err(io(format!("cannot write {}", cfgp.display())))?;
        let mut base_lock = None;
        if let Some(base) = &cfg.storage.base {
            let store = self.bases();
            let Some(b) = store.find_by_rootfs(base) else {
                let _ = self.remove_tree(staging.path(), maps.as_ref());
                return Err(Error::NotFound(format!(
                    "{}'s base {} is missing",
                    src.name,
                    base.display()
                )));
            };
            let lock = store.lock(&b.key)?;
            store.add_ref(&b, &dir, &lock)?;
            base_lock = Some(lock);
        }
        let staged = staging.keep();
        fs::rename(&staged, &dir)
            .map_err(io(format!("cannot move the copy to {}", dir.display())))?;
        drop(base_lock);
        Ok(Copied {
            dir,
            config: cfg,
            notes,
        })
    }

    /// At `create`: what the container will see of each host bind marked
    /// `idmap` (`--mount`) that cannot be idmapped here, and why; and, for
    /// one that can, that container root writes into it as host root.
    pub fn host_mount_notes(&self, cfg: &ContainerConfig) -> Vec<String> {
        if cfg.privileged {
            return Vec::new();
        }
        let root_host = cfg.idmap.host_uid(0).unwrap_or(65534);
        cfg.mounts
            .iter()
            .filter(|m| m.wants_idmap())
            .map(|m| {
                if !self.is_root() {
                    return m.plain_bind_note("since only root can make an idmapped mount", root_host);
                }
                match davit_run::storage::probe_idmapped_bind(Path::new(&m.source), &cfg.idmap) {
                    Ok(()) => format!("--mount {}:{} is idmapped: host ids show unshifted inside, and container root writes there as host root (uid 0), so share only a directory no other host user runs programs from", m.source, m.target.display()),
                    Err(e) => m.plain_bind_note(&format!("not idmapped ({e})"), root_host),
                }
            })
            .collect()
    }
}
