//! Bases: one read-only, unpacked rootfs per image build (and per id range
//! when its ids are shifted), shared by every overlay container made from
//! that build.
//!
//! ```text
//! BASES/
//!   .KEY.lock                   flock: make, reference, prune
//!   KEY/
//!     rootfs/                   the tree, never written after it is made
//!     base.json                 BaseMeta: image, ids, digest
//!     manifest                  the integrity record (digest.rs)
//!     refs/CONTAINER-DIR        one file per container using it
//!   .KEY.staging-PID-N/         a base being made; renamed to KEY when done
//! ```
//!
//! A base appears under its final name only once it is complete and its
//! record is written. References are files, so a crash cannot leave a
//! wrong count; a reference whose container no longer uses the base is
//! dropped at prune.
#![forbid(unsafe_code)]

use std::fs;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::digest::TreeDigest;
use crate::error::{Error, Result};
use crate::sys;
use davit_types::IdMap;

pub use davit_types::ImageId;

/// `base.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseMeta {
    /// Layout version (1).
    pub version: u32,
    /// The image build.
    pub image: ImageId,
    /// sha256 of the verified rootfs tarball it was unpacked from.
    pub source_sha256: String,
    /// The ids the tree was shifted into; `None` for the image's own ids
    /// (attached through an idmapped mount at start).
    pub shifted: Option<IdMap>,
    /// Made inside a user namespace by a plain user: the record then shows
    /// ids as that namespace sees them and is checked there.
    pub userns: bool,
    /// sha256 of the manifest.
    pub digest: String,
    /// Entries in the tree.
    pub entries: u64,
    /// Regular-file bytes in the tree.
    pub bytes: u64,
    /// Unix time it was made.
    pub created_at: i64,
}

/// A complete base.
#[derive(Debug, Clone, Serialize)]
pub struct Base {
    /// The key (directory name).
    pub key: String,
    /// Its directory.
    pub dir: PathBuf,
    /// Its record.
    pub meta: BaseMeta,
}

impl Base {
    /// The tree.
    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }

    /// The integrity record file.
    pub fn manifest_path(&self) -> PathBuf {
        self.dir.join("manifest")
    }

    /// The recorded integrity record.
    ///
    /// # Errors
    /// [`Error::Base`] if the manifest cannot be read.
    pub fn manifest(&self) -> Result<TreeDigest> {
        let p = self.manifest_path();
        let text = fs::read_to_string(&p).map_err(|source| Error::Base {
            what: "cannot read".into(),
            path: p,
            source,
        })?;
        Ok(TreeDigest::from_text(&text))
    }

    /// Compares a fresh record of the tree with the stored one.
    ///
    /// # Errors
    /// [`Error::Tampered`] naming what changed; [`Error::Base`] if the
    /// stored manifest was itself altered or cannot be read.
    pub fn check(&self, fresh: &TreeDigest) -> Result<()> {
        let recorded = self.manifest()?;
        if recorded.digest != self.meta.digest {
            return Err(Error::Tampered {
                path: self.manifest_path(),
                changes: vec![format!(
                    "the manifest's digest is {}, base.json records {}",
                    recorded.digest, self.meta.digest
                )],
                more: 0,
            });
        }
        if fresh.digest == recorded.digest {
            return Ok(());
        }
        let mut changes = fresh.changes_from(&recorded);
        let more = changes.len().saturating_sub(20);
        changes.truncate(20);
        Err(Error::Tampered {
            path: self.rootfs(),
            changes,
            more,
        })
    }

    /// The containers (their directories) that reference the base.
    pub fn refs(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = fs::read_dir(self.dir.join("refs"))
            .map(|d| {
                d.flatten()
                    .filter_map(|e| fs::read_to_string(e.path()).ok())
                    .map(|t| PathBuf::from(t.trim_end_matches('\n')))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

/// A held per-base lock.
pub struct BaseLock {
    _fd: OwnedFd,
}

/// The directory of bases.
#[derive(Debug, Clone)]
pub struct BaseStore {
    root: PathBuf,
}

fn base_io(what: &str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.to_owned();
    let path = path.to_owned();
    move |source| Error::Base { what, path, source }
}

fn ref_name(container_dir: &Path) -> String {
    let s = container_dir.to_string_lossy();
    let mut out = String::new();
    for c in s.trim_start_matches('/').chars() {
        match c {
            '/' => out.push('!'),
            c if c.is_ascii_alphanumeric() || "._-".contains(c) => out.push(c),
            c => out.push_str(&format!("%{:02x}", c as u32)),
        }
    }
    out
}

impl BaseStore {
    /// The store at `root` (created on first use).
    pub fn new(root: impl Into<PathBuf>) -> BaseStore {
        BaseStore { root: root.into() }
    }

    /// Its directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Takes the lock of base `key` (waits for another davit making or
    /// pruning it).
    ///
    /// # Errors
    /// [`Error::Base`] if the store or the lock file cannot be created.
    pub fn lock(&self, key: &str) -> Result<BaseLock> {
        self.ensure_root()?;
        let p = self.root.join(format!(".{key}.lock"));
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .map_err(base_io("cannot open", &p))?;
        let fd = OwnedFd::from(f);
        sys::flock_exclusive(fd.as_fd()).map_err(base_io("cannot lock", &p))?;
        Ok(BaseLock { _fd: fd })
    }

    /// Creates the store private to its owner (0700): a raw base holds the
    /// image's own ids, so its setuid-root programs must not be reachable
    /// by other host users.
    fn ensure_root(&self) -> Result<()> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        if !self.root.is_dir() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&self.root)
                .map_err(base_io("cannot create", &self.root))?;
        }
        let md = fs::metadata(&self.root).map_err(base_io("cannot read", &self.root))?;
        if md.permissions().mode() & 0o077 != 0 {
            fs::set_permissions(&self.root, fs::Permissions::from_mode(0o700))
                .map_err(base_io("cannot chmod", &self.root))?;
        }
        Ok(())
    }

    /// The complete base `key`, if there is one.
    pub fn get(&self, key: &str) -> Option<Base> {
        let dir = self.root.join(key);
        let text = fs::read_to_string(dir.join("base.json")).ok()?;
        let meta: BaseMeta = serde_json::from_str(&text).ok()?;
        Some(Base {
            key: key.to_owned(),
            dir,
            meta,
        })
    }

    /// The base whose tree is `rootfs`, if it is in this store.
    pub fn find_by_rootfs(&self, rootfs: &Path) -> Option<Base> {
        let dir = rootfs.parent()?;
        if dir.parent()? != self.root {
            return None;
        }
        self.get(dir.file_name()?.to_str()?)
    }

    /// Every complete base, by key.
    pub fn list(&self) -> Vec<Base> {
        let mut v: Vec<Base> = fs::read_dir(&self.root)
            .map(|d| {
                d.flatten()
                    .filter_map(|e| {
                        let n = e.file_name().to_str()?.to_owned();
                        (!n.starts_with('.')).then(|| self.get(&n)).flatten()
                    })
                    .collect()
            })
            .unwrap_or_default();
        v.sort_by(|a, b| a.key.cmp(&b.key));
        v
    }

    /// Staging directories of makes that were killed, for `key`.
    pub fn leftovers(&self, key: &str, _lock: &BaseLock) -> Vec<PathBuf> {
        let prefix = format!(".{key}.staging-");
        fs::read_dir(&self.root)
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                    .map(|e| e.path())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A new, empty staging directory for base `key`, with an empty
    /// `rootfs/` inside to unpack into.
    ///
    /// # Errors
    /// [`Error::Base`] if it cannot be created.
    pub fn staging(&self, key: &str, _lock: &BaseLock) -> Result<PathBuf> {
        let mut n = 0u32;
        loop {
            let p = self
                .root
                .join(format!(".{key}.staging-{}-{n}", std::process::id()));
            let made = {
                use std::os::unix::fs::DirBuilderExt;
                fs::DirBuilder::new().mode(0o700).create(&p)
            };
            match made {
                Ok(()) => {
                    let r = p.join("rootfs");
                    fs::create_dir(&r).map_err(base_io("cannot create", &r))?;
                    return Ok(p);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 1000 => n += 1,
                Err(e) => return Err(base_io("cannot create", &p)(e)),
            }
        }
    }

    /// Completes a staged base: writes its manifest and `base.json`
    /// (`meta.digest`, `entries` and `bytes` taken from `record`), fsyncs
    /// them and renames the staging directory to `key`.
    ///
    /// # Errors
    /// [`Error::Base`] when a write or the rename fails; the staging
    /// directory is then left for the caller to remove.
    pub fn commit(
        &self,
        key: &str,
        staging: &Path,
        mut meta: BaseMeta,
        record: &TreeDigest,
        _lock: &BaseLock,
    ) -> Result<Base> {
        meta.digest = record.digest.clone();
        meta.entries = record.entries;
        meta.bytes = record.bytes;
        let write = |name: &str, data: &[u8]| -> Result<()> {
            use std::io::Write;
            let p = staging.join(name);
            let mut f = fs::File::create(&p).map_err(base_io("cannot create", &p))?;
            f.write_all(data)
                .and_then(|_| f.sync_all())
                .map_err(base_io("cannot write", &p))
        };
        write("manifest", record.text().as_bytes())?;
        let json = serde_json::to_vec_pretty(&meta).expect("base meta serializes");
        write("base.json", &json)?;
        let refs = staging.join("refs");
        fs::create_dir(&refs).map_err(base_io("cannot create", &refs))?;
        let dest = self.root.join(key);
        fs::rename(staging, &dest).map_err(base_io("cannot move the new base to", &dest))?;
        if let Ok(d) = fs::File::open(&self.root) {
            let _ = d.sync_all();
        }
        Ok(Base {
            key: key.to_owned(),
            dir: dest,
            meta,
        })
    }

    /// Records that the container at `container_dir` uses `base`.
    ///
    /// # Errors
    /// [`Error::Base`] if the reference cannot be written.
    pub fn add_ref(&self, base: &Base, container_dir: &Path, _lock: &BaseLock) -> Result<()> {
        let refs = base.dir.join("refs");
        fs::create_dir_all(&refs).map_err(base_io("cannot create", &refs))?;
        let p = refs.join(ref_name(container_dir));
        fs::write(&p, format!("{}\n", container_dir.display())).map_err(base_io("cannot write", &p))
    }

    /// Drops the reference of the container at `container_dir` (if any).
    ///
    /// # Errors
    /// [`Error::Base`] if it exists and cannot be removed.
    pub fn remove_ref(&self, base: &Base, container_dir: &Path, _lock: &BaseLock) -> Result<()> {
        let p = base.dir.join("refs").join(ref_name(container_dir));
        match fs::remove_file(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(base_io("cannot remove", &p)(e))
            }
            _ => Ok(()),
        }
    }

    /// Drops the references for which `live` is false and returns the
    /// containers still using `base`.
    pub fn live_refs(
        &self,
        base: &Base,
        live: &dyn Fn(&Path, &Base) -> bool,
        lock: &BaseLock,
    ) -> Vec<PathBuf> {
        let mut kept = Vec::new();
        for r in base.refs() {
            if live(&r, base) {
                kept.push(r);
            } else {
                let _ = self.remove_ref(base, &r, lock);
            }
        }
        kept
    }
}

/// Makes an overlay container's `upper` and `work` directories beside a
/// base: `upper` takes the base root's mode and owner (the merged root
/// shows them), `work` is private to the container's root, and the
/// image's templates are written into `upper`. `shift` maps the base's
/// ids to the container's host ids (an unshifted base); `None` keeps them
/// (a shifted base, or inside the user namespace).
///
/// # Errors
/// [`Error::Base`] or [`Error::Template`].
pub fn prepare_upper(
    base_rootfs: &Path,
    upper: &Path,
    work: &Path,
    templates: &[String],
    vars: &[(String, String)],
    shift: Option<&IdMap>,
) -> Result<Vec<String>> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let md = fs::symlink_metadata(base_rootfs).map_err(base_io("cannot read", base_rootfs))?;
    let ids = |u: u32, g: u32| match shift {
        None => Some((u, g)),
        Some(m) => Some((m.host_uid(u)?, m.host_gid(g)?)),
    };
    let (ru, rg) = ids(md.uid(), md.gid()).ok_or_else(|| Error::Base {
        what: "the base's root owner is outside the id map:".into(),
        path: base_rootfs.to_owned(),
        source: std::io::ErrorKind::InvalidData.into(),
    })?;
    let (cu, cg) = ids(0, 0).unwrap_or((ru, rg));
    for (dir, mode, u, g) in [(upper, md.mode() & 0o7777, ru, rg), (work, 0o700, cu, cg)] {
        fs::create_dir(dir).map_err(base_io("cannot create", dir))?;
        std::os::unix::fs::lchown(dir, Some(u), Some(g)).map_err(base_io("cannot chown", dir))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(mode))
            .map_err(base_io("cannot chmod", dir))?;
    }
    crate::templates::apply_to_upper(base_rootfs, upper, templates, vars, shift)
}

/// Copies a tree with everything that makes an overlay upper (owners,
/// modes, xattrs including overlayfs's own, whiteout devices, hardlinks,
/// times), in this process, never following a link of the source
/// ([`crate::copy`]). `to` must not exist.
///
/// # Errors
/// [`Error::Write`] naming the step and the path.
pub fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    crate::copy::copy_tree(from, to)
}

/// Swaps trees `a` and `b` in one step (`renameat2(RENAME_EXCHANGE)`),
/// so that a reader, or a kill at any moment, sees one or the other
/// whole: a snapshot's restore is this swap.
///
/// # Errors
/// [`Error::Base`] naming both paths.
pub fn exchange(a: &Path, b: &Path) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap_or_default();
    crate::sys::rename_exchange(&c(a), &c(b)).map_err(|source| Error::Base {
        what: format!("cannot swap {} with", b.display()),
        path: a.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> ImageId {
        ImageId {
            dist: "debian".into(),
            release: "bookworm".into(),
            arch: "amd64".into(),
            variant: "default".into(),
            build: "20250101_05:24".into(),
        }
    }

    #[test]
    fn a_base_appears_complete_and_references_are_counted() {
        let t = tempfile::tempdir().unwrap();
        let store = BaseStore::new(t.path().join("bases"));
        let key = image().base_key(None);
        assert_eq!(key, "debian_bookworm_amd64_default_20250101-05-24_raw");
        // Group- and world-readable store directories are tightened.
        std::fs::create_dir(t.path().join("bases")).unwrap();
        let shifted = image().base_key(Some(&IdMap::single(100000, 65536)));
        assert!(
            shifted.ends_with("_u0-100000-65536_g0-100000-65536"),
            "{shifted}"
        );
        let lock = store.lock(&key).unwrap();
        assert!(store.get(&key).is_none());
        let st = store.staging(&key, &lock).unwrap();
        assert_eq!(store.leftovers(&key, &lock), vec![st.clone()]);
        std::fs::write(st.join("rootfs/file"), "x").unwrap();
        // Not visible until committed.
        assert!(store.list().is_empty());
        let rec = crate::digest::tree(&st.join("rootfs")).unwrap();
        let meta = BaseMeta {
            version: 1,
            image: image(),
            source_sha256: "00".into(),
            shifted: None,
            userns: false,
            digest: String::new(),
            entries: 0,
            bytes: 0,
            created_at: 0,
        };
        let base = store.commit(&key, &st, meta, &rec, &lock).unwrap();
        assert_eq!(base.meta.entries, 2);
        let mode = |p: &Path| {
            std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(p).unwrap().permissions())
                & 0o777
        };
        assert_eq!(mode(store.root()), 0o700);
        assert_eq!(mode(&base.dir), 0o700);
        assert!(store.leftovers(&key, &lock).is_empty());
        assert_eq!(store.find_by_rootfs(&base.rootfs()).unwrap().key, key);
        base.check(&crate::digest::tree(&base.rootfs()).unwrap())
            .unwrap();

        let a = Path::new("/var/lib/davit/containers/a");
        let b = Path::new("/var/lib/davit/containers/b b");
        store.add_ref(&base, a, &lock).unwrap();
        store.add_ref(&base, b, &lock).unwrap();
        store.add_ref(&base, a, &lock).unwrap();
        assert_eq!(base.refs(), vec![a.to_path_buf(), b.to_path_buf()]);
        let kept = store.live_refs(&base, &|p, _| p == a, &lock);
        assert_eq!(kept, vec![a.to_path_buf()]);
        assert_eq!(base.refs(), vec![a.to_path_buf()]);
        store.remove_ref(&base, a, &lock).unwrap();
        store.remove_ref(&base, a, &lock).unwrap();
        assert!(base.refs().is_empty());

        // A changed tree, or a changed manifest, is caught.
        std::fs::write(base.rootfs().join("file"), "y").unwrap();
        let e = base
            .check(&crate::digest::tree(&base.rootfs()).unwrap())
            .unwrap_err();
        assert!(e.to_string().contains("./file: changed"), "{e}");
        std::fs::write(base.manifest_path(), "forged\n").unwrap();
        let e = base
            .check(&crate::digest::tree(&base.rootfs()).unwrap())
            .unwrap_err();
        assert!(e.to_string().contains("base.json records"), "{e}");
    }
}
