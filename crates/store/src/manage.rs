//! `destroy`, `rename` and the autostart set: the container's directory as
//! a whole, under its name lock.

use std::fs;
use std::path::Path;

use davit_run::state::Status;
use davit_run::ContainerConfig;

use crate::bases::container_maps;
use crate::container::{rebase, save_config, NameLock};
use crate::error::{io, Error, Result};
use crate::{check_name, Container, Store, PENDING_CONFIG};

/// What `destroy` did.
#[derive(Debug)]
pub struct Destroyed {
    /// The container's name.
    pub name: String,
}

impl Store {
    /// Stops (halt, then kill after 10 s) and removes a container: its
    /// rootfs, layers, snapshots, config, cgroups and state, and its
    /// reference to its base (which stays until `cache prune`).
    ///
    /// # Errors
    /// [`Error::Usage`] if it runs and `force` is not given; what stopping
    /// or removing fails with.
    pub fn destroy(&self, name: &str, force: bool) -> Result<Destroyed> {
        let c = self.container(name)?;
        let st = self.status(&c.name)?;
        if st != Status::Stopped && !force {
            return Err(Error::usage(format!(
                "{} is {}; stop it first, or pass -f to stop and destroy it",
                c.name,
                st.as_str()
            )));
        }
        self.destroy_dir(&c.name, &c.dir)?;
        Ok(Destroyed { name: c.name })
    }

    /// Stops `name` with `timeout` seconds to halt (`kill`: at once).
    ///
    /// # Errors
    /// The runtime's `NotRunning` when nothing runs.
    pub fn stop(
        &self,
        name: &str,
        timeout: u64,
        kill: bool,
    ) -> Result<davit_run::stop::StopOutcome, davit_run::Error> {
        let opts = davit_run::stop::StopOptions {
            timeout: Some(std::time::Duration::from_secs(timeout)),
            kill,
            halt_signal: None,
        };
        davit_run::stop::stop(&self.layout.runtime, name, &opts)
    }

    /// Stops (halt, then kill after 10 s) and removes the container at `dir`.
    pub(crate) fn destroy_dir(&self, name: &str, dir: &Path) -> Result<()> {
        let c = Container {
            name: name.to_string(),
            dir: dir.to_path_buf(),
        };
        let cfg = ContainerConfig::load(&c.config_path()).ok();
        match self.stop(name, 10, false) {
            Ok(_) => {}
            Err(e) if e.kind() == davit_run::ErrorKind::NotRunning => {}
            Err(e) => return Err(e.into()),
        }
        // The last console log goes with it.
        if let Ok(l) = self.state(name).lock() {
            let _ = l.purge();
        }
        let maps = cfg.as_ref().and_then(container_maps);
        self.remove_tree(&c.rootfs(), maps.as_ref())?;
        // An overlay container's own layers; its base stays for the others
        // (and for the next create) until `davit cache prune`.
        self.remove_tree(&dir.join("overlay"), maps.as_ref())?;
        self.remove_tree(&dir.join("snapshots"), maps.as_ref())?;
        fs::remove_dir_all(dir).map_err(io(format!("cannot remove {}", dir.display())))?;
        if let Some(base) = cfg.as_ref().and_then(|c| c.storage.base.as_ref()) {
            self.unref_base(base, dir)?;
        }
        Ok(())
    }

    /// Renames a stopped container: its directory, config, hostname files
    /// and base reference; the old name's runtime state goes.
    ///
    /// # Errors
    /// [`Error::Usage`] for a bad or taken name or a running container.
    pub fn rename(&self, name: &str, new: &str) -> Result<()> {
        let src = self.container(name)?;
        check_name(new)?;
        let root = &self.layout.containers;
        // Both names' create locks, in a fixed order so two renames cannot
        // deadlock, and the source's state lock: no start, copy or create
        // runs while the directory moves.
        let (first, second) = if name < new { (name, new) } else { (new, name) };
        let _l1 = NameLock::take(root, first)?;
        let _l2 = NameLock::take(root, second)?;
        let state_lock = self.state(&src.name).lock()?;
        let dir = root.join(new);
        if dir.exists() || new == name {
            return Err(Error::usage(format!(
                "container {new:?} already exists in {}; pick another name",
                root.display()
            )));
        }
        let st = self.status(&src.name)?;
        if st != Status::Stopped {
            return Err(Error::usage(format!(
                "{} is {}: stop it first (`davit stop {}`)",
                src.name,
                st.as_str(),
                src.name
            )));
        }
        let old = src.load_config()?;
        let mut cfg = old.clone();
        cfg.name = new.to_owned();
        if cfg.hostname.as_deref().is_none_or(|h| h == old.name) {
            cfg.hostname = Some(new.to_owned());
        }
        cfg.rootfs = rebase(&cfg.rootfs, &src.dir, &dir);
        cfg.storage.upper = cfg.storage.upper.map(|p| rebase(&p, &src.dir, &dir));
        cfg.storage.work = cfg.storage.work.map(|p| rebase(&p, &src.dir, &dir));
        cfg.network.veth = None;
        // /etc/hostname and /etc/hosts, in the container's own layer, as
        // `copy` does.
        let tree = match &old.storage.upper {
            Some(upper) => upper.clone(),
            None => old.rootfs.clone(),
        };
        let maps = container_maps(&old);
        let rename_files =
            |from: &str, to: &str| self.tree().rename_host(&tree, maps.as_ref(), from, to);
        rename_files(&old.name, new)?;
        // The new config waits in the old directory; the directory's rename is
        // the commit (a kill before it leaves the old container, after it the
        // new one, which its next load completes).
        let pending = src.dir.join(PENDING_CONFIG);
        let staged = save_config(&pending, &cfg).and_then(|()| {
            if let Some(base) = &cfg.storage.base {
                self.add_base_ref(base, &dir)?;
            }
            fs::rename(&src.dir, &dir).map_err(io(format!(
                "cannot move {} to {}",
                src.dir.display(),
                dir.display()
            )))
        });
        if let Err(e) = staged {
            let _ = fs::remove_file(&pending);
            let _ = rename_files(new, &old.name);
            return Err(e);
        }
        let moved = Container {
            name: new.to_owned(),
            dir: dir.clone(),
        };
        moved.load_config()?;
        if let Some(base) = &cfg.storage.base {
            self.unref_base(base, &src.dir)?;
        }
        // The old name's runtime state (its last exit status) goes with it.
        let _ = state_lock.purge();
        Ok(())
    }

    /// The containers marked `autostart`, in start order: by order, then name.
    ///
    /// # Errors
    /// When the containers directory cannot be read.
    pub fn autostart_set(&self) -> Result<Vec<ContainerConfig>> {
        let root = &self.layout.containers;
        let mut v = Vec::new();
        let rd = match fs::read_dir(root) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(v),
            Err(e) => return Err(io(format!("cannot read {}", root.display()))(e)),
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || !e.path().join("config.toml").is_file() {
                continue;
            }
            let Ok(c) = self.container(&name) else {
                continue;
            };
            if let Ok(cfg) = c.load_config() {
                if cfg.autostart {
                    v.push(cfg);
                }
            }
        }
        v.sort_by(|a, b| (a.autostart_order, &a.name).cmp(&(b.autostart_order, &b.name)));
        Ok(v)
    }
}
