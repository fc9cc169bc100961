//! The one place that chooses between working on a tree as root and
//! working on it inside a user namespace: a plain user's trees belong to
//! its subordinate ids, which it can only touch from a namespace that
//! maps them (davit re-executes itself there, `davit_rootfs::*_in_userns`).

use std::fs;
use std::path::Path;

use davit_rootfs::digest::TreeDigest;
use davit_rootfs::{IdMap, UnpackOptions};

use crate::error::{io, Result};

/// How this store reaches trees owned by other ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Root: every tree directly.
    Root,
    /// A plain user: trees of subordinate ids through a user namespace.
    UserNs,
}

/// Tree operations with the access decided (see [`Access`]).
pub(crate) struct Trees<'a> {
    pub access: Access,
    /// The davit binary re-executed inside the user namespace.
    pub exe: &'a Path,
}

impl Trees<'_> {
    fn userns(&self) -> bool {
        self.access == Access::UserNs
    }

    /// Unpacks `archive` into `dest`.
    pub fn unpack(
        &self,
        archive: &Path,
        dest: &Path,
        opts: &UnpackOptions,
        r: &dyn davit_rootfs::Reporter,
    ) -> Result<davit_rootfs::Report> {
        Ok(if self.userns() {
            davit_rootfs::unpack_in_userns(self.exe, archive, dest, opts, r)?
        } else {
            davit_rootfs::unpack(archive, dest, opts, r)?
        })
    }

    /// Removes a tree that may be owned by subordinate ids (`maps`: the
    /// ids it was made in).
    pub fn remove(&self, path: &Path, maps: Option<&IdMap>) -> Result<()> {
        if !path.exists() {
            return Ok(());
        }
        match maps {
            Some(m) if self.userns() => {
                davit_rootfs::remove_in_userns(self.exe, path, m)?;
                Ok(())
            }
            _ => fs::remove_dir_all(path).map_err(io(format!("cannot remove {}", path.display()))),
        }
    }

    /// Copies `from` to `to` keeping owners, then renames host `rename.0`
    /// to `rename.1` in `/etc/hostname` and `/etc/hosts` of `tree` (the
    /// copy's own layer).
    pub fn copy(
        &self,
        from: &Path,
        to: &Path,
        tree: &Path,
        maps: Option<&IdMap>,
        rename: &(String, String),
    ) -> Result<()> {
        match maps {
            Some(m) if self.userns() => {
                davit_rootfs::copy_in_userns(self.exe, from, to, tree, m, rename)?
            }
            _ => {
                davit_rootfs::base::copy_tree(from, to)?;
                if rename.0 != rename.1 {
                    davit_rootfs::templates::rename_host(tree, &rename.0, &rename.1)?;
                }
            }
        }
        Ok(())
    }

    /// Renames host `from` to `to` in `tree`'s `/etc/hostname` and `/etc/hosts`.
    pub fn rename_host(
        &self,
        tree: &Path,
        maps: Option<&IdMap>,
        from: &str,
        to: &str,
    ) -> Result<()> {
        match maps {
            Some(m) if self.userns() => {
                davit_rootfs::rename_host_in_userns(self.exe, tree, m, from, to)?
            }
            _ => drop(davit_rootfs::templates::rename_host(tree, from, to)?),
        }
        Ok(())
    }

    /// Records the tree at `rootfs` as it is now, the way a base was
    /// recorded when made: inside the user namespace of `userns_maps` for
    /// a plain user's base.
    pub fn digest(&self, rootfs: &Path, userns_maps: Option<&IdMap>) -> Result<TreeDigest> {
        Ok(match userns_maps {
            Some(m) => davit_rootfs::digest_in_userns(self.exe, rootfs, m)?,
            None => davit_rootfs::digest::tree(rootfs)?,
        })
    }
}

/// What `davit unpack` asks for.
#[derive(Debug, Clone)]
pub struct UnpackRequest {
    /// The rootfs tarball.
    pub tarball: std::path::PathBuf,
    /// An empty or missing directory.
    pub dir: std::path::PathBuf,
    /// Container → host ids (`None`: as stored).
    pub maps: Option<IdMap>,
    /// A file of LXC exclude patterns, one a line (`--exclude-file`).
    pub exclude_file: Option<std::path::PathBuf>,
    /// `--max-file-size`.
    pub max_file_size: Option<u64>,
}

impl crate::Store {
    /// Unpacks a tarball into an empty or new directory, all or nothing.
    ///
    /// As root: into a staging directory beside it
    /// (`.NAME.davit-unpack-XXXXXX`, with the mode and owner of `dir` if it
    /// exists), renamed onto `dir` (a new one, or the existing empty one)
    /// only once the whole archive is in; a failed unpack removes the
    /// staging directory and leaves `dir` as it was, a killed one leaves
    /// only the dot-directory. As a plain user (whose unpacked root belongs
    /// to a subordinate id, which the user cannot rename in a sticky
    /// directory such as /tmp), or when `dir` is a mount point (no rename
    /// reaches it): into `dir` itself, and a failure removes it again if it
    /// was new, or empties it.
    ///
    /// # Errors
    /// [`crate::Error::Usage`] for a link, a non-directory, a non-empty
    /// directory, or a plain user without a map; what the unpack fails with.
    pub fn unpack_into(
        &self,
        req: &UnpackRequest,
        r: &dyn davit_rootfs::Reporter,
    ) -> Result<davit_rootfs::Report> {
        use crate::Error;
        let dir = &req.dir;
        if !self.is_root() && req.maps.is_none() {
            return Err(Error::usage("a plain user cannot unpack with --privileged: ids can only be shifted into your /etc/subuid range"));
        }
        if fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(Error::usage(format!(
                "{} is a symbolic link; davit unpack never follows one (give the directory itself)",
                dir.display()
            )));
        }
        let existing = match fs::symlink_metadata(dir) {
            Ok(m) if !m.is_dir() => {
                return Err(Error::usage(format!(
                    "{} is not a directory; unpack into an empty or new directory",
                    dir.display()
                )))
            }
            Ok(m) => {
                if fs::read_dir(dir)
                    .map_err(io(format!("cannot read {}", dir.display())))?
                    .next()
                    .is_some()
                {
                    return Err(Error::usage(format!(
                        "{} is not empty; unpack into an empty or new directory",
                        dir.display()
                    )));
                }
                Some(m)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io(format!("cannot read {}", dir.display()))(e)),
        };
        let opts = UnpackOptions {
            maps: req.maps.clone(),
            excludes: crate::create::read_lines(req.exclude_file.clone()),
            skip_devices: !self.is_root(),
            threads: 0,
            templates: Vec::new(),
            template_vars: Vec::new(),
            max_file_size: req.max_file_size,
        };
        self.unpack_staged(&req.tarball, dir, existing.as_ref(), &opts, r)
    }

    fn unpack_staged(
        &self,
        archive: &Path,
        dir: &Path,
        existing: Option<&fs::Metadata>,
        opts: &UnpackOptions,
        r: &dyn davit_rootfs::Reporter,
    ) -> Result<davit_rootfs::Report> {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let trees = self.tree();
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
            Some(n) if self.is_root() && !mount_point => n,
            _ => {
                if existing.is_none() {
                    fs::create_dir_all(dir)
                        .map_err(io(format!("cannot create {}", dir.display())))?;
                }
                return trees.unpack(archive, dir, opts, r).inspect_err(|_| {
                    if existing.is_none() {
                        let _ = trees.remove(dir, maps);
                    } else {
                        trees.empty_dir(dir, maps, mode);
                    }
                });
            }
        };
        if existing.is_none() {
            fs::create_dir_all(parent)
                .map_err(io(format!("cannot create {}", parent.display())))?;
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
            .and_then(|()| trees.unpack(archive, &stage, opts, r))
            .and_then(|rep| {
                fs::rename(&stage, dir)
                    .map_err(io(format!(
                        "cannot rename {} to {}",
                        stage.display(),
                        dir.display()
                    )))
                    .map(|()| rep)
            });
        if res.is_err() {
            let _ = trees.remove(&stage, maps);
        }
        res
    }
}

impl Trees<'_> {
    /// Removes everything inside `dir` (which was empty, with `mode`,
    /// before a failed unpack), best effort.
    fn empty_dir(&self, dir: &Path, maps: Option<&IdMap>, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        if !self.userns() {
            for e in fs::read_dir(dir).into_iter().flatten().flatten() {
                let p = e.path();
                let _ = if e.file_type().is_ok_and(|t| t.is_dir()) {
                    fs::remove_dir_all(&p)
                } else {
                    fs::remove_file(&p)
                };
            }
        } else if self.remove(dir, maps).is_ok() {
            // A plain user's unpacked entries belong to subordinate ids: only
            // the user namespace can remove them, and it takes the directory.
            let _ = fs::create_dir(dir);
        }
        // Mode and owner of `dir` itself may have come from the archive.
        let _ = fs::set_permissions(dir, fs::Permissions::from_mode(mode));
    }
}
