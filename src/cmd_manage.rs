//! Day-two commands: `davit set` (live limits and autostart keys, as
//! `lxc-cgroup`), `davit rename` (as `lxc-copy -R`) and `davit autostart`
//! (as `lxc-autostart`).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use davit_run::config::Limits;
use davit_run::state::{StateStore, Status};
use davit_run::ContainerConfig;
use nix::fcntl::{Flock, FlockArg};
use serde_json::json;

use crate::cmd_run::{check_name, container, Container};
use crate::{paths, storage, Ctx, Failure};

fn io(what: String) -> impl FnOnce(std::io::Error) -> Failure {
    move |e| Failure::io(anyhow::anyhow!(e).context(what))
}

/// Where `rename` leaves the new config until its directory has moved; the
/// next load of the container finishes a rename that was cut short.
pub const PENDING_CONFIG: &str = ".config.toml.rename";

/// Writes `cfg` to `path` all or nothing (a temporary file beside it,
/// fsync, rename).
pub fn save_config(path: &Path, cfg: &ContainerConfig) -> Result<(), Failure> {
    Ok(davit_fetch::cache::write_atomic(
        path,
        cfg.to_toml()?.as_bytes(),
    )?)
}

/// A container's config, finishing a rename that a kill cut short.
pub fn load_config(c: &Container) -> Result<ContainerConfig, Failure> {
    let pending = c.dir.join(PENDING_CONFIG);
    if pending.is_file() {
        let cfg = ContainerConfig::load(&pending)?;
        if cfg.name == c.name {
            fs::rename(&pending, c.config_path())
                .map_err(io(format!("cannot finish the rename of {}", c.name)))?;
        } else {
            // The directory never moved: the rename did not happen.
            let _ = fs::remove_file(&pending);
        }
    }
    Ok(ContainerConfig::load(&c.config_path())?)
}

fn status(name: &str) -> Result<Status, Failure> {
    Ok(davit_run::info::info(
        &paths::runtime_dir(),
        name,
        &davit_run::cgroup::Layout::detect()?,
    )?
    .status)
}

fn parse_limit_size(s: &str) -> Result<u64, String> {
    if s == "none" {
        return Ok(0);
    }
    crate::cmd_publish::parse_size(s)
}

fn parse_limit_count(s: &str) -> Result<u64, String> {
    if s == "none" {
        return Ok(0);
    }
    s.parse().map_err(|_| format!("{s:?} is not a number"))
}

fn parse_limit_cpus(s: &str) -> Result<f64, String> {
    if s == "none" {
        return Ok(0.0);
    }
    match s.parse::<f64>() {
        Ok(c) if c.is_finite() && c >= 0.0 => Ok(c),
        _ => Err(format!("{s:?} is not a number of CPUs like 1.5")),
    }
}

#[derive(Args)]
pub struct SetArgs {
    pub name: String,
    /// Memory limit, e.g. 1G (`0` or `none`: no limit). A running
    /// container gets it at once.
    #[arg(long, value_parser = parse_limit_size)]
    pub memory: Option<u64>,
    /// Task limit (`0` or `none`: no limit), now and from the next start.
    #[arg(long, value_parser = parse_limit_count)]
    pub pids: Option<u64>,
    /// CPU limit in CPUs, e.g. 1.5 (`0` or `none`: no limit).
    #[arg(long, value_parser = parse_limit_cpus)]
    pub cpus: Option<f64>,
    /// Start it with `davit autostart` (at boot).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub autostart: Option<bool>,
    /// Lower orders start first and stop last.
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub autostart_order: Option<i32>,
    /// Seconds to wait after starting it before the next container.
    #[arg(long, value_name = "SECS")]
    pub autostart_delay: Option<u64>,
}

fn limit_text(l: &Limits) -> Vec<String> {
    let mut v = Vec::new();
    let none = |x: bool| if x { " (none)" } else { "" };
    if let Some(m) = l.memory {
        v.push(format!("memory {}{}", m, none(m == 0)));
    }
    if let Some(p) = l.pids {
        v.push(format!("pids {}{}", p, none(p == 0)));
    }
    if let Some(c) = l.cpus {
        v.push(format!("cpus {}{}", c, none(c == 0.0)));
    }
    v
}

pub fn set(ctx: &Ctx, a: SetArgs) -> Result<(), Failure> {
    let c = container(&a.name)?;
    let old = load_config(&c)?;
    let change = Limits {
        memory: a.memory,
        pids: a.pids,
        cpus: a.cpus,
    };
    if change.is_empty()
        && a.autostart.is_none()
        && a.autostart_order.is_none()
        && a.autostart_delay.is_none()
    {
        return Err(Failure::usage(
            "nothing to set: give --memory, --pids, --cpus, --autostart, --autostart-order or --autostart-delay",
        ));
    }
    let mut cfg = old.clone();
    let keep = |new: Option<u64>, cur: Option<u64>| match new {
        Some(0) => None,
        Some(n) => Some(n),
        None => cur,
    };
    cfg.limits.memory = keep(change.memory, cfg.limits.memory);
    cfg.limits.pids = keep(change.pids, cfg.limits.pids);
    cfg.limits.cpus = match change.cpus {
        Some(0.0) => None,
        Some(c) => Some(c),
        None => cfg.limits.cpus,
    };
    cfg.autostart = a.autostart.unwrap_or(cfg.autostart);
    cfg.autostart_order = a.autostart_order.unwrap_or(cfg.autostart_order);
    cfg.autostart_delay = a.autostart_delay.unwrap_or(cfg.autostart_delay);
    cfg.validate()?;
    // The file first, so that a start racing with us reads the new limits;
    // put back if the running container refuses them.
    save_config(&c.config_path(), &cfg)?;
    let live = if change.is_empty() {
        Ok(false)
    } else {
        davit_run::live::set_limits(&paths::runtime_dir(), &c.name, &change)
    };
    let live = match live {
        Ok(l) => l,
        Err(e) => {
            // What the kernel took before it refused the rest goes back
            // to the old values, as config.toml does.
            let back = Limits {
                memory: change.memory.map(|_| old.limits.memory.unwrap_or(0)),
                pids: change.pids.map(|_| old.limits.pids.unwrap_or(0)),
                cpus: change.cpus.map(|_| old.limits.cpus.unwrap_or(0.0)),
            };
            let _ = davit_run::live::set_limits(&paths::runtime_dir(), &c.name, &back);
            save_config(&c.config_path(), &old)?;
            return Err(Failure::from(e));
        }
    };
    if ctx.json {
        ctx.print_json(
            &json!({"name": c.name, "limits": cfg.limits, "applied_now": live,
            "autostart": cfg.autostart, "autostart_order": cfg.autostart_order,
            "autostart_delay": cfg.autostart_delay}),
        );
    } else {
        let mut what = limit_text(&change);
        if a.autostart.is_some() || a.autostart_order.is_some() || a.autostart_delay.is_some() {
            what.push(format!(
                "autostart {} (order {}, delay {}s)",
                cfg.autostart, cfg.autostart_order, cfg.autostart_delay
            ));
        }
        let when = if live {
            "applied to the running container and saved"
        } else if change.is_empty() {
            "saved"
        } else {
            "saved; it applies from the next start"
        };
        ctx.term
            .say(&format!("{}: {} ({when})", c.name, what.join(", ")));
    }
    Ok(())
}

#[derive(Args)]
pub struct RenameArgs {
    /// The container to rename (stopped).
    pub name: String,
    /// Its new name.
    pub new: String,
}

fn lock_name(root: &Path, name: &str) -> Result<Flock<fs::File>, Failure> {
    let lockp = root.join(format!(".{name}.lock"));
    let lf = fs::File::create(&lockp).map_err(io(format!("cannot create {}", lockp.display())))?;
    Flock::lock(lf, FlockArg::LockExclusive).map_err(|(_, e)| {
        Failure::io(anyhow::anyhow!(e).context(format!("cannot lock {}", lockp.display())))
    })
}

pub fn rename(ctx: &Ctx, a: RenameArgs) -> Result<(), Failure> {
    let src = container(&a.name)?;
    check_name(&a.new)?;
    let root = paths::containers_dir();
    // Both names' create locks, in a fixed order so two renames cannot
    // deadlock, and the source's state lock: no start, copy or create
    // runs while the directory moves.
    let (first, second) = if a.name < a.new {
        (&a.name, &a.new)
    } else {
        (&a.new, &a.name)
    };
    let _l1 = lock_name(&root, first)?;
    let _l2 = lock_name(&root, second)?;
    let runtime = paths::runtime_dir();
    let store = StateStore::new(&runtime, &src.name);
    let state_lock = store.lock()?;
    let dir = root.join(&a.new);
    if dir.exists() || a.new == a.name {
        return Err(Failure::usage(format!(
            "container {:?} already exists in {}; pick another name",
            a.new,
            root.display()
        )));
    }
    let st = status(&src.name)?;
    if st != Status::Stopped {
        return Err(Failure::usage(format!(
            "{} is {}: stop it first (`davit stop {}`)",
            src.name,
            st.as_str(),
            src.name
        )));
    }
    let old = load_config(&src)?;
    let mut cfg = old.clone();
    cfg.name = a.new.clone();
    if cfg.hostname.as_deref().is_none_or(|h| h == old.name) {
        cfg.hostname = Some(a.new.clone());
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
    let rename_files = |from: &str, to: &str| -> Result<(), Failure> {
        match storage::container_maps(&old) {
            Some(m) if !paths::is_root() => {
                davit_rootfs::rename_host_in_userns(&paths::davit_exe()?, &tree, &m, from, to)?
            }
            _ => drop(davit_rootfs::templates::rename_host(&tree, from, to)?),
        }
        Ok(())
    };
    rename_files(&old.name, &a.new)?;
    // The new config waits in the old directory; the directory's rename is
    // the commit (a kill before it leaves the old container, after it the
    // new one, which its next load completes).
    let pending = src.dir.join(PENDING_CONFIG);
    let staged = save_config(&pending, &cfg).and_then(|()| {
        if let Some(base) = &cfg.storage.base {
            add_base_ref(base, &dir)?;
        }
        fs::rename(&src.dir, &dir).map_err(io(format!(
            "cannot move {} to {}",
            src.dir.display(),
            dir.display()
        )))
    });
    if let Err(e) = staged {
        let _ = fs::remove_file(&pending);
        let _ = rename_files(&a.new, &old.name);
        return Err(e);
    }
    let moved = Container {
        name: a.new.clone(),
        dir: dir.clone(),
    };
    load_config(&moved)?;
    if let Some(base) = &cfg.storage.base {
        storage::unref(base, &src.dir)?;
    }
    // The old name's runtime state (its last exit status) goes with it.
    let _ = state_lock.purge();
    drop(state_lock);
    if ctx.json {
        ctx.print_json(&json!({"name": a.new, "from": a.name, "dir": dir}));
    } else {
        ctx.term.say(&format!("renamed {} to {}", a.name, a.new));
    }
    Ok(())
}

/// `p` under `to` where it was under `from`; any other path as it is.
fn rebase(p: &Path, from: &Path, to: &Path) -> PathBuf {
    p.strip_prefix(from)
        .map(|rel| to.join(rel))
        .unwrap_or_else(|_| p.to_owned())
}

fn add_base_ref(base: &Path, dir: &Path) -> Result<(), Failure> {
    let store = storage::store();
    let b = store.find_by_rootfs(base).ok_or_else(|| {
        Failure::new(
            crate::exit::NOT_FOUND,
            anyhow::anyhow!("the base {} is missing", base.display()),
        )
    })?;
    let lock = store.lock(&b.key)?;
    store.add_ref(&b, dir, &lock)?;
    Ok(())
}

#[derive(Args)]
pub struct AutostartArgs {
    /// Stop the autostart containers, in reverse order.
    #[arg(long, short)]
    pub stop: bool,
    /// Only list them, in the order they would start.
    #[arg(long, short, conflicts_with = "stop")]
    pub list: bool,
    /// With --stop: seconds each gets to halt before it is killed.
    #[arg(long, short, default_value_t = 30)]
    pub timeout: u64,
}

/// The containers marked `autostart`, in start order: by order, then name.
fn autostart_set() -> Result<Vec<ContainerConfig>, Failure> {
    let root = paths::containers_dir();
    let mut v = Vec::new();
    let rd = match fs::read_dir(&root) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(v),
        Err(e) => return Err(io(format!("cannot read {}", root.display()))(e)),
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !e.path().join("config.toml").is_file() {
            continue;
        }
        let Ok(c) = container(&name) else { continue };
        if let Ok(cfg) = load_config(&c) {
            if cfg.autostart {
                v.push(cfg);
            }
        }
    }
    v.sort_by(|a, b| (a.autostart_order, &a.name).cmp(&(b.autostart_order, &b.name)));
    Ok(v)
}

pub fn autostart(ctx: &Ctx, a: AutostartArgs) -> Result<(), Failure> {
    let mut set = autostart_set()?;
    if a.list {
        if ctx.json {
            let v: Vec<_> = set
                .iter()
                .map(|c| json!({"name": c.name, "order": c.autostart_order, "delay": c.autostart_delay}))
                .collect();
            ctx.print_json(&v);
        } else {
            for c in &set {
                println!(
                    "{}\torder {}\tdelay {}s",
                    c.name, c.autostart_order, c.autostart_delay
                );
            }
        }
        return Ok(());
    }
    if a.stop {
        set.reverse();
    }
    let mut done = Vec::new();
    let mut failed = Vec::new();
    for (i, cfg) in set.iter().enumerate() {
        let st = status(&cfg.name)?;
        let r = if a.stop {
            if st == Status::Stopped {
                continue;
            }
            crate::cmd_run::stop_container(&cfg.name, a.timeout, false)
                .map(drop)
                .map_err(Failure::from)
        } else {
            if st != Status::Stopped {
                continue;
            }
            let args = crate::cmd_run::StartArgs {
                name: cfg.name.clone(),
                daemon: true,
                memory: None,
                pids: None,
                cpus: None,
                settle: 200,
                command: Vec::new(),
            };
            // start's own line ("web is running (pid N)"), not a JSON
            // document per container.
            let quiet = ctx.quiet || ctx.json;
            let inner = Ctx {
                quiet,
                json: false,
                term: crate::report::Term::new(quiet, false),
                max_file_size: None,
            };
            crate::cmd_run::start(&inner, args)
        };
        match r {
            Ok(()) => {
                if a.stop {
                    ctx.term.say(&format!("stopped {}", cfg.name));
                }
                done.push(cfg.name.clone());
                if !a.stop && cfg.autostart_delay > 0 && i + 1 < set.len() {
                    std::thread::sleep(Duration::from_secs(cfg.autostart_delay));
                }
            }
            Err(e) => {
                ctx.term.warning(&format!("{}: {:#}", cfg.name, e.err));
                failed.push(cfg.name.clone());
            }
        }
    }
    if ctx.json {
        ctx.print_json(
            &json!({"action": if a.stop {"stop"} else {"start"}, "done": done, "failed": failed}),
        );
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(Failure::new(
            crate::exit::FAILURE,
            anyhow::anyhow!(
                "{} of {} autostart containers failed to {}: {}",
                failed.len(),
                set.len(),
                if a.stop { "stop" } else { "start" },
                failed.join(", ")
            ),
        ))
    }
}
