//! One container's directory, the name rule, the per-name lock and the
//! config file (written all or nothing, a cut-short rename finished).

use std::fs;
use std::path::{Path, PathBuf};

use davit_run::ContainerConfig;
use nix::fcntl::{Flock, FlockArg};

use crate::error::{io, Error, Result};

/// Where `rename` leaves the new config until its directory has moved; the
/// next load of the container finishes a rename that was cut short.
pub const PENDING_CONFIG: &str = ".config.toml.rename";

/// The container's directory, config and rootfs.
#[derive(Debug, Clone)]
pub struct Container {
    /// Its name.
    pub name: String,
    /// `CONTAINERS/NAME`.
    pub dir: PathBuf,
}

impl Container {
    /// `config.toml`.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("config.toml")
    }
    /// The rootfs (for overlay, the mount point).
    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }

    /// Its config, finishing a rename that a kill cut short.
    ///
    /// # Errors
    /// When the config cannot be read or parsed.
    pub fn load_config(&self) -> Result<ContainerConfig> {
        let pending = self.dir.join(PENDING_CONFIG);
        if pending.is_file() {
            let cfg = ContainerConfig::load(&pending)?;
            if cfg.name == self.name {
                fs::rename(&pending, self.config_path())
                    .map_err(io(format!("cannot finish the rename of {}", self.name)))?;
            } else {
                // The directory never moved: the rename did not happen.
                let _ = fs::remove_file(&pending);
            }
        }
        Ok(ContainerConfig::load(&self.config_path())?)
    }
}

/// Writes `cfg` to `path` all or nothing (a temporary file beside it,
/// fsync, rename, fsync of the directory).
///
/// # Errors
/// When the file cannot be written.
pub fn save_config(path: &Path, cfg: &ContainerConfig) -> Result<()> {
    use std::io::Write;
    let text = cfg.to_toml()?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let what = || format!("cannot write {}", path.display());
    let mut tmp = tempfile::Builder::new()
        .prefix(".config.toml.")
        .tempfile_in(dir)
        .map_err(io(what()))?;
    tmp.write_all(text.as_bytes()).map_err(io(what()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(fs::Permissions::from_mode(0o644))
            .map_err(io(what()))?;
    }
    tmp.as_file().sync_all().map_err(io(what()))?;
    tmp.persist(path).map_err(|e| Error::Io {
        what: what(),
        source: e.error,
    })?;
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

fn valid(name: &str) -> bool {
    davit_run::config::valid_name(name) && !name.starts_with('-')
}

/// Refuses names that could escape the containers directory or read as flags.
///
/// # Errors
/// [`Error::Usage`] saying which names are allowed.
pub fn check_name(name: &str) -> Result<()> {
    if !valid(name) {
        return Err(Error::usage(format!(
            "invalid container name {name:?}: use 1 to 64 of A-Z a-z 0-9 . _ -, not starting with '.' or '-'"
        )));
    }
    Ok(())
}

/// The same rule for a snapshot's name.
///
/// # Errors
/// [`Error::Usage`] saying which names are allowed.
pub fn check_snapshot_name(snap: &str) -> Result<()> {
    if !valid(snap) {
        return Err(Error::usage(format!(
            "invalid snapshot name {snap:?}: use 1 to 64 of A-Z a-z 0-9 . _ -, not starting with '.' or '-'"
        )));
    }
    Ok(())
}

/// The create lock of one name (`CONTAINERS/.NAME.lock`), held while it
/// is created, copied to, renamed or destroyed.
pub struct NameLock {
    _lock: Flock<fs::File>,
}

impl NameLock {
    /// Takes the lock of `name` in `root`, waiting for another holder.
    pub(crate) fn take(root: &Path, name: &str) -> Result<NameLock> {
        let lockp = root.join(format!(".{name}.lock"));
        let lf =
            fs::File::create(&lockp).map_err(io(format!("cannot create {}", lockp.display())))?;
        let lock = Flock::lock(lf, FlockArg::LockExclusive).map_err(|(_, e)| Error::Io {
            what: format!("cannot lock {}", lockp.display()),
            source: e.into(),
        })?;
        Ok(NameLock { _lock: lock })
    }
}

/// The containers directory, private to its owner (0700), made so or
/// tightened: a container's rootfs holds setuid programs (setuid root in a
/// privileged one) and device nodes, which no other host user may reach.
/// Init opens the rootfs before it takes the container's ids, so nothing
/// inside needs to search it either.
pub(crate) fn private_dir(root: &Path) -> Result<()> {
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

/// `p` under `to` where it was under `from`; any other path as it is.
pub(crate) fn rebase(p: &Path, from: &Path, to: &Path) -> PathBuf {
    p.strip_prefix(from)
        .map(|rel| to.join(rel))
        .unwrap_or_else(|_| p.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_escape_or_read_as_flags_are_refused() {
        for bad in [
            "",
            ".",
            "..",
            ".hidden",
            "-rf",
            "a/b",
            "../x",
            &"x".repeat(65),
        ] {
            let e = check_name(bad).expect_err(bad);
            assert!(e.to_string().contains("invalid container name"), "{e}");
            assert_eq!(e.kind(), crate::ErrorKind::Usage);
        }
        for good in ["web", "a.b_c-1", &"x".repeat(64)] {
            check_name(good).expect(good);
        }
        assert!(check_snapshot_name("snap0").is_ok());
        assert!(check_snapshot_name("-x").is_err());
    }

    #[test]
    fn private_dir_is_made_0700_and_tightened() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("a/containers");
        private_dir(&d).unwrap();
        assert_eq!(
            fs::metadata(&d).unwrap().permissions().mode() & 0o777,
            0o700
        );
        fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).unwrap();
        private_dir(&d).unwrap();
        assert_eq!(
            fs::metadata(&d).unwrap().permissions().mode() & 0o777,
            0o700
        );
    }

    #[test]
    fn the_name_lock_excludes_a_second_holder() {
        let t = tempfile::tempdir().unwrap();
        let held = NameLock::take(t.path(), "web").unwrap();
        let f = fs::File::open(t.path().join(".web.lock")).unwrap();
        let again = Flock::lock(f, FlockArg::LockExclusiveNonblock);
        assert!(again.is_err(), "a second holder got the lock");
        drop(held);
        let f = fs::File::open(t.path().join(".web.lock")).unwrap();
        assert!(Flock::lock(f, FlockArg::LockExclusiveNonblock).is_ok());
    }

    #[test]
    fn rebase_moves_only_paths_under_the_old_dir() {
        let (a, b) = (Path::new("/c/old"), Path::new("/c/new"));
        assert_eq!(
            rebase(Path::new("/c/old/rootfs"), a, b),
            Path::new("/c/new/rootfs")
        );
        assert_eq!(rebase(Path::new("/bases/x"), a, b), Path::new("/bases/x"));
    }
}
