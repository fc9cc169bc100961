//! Moving images without a network: export bundles, import them, import a
//! local rootfs + meta pair (as LXC's `lxc-local`), and seed LXC's own
//! download cache.
//!
//! A bundle is one uncompressed tar laid out like a tiny image server:
//!
//! ```text
//! davit-bundle.json                      {"format":1,"index":"index-system","image":{...}}
//! meta/1.0/index-system(.asc)            the signed index, byte for byte
//! images/D/R/A/V/BUILD/rootfs.tar.xz ... the tarballs and their signatures
//! ```
//! Import unpacks it into a private directory and fetches from there with
//! the same trust rules as a download, so an altered bundle is refused.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cache::{self, Entry};
use crate::client::{CacheMode, Client, Fetched, Options, Outcome};
use crate::error::{Error, Result};
use crate::index::{Image, IndexKind, Wanted};
use crate::transport::Server;
use crate::Reporter;

/// The bundle's own description.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BundleInfo {
    /// Format version.
    pub format: u32,
    /// The index the image was listed in.
    pub index: IndexKind,
    /// The index line.
    pub image: Image,
}

const FILES: &[&str] = &[
    "rootfs.tar.xz",
    "meta.tar.xz",
    "SHA256SUMS",
    "SHA256SUMS.asc",
    "rootfs.tar.xz.asc",
    "meta.tar.xz.asc",
];

fn append(b: &mut tar::Builder<File>, name: &str, src: &Path) -> Result<()> {
    let mut f = File::open(src).map_err(|e| Error::io("read", src, e))?;
    let len = f.metadata().map_err(|e| Error::io("stat", src, e))?.len();
    let mut h = tar::Header::new_gnu();
    h.set_size(len);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, name, &mut f)
        .map_err(|e| Error::io("write the bundle entry", PathBuf::from(name), e))
}

/// Writes a bundle of a verified cache entry to `out` (atomically).
///
/// # Errors
/// [`Error::Digest`] if the entry is corrupt, [`Error::Usage`] if it has no
/// signed index (a `--no-validate` fetch), [`Error::Io`].
pub fn export(entry: &Entry, out: &Path) -> Result<BundleInfo> {
    entry.verify()?;
    let m = &entry.manifest;
    let kind = if m.index == "index-user" {
        IndexKind::User
    } else {
        IndexKind::System
    };
    let iname = kind.file_name();
    if !entry.dir.join(iname).is_file() {
        return Err(Error::Usage(format!("{} has no copy of its index (it was imported or fetched without one); fetch it again to export it", entry.dir.display())));
    }
    let info = BundleInfo {
        format: 1,
        index: kind,
        image: m.image.clone(),
    };
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = tempfile::NamedTempFile::new_in(dir)
        .map_err(|e| Error::io("create a temporary file in", dir, e))?;
    let mut b = tar::Builder::new(
        tmp.reopen()
            .map_err(|e| Error::io("open", tmp.path().to_path_buf(), e))?,
    );
    let json = serde_json::to_vec_pretty(&info).expect("serialises");
    let mut h = tar::Header::new_gnu();
    h.set_size(json.len() as u64);
    h.set_mode(0o644);
    b.append_data(&mut h, "davit-bundle.json", json.as_slice())
        .map_err(|e| Error::io("write", out, e))?;
    for n in [iname.to_string(), format!("{iname}.asc")] {
        let p = entry.dir.join(&n);
        if p.is_file() {
            append(&mut b, &format!("meta/1.0/{n}"), &p)?;
        }
    }
    let base = m.image.path.trim_start_matches('/');
    for n in FILES {
        let p = entry.dir.join(n);
        if p.is_file() {
            append(&mut b, &format!("{base}{n}"), &p)?;
        }
    }
    let f = b.into_inner().map_err(|e| Error::io("finish", out, e))?;
    f.sync_all().map_err(|e| Error::io("fsync", out, e))?;
    tmp.persist(out)
        .map_err(|e| Error::io("rename into place", out, e.error))?;
    Ok(info)
}

/// A bundle member name we are willing to create: relative, no `..`, sane.
fn safe_member(raw: &[u8]) -> Option<PathBuf> {
    let s = std::str::from_utf8(raw).ok()?;
    let p = Path::new(s.trim_start_matches("./"));
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => {
                let n = n.to_str()?;
                if n.starts_with('.') || n.chars().any(|c| c.is_control() || c == '\\') {
                    return None;
                }
                out.push(n);
            }
            Component::CurDir => {}
            _ => return None,
        }
    }
    (out.components().count() > 0 && out.components().count() <= 12).then_some(out)
}

/// Unpacks a bundle into `dir`: regular files with safe names only.
fn unpack_bundle(file: &Path, dir: &Path) -> Result<BundleInfo> {
    let bad = |why: String| Error::Malformed {
        what: "the bundle".into(),
        file: file.display().to_string(),
        why,
    };
    let f = File::open(file).map_err(|e| Error::io("read", file, e))?;
    let mut ar = tar::Archive::new(io::BufReader::new(f));
    for ent in ar.entries().map_err(|e| bad(e.to_string()))? {
        let mut ent = ent.map_err(|e| bad(e.to_string()))?;
        let t = ent.header().entry_type();
        if t.is_dir() {
            continue;
        }
        let raw = ent.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw).into_owned();
        if !t.is_file() {
            return Err(bad(format!("member {name:?} is not a regular file")));
        }
        let rel =
            safe_member(&raw).ok_or_else(|| bad(format!("member {name:?} has an unsafe name")))?;
        let dest = dir.join(&rel);
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).map_err(|e| Error::io("create", parent, e))?;
        }
        let mut out = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&dest)
            .map_err(|e| Error::io("create", &dest, e))?;
        io::copy(&mut ent, &mut out).map_err(|e| bad(format!("member {name:?}: {e}")))?;
        out.flush().map_err(|e| Error::io("write", &dest, e))?;
    }
    let j = fs::read(dir.join("davit-bundle.json"))
        .map_err(|_| bad("it has no davit-bundle.json".into()))?;
    let info: BundleInfo =
        serde_json::from_slice(&j).map_err(|e| bad(format!("davit-bundle.json: {e}")))?;
    if info.format != 1 {
        return Err(bad(format!(
            "format {} is newer than this davit understands",
            info.format
        )));
    }
    Ok(info)
}

/// Verifies a bundle with the same trust rules as a download and puts it
/// in the cache. `opts` gives the cache, keys and `validate`; its server is
/// replaced by the bundle.
///
/// # Errors
/// Verification errors for an altered bundle; the cache is unchanged then.
pub fn import_bundle(opts: &Options, file: &Path, rep: &dyn Reporter) -> Result<Fetched> {
    let staging = opts.cache_dir.join(cache::LAYOUT).join("staging");
    fs::create_dir_all(&staging).map_err(|e| Error::io("create", &staging, e))?;
    let tmp = tempfile::Builder::new()
        .prefix("bundle-")
        .tempdir_in(&staging)
        .map_err(|e| Error::io("create a directory in", &staging, e))?;
    rep.step("unpacking the bundle");
    let info = unpack_bundle(file, tmp.path())?;
    let mut o = opts.clone();
    o.server = Server::Dir(tmp.path().to_path_buf());
    o.mode = CacheMode::Flush;
    o.index = info.index;
    o.label = Some(format!("bundle {}", file.display()));
    let client = Client::new(o)?;
    let i = &info.image;
    client.fetch(
        &Wanted {
            dist: i.dist.clone(),
            release: i.release.clone(),
            arch: i.arch.clone(),
            variant: i.variant.clone(),
        },
        rep,
    )
}

/// Imports a local rootfs + meta tarball pair, as LXC's `lxc-local`. With
/// `opts.validate`, `ROOTFS.asc` and `META.asc` must sit beside them and
/// verify; otherwise the pair is taken as is.
///
/// # Errors
/// [`Error::Signature`] for a missing or bad signature, [`Error::Malformed`]
/// for a bad meta tarball, [`Error::Io`].
pub fn import_local(
    opts: &Options,
    rootfs: &Path,
    meta: &Path,
    image: &Image,
    rep: &dyn Reporter,
) -> Result<Fetched> {
    let mut o = opts.clone();
    o.label = Some(format!("local {} + {}", rootfs.display(), meta.display()));
    o.mode = CacheMode::Flush;
    let client = Client::new(o)?;
    let lock = client.cache().lock(image)?;
    let st = client.cache().staging(image, &lock)?;
    let mut files = BTreeMap::new();
    for (src, name) in [(rootfs, "rootfs.tar.xz"), (meta, "meta.tar.xz")] {
        let dest = st.path().join(name);
        fs::copy(src, &dest).map_err(|e| Error::io("copy", src, e))?;
        files.insert(name.to_string(), cache::sha256_file(&dest)?);
        let sig = PathBuf::from(format!("{}.asc", src.display()));
        if sig.is_file() {
            let asc = format!("{name}.asc");
            fs::copy(&sig, st.path().join(&asc)).map_err(|e| Error::io("copy", &sig, e))?;
            files.insert(asc.clone(), cache::sha256_file(&st.path().join(&asc))?);
        } else if opts.validate {
            return Err(Error::Signature {
                file: src.display().to_string(),
                why: format!(
                    "{} is missing; sign the pair, or pass --no-validate to import it unverified",
                    sig.display()
                ),
                signer: None,
            });
        }
    }
    let (verified, signer) = client.verify_build(image, st.path(), &files)?;
    let entry = client.commit_entry(image, st, &lock, files, verified, signer, rep)?;
    Ok(Fetched {
        outcome: Outcome::Downloaded,
        entry,
        warnings: Vec::new(),
    })
}

/// Files of an entry that LXC's cache holds too: the rootfs, the unpacked
/// meta and `build_id`.
fn lxc_files(entry: &Entry) -> Vec<String> {
    let own = [
        "manifest.json",
        "last_checked",
        "meta.tar.xz",
        "SHA256SUMS",
        "SHA256SUMS.asc",
        "index-system",
        "index-user",
    ];
    entry
        .manifest
        .files
        .keys()
        .filter(|n| !own.contains(&n.as_str()) && !n.ends_with(".asc"))
        .cloned()
        .collect()
}

/// Copies a verified entry into LXC's download cache
/// (`ROOT/download/DIST/RELEASE/ARCH/VARIANT/`), replacing what is there in
/// one step, so `lxc-create -t download -- ... --force-cache` works offline.
///
/// # Errors
/// [`Error::Digest`] for a corrupt entry, [`Error::Io`].
pub fn seed_lxc_cache(entry: &Entry, root: &Path) -> Result<PathBuf> {
    entry.verify()?;
    let i = &entry.manifest.image;
    let parent = root
        .join("download")
        .join(&i.dist)
        .join(&i.release)
        .join(&i.arch);
    fs::create_dir_all(&parent).map_err(|e| Error::io("create", &parent, e))?;
    let dest = parent.join(&i.variant);
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{}.davit-", i.variant))
        .tempdir_in(&parent)
        .map_err(|e| Error::io("create a directory in", &parent, e))?;
    for n in lxc_files(entry) {
        let from = entry.dir.join(&n);
        let to = tmp.path().join(&n);
        fs::copy(&from, &to).map_err(|e| Error::io("copy", &from, e))?;
        File::open(&to)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::io("fsync", &to, e))?;
    }
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755))
        .map_err(|e| Error::io("chmod", tmp.path(), e))?;
    let staged = tmp.keep();
    if dest.exists() {
        nix::fcntl::renameat2(
            None,
            &staged,
            None,
            &dest,
            nix::fcntl::RenameFlags::RENAME_EXCHANGE,
        )
        .map_err(|e| Error::io("swap in", &dest, e.into()))?;
        fs::remove_dir_all(&staged).map_err(|e| Error::io("remove", &staged, e))?;
    } else {
        fs::rename(&staged, &dest).map_err(|e| Error::io("move into place", &dest, e))?;
    }
    cache::fsync_dir(&parent)?;
    Ok(dest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_names() {
        assert_eq!(
            safe_member(b"meta/1.0/index-system"),
            Some(PathBuf::from("meta/1.0/index-system"))
        );
        assert_eq!(
            safe_member(b"./images/a/b:c/rootfs.tar.xz"),
            Some(PathBuf::from("images/a/b:c/rootfs.tar.xz"))
        );
        for bad in [
            &b"../x"[..],
            b"/etc/passwd",
            b"a/../../b",
            b"",
            b".hidden",
            b"a/.b",
        ] {
            assert_eq!(safe_member(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }
}
