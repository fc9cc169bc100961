//! Storage for `create`, `copy`, `destroy` and `cache`: choosing the
//! backend, making or reusing a build's base, preparing an overlay
//! container's upper directory, and verifying and pruning bases.

use std::path::{Path, PathBuf};

use davit_fetch::Entry;
use davit_rootfs::base::{Base, BaseImage, BaseLock, BaseMeta, BaseStore};
use davit_rootfs::digest::TreeDigest;
use davit_rootfs::{IdMaps, UnpackOptions};
use davit_run::config::{Backend, ContainerConfig, IdMap, IdRange};
use davit_run::storage::OverlayMethod;

use crate::{paths, Ctx, Failure};

/// `--storage`.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StorageArg {
    /// A full private copy of the image.
    Dir,
    /// A shared read-only base and a private upper directory (overlayfs).
    Overlay,
}

/// The backend chosen for a new container, and why.
pub struct Chosen {
    pub backend: Backend,
    /// With overlay: whether the base keeps the image's own ids (root,
    /// attached idmapped or privileged) or is shifted into the id range.
    pub raw_base: bool,
    pub idmapped: bool,
    /// Said to the user: a fallback and its reason.
    pub note: Option<String>,
}

pub fn store() -> BaseStore {
    BaseStore::new(paths::bases_dir())
}

pub fn to_run_map(m: &IdMaps) -> IdMap {
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

pub fn from_run_map(m: &IdMap) -> IdMaps {
    let conv = |v: &Vec<IdRange>| {
        v.iter()
            .map(|r| davit_rootfs::IdMapping {
                container: r.container,
                host: r.host,
                len: r.len,
            })
            .collect()
    };
    IdMaps {
        uid: conv(&m.uid),
        gid: conv(&m.gid),
    }
}

/// The id maps whose owners fill a container's files: `None` for a
/// privileged container.
pub fn container_maps(cfg: &ContainerConfig) -> Option<IdMaps> {
    (!cfg.privileged).then(|| from_run_map(&cfg.idmap))
}

/// Picks the backend: `--storage` if given (an unavailable overlay is an
/// error), otherwise overlay where the kernel allows it, else dir. As root
/// the base is idmapped when this host can idmap the bases directory,
/// otherwise shifted per id range; a privileged container uses the raw
/// base directly.
pub fn choose(
    want: Option<StorageArg>,
    privileged: bool,
    maps: Option<&IdMaps>,
) -> Result<Chosen, Failure> {
    if want == Some(StorageArg::Dir) {
        return Ok(Chosen {
            backend: Backend::Dir,
            raw_base: false,
            idmapped: false,
            note: None,
        });
    }
    let root = paths::is_root();
    let probe_map = if root && !privileged {
        maps.map(to_run_map)
    } else {
        None
    };
    let p = davit_run::storage::probe(root, &paths::bases_dir(), probe_map.as_ref());
    let Some(method) = p.overlay else {
        let why = p.notes.join("; ");
        if want == Some(StorageArg::Overlay) {
            return Err(Failure::usage(format!(
                "overlay storage is not available here: {why}; create with --storage dir"
            )));
        }
        return Ok(Chosen {
            backend: Backend::Dir,
            raw_base: false,
            idmapped: false,
            note: Some(format!("using dir storage: {why}")),
        });
    };
    let idmapped = root && !privileged && method == OverlayMethod::IdmappedBase;
    let note = (root && !privileged && !idmapped).then(|| {
        format!(
            "using overlay with a base shifted for this id range ({})",
            p.notes.join("; ")
        )
    });
    Ok(Chosen {
        backend: Backend::Overlay,
        raw_base: privileged || idmapped,
        idmapped,
        note,
    })
}

pub fn base_image(entry: &Entry) -> BaseImage {
    let i = &entry.manifest.image;
    BaseImage {
        dist: i.dist.clone(),
        release: i.release.clone(),
        arch: i.arch.clone(),
        variant: i.variant.clone(),
        build: i.build.clone(),
    }
}

/// Records the tree of `base` as it is now, the way it was recorded when
/// made (inside the user namespace for a plain user's base).
pub fn record(base_rootfs: &Path, userns_maps: Option<&IdMaps>) -> Result<TreeDigest, Failure> {
    Ok(match userns_maps {
        Some(m) => davit_rootfs::digest_in_userns(&paths::davit_exe()?, base_rootfs, m)?,
        None => davit_rootfs::digest::tree(base_rootfs)?,
    })
}

/// The maps a base was made in (a plain user's base), for removal and
/// verification inside the user namespace.
pub fn userns_maps(base: &Base) -> Option<IdMaps> {
    if base.meta.userns {
        base.meta.shifted.clone()
    } else {
        None
    }
}

/// Returns the base of `entry`'s build (made now if missing) with its lock
/// held. `shifted` is the id range the base is shifted into (`None`: the
/// image's own ids, root only). Returns the unpack report if it was made
/// now.
pub fn ensure_base(
    ctx: &Ctx,
    entry: &Entry,
    shifted: Option<&IdMaps>,
    excludes: Vec<String>,
) -> Result<(Base, BaseLock, Option<davit_rootfs::Report>), Failure> {
    let store = store();
    let image = base_image(entry);
    let key = BaseStore::key(&image, shifted);
    let lock = store.lock(&key)?;
    if let Some(b) = store.get(&key) {
        return Ok((b, lock, None));
    }
    let userns = !paths::is_root();
    let cleanup_maps = if userns { shifted.cloned() } else { None };
    for l in store.leftovers(&key, &lock) {
        crate::cmd_create::remove_tree(&l, cleanup_maps.as_ref())?;
    }
    let st = store.staging(&key, &lock)?;
    let made = (|| -> Result<(Base, davit_rootfs::Report), Failure> {
        let rootfs = st.join("rootfs");
        let opts = UnpackOptions {
            maps: shifted.cloned(),
            excludes,
            skip_devices: userns,
            threads: 0,
            templates: Vec::new(),
            template_vars: Vec::new(),
            max_file_size: ctx.max_file_size,
        };
        ctx.term.say(&format!(
            "unpacking the base for {} {} {} ({}) once; containers of this build share it",
            image.dist, image.release, image.arch, image.build
        ));
        let report = if userns {
            davit_rootfs::unpack_in_userns(
                &paths::davit_exe()?,
                &entry.rootfs(),
                &rootfs,
                &opts,
                &ctx.term,
            )?
        } else {
            davit_rootfs::unpack(&entry.rootfs(), &rootfs, &opts, &ctx.term)?
        };
        let rec = record(&rootfs, cleanup_maps.as_ref())?;
        let meta = BaseMeta {
            version: 1,
            image: image.clone(),
            source_sha256: entry
                .manifest
                .files
                .get("rootfs.tar.xz")
                .cloned()
                .unwrap_or_default(),
            shifted: shifted.cloned(),
            userns,
            digest: String::new(),
            entries: 0,
            bytes: 0,
            created_at: crate::now(),
        };
        Ok((store.commit(&key, &st, meta, &rec, &lock)?, report))
    })();
    match made {
        Ok((b, report)) => Ok((b, lock, Some(report))),
        Err(e) => {
            let _ = crate::cmd_create::remove_tree(&st, cleanup_maps.as_ref());
            Err(e)
        }
    }
}

/// Makes `upper` and `work` for a container of `base` and writes the
/// image's templates into `upper`. `shift` maps an unshifted base's ids
/// to the container's.
pub fn prepare_upper(
    base: &Base,
    upper: &Path,
    work: &Path,
    templates: &[String],
    vars: &[(String, String)],
    shift: Option<&IdMaps>,
) -> Result<Vec<String>, Failure> {
    Ok(match userns_maps(base) {
        Some(m) => davit_rootfs::prepare_upper_in_userns(
            &paths::davit_exe()?,
            &base.rootfs(),
            upper,
            work,
            templates,
            vars,
            &m,
        )?,
        None => {
            davit_rootfs::base::prepare_upper(&base.rootfs(), upper, work, templates, vars, shift)?
        }
    })
}

/// Whether the container at `dir` still uses `base`.
pub fn uses(dir: &Path, base: &Base) -> bool {
    ContainerConfig::load(&dir.join("config.toml"))
        .map(|c| {
            c.storage.backend == Backend::Overlay
                && c.storage.base.as_deref() == Some(base.rootfs().as_path())
        })
        .unwrap_or(false)
}

/// Drops `dir`'s reference to the base whose tree is `base_rootfs`.
pub fn unref(base_rootfs: &Path, dir: &Path) -> Result<(), Failure> {
    let store = store();
    if let Some(b) = store.find_by_rootfs(base_rootfs) {
        let lock = store.lock(&b.key)?;
        store.remove_ref(&b, dir, &lock)?;
    }
    Ok(())
}

/// Verifies one base against its record.
pub fn verify_base(base: &Base) -> Result<TreeDigest, Failure> {
    let fresh = record(&base.rootfs(), userns_maps(base).as_ref())?;
    base.check(&fresh)?;
    Ok(fresh)
}

/// What `cache prune` did to the bases.
#[derive(serde::Serialize, Default)]
pub struct PruneBases {
    pub removed: Vec<String>,
    /// Base key -> the containers using it.
    pub in_use: Vec<(String, Vec<PathBuf>)>,
}

/// Removes every base no container uses (and staging left by a killed
/// create); keeps the others and says who uses them.
pub fn prune_bases() -> Result<PruneBases, Failure> {
    let store = store();
    let mut out = PruneBases::default();
    for b in store.list() {
        let lock = store.lock(&b.key)?;
        let users = store.live_refs(&b, &uses, &lock);
        if users.is_empty() {
            crate::cmd_create::remove_tree(&b.dir, userns_maps(&b).as_ref())?;
            out.removed.push(b.key.clone());
        } else {
            out.in_use.push((b.key.clone(), users));
        }
        drop(lock);
    }
    Ok(out)
}
