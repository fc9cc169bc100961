//! Storage backends and bases: choosing dir or overlay, making or reusing
//! a build's base, preparing an overlay container's upper directory, and
//! verifying and pruning bases with their references.

use std::path::{Path, PathBuf};

use davit_rootfs::base::{Base, BaseLock, BaseMeta, BaseStore, ImageId};
use davit_rootfs::digest::TreeDigest;
use davit_rootfs::{IdMap, UnpackOptions};
use davit_run::config::{Backend, ContainerConfig};
use davit_run::storage::OverlayMethod;

use crate::error::{Error, Result};
use crate::{Reporter, Store};

/// The backend chosen for a new container, and why.
#[derive(Debug, Clone)]
pub struct Chosen {
    /// Dir or overlay.
    pub backend: Backend,
    /// With overlay: whether the base keeps the image's own ids (root,
    /// attached idmapped or privileged) or is shifted into the id range.
    pub raw_base: bool,
    /// Whether the base is attached as an idmapped lower layer.
    pub idmapped: bool,
    /// Said to the user: a fallback and its reason.
    pub note: Option<String>,
}

/// The id maps whose owners fill a container's files: `None` for a
/// privileged container.
pub fn container_maps(cfg: &ContainerConfig) -> Option<IdMap> {
    (!cfg.privileged).then(|| cfg.idmap.clone())
}

/// The maps a base was made in (a plain user's base), for removal and
/// verification inside the user namespace.
pub fn userns_maps(base: &Base) -> Option<IdMap> {
    if base.meta.userns {
        base.meta.shifted.clone()
    } else {
        None
    }
}

/// What `cache prune` did to the bases.
#[derive(serde::Serialize, Default, Debug)]
pub struct PruneBases {
    /// The keys of the bases removed.
    pub removed: Vec<String>,
    /// Base key -> the containers using it.
    pub in_use: Vec<(String, Vec<PathBuf>)>,
}

/// Whether the container at `dir` still uses `base`.
fn uses(dir: &Path, base: &Base) -> bool {
    ContainerConfig::load(&dir.join("config.toml"))
        .map(|c| {
            c.storage.backend == Backend::Overlay
                && c.storage.base.as_deref() == Some(base.rootfs().as_path())
        })
        .unwrap_or(false)
}

impl Store {
    /// The bases of this store.
    pub fn bases(&self) -> BaseStore {
        BaseStore::new(&self.layout.bases)
    }

    /// Picks the backend: `want` if given (an unavailable overlay is an
    /// error), otherwise overlay where the kernel allows it, else dir. As
    /// root the base is idmapped when this host can idmap the bases
    /// directory, otherwise shifted per id range; a privileged container
    /// uses the raw base directly.
    ///
    /// # Errors
    /// [`Error::Usage`] when overlay is asked for and not available.
    pub fn choose_backend(
        &self,
        want: Option<Backend>,
        privileged: bool,
        maps: Option<&IdMap>,
    ) -> Result<Chosen> {
        if want == Some(Backend::Dir) {
            return Ok(Chosen {
                backend: Backend::Dir,
                raw_base: false,
                idmapped: false,
                note: None,
            });
        }
        let root = self.is_root();
        let p = self.storage_probe(privileged, maps);
        let Some(method) = p.overlay else {
            let why = p.notes.join("; ");
            if want == Some(Backend::Overlay) {
                return Err(Error::usage(format!(
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

    /// What the kernel offers here for overlay storage (`davit check`
    /// shows it): as root, whether an idmapped base works for `maps`.
    pub fn storage_probe(
        &self,
        privileged: bool,
        maps: Option<&IdMap>,
    ) -> davit_run::storage::Probe {
        let root = self.is_root();
        let probe_map = if root && !privileged { maps } else { None };
        davit_run::storage::probe(root, &self.layout.bases, probe_map)
    }

    /// Whether the base of `image` for `shifted` exists.
    pub fn has_base(&self, image: &ImageId, shifted: Option<&IdMap>) -> bool {
        self.bases().get(&image.base_key(shifted)).is_some()
    }

    /// Returns the base of the build `files` (made now from its rootfs if
    /// missing) with its lock held. `shifted` is the id range the base is
    /// shifted into (`None`: the image's own ids, root only). Returns the
    /// unpack report if it was made now.
    pub(crate) fn ensure_base(
        &self,
        files: &dyn crate::ImageFiles,
        shifted: Option<&IdMap>,
        excludes: Vec<String>,
        max_file_size: Option<u64>,
        r: &dyn Reporter,
    ) -> Result<(Base, BaseLock, Option<davit_rootfs::Report>)> {
        let store = self.bases();
        let image = &files.image();
        let key = image.base_key(shifted);
        let lock = store.lock(&key)?;
        if let Some(b) = store.get(&key) {
            return Ok((b, lock, None));
        }
        let userns = !self.is_root();
        let cleanup_maps = if userns { shifted.cloned() } else { None };
        for l in store.leftovers(&key, &lock) {
            self.remove_tree(&l, cleanup_maps.as_ref())?;
        }
        let st = store.staging(&key, &lock)?;
        let made = (|| -> Result<(Base, davit_rootfs::Report)> {
            let rootfs = st.join("rootfs");
            let opts = UnpackOptions {
                maps: shifted.cloned(),
                excludes,
                skip_devices: userns,
                threads: 0,
                templates: Vec::new(),
                template_vars: Vec::new(),
                max_file_size,
            };
            r.step(&format!(
                "unpacking the base for {} {} {} ({}) once; containers of this build share it",
                image.dist, image.release, image.arch, image.build
            ));
            let report = self.tree().unpack(&files.rootfs(), &rootfs, &opts, r)?;
            let rec = self.tree().digest(&rootfs, cleanup_maps.as_ref())?;
            let meta = BaseMeta {
                version: 1,
                image: image.clone(),
                source_sha256: files.rootfs_sha256(),
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
                let _ = self.remove_tree(&st, cleanup_maps.as_ref());
                Err(e)
            }
        }
    }

    /// Makes `upper` and `work` for a container of `base` and writes the
    /// image's templates into `upper`. `shift` maps an unshifted base's ids
    /// to the container's.
    pub(crate) fn prepare_upper(
        &self,
        base: &Base,
        upper: &Path,
        work: &Path,
        templates: &[String],
        vars: &[(String, String)],
        shift: Option<&IdMap>,
    ) -> Result<Vec<String>> {
        Ok(match userns_maps(base) {
            Some(m) => davit_rootfs::prepare_upper_in_userns(
                &self.layout.exe,
                &base.rootfs(),
                upper,
                work,
                templates,
                vars,
                &m,
            )?,
            None => davit_rootfs::base::prepare_upper(
                &base.rootfs(),
                upper,
                work,
                templates,
                vars,
                shift,
            )?,
        })
    }

    /// Adds `dir`'s reference to the base whose tree is `base_rootfs`; the
    /// returned lock keeps a prune out until the container is in place.
    pub(crate) fn add_base_ref(&self, base_rootfs: &Path, dir: &Path) -> Result<BaseLock> {
        let store = self.bases();
        let b = store.find_by_rootfs(base_rootfs).ok_or_else(|| {
            Error::NotFound(format!("the base {} is missing", base_rootfs.display()))
        })?;
        let lock = store.lock(&b.key)?;
        store.add_ref(&b, dir, &lock)?;
        Ok(lock)
    }

    /// Drops `dir`'s reference to the base whose tree is `base_rootfs`.
    pub(crate) fn unref_base(&self, base_rootfs: &Path, dir: &Path) -> Result<()> {
        let store = self.bases();
        if let Some(b) = store.find_by_rootfs(base_rootfs) {
            let lock = store.lock(&b.key)?;
            store.remove_ref(&b, dir, &lock)?;
        }
        Ok(())
    }

    /// Verifies one base against its record.
    ///
    /// # Errors
    /// A rootfs error of kind `Corrupt` when the tree differs.
    pub fn verify_base(&self, base: &Base) -> Result<TreeDigest> {
        let fresh = self
            .tree()
            .digest(&base.rootfs(), userns_maps(base).as_ref())?;
        base.check(&fresh)?;
        Ok(fresh)
    }

    /// Verifies the base of container `name` (overlay storage).
    ///
    /// # Errors
    /// [`Error::Usage`] for dir storage, [`Error::NotFound`] for a missing
    /// base, and what [`Store::verify_base`] finds.
    pub fn verify_container_base(&self, name: &str) -> Result<(Base, TreeDigest)> {
        let c = self.container(name)?;
        let cfg = c.load_config()?;
        let Some(base_root) = cfg.storage.base.clone() else {
            return Err(Error::usage(format!(
                "{name} uses dir storage: it has no shared base to verify (its rootfs is its own)"
            )));
        };
        let Some(base) = self.bases().find_by_rootfs(&base_root) else {
            return Err(Error::NotFound(format!(
                "{name}'s base {} is missing from {} (its record is gone); recreate the container",
                base_root.display(),
                self.layout.bases.display()
            )));
        };
        let fresh = self.verify_base(&base)?;
        Ok((base, fresh))
    }

    /// Removes every base no container uses (and staging left by a killed
    /// create); keeps the others and says who uses them.
    ///
    /// # Errors
    /// When a base cannot be locked or removed.
    pub fn prune_bases(&self) -> Result<PruneBases> {
        let store = self.bases();
        let mut out = PruneBases::default();
        for b in store.list() {
            let lock = store.lock(&b.key)?;
            let users = store.live_refs(&b, &uses, &lock);
            if users.is_empty() {
                self.remove_tree(&b.dir, userns_maps(&b).as_ref())?;
                out.removed.push(b.key.clone());
            } else {
                out.in_use.push((b.key.clone(), users));
            }
            drop(lock);
        }
        Ok(out)
    }
}
