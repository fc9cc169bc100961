//! `davit start`, `attach`, `info`, `list`, `stop` and `check`: thin
//! wrappers over davit-run.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use davit_run::cgroup::Layout;

use davit_run::attach::AttachIo;
use davit_run::monitor::MonitorIo;
use davit_run::state::Status;
use davit_run::ContainerConfig;
use davit_term::{relay, signals};
use serde_json::json;

use crate::ctx::{Ctx, Failure};
use crate::paths;

/// An existing container, from the store.
fn container(name: &str) -> Result<davit_store::Container, Failure> {
    Ok(paths::store()?.container(name)?)
}

fn load(c: &davit_store::Container) -> Result<ContainerConfig, Failure> {
    Ok(c.load_config()?)
}

#[derive(Args)]
pub struct StartArgs {
    pub name: String,
    /// Return once init is running.
    #[arg(short, long)]
    pub daemon: bool,
    /// Memory limit for this run, e.g. 512M (overrides config.toml).
    #[arg(long, value_parser = crate::cmd_publish::parse_size)]
    pub memory: Option<u64>,
    /// Task limit for this run (overrides config.toml).
    #[arg(long)]
    pub pids: Option<u64>,
    /// CPU limit for this run, e.g. 1.5 (overrides config.toml).
    #[arg(long)]
    pub cpus: Option<f64>,
    /// With -d: the longest `start` watches init's first moments, in
    /// milliseconds; it returns sooner once every process in the container
    /// is asleep (systemd: also once it has made its init.scope, at most
    /// 10 s); 0 returns as soon as init runs.
    #[arg(long, value_name = "MS", default_value_t = 200)]
    pub settle: u64,
    /// Run CMD in place of the configured init.
    #[arg(last = true)]
    pub command: Vec<String>,
}

/// How init ended, from the recorded status (the code, or 128 + signal):
/// only 129 to 192 can be a signal (Linux has 64), so systemd's 255 is an
/// exit status.
fn how_init_ended(status: Option<i32>) -> String {
    match status {
        Some(s) if (129..=192).contains(&s) => format!("was killed by signal {}", s - 128),
        Some(s) => format!("exited with status {s}"),
        None => "exited".to_owned(),
    }
}

pub fn start(ctx: &Ctx, a: StartArgs) -> Result<(), Failure> {
    let store = paths::store()?;
    let prepared = store.prepare_start(davit_store::StartRequest {
        name: a.name.clone(),
        memory: a.memory,
        pids: a.pids,
        cpus: a.cpus,
        command: a.command,
        daemon: a.daemon,
        cgroup_prefix: std::env::var("DAVIT_CGROUP_PREFIX").ok(),
    })?;
    let c = prepared.container().clone();
    if let Some(hint) = &prepared.net_hint {
        ctx.term.warning(&format!("{}: {hint}", c.name));
    }
    let runtime = paths::runtime_dir();
    // Never the caller's terminal inside (docs/SECURITY.md): a pty of the
    // container's own on a terminal, pipes for any other terminal.
    let mode = if a.daemon {
        relay::Mode::Plain
    } else {
        relay::mode()
    };
    // Terminal and termination signals are the container's: block them
    // here before any thread exists, and pass them on to init below.
    let forward = (!a.daemon).then(|| signals::block(mode));
    let (io, pending) = match mode {
        relay::Mode::Pty => (MonitorIo::Console, None),
        relay::Mode::Pipes => {
            let (theirs, p) = relay::pipes().map_err(|e| {
                Failure::io(anyhow::anyhow!(e).context("cannot make pipes for the container"))
            })?;
            (MonitorIo::Fds(theirs), Some(p))
        }
        // Detached: the monitor keeps init's console, logs it and serves
        // `davit console`.
        relay::Mode::Plain if a.daemon => (MonitorIo::Hold, None),
        relay::Mode::Plain => (MonitorIo::Inherit, None),
    };
    let launched = prepared.launch(io)?;
    let (mut h, pid) = (launched.handle, launched.pid);
    for w in &launched.warnings {
        ctx.term.warning(&format!("{}: {w}", c.name));
    }
    if a.daemon && a.settle > 0 {
        let settled = davit_run::wait::settle(
            &runtime,
            &c.name,
            pid,
            Duration::from_millis(a.settle),
            Duration::from_secs(10),
            20,
        )?;
        match settled {
            davit_run::wait::Settled::Up => {}
            davit_run::wait::Settled::StillStarting => ctx.term.warning(&format!(
                "{}: systemd had not set up its init.scope after 10 s; see `davit console {} --log`",
                c.name, c.name
            )),
            // A CMD that has done its job: no failure, but no "running".
            davit_run::wait::Settled::Exited {
                status: Some(0), ..
            } => {
                ctx.term.warning(&format!(
                    "{}: init exited with status 0 right after it started; the container is stopped",
                    c.name
                ));
                if ctx.json {
                    ctx.print_json(&json!({"name": c.name, "state": "STOPPED", "exit_status": 0}));
                }
                return Ok(());
            }
            davit_run::wait::Settled::Exited { status, tail } => {
                let how = how_init_ended(status);
                let mut msg = format!("{}: init {how} right after it started", c.name);
                if tail.is_empty() {
                    msg += " and wrote nothing to its console";
                } else {
                    msg += &format!("; the last lines of its console log:\n  {}", tail.join("\n  "));
                }
                msg += &format!(
                    "\nthe whole log: davit console {} --log (or {})",
                    c.name,
                    runtime.join(&c.name).join(davit_run::console::LOG).display()
                );
                let code = status.unwrap_or(1).clamp(1, 255) as u8;
                return Err(Failure::new(code, anyhow::anyhow!(msg)));
            }
        }
    }
    if a.daemon {
        if ctx.json {
            ctx.print_json(&json!({"name": c.name, "state": "RUNNING", "pid": pid}));
        } else {
            ctx.term.say(&format!("{} is running (pid {pid})", c.name));
        }
        return Ok(());
    }
    let relay = match mode {
        relay::Mode::Pty => Some(relay::pty(h.take_console()?)),
        _ => pending.map(relay::Pending::start),
    };
    // Ctrl-C, `kill`, a hang-up: passed to init (pid 1 passes them to CMD).
    if let Some(f) = forward {
        f.to(pid);
    }
    let status = h.child.wait().map_err(|e| Failure::io(e.into()))?;
    if let Some(r) = relay {
        // Every container process is gone: the rest is in flight.
        r.finish(Duration::from_secs(1));
    }
    let code = status.code().unwrap_or(1);
    if code == 0 {
        Ok(())
    } else {
        Err(Failure::new(
            code.clamp(1, 255) as u8,
            anyhow::anyhow!("{} exited with status {code}", c.name),
        )
        .silent())
    }
}

#[derive(Args)]
pub struct AttachArgs {
    pub name: String,
    /// Run as this container user (and group; without one, the user's
    /// group in the container's /etc/passwd, else the uid) [default: 0:0].
    #[arg(long, short, value_name = "UID[:GID]", value_parser = parse_user)]
    pub user: Option<(u32, Option<u32>)>,
    /// Working directory inside the container [default: /].
    #[arg(long, value_name = "DIR")]
    pub cwd: Option<PathBuf>,
    /// Set a variable (repeatable); it wins over the defaults.
    #[arg(long = "env", short = 'e', value_name = "K=V", value_parser = parse_env)]
    pub env: Vec<(String, String)>,
    /// No environment but `container=davit` and `--env` (the default is
    /// PATH, TERM, HOME and `container`; the host's is never passed).
    #[arg(long)]
    pub clear_env: bool,
    /// Command to run [default: the user's login shell from the
    /// container's /etc/passwd, else /bin/sh].
    #[arg(last = true)]
    pub command: Vec<String>,
}

fn parse_user(s: &str) -> Result<(u32, Option<u32>), String> {
    let id = |t: &str| {
        t.parse::<u32>()
            .map_err(|_| format!("{t:?} is not a numeric id (give UID or UID:GID)"))
    };
    match s.split_once(':') {
        Some((u, g)) => Ok((id(u)?, Some(id(g)?))),
        None => Ok((id(s)?, None)),
    }
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{s:?} is not K=V")),
    }
}

/// Set in the environment of an attach that came through davit-cgroup.
const ENTERED: &str = "DAVIT_CGROUP_ENTERED";

pub fn attach(_ctx: &Ctx, a: AttachArgs) -> Result<(), Failure> {
    let c = container(&a.name)?;
    // A granted plain user's container cgroup is below /user/USER: cgroup
    // v2 lets a process move there only from inside that tree, so this
    // attach goes through davit-cgroup first, as the monitor did.
    // Once: should the tree still not count as delegated after the helper
    // (a v2 controller missing there, say), the attach goes on as it is
    // rather than exec itself again and again.
    let entered = std::env::var_os(ENTERED).is_some();
    let store = paths::store()?;
    if let Some(helper) = (!entered)
        .then(|| load(&c).ok().and_then(|cfg| store.cgroup_helper(&cfg)))
        .flatten()
    {
        return Err(store
            .exec_through(&helper, std::env::args_os().skip(1), ENTERED)
            .into());
    }
    // Processes of this attach pass through the container's pid namespace
    // before they exec: they run from a sealed binary so none can reach
    // and rewrite davit's through /proc/PID/exe (CVE-2019-5736). That is
    // the monitor's own sealed copy when it can serve, else a copy of this
    // binary made now (a re-exec).
    let runner = davit_run::attach::runner(&paths::runtime_dir(), &c.name)?;
    // Empty: the user's login shell from the container's passwd.
    let command = a.command;
    // Never the caller's terminal inside (docs/SECURITY.md): a pty of the
    // container's own on a terminal, pipes for any other terminal.
    let mode = relay::mode();
    let (io, mut pending) = match mode {
        relay::Mode::Pty => (AttachIo::Pty, None),
        relay::Mode::Pipes => {
            let (theirs, p) = relay::pipes().map_err(|e| {
                Failure::io(anyhow::anyhow!(e).context("cannot make pipes for the command"))
            })?;
            (AttachIo::Fds(theirs), Some(p))
        }
        relay::Mode::Plain => (AttachIo::Inherit, None),
    };
    let opts = davit_run::attach::AttachOptions {
        command,
        term: std::env::var("TERM").ok(),
        io,
        user: a.user,
        cwd: a.cwd,
        env: a.env,
        clear_env: a.clear_env,
        runner,
    };
    let mut relay = None;
    let code = davit_run::attach::attach(&paths::runtime_dir(), &c.name, opts, &mut |master| {
        relay = match master {
            Some(m) => Some(relay::pty(m)),
            None => pending.take().map(relay::Pending::start),
        };
    })?;
    if let Some(r) = relay {
        // A process the command left behind may hold its terminal open.
        r.finish(Duration::from_millis(300));
    }
    if code == 0 {
        Ok(())
    } else {
        Err(Failure::new(
            code.clamp(1, 255) as u8,
            anyhow::anyhow!("command exited with status {code}"),
        )
        .silent())
    }
}

#[derive(Args)]
pub struct InfoArgs {
    pub name: String,
}

fn info_json(i: &davit_run::info::Info) -> serde_json::Value {
    let net = i.net.as_ref();
    json!({
        "ips": net.map(|n| n.ips.iter().map(|a| a.to_string()).collect::<Vec<_>>()).unwrap_or_default(),
        "link": net.and_then(|n| n.link.clone()),
        "tx_bytes": net.and_then(|n| n.tx_bytes),
        "rx_bytes": net.and_then(|n| n.rx_bytes),
        "total_bytes": net.and_then(|n| n.total_bytes),
        "network_note": net.and_then(|n| n.note.clone()),
        "publish": net.map(|n| n.publish.iter().map(|p| p.to_string()).collect::<Vec<_>>()).unwrap_or_default(),
        "name": i.name,
        "state": i.status.as_str(),
        "pid": i.pid,
        "cpu_ns": i.stats.cpu_ns,
        "memory_bytes": i.stats.memory,
        "kmem_bytes": i.stats.kmem,
        "blkio_bytes": i.stats.blkio,
        "unprivileged": !i.privileged,
        "no_limits_reason": i.no_limits_reason,
        "exit_status": i.exit_status,
        "console_log": i.console_log,
    })
}

fn human_bytes(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.2} {}", units[u])
    }
}

pub fn info(ctx: &Ctx, a: InfoArgs) -> Result<(), Failure> {
    let c = container(&a.name)?;
    let layout = Layout::detect()?;
    let i = davit_run::info::info(&paths::runtime_dir(), &c.name, &layout)?;
    let cfg = load(&c).ok();
    let limits = cfg.as_ref().map(|c| c.limits.clone()).unwrap_or_default();
    // What the running container was started with, else what its next
    // start will load.
    let seccomp = i
        .seccomp
        .clone()
        .or_else(|| cfg.as_ref().map(|c| c.seccomp.clone()))
        .unwrap_or_default();
    let storage = cfg.map(|cfg| cfg.storage).unwrap_or_default();
    if ctx.json {
        let mut v = info_json(&i);
        v["seccomp"] = json!({
            "summary": seccomp.summary(),
            "rules": seccomp.rules().iter().map(|r| r.syscall.to_string()).collect::<Vec<_>>(),
        });
        v["limits"] = json!(limits);
        v["storage"] = json!(storage.backend.as_str());
        v["base"] = json!(storage.base);
        v["upper"] = json!(storage.upper);
        ctx.print_json(&v);
        return Ok(());
    }
    let mut rows = vec![
        ("Name", i.name.clone()),
        ("State", i.status.as_str().to_string()),
        (
            "Storage",
            match &storage.base {
                Some(b) => format!(
                    "overlay on base {}{}",
                    b.display(),
                    if storage.idmapped_lower {
                        " (idmapped)"
                    } else {
                        ""
                    }
                ),
                None => "dir".to_string(),
            },
        ),
    ];
    if let Some(pid) = i.pid {
        rows.push(("PID", pid.to_string()));
    }
    if i.status == Status::Running {
        if let Some(ns) = i.stats.cpu_ns {
            rows.push(("CPU use", format!("{:.2} seconds", ns as f64 / 1e9)));
        }
        if let Some(b) = i.stats.blkio {
            rows.push(("BlkIO use", human_bytes(b)));
        }
        if let Some(b) = i.stats.memory {
            rows.push(("Memory use", human_bytes(b)));
        }
        if let Some(b) = i.stats.kmem {
            rows.push(("KMem use", human_bytes(b)));
        }
        if let Some(n) = &i.net {
            for ip in &n.ips {
                rows.push(("IP", ip.to_string()));
            }
            if let Some(l) = &n.link {
                rows.push(("Link", l.clone()));
            }
            for p in &n.publish {
                rows.push(("Published", p.to_string()));
            }
            for (k, v) in [
                ("TX bytes", n.tx_bytes),
                ("RX bytes", n.rx_bytes),
                ("Total bytes", n.total_bytes),
            ] {
                if let Some(v) = v {
                    rows.push((k, human_bytes(v)));
                }
            }
            if let Some(note) = &n.note {
                rows.push(("Network", note.clone()));
            }
        }
    }
    if let Some(p) = &i.console_log {
        rows.push(("Console log", p.display().to_string()));
    }
    if let Some(why) = &i.no_limits_reason {
        rows.push(("Limits", format!("none: {why}")));
    } else {
        let mut l = Vec::new();
        if let Some(n) = limits.pids {
            l.push(format!("pids {n}"));
        }
        if let Some(b) = limits.memory {
            l.push(format!("memory {}", human_bytes(b)));
        }
        if let Some(c) = limits.cpus {
            l.push(format!("cpus {c}"));
        }
        rows.push((
            "Limits",
            if l.is_empty() {
                "none".to_string()
            } else {
                l.join(", ")
            },
        ));
    }
    rows.push(("Seccomp", seccomp.summary()));
    for (k, v) in rows {
        println!("{:<12}{v}", format!("{k}:"));
    }
    Ok(())
}

pub fn list(ctx: &Ctx) -> Result<(), Failure> {
    let layout = Layout::detect()?;
    let store = paths::store()?;
    let dir = paths::containers_dir();
    let names = store.names();
    let runtime = paths::runtime_dir();
    let mut out = Vec::new();
    for n in names {
        let i = davit_run::info::info(&runtime, &n, &layout)?;
        let privileged = ContainerConfig::load(&dir.join(&n).join("config.toml"))
            .map(|c| c.privileged)
            .unwrap_or(false);
        out.push((i, privileged));
    }
    if ctx.json {
        let v: Vec<serde_json::Value> = out
            .iter()
            .map(|(i, p)| {
                let mut j = info_json(i);
                j["unprivileged"] = json!(!p);
                j
            })
            .collect();
        ctx.print_json(&v);
        return Ok(());
    }
    println!(
        "{:<20} {:<9} {:>8} {:>12}  {:<15}  UNPRIVILEGED",
        "NAME", "STATE", "PID", "MEMORY", "IPV4"
    );
    for (i, p) in out {
        let pid = i.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into());
        let mem = i
            .stats
            .memory
            .map(human_bytes)
            .unwrap_or_else(|| "-".into());
        let ip = i
            .net
            .as_ref()
            .and_then(|n| n.ips.iter().find(|a| a.is_ipv4()))
            .map(|a| a.to_string())
            .unwrap_or_else(|| "-".into());
        println!(
            "{:<20} {:<9} {:>8} {:>12}  {:<15}  {}",
            i.name,
            i.status.as_str(),
            pid,
            mem,
            ip,
            if p { "no" } else { "yes" }
        );
    }
    Ok(())
}

#[derive(Args)]
pub struct StopArgs {
    pub name: String,
    /// Seconds to wait for a clean halt before SIGKILL.
    #[arg(short, long, default_value_t = 60)]
    pub timeout: u64,
    /// Kill at once.
    #[arg(short, long)]
    pub kill: bool,
}

#[derive(Args)]
pub struct FreezeArgs {
    pub name: String,
}

/// `davit freeze` / `davit unfreeze`.
pub fn freeze(ctx: &Ctx, a: FreezeArgs, frozen: bool) -> Result<(), Failure> {
    let c = container(&a.name)?;
    davit_run::freeze::set_frozen(&paths::runtime_dir(), &c.name, frozen)?;
    if ctx.json {
        ctx.print_json(&json!({"name": c.name, "frozen": frozen}));
    }
    Ok(())
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum WaitState {
    Running,
    Stopped,
    Starting,
    Stopping,
}

#[derive(Args)]
pub struct WaitArgs {
    pub name: String,
    /// The state to wait for (as `davit info` names it, any case; a frozen
    /// container is RUNNING here).
    #[arg(long, short, value_enum, ignore_case = true)]
    pub state: WaitState,
    /// Give up after this many seconds (exit 1) [default: wait for ever].
    #[arg(long, short)]
    pub timeout: Option<f64>,
}

/// `davit wait`: returns when the container is in the state (at once if
/// it is), woken by the state directory's changes, never polling.
pub fn wait(ctx: &Ctx, a: WaitArgs) -> Result<(), Failure> {
    let c = container(&a.name)?;
    use davit_run::state::Status;
    let want = match a.state {
        WaitState::Running => Status::Running,
        WaitState::Stopped => Status::Stopped,
        WaitState::Starting => Status::Starting,
        WaitState::Stopping => Status::Stopping,
    };
    let timeout = match a.timeout {
        Some(t) if !(t.is_finite() && t >= 0.0) => {
            return Err(Failure::usage(format!(
                "--timeout {t}: give seconds, 0 or more"
            )))
        }
        t => t.map(Duration::from_secs_f64),
    };
    davit_run::wait::wait(&paths::runtime_dir(), &c.name, want, timeout)?;
    if ctx.json {
        ctx.print_json(&json!({"name": c.name, "state": want.as_str()}));
    }
    Ok(())
}

pub fn stop(ctx: &Ctx, a: StopArgs) -> Result<(), Failure> {
    let c = container(&a.name)?;
    let outcome = paths::store()?.stop(&c.name, a.timeout, a.kill)?;
    if ctx.json {
        ctx.print_json(&json!({"name": c.name, "outcome": format!("{outcome:?}").to_lowercase()}));
    } else {
        ctx.term.say(&format!("{}: {outcome:?}", c.name));
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct CheckArgs {
    /// Prove that container NAME's base still matches the record made when
    /// it was unpacked (exit 5 if not), instead of checking the host.
    #[arg(long, value_name = "NAME")]
    pub verify: Option<String>,
}

fn verify_container(ctx: &Ctx, name: &str) -> Result<(), Failure> {
    let (base, fresh) = paths::store()?.verify_container_base(name)?;
    if ctx.json {
        ctx.print_json(&json!({"name": name, "base": base.key, "ok": true, "digest": fresh.digest, "entries": fresh.entries}));
    } else {
        println!(
            "{name}: base {} matches its record ({} entries, sha256 {})",
            base.key, fresh.entries, fresh.digest
        );
    }
    Ok(())
}

pub fn check(ctx: &Ctx, a: CheckArgs) -> Result<(), Failure> {
    if let Some(name) = &a.verify {
        return verify_container(ctx, name);
    }
    let items = paths::store()?.check()?;
    if ctx.json {
        let v: Vec<serde_json::Value> = items
            .iter()
            .map(|i| json!({"item": i.item, "ok": i.ok, "detail": i.detail, "fix": i.fix}))
            .collect();
        ctx.print_json(&v);
    } else {
        for i in &items {
            println!(
                "{:<28} {:<8} {}",
                i.item,
                if i.ok { "OK" } else { "MISSING" },
                i.detail
            );
            if let (false, Some(fix)) = (i.ok, &i.fix) {
                println!("{:<28} {:<8} fix: {fix}", "", "");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::how_init_ended;

    /// systemd's exit status 255 was reported as "killed by signal 127".
    #[test]
    fn only_129_to_192_read_as_signals() {
        assert_eq!(how_init_ended(Some(255)), "exited with status 255");
        assert_eq!(how_init_ended(Some(7)), "exited with status 7");
        assert_eq!(how_init_ended(Some(137)), "was killed by signal 9");
        assert_eq!(how_init_ended(Some(192)), "was killed by signal 64");
        assert_eq!(how_init_ended(Some(193)), "exited with status 193");
        assert_eq!(how_init_ended(None), "exited");
    }
}
