//! `davit mirror`: copy a verified subset of a server, with its
//! signatures, into an LXC-layout tree that any static web server can serve.
//!
//! Order matters, because users hit half-synced mirrors on real servers:
//! every build directory is downloaded and verified under a dot-name, then
//! renamed into place; only then is the index published, and the index and
//! its signature change together in one step (`meta/1.0` is a symlink to a
//! directory holding both, swapped by `rename`). A run killed at any moment
//! leaves the previous state served.
#![forbid(unsafe_code)]

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::Serialize;

use crate::client::{Client, SignedIndex};
use crate::error::{Error, Result};
use crate::index::{normalize_arch, Image, Index, IndexKind};
use crate::verify::Signer;
use crate::Reporter;

/// Which images to mirror. An empty list matches everything; several
/// values in one list are alternatives. Matching folds case.
#[derive(Debug, Clone, Default)]
pub struct Filters {
    /// Distributions.
    pub dist: Vec<String>,
    /// Releases.
    pub release: Vec<String>,
    /// Architectures (aliases such as `x86_64` are understood).
    pub arch: Vec<String>,
    /// Variants.
    pub variant: Vec<String>,
}

impl Filters {
    /// Whether `i` is selected.
    pub fn matches(&self, i: &Image) -> bool {
        let any = |list: &[String], v: &str| {
            list.is_empty() || list.iter().any(|x| x.eq_ignore_ascii_case(v))
        };
        let arches: Vec<String> = self.arch.iter().map(|a| normalize_arch(a)).collect();
        any(&self.dist, &i.dist)
            && any(&self.release, &i.release)
            && any(&arches, &i.arch)
            && any(&self.variant, &i.variant)
    }
}

/// How to mirror.
pub struct MirrorOptions {
    /// The mirror tree.
    pub to: PathBuf,
    /// What to copy.
    pub filters: Filters,
    /// Builds to keep per image.
    pub keep: usize,
    /// Re-sign a filtered index with this key instead of keeping upstream's
    /// index and signature byte for byte.
    pub sign: Option<Signer>,
}

/// What a mirror run did.
#[derive(Debug, Clone, Serialize, Default)]
pub struct MirrorReport {
    /// The images the mirror now serves.
    pub images: Vec<Image>,
    /// Builds downloaded in this run (`dist/release/arch/variant/build`).
    pub downloaded: Vec<String>,
    /// Builds already present.
    pub present: Vec<String>,
    /// Builds removed by `keep`.
    pub pruned: Vec<String>,
    /// Whether the index was re-signed with a local key.
    pub resigned: bool,
}

fn image_dir(to: &Path, i: &Image) -> PathBuf {
    to.join("images")
        .join(&i.dist)
        .join(&i.release)
        .join(&i.arch)
        .join(&i.variant)
}

fn tag(i: &Image) -> String {
    format!("{}/{}", i.tuple(), i.build)
}

/// Replaces `meta/1.0` with a directory holding `files`, in one rename.
fn publish_meta(to: &Path, files: &[(String, Vec<u8>)]) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = to.join("meta");
    fs::create_dir_all(&meta).map_err(|e| Error::io("create", &meta, e))?;
    let dir = tempfile::Builder::new()
        .prefix(".1.0-")
        .tempdir_in(&meta)
        .map_err(|e| Error::io("create a directory in", &meta, e))?
        .keep();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))
        .map_err(|e| Error::io("chmod", &dir, e))?;
    for (name, data) in files {
        crate::cache::write_atomic(&dir.join(name), data)?;
    }
    let target = dir.file_name().expect("named").to_owned();
    let link = meta.join(format!(".link-{}", target.to_string_lossy()));
    std::os::unix::fs::symlink(&target, &link)
        .map_err(|e| Error::io("create the symlink", &link, e))?;
    let cur = meta.join("1.0");
    let is_real_dir = fs::symlink_metadata(&cur)
        .map(|m| m.is_dir())
        .unwrap_or(false);
    if is_real_dir {
        // A tree made by `davit publish`: swap the directory for the link.
        nix::fcntl::renameat2(
            None,
            &link,
            None,
            &cur,
            nix::fcntl::RenameFlags::RENAME_EXCHANGE,
        )
        .map_err(|e| Error::io("swap in the new index at", &cur, e.into()))?;
        fs::remove_dir_all(&link).map_err(|e| Error::io("remove", &link, e))?;
    } else {
        fs::rename(&link, &cur).map_err(|e| Error::io("swap in the new index at", &cur, e))?;
    }
    crate::cache::fsync_dir(&meta)?;
    // Old index directories are no longer reachable.
    for e in fs::read_dir(&meta)
        .map_err(|e| Error::io("read", &meta, e))?
        .flatten()
    {
        let n = e.file_name();
        let n = n.to_string_lossy();
        if (n.starts_with(".1.0-") && *n != *target.to_string_lossy()) || n.starts_with(".link-") {
            let _ = fs::remove_dir_all(e.path()).or_else(|_| fs::remove_file(e.path()));
        }
    }
    Ok(())
}

impl Client {
    /// Mirrors the selected images of this client's server into `o.to`.
    ///
    /// # Errors
    /// Any download or verification error; the tree keeps its previous
    /// state on error.
    pub fn mirror(&self, o: &mut MirrorOptions, rep: &dyn Reporter) -> Result<MirrorReport> {
        fs::create_dir_all(&o.to).map_err(|e| Error::io("create", &o.to, e))?;
        let lockp = o.to.join(".davit-mirror.lock");
        let lf = fs::File::create(&lockp).map_err(|e| Error::io("create", &lockp, e))?;
        let _lock = Flock::lock(lf, FlockArg::LockExclusive)
            .map_err(|(_, e)| Error::io("lock", &lockp, e.into()))?;

        let system = self.signed_index_of(IndexKind::System, rep)?;
        let user = match self.signed_index_of(IndexKind::User, rep) {
            Ok(u) => Some(u),
            Err(Error::Download {
                status: Some(404), ..
            }) => None,
            Err(e) => return Err(e),
        };
        let mut wanted: Vec<Image> = Vec::new();
        for idx in std::iter::once(&system).chain(user.iter()) {
            for i in &idx.index.images {
                if o.filters.matches(i) && !wanted.iter().any(|w| w == i) {
                    wanted.push(i.clone());
                }
            }
        }
        if wanted.is_empty() {
            return Err(Error::NotFound {
                message: format!(
                    "no image on {} matches the filters; `davit images --server {}` lists them",
                    self.server().display(),
                    self.server().display()
                ),
            });
        }
        let mut report = MirrorReport::default();
        for img in &wanted {
            let dir = image_dir(&o.to, img);
            let dest = dir.join(&img.build);
            if dest.is_dir() {
                report.present.push(tag(img));
                continue;
            }
            fs::create_dir_all(&dir).map_err(|e| Error::io("create", &dir, e))?;
            // Leftovers of a killed run.
            for e in fs::read_dir(&dir)
                .map_err(|e| Error::io("read", &dir, e))?
                .flatten()
            {
                if e.file_name().to_string_lossy().starts_with(".partial-") {
                    let _ = fs::remove_dir_all(e.path());
                }
            }
            let tmp = tempfile::Builder::new()
                .prefix(".partial-")
                .tempdir_in(&dir)
                .map_err(|e| Error::io("create a directory in", &dir, e))?;
            rep.step(&format!("mirroring {} build {}", img.tuple(), img.build));
            let files = self.download_build_files(img, tmp.path(), true, rep)?;
            self.verify_build(img, tmp.path(), &files)?;
            if let Some(signer) = o.sign.as_mut() {
                // A site that trusts only its own key gets the builds signed by it too.
                if !files.contains_key("SHA256SUMS") {
                    let sums: String = ["rootfs.tar.xz", "meta.tar.xz"]
                        .iter()
                        .map(|n| format!("{}  {n}\n", files[*n]))
                        .collect();
                    fs::write(tmp.path().join("SHA256SUMS"), sums)
                        .map_err(|e| Error::io("write", tmp.path().join("SHA256SUMS"), e))?;
                }
                for n in ["SHA256SUMS", "rootfs.tar.xz", "meta.tar.xz"] {
                    let sig = signer.sign_file(&tmp.path().join(n))?;
                    fs::write(tmp.path().join(format!("{n}.asc")), sig)
                        .map_err(|e| Error::io("write", tmp.path().join(n), e))?;
                }
            }
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755))
                .map_err(|e| Error::io("chmod", tmp.path(), e))?;
            // One fsync per file: the downloads, and the sums and
            // signatures made here.
            let listing = fs::read_dir(tmp.path()).map_err(|e| Error::io("list", tmp.path(), e))?;
            for e in listing {
                let e = e.map_err(|e| Error::io("list", tmp.path(), e))?;
                crate::cache::fsync_file(&e.path())?;
            }
            crate::cache::fsync_dir(tmp.path())?;
            let kept = tmp.keep();
            fs::rename(&kept, &dest).map_err(|e| Error::io("move the build into", &dest, e))?;
            crate::cache::fsync_dir(&dir)?;
            report.downloaded.push(tag(img));
        }

        // The index goes last, with its signature, in one step.
        let mut meta_files = Vec::new();
        let mut add = |si: &SignedIndex, sign: &mut Option<Signer>| -> Result<()> {
            let name = si.kind.file_name().to_string();
            match sign {
                None => {
                    meta_files.push((name.clone(), si.raw.clone()));
                    if let Some(sig) = &si.sig {
                        meta_files.push((format!("{name}.asc"), sig.clone()));
                    }
                }
                Some(signer) => {
                    let idx = Index {
                        images: si
                            .index
                            .images
                            .iter()
                            .filter(|i| o.filters.matches(i))
                            .cloned()
                            .collect(),
                    };
                    let text = idx.render();
                    let sig = signer.sign(text.as_bytes(), &name)?;
                    meta_files.push((name.clone(), text.into_bytes()));
                    meta_files.push((format!("{name}.asc"), sig));
                }
            }
            Ok(())
        };
        add(&system, &mut o.sign)?;
        if let Some(u) = &user {
            add(u, &mut o.sign)?;
        }
        publish_meta(&o.to, &meta_files)?;
        report.resigned = o.sign.is_some();

        // Prune builds beyond `keep`, never one the index names.
        let named: BTreeSet<String> = wanted.iter().map(tag).collect();
        let tuples: BTreeSet<PathBuf> = wanted.iter().map(|i| image_dir(&o.to, i)).collect();
        for dir in tuples {
            let builds = crate::publish::build_dirs(&dir)?;
            let rel = dir
                .strip_prefix(o.to.join("images"))
                .unwrap_or(&dir)
                .display()
                .to_string();
            let excess = builds.len().saturating_sub(o.keep.max(1));
            for b in builds.into_iter().take(excess) {
                let t = format!("{rel}/{b}");
                if named.contains(&t) {
                    continue;
                }
                fs::remove_dir_all(dir.join(&b))
                    .map_err(|e| Error::io("prune", dir.join(&b), e))?;
                report.pruned.push(t);
            }
        }
        report.images = wanted;
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn img(d: &str, r: &str, a: &str, v: &str) -> Image {
        Image {
            id: davit_types::ImageId {
                dist: d.into(),
                release: r.into(),
                arch: a.into(),
                variant: v.into(),
                build: "1".into(),
            },
            path: "/x/".into(),
        }
    }

    #[test]
    fn filters_fold_case_and_arch_aliases() {
        let f = Filters {
            dist: vec!["Debian".into(), "alpine".into()],
            arch: vec!["x86_64".into()],
            ..Default::default()
        };
        assert!(f.matches(&img("debian", "bookworm", "amd64", "default")));
        assert!(f.matches(&img("alpine", "3.19", "amd64", "cloud")));
        assert!(!f.matches(&img("ubuntu", "noble", "amd64", "default")));
        assert!(!f.matches(&img("debian", "bookworm", "arm64", "default")));
        assert!(Filters::default().matches(&img("x", "y", "z", "w")));
    }

    #[test]
    fn meta_swap_replaces_a_real_directory_and_old_links() {
        let t = tempfile::tempdir().unwrap();
        fs::create_dir_all(t.path().join("meta/1.0")).unwrap();
        fs::write(t.path().join("meta/1.0/index-system"), "old").unwrap();
        publish_meta(t.path(), &[("index-system".into(), b"one".to_vec())]).unwrap();
        assert_eq!(
            fs::read(t.path().join("meta/1.0/index-system")).unwrap(),
            b"one"
        );
        publish_meta(
            t.path(),
            &[
                ("index-system".into(), b"two".to_vec()),
                ("index-system.asc".into(), b"sig".to_vec()),
            ],
        )
        .unwrap();
        assert_eq!(
            fs::read(t.path().join("meta/1.0/index-system")).unwrap(),
            b"two"
        );
        let left: Vec<String> = fs::read_dir(t.path().join("meta"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left.len(), 2, "{left:?}");
    }
}
