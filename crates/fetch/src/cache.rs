//! The offline image cache: a versioned layout, one lock per entry, staging
//! directories and atomic commits, and a manifest of sha256 sums that is
//! checked again before every use.
//!
//! ```text
//! CACHE/v1/download/DIST/RELEASE/ARCH/VARIANT/   one entry (LXC's layout, one level down)
//!     build_id  manifest.json  last_checked
//!     rootfs.tar.xz  meta.tar.xz  [SHA256SUMS SHA256SUMS.asc] [*.asc]
//!     config  config-user  excludes-user  expiry  templates  create-message ...
//! CACHE/v1/locks/DIST/RELEASE/ARCH/VARIANT.lock  flock per entry
//! CACHE/v1/staging/KEYHASH.RANDOM/               a download in progress
//! ```
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::index::{Image, Wanted};

/// The layout version; a new layout gets a new directory.
pub const LAYOUT: &str = "v1";

/// Names davit itself writes in an entry; a meta tarball may not use them.
const OWN_FILES: &[&str] = &[
    "build_id",
    "manifest.json",
    "last_checked",
    "rootfs.tar.xz",
    "meta.tar.xz",
    "SHA256SUMS",
    "SHA256SUMS.asc",
    "rootfs.tar.xz.asc",
    "meta.tar.xz.asc",
    "index-system",
    "index-system.asc",
    "index-user",
    "index-user.asc",
];

/// What the cache records about an entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    /// Layout version of this manifest.
    pub version: u32,
    /// The server it came from.
    pub server: String,
    /// The index it was listed in.
    pub index: String,
    /// The index line.
    pub image: Image,
    /// How it was verified: `sha256sums`, `detached` or `none` (`--no-validate`).
    pub verified: String,
    /// The signer's fingerprint, when verified.
    pub signer: Option<String>,
    /// sha256 of every file in the entry except `manifest.json` and `last_checked`.
    pub files: BTreeMap<String, String>,
    /// When it was downloaded (Unix seconds).
    pub fetched_at: i64,
}

/// One cached image.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    /// The entry directory.
    pub dir: PathBuf,
    /// Its manifest.
    pub manifest: Manifest,
    /// When the server was last seen to list this build (Unix seconds).
    pub last_checked: Option<i64>,
    /// The image's own expiry from its meta (Unix seconds).
    pub expiry: Option<i64>,
}

impl Entry {
    /// The cached rootfs tarball.
    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs.tar.xz")
    }

    /// Total size of the cached files.
    pub fn size(&self) -> u64 {
        self.manifest
            .files
            .keys()
            .filter_map(|f| fs::metadata(self.dir.join(f)).ok())
            .map(|m| m.len())
            .sum()
    }

    /// LXC's relevant-file rule for a meta file (`config`, `excludes`,
    /// `templates`, `create-message`, ...): `X-user` (or `X-system`) when it
    /// exists, then `.COMPAT` on top when that exists. Returns the path if
    /// the chosen file exists.
    pub fn relevant_file(&self, base: &str, user: bool, compat: Option<u32>) -> Option<PathBuf> {
        let mode = if user { "user" } else { "system" };
        let mut p = base.to_string();
        if self.dir.join(format!("{base}-{mode}")).is_file() {
            p = format!("{base}-{mode}");
        }
        if let Some(c) = compat {
            if self.dir.join(format!("{p}.{c}")).is_file() {
                p = format!("{p}.{c}");
            }
        }
        let path = self.dir.join(p);
        path.is_file().then_some(path)
    }

    /// Whether the image's expiry has passed at `now`.
    pub fn expired(&self, now: i64) -> bool {
        self.expiry.is_some_and(|e| e < now)
    }

    /// Re-hashes every file against the manifest.
    ///
    /// # Errors
    /// [`Error::Digest`] for a changed file, [`Error::Io`] for a missing one.
    pub fn verify(&self) -> Result<()> {
        self.verify_files(|_| true)
    }

    /// Re-hashes every file but the rootfs tarball: for a build whose rootfs
    /// is already unpacked into a base that carries its own integrity record.
    ///
    /// # Errors
    /// As [`Entry::verify`].
    pub fn verify_meta(&self) -> Result<()> {
        self.verify_files(|name| !name.starts_with("rootfs."))
    }

    fn verify_files(&self, which: impl Fn(&str) -> bool) -> Result<()> {
        for (name, want) in self.manifest.files.iter().filter(|(n, _)| which(n)) {
            let p = self.dir.join(name);
            let got = sha256_file(&p)?;
            if &got != want {
                return Err(Error::Digest {
                    file: p.display().to_string(),
                    against: "the cache manifest".into(),
                    want: want.clone(),
                    got,
                });
            }
        }
        Ok(())
    }
}

/// sha256 of a file, hex.
pub(crate) fn sha256_file(p: &Path) -> Result<String> {
    let mut f = File::open(p).map_err(|e| Error::io("read", p, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io("read", p, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// The cache root.
#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
}

/// An exclusive lock on one entry; released on drop.
pub struct EntryLock {
    _lock: Flock<File>,
}

/// A staging directory for one entry; removed on drop unless committed.
pub struct Staging {
    dir: PathBuf,
    committed: bool,
}

impl Staging {
    /// The directory to write into.
    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

fn key_path(i: &Image) -> PathBuf {
    PathBuf::from(&i.dist)
        .join(&i.release)
        .join(&i.arch)
        .join(&i.variant)
}

fn key_hash(i: &Image) -> String {
    let h = Sha256::digest(key_path(i).as_os_str().as_encoded_bytes());
    hex::encode(&h[..8])
}

fn mkdirs(p: &Path) -> Result<()> {
    fs::create_dir_all(p).map_err(|e| Error::io("create the directory", p, e))
}

/// fsync one file, by path (a file or a directory).
pub(crate) fn fsync_file(p: &Path) -> Result<()> {
    fsync_dir(p)
}

pub(crate) fn fsync_dir(p: &Path) -> Result<()> {
    File::open(p)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io("fsync", p, e))
}

impl Cache {
    /// A cache rooted at `root` (e.g. `/var/cache/davit`).
    pub fn new(root: impl Into<PathBuf>) -> Cache {
        Cache { root: root.into() }
    }

    /// The cache root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn v1(&self) -> PathBuf {
        self.root.join(LAYOUT)
    }

    /// The entry directory for an image tuple.
    pub fn entry_dir(&self, i: &Image) -> PathBuf {
        self.v1().join("download").join(key_path(i))
    }

    /// Takes the entry's lock, waiting for another davit that holds it.
    ///
    /// # Errors
    /// [`Error::Io`] when the lock file cannot be created.
    pub fn lock(&self, i: &Image) -> Result<EntryLock> {
        let p = self
            .v1()
            .join("locks")
            .join(key_path(i))
            .with_extension("lock");
        if let Some(parent) = p.parent() {
            mkdirs(parent)?;
        }
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .map_err(|e| Error::io("open the lock file", &p, e))?;
        let lock = Flock::lock(f, FlockArg::LockExclusive)
            .map_err(|(_, e)| Error::io("lock", &p, io::Error::from(e)))?;
        Ok(EntryLock { _lock: lock })
    }

    /// Removes staging directories of this entry left by a killed davit, then
    /// makes a fresh one. Call with the entry's lock held.
    ///
    /// # Errors
    /// [`Error::Io`].
    pub fn staging(&self, i: &Image, _lock: &EntryLock) -> Result<Staging> {
        let sdir = self.v1().join("staging");
        mkdirs(&sdir)?;
        let prefix = format!("{}.", key_hash(i));
        if let Ok(rd) = fs::read_dir(&sdir) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().starts_with(&prefix) {
                    let _ = fs::remove_dir_all(e.path());
                }
            }
        }
        let dir = tempfile::Builder::new()
            .prefix(&prefix)
            .tempdir_in(&sdir)
            .map_err(|e| Error::io("create a staging directory in", &sdir, e))?
            .keep();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))
            .map_err(|e| Error::io("chmod", &dir, e))?;
        Ok(Staging {
            dir,
            committed: false,
        })
    }

    /// Atomically replaces the entry with the staging directory: a reader
    /// sees the old entry or the new one, never a mix.
    ///
    /// # Errors
    /// [`Error::Io`].
    pub fn commit(&self, i: &Image, mut st: Staging, _lock: &EntryLock) -> Result<PathBuf> {
        let dest = self.entry_dir(i);
        let parent = dest.parent().expect("entry has a parent");
        mkdirs(parent)?;
        fsync_dir(&st.dir)?;
        if dest.exists() {
            // Swap the two directories in one step, then remove the old one.
            nix::fcntl::renameat2(
                None,
                &st.dir,
                None,
                &dest,
                nix::fcntl::RenameFlags::RENAME_EXCHANGE,
            )
            .map_err(|e| Error::io("swap in the new cache entry at", &dest, io::Error::from(e)))?;
            let _ = fs::remove_dir_all(&st.dir);
        } else {
            fs::rename(&st.dir, &dest)
                .map_err(|e| Error::io("move the new cache entry to", &dest, e))?;
        }
        st.committed = true;
        fsync_dir(parent)?;
        Ok(dest)
    }

    /// Reads an entry; `None` when there is none or it is incomplete (an
    /// incomplete entry is treated as absent).
    pub fn read(&self, dir: &Path) -> Option<Entry> {
        let m = fs::read(dir.join("manifest.json")).ok()?;
        let manifest: Manifest = serde_json::from_slice(&m).ok()?;
        let num = |name: &str| {
            fs::read_to_string(dir.join(name))
                .ok()
                .and_then(|s| s.trim().parse::<i64>().ok())
        };
        Some(Entry {
            dir: dir.to_path_buf(),
            manifest,
            last_checked: num("last_checked"),
            expiry: num("expiry"),
        })
    }

    /// Finds the entry for a wanted image, folding case as the index does.
    pub fn find(&self, want: &Wanted) -> Option<Entry> {
        self.list()
            .into_iter()
            .find(|e| want.matches(&e.manifest.image))
    }

    /// Every complete entry.
    pub fn list(&self) -> Vec<Entry> {
        let mut out = Vec::new();
        let base = self.v1().join("download");
        let sub = |p: &Path| -> Vec<PathBuf> {
            let mut v: Vec<PathBuf> = fs::read_dir(p)
                .map(|rd| {
                    rd.flatten()
                        .map(|e| e.path())
                        .filter(|p| p.is_dir())
                        .collect()
                })
                .unwrap_or_default();
            v.sort();
            v
        };
        for d in sub(&base) {
            for r in sub(&d) {
                for a in sub(&r) {
                    for v in sub(&a) {
                        if let Some(e) = self.read(&v) {
                            out.push(e);
                        }
                    }
                }
            }
        }
        out
    }

    /// Records that the server still lists this build (separate from the
    /// image's own expiry).
    ///
    /// # Errors
    /// [`Error::Io`].
    pub fn touch_checked(&self, dir: &Path, now: i64, _lock: &EntryLock) -> Result<()> {
        write_atomic(&dir.join("last_checked"), format!("{now}\n").as_bytes())
    }

    /// Removes an entry (under its lock).
    ///
    /// # Errors
    /// [`Error::Io`].
    pub fn remove(&self, i: &Image, _lock: &EntryLock) -> Result<()> {
        let d = self.entry_dir(i);
        match fs::remove_dir_all(&d) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("remove", &d, e)),
        }
    }
}

impl Cache {
    /// Removes entries not seen on a server for `older_than` seconds (by
    /// `last_checked`, else the fetch time), or every entry with `None`,
    /// each under its lock. Also removes staging directories older than a
    /// day (left by killed runs). Returns the removed entries.
    ///
    /// # Errors
    /// [`Error::Io`].
    pub fn prune(&self, older_than: Option<i64>, now: i64) -> Result<Vec<Entry>> {
        let mut removed = Vec::new();
        for e in self.list() {
            let seen = e.last_checked.unwrap_or(e.manifest.fetched_at);
            if older_than.is_some_and(|age| now - seen < age) {
                continue;
            }
            let lock = self.lock(&e.manifest.image)?;
            self.remove(&e.manifest.image, &lock)?;
            removed.push(e);
        }
        let staging = self.v1().join("staging");
        if let Ok(rd) = fs::read_dir(&staging) {
            for d in rd.flatten() {
                let old = d
                    .metadata()
                    .ok()
                    .and_then(|m| m.modified().ok())
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|a| a.as_secs() > 86400);
                if old {
                    let _ = fs::remove_dir_all(d.path());
                }
            }
        }
        Ok(removed)
    }
}

/// Writes a file through a temp file in the same directory, fsync and rename.
///
/// # Errors
/// [`Error::Io`].
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .map_err(|e| Error::io("create a temporary file in", dir, e))?;
    use std::os::unix::fs::PermissionsExt;
    tmp.write_all(data)
        .and_then(|_| {
            tmp.as_file()
                .set_permissions(fs::Permissions::from_mode(0o644))
        })
        .and_then(|_| tmp.as_file().sync_all())
        .map_err(|e| Error::io("write", tmp.path().to_path_buf(), e))?;
    tmp.persist(path)
        .map_err(|e| Error::io("rename into place", path, e.error))?;
    Ok(())
}

/// Unpacks a flat meta tarball (xz) into `dir`: regular files with bare
/// names only, each at most 1 MiB. Returns the names written.
///
/// # Errors
/// [`Error::Malformed`] naming the member for anything else.
pub fn extract_meta(tarball: &Path, dir: &Path, label: &str) -> Result<Vec<String>> {
    let f = File::open(tarball).map_err(|e| Error::io("read", tarball, e))?;
    let xz = liblzma::read::XzDecoder::new_multi_decoder(io::BufReader::new(f));
    let mut ar = tar::Archive::new(xz);
    let bad = |why: String| Error::Malformed {
        what: "the meta tarball".into(),
        file: label.to_string(),
        why,
    };
    let mut names = Vec::new();
    let entries = ar.entries().map_err(|e| bad(e.to_string()))?;
    for ent in entries {
        let mut ent = ent.map_err(|e| bad(e.to_string()))?;
        let raw = ent.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw)
            .trim_start_matches("./")
            .to_string();
        let kind = ent.header().entry_type();
        if kind.is_dir() && (name.is_empty() || name == ".") {
            continue;
        }
        if !kind.is_file() {
            return Err(bad(format!("member {name:?} is not a regular file")));
        }
        if name.is_empty()
            || name.contains('/')
            || name == "."
            || name == ".."
            || name.starts_with('.')
        {
            return Err(bad(format!("member {name:?} is not a bare file name")));
        }
        if OWN_FILES.contains(&name.as_str()) {
            return Err(bad(format!(
                "member {name:?} would overwrite a file davit keeps"
            )));
        }
        if ent.size() > 1 << 20 {
            return Err(bad(format!("member {name:?} is larger than 1 MiB")));
        }
        let mut data = Vec::new();
        ent.read_to_end(&mut data)
            .map_err(|e| bad(format!("member {name:?}: {e}")))?;
        let p = dir.join(&name);
        fs::write(&p, &data).map_err(|e| Error::io("write", &p, e))?;
        names.push(name);
    }
    if !names.iter().any(|n| n == "config" || n == "config-user") {
        return Err(bad("it has no config file".into()));
    }
    Ok(names)
}
