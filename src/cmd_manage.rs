//! Day-two commands: `davit set` (live limits and autostart keys, as
//! `lxc-cgroup`), `davit rename` (as `lxc-copy -R`) and `davit autostart`
//! (as `lxc-autostart`).

use std::time::Duration;

use clap::Args;
use davit_run::config::Limits;
use davit_run::state::Status;
use davit_store::save_config;
use serde_json::json;

use crate::ctx::{Ctx, Failure};
use crate::paths;

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
    let c = paths::store()?.container(&a.name)?;
    let old = c.load_config()?;
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

pub fn rename(ctx: &Ctx, a: RenameArgs) -> Result<(), Failure> {
    let store = paths::store()?;
    store.rename(&a.name, &a.new)?;
    if ctx.json {
        ctx.print_json(
            &json!({"name": a.new, "from": a.name, "dir": paths::containers_dir().join(&a.new)}),
        );
    } else {
        ctx.term.say(&format!("renamed {} to {}", a.name, a.new));
    }
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

pub fn autostart(ctx: &Ctx, a: AutostartArgs) -> Result<(), Failure> {
    let store = paths::store()?;
    let mut set = store.autostart_set()?;
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
        let st = store.status(&cfg.name)?;
        let r = if a.stop {
            if st == Status::Stopped {
                continue;
            }
            store
                .stop(&cfg.name, a.timeout, false)
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
            crate::ctx::exit::FAILURE,
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
