//! Starting a container's monitor, the route a plain user's processes take
//! into their cgroups, and the host checks of `davit check` that concern
//! the store: the steps around the caller's terminal, which stays the
//! CLI's (davit-term).

use std::path::{Path, PathBuf};

use davit_run::check::CheckItem;
use davit_run::monitor::{spawn_monitor_via, MonitorArgs, MonitorHandle, MonitorIo};
use davit_run::ContainerConfig;

use crate::error::{io, Result};
use crate::{Container, Store};

/// What `davit start` asks for.
#[derive(Debug, Clone, Default)]
pub struct StartRequest {
    /// The container.
    pub name: String,
    /// Memory limit for this run (overrides config.toml).
    pub memory: Option<u64>,
    /// Task limit for this run.
    pub pids: Option<u64>,
    /// CPU limit for this run.
    pub cpus: Option<f64>,
    /// Run this in place of the configured init.
    pub command: Vec<String>,
    /// Detached: return once init runs.
    pub daemon: bool,
    /// The cgroup prefix (`davit` when `None`).
    pub cgroup_prefix: Option<String>,
}

/// A start whose config and monitor arguments are ready; the caller sets
/// up its terminal, then [`PreparedStart::launch`]es it.
pub struct PreparedStart {
    container: Container,
    args: MonitorArgs,
    daemon: bool,
    via: Option<PathBuf>,
    monitor: PathBuf,
    runtime: PathBuf,
    /// Why the container gets no network, or other networking advice.
    pub net_hint: Option<String>,
}

/// A running monitor with its container's init.
pub struct Launched {
    /// The monitor: its process, its ready pipe, the console it sends.
    pub handle: MonitorHandle,
    /// init's pid on the host.
    pub pid: i32,
    /// What the monitor found and the user should know (limits it could
    /// not set, binds it could not idmap).
    pub warnings: Vec<String>,
}

impl Store {
    /// The monitor binary: `davit-monitor` beside davit when it is there
    /// (much smaller to seal and exec), else davit itself.
    fn monitor_exe(&self) -> PathBuf {
        let small = self.layout.exe.with_file_name("davit-monitor");
        if small.is_file() {
            small
        } else {
            self.layout.exe.clone()
        }
    }

    /// For a plain user without a delegated cgroup whom the admin granted
    /// cgroups (`/etc/davit/cgroups`), on a host without a user bus to ask
    /// systemd for a scope: the setuid `davit-cgroup` to run the monitor
    /// (or an attach) through. `None` otherwise; the monitor then makes a
    /// scope, or says why it runs without limits.
    pub fn cgroup_helper(&self, cfg: &ContainerConfig) -> Option<PathBuf> {
        if self.is_root() {
            return None;
        }
        let layout = davit_run::cgroup::Layout::detect().ok()?;
        // cgroup v2 with a user manager: the monitor asks it for a scope
        // (davit_run::userscope), which systemd's tree prefers to /user/USER.
        if layout.mode() == davit_run::cgroup::Mode::Unified
            && davit_run::userscope::bus_address().is_some()
        {
            return None;
        }
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        match davit_run::usercgroup::route(
            &layout,
            &own,
            crate::euid(),
            &davit_run::cgroup::needed_controllers(&cfg.limits),
            Path::new(davit_run::usercgroup::GRANT_FILE),
            &davit_run::usercgroup::helper_path(),
        ) {
            davit_run::usercgroup::Route::Helper(h) => Some(h),
            _ => None,
        }
    }

    /// Loads the container's config, applies this run's limits (in a copy
    /// the monitor reads; config.toml stays as it is), and makes the
    /// monitor's arguments.
    ///
    /// # Errors
    /// No such container, a bad config, or the runtime directory.
    pub fn prepare_start(&self, req: StartRequest) -> Result<PreparedStart> {
        let c = self.container(&req.name)?;
        let mut cfg = c.load_config()?;
        let host = davit_run::net::HostNet::load(&self.layout.net_config)?;
        let (_, net_hint) = davit_run::net::plan(&host, &cfg, crate::euid());
        let runtime = self.layout.runtime.clone();
        std::fs::create_dir_all(&runtime)
            .map_err(io(format!("cannot create {}", runtime.display())))?;
        // Limits given on the command line apply to this run only.
        let config_path = if req.memory.is_some() || req.pids.is_some() || req.cpus.is_some() {
            cfg.limits.memory = req.memory.or(cfg.limits.memory);
            cfg.limits.pids = req.pids.or(cfg.limits.pids);
            cfg.limits.cpus = req.cpus.or(cfg.limits.cpus);
            let p = runtime.join(format!(".{}.config.toml", c.name));
            std::fs::write(&p, cfg.to_toml()?)
                .map_err(io(format!("cannot write {}", p.display())))?;
            p
        } else {
            c.config_path()
        };
        let mut args = MonitorArgs::new(&config_path, &runtime);
        if self.layout.net_config != Path::new(davit_run::net::HOST_CONFIG) {
            args.net_config = Some(self.layout.net_config.clone());
        }
        args.command = req.command;
        if let Some(p) = req.cgroup_prefix {
            args.cgroup_prefix = p;
        }
        Ok(PreparedStart {
            via: self.cgroup_helper(&cfg),
            container: c,
            args,
            daemon: req.daemon,
            monitor: self.monitor_exe(),
            runtime,
            net_hint,
        })
    }
}

impl PreparedStart {
    /// The container being started.
    pub fn container(&self) -> &Container {
        &self.container
    }

    /// Spawns the monitor with `io` as init's terminal (through
    /// `davit-cgroup` where the route says so) and waits for its ready
    /// line.
    ///
    /// # Errors
    /// Why the monitor or init failed, as the monitor reported it (the
    /// monitor has been waited for).
    pub fn launch(self, io: MonitorIo) -> Result<Launched> {
        let mut h = spawn_monitor_via(
            self.via.as_deref(),
            &self.monitor,
            &self.args,
            self.daemon,
            io,
        )?;
        let pid = match h.wait_ready() {
            Ok(pid) => pid,
            Err(e) => {
                let _ = h.child.wait();
                return Err(e.into());
            }
        };
        let mut warnings = Vec::new();
        if let Some(st) = davit_run::state::StateStore::new(&self.runtime, &self.container.name)
            .peek()
            .ok()
            .flatten()
        {
            if let Some(why) = &st.no_limits_reason {
                warnings.push(format!("started without resource limits: {why}"));
            }
            warnings.extend(st.notes.iter().cloned());
        }
        Ok(Launched {
            handle: h,
            pid,
            warnings,
        })
    }
}

impl Store {
    /// `davit check`'s items: the runtime's (namespaces, cgroups, helpers),
    /// then what `create` would pick for storage here, the caller's
    /// subordinate ids against everyone else's, and gpg.
    ///
    /// # Errors
    /// When the id files cannot be read.
    pub fn check(&self) -> Result<Vec<CheckItem>> {
        let mut items = davit_run::check::check();
        match davit_run::net::HostNet::load(&self.layout.net_config) {
            Ok(host) => items.extend(davit_run::check::nat_items(&host)),
            Err(e) => items.push(CheckItem {
                item: "network: host config".into(),
                ok: false,
                detail: e.to_string(),
                fix: Some(format!("fix {}", self.layout.net_config.display())),
            }),
        }
        let maps = self.default_maps().ok();
        let probe = self.storage_probe(false, maps.as_ref());
        items.push(CheckItem {
            item: "storage".into(),
            ok: probe.overlay.is_some(),
            detail: match &probe.overlay {
                Some(davit_run::storage::OverlayMethod::IdmappedBase) => {
                    "overlay, one base per build attached as an idmapped lower layer".into()
                }
                Some(davit_run::storage::OverlayMethod::ShiftedBase) => format!(
                    "overlay, one base per build and id range{}",
                    if probe.notes.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", probe.notes.join("; "))
                    }
                ),
                None => format!("dir only: {}", probe.notes.join("; ")),
            },
            fix: Some(
                "load overlayfs (modprobe overlay) on Linux 5.11+; idmapped bases need 5.19+"
                    .into(),
            ),
        });
        // Subordinate ids: a range of our own, which nobody else can act as.
        if let Some(m) = &maps {
            let conflicts = self.map_conflicts(m)?;
            let range = |r: &[davit_types::IdRange]| {
                r.first()
                    .map(|r| format!("{}-{}", r.host, r.host as u64 + r.len as u64 - 1))
                    .unwrap_or_default()
            };
            items.push(CheckItem {
                item: "subordinate ids".into(),
                ok: conflicts.is_empty(),
                detail: if conflicts.is_empty() {
                    format!(
                        "uids {}, gids {}, overlapping no one",
                        range(&m.uid),
                        range(&m.gid)
                    )
                } else {
                    conflicts.join("; ")
                },
                fix: Some(format!(
                    "give {} a range no other user or account overlaps in /etc/subuid and /etc/subgid",
                    self.user
                )),
            });
        }
        // Signatures are checked by gpg through gpgme.
        let gpg = std::env::var_os("PATH")
            .map(|p| {
                std::env::split_paths(&p)
                    .map(|d| d.join("gpg"))
                    .find(|p| p.is_file())
            })
            .unwrap_or(None);
        items.push(CheckItem {
            item: "gpg (signature checks)".into(),
            ok: gpg.is_some(),
            detail: gpg
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "not found".into()),
            fix: Some("apt-get install gnupg".into()),
        });
        Ok(items)
    }
}

impl Store {
    /// Execs this davit again through the cgroup `helper`
    /// (`davit-cgroup enter -- DAVIT ARGS…`), with `marker=1` in the
    /// environment so the second run knows it came through. Returns only
    /// when the exec failed.
    pub fn exec_through(
        &self,
        helper: &Path,
        args: impl IntoIterator<Item = std::ffi::OsString>,
        marker: &str,
    ) -> crate::Error {
        use std::os::unix::process::CommandExt;
        let e = std::process::Command::new(helper)
            .args(["enter".as_ref(), "--".as_ref(), self.layout.exe.as_os_str()])
            .args(args)
            .env(marker, "1")
            .exec();
        crate::Error::Io {
            what: format!("cannot run {}", helper.display()),
            source: e,
        }
    }
}
