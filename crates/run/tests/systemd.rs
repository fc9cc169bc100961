//! Boot a real Debian bookworm with systemd as init, as root on this host,
//! through the example driver re-executed as the monitor: `attach --
//! systemctl is-system-running --wait` must report running or degraded
//! within 60 s, and `stop` (SIGRTMIN+3) must halt it cleanly and leave no
//! cgroup, mount, process or state behind.
//!
//! The rootfs comes from `images/debian/build.sh`, which keeps its tarball
//! in `DAVIT_DEBIAN_CACHE` (default `$DAVIT_TEST_CACHE/debian`) keyed by a
//! hash of the recipe, and builds it (mmdebstrap, a few minutes, apt mirror
//! needed) when missing. The test unpacks it and shifts the ids to
//! 100000-165535 itself. Under `CI=true` a missing privilege fails.
mod common;
use common::{driver, have_root, idmap_toml, text, Ct, HOST_BASE};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use davit_run::monitor::spawn_monitor;
use davit_run::state::StateStore;
use davit_run::stop::{stop, StopOptions, StopOutcome};

/// Unpack the cached Debian tarball (building it first when the cache has
/// none for this recipe) into `dest`, owned by real root.
fn debian_rootfs(dest: &Path) {
    // build.sh builds it once under a lock: both tests here ask at once.
    let cache = davit_testkit::debian_cache();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../images/debian/build.sh");
    let t = Instant::now();
    let out = Command::new("bash")
        .arg(&script)
        .arg("--cache")
        .arg(&cache)
        .arg("--rootfs-only")
        .arg(dest)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{} failed ({:?}); it needs mmdebstrap and the apt mirror when {} holds no tarball yet\n{}",
        script.display(),
        out.status,
        cache.display(),
        text(&out.stderr)
    );
    eprintln!(
        "debian rootfs ready in {:.1} s (cache {})",
        t.elapsed().as_secs_f64(),
        cache.display()
    );
}

/// Shift every owner by `off` (what `davit create` does), keeping the
/// setuid and setgid bits that chown clears.
fn shift_tree(p: &Path, off: u32) {
    let m = std::fs::symlink_metadata(p).unwrap();
    let uid = Some(nix::unistd::Uid::from_raw(m.uid() + off));
    let gid = Some(nix::unistd::Gid::from_raw(m.gid() + off));
    nix::unistd::fchownat(None, p, uid, gid, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW).unwrap();
    if m.file_type().is_symlink() {
        return;
    }
    if m.mode() & 0o6000 != 0 {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m.mode() & 0o7777)).unwrap();
    }
    if m.is_dir() {
        for e in std::fs::read_dir(p).unwrap() {
            shift_tree(&e.unwrap().path(), off);
        }
    }
}

/// A test container (common::Ct) whose rootfs is the Debian image.
impl Ct {
    fn new(tag: &str) -> Ct {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        Ct {
            name: format!("{tag}{}", std::process::id()),
            prefix: format!("davit-test-{tag}-{}", std::process::id()),
            tmp,
            net_config: None,
        }
    }

    fn rootfs(&self) -> PathBuf {
        self.tmp.path().join("rootfs")
    }

    /// Our cgroup directories in every hierarchy, sub-cgroups included.
    fn cgroup_dirs(&self) -> Vec<PathBuf> {
        fn walk(d: &Path, out: &mut Vec<PathBuf>) {
            for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    walk(&e.path(), out);
                }
            }
            out.push(d.to_path_buf());
        }
        let mut v = Vec::new();
        for e in std::fs::read_dir("/sys/fs/cgroup").unwrap() {
            let p = e.unwrap().path().join(&self.prefix);
            if p.exists() {
                walk(&p, &mut v);
            }
        }
        v
    }

    fn procs(&self) -> Vec<i32> {
        self.cgroup_dirs()
            .iter()
            .filter_map(|d| std::fs::read_to_string(d.join("cgroup.procs")).ok())
            .flat_map(|s| {
                s.lines()
                    .filter_map(|l| l.trim().parse::<i32>().ok())
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

impl Drop for Ct {
    fn drop(&mut self) {
        // Whatever a failed test left: kill what is in our cgroups (only
        // ours, by pid), then remove them, deepest first.
        for p in self.procs() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(p),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        if !self.procs().is_empty() {
            std::thread::sleep(Duration::from_millis(300));
        }
        for d in self.cgroup_dirs() {
            let _ = std::fs::remove_dir(&d);
        }
    }
}

#[test]
fn debian_boots_systemd_to_running_and_halts_cleanly() {
    if !have_root() {
        return;
    }
    let ct = Ct::new("sd");
    debian_rootfs(&ct.rootfs());
    assert!(
        ct.rootfs().join("lib/systemd/systemd").exists(),
        "the image has no systemd"
    );
    shift_tree(&ct.rootfs(), HOST_BASE);
    let cfg = format!(
        "name = \"{}\"\nrootfs = \"{}\"\n{}",
        ct.name,
        ct.rootfs().display(),
        idmap_toml(HOST_BASE)
    );
    boot_and_halt(&ct, &cfg);
}

/// The same boot from overlay storage, as `davit create --storage overlay`
/// lays it out as root: the base keeps the image's own ids and is attached
/// as an idmapped lower layer through init's user namespace; everything
/// systemd writes lands in the upper directory, owned by the mapped ids,
/// and the base is unchanged afterwards.
#[test]
fn debian_boots_systemd_from_an_overlay_on_an_idmapped_base() {
    if !have_root() {
        return;
    }
    let ct = Ct::new("sdo");
    let base = ct.tmp.path().join("base");
    debian_rootfs(&base);
    let before = tree_state(&base);
    let upper = ct.tmp.path().join("upper");
    let work = ct.tmp.path().join("work");
    std::fs::create_dir(ct.rootfs()).unwrap();
    for (d, mode) in [(&upper, 0o755), (&work, 0o700)] {
        std::fs::create_dir(d).unwrap();
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(mode)).unwrap();
        nix::unistd::chown(
            d.as_path(),
            Some(nix::unistd::Uid::from_raw(HOST_BASE)),
            Some(nix::unistd::Gid::from_raw(HOST_BASE)),
        )
        .unwrap();
    }
    let cfg = format!(
        "name = \"{}\"\nrootfs = \"{}\"\n{}\
         [storage]\nbackend = \"overlay\"\nbase = \"{}\"\nupper = \"{}\"\nwork = \"{}\"\nidmapped_lower = true\n",
        ct.name,
        ct.rootfs().display(),
        idmap_toml(HOST_BASE),
        base.display(),
        upper.display(),
        work.display()
    );
    boot_and_halt(&ct, &cfg);
    assert_eq!(tree_state(&base), before, "the base was modified");
    // systemd wrote (machine-id, journal, ...) into the upper, as the
    // container's mapped ids.
    let written: Vec<(PathBuf, u32)> = walk_all(&upper)
        .into_iter()
        .map(|p| {
            let uid = std::fs::symlink_metadata(&p).unwrap().uid();
            (p, uid)
        })
        .collect();
    assert!(written.len() > 1, "nothing reached the upper directory");
    let outside: Vec<_> = written
        .iter()
        .filter(|(_, u)| *u < HOST_BASE || *u >= HOST_BASE + 65536)
        .collect();
    assert!(
        outside.is_empty(),
        "upper files outside the map: {outside:?}"
    );
    assert!(
        std::fs::read_dir(ct.rootfs()).unwrap().next().is_none(),
        "the mount point on the host stays empty"
    );
}

fn walk_all(d: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(d).unwrap().flatten() {
        let p = e.path();
        if e.file_type().unwrap().is_dir() {
            out.extend(walk_all(&p));
        }
        out.push(p);
    }
    out
}

/// Path, owner, mode, size and mtime of every entry: what a write,
/// chown, chmod or delete through the overlay would change.
fn tree_state(d: &Path) -> Vec<(PathBuf, u32, u32, u32, u64, i64)> {
    let mut v: Vec<_> = walk_all(d)
        .into_iter()
        .map(|p| {
            let m = std::fs::symlink_metadata(&p).unwrap();
            (p, m.uid(), m.gid(), m.mode(), m.size(), m.mtime())
        })
        .collect();
    v.sort();
    v
}

fn boot_and_halt(ct: &Ct, cfg: &str) {
    std::fs::write(ct.config_path(), cfg).unwrap();
    let args = ct.args(&[]);

    let t0 = Instant::now();
    let mut h = spawn_monitor(&driver(), &args, true).unwrap();
    let pid = h.wait_ready().unwrap();

    // systemd's private bus appears a little after exec: retry until
    // `--wait` can connect, for at most 60 s in all.
    let mut last;
    loop {
        let o = ct.attach(&["systemctl", "is-system-running", "--wait"]);
        last = format!(
            "{:?}: {}{}",
            o.status.code(),
            text(&o.stdout),
            text(&o.stderr)
        );
        let state = text(&o.stdout).trim().to_owned();
        if state == "running" || state == "degraded" {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "not running within 60 s; last answer {last}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!(
        "systemd reached {} in {:.3} s",
        last.trim(),
        t0.elapsed().as_secs_f64()
    );

    // It is systemd as pid 1, told it runs in a container, with its own
    // tree in the writable name=systemd hierarchy and in cgroup2.
    let o = ct.attach(&[
        "sh",
        "-c",
        "cat /proc/1/comm; systemd-detect-virt; systemctl --failed --no-legend --plain | wc -l",
    ]);
    let s = text(&o.stdout);
    let lines: Vec<&str> = s.lines().collect();
    assert_eq!(lines.first().copied(), Some("systemd"), "{s}");
    assert_ne!(lines.get(1).copied(), Some("none"), "{s}");
    let host_sd = ct
        .cgroup_dirs()
        .into_iter()
        .filter(|d| d.starts_with("/sys/fs/cgroup/systemd") && d.ends_with("init.scope"))
        .count();
    assert_eq!(
        host_sd,
        1,
        "systemd made no init.scope in its name=systemd cgroup: {:?}",
        ct.cgroup_dirs()
    );
    let failed = ct.attach(&["systemctl", "--failed", "--no-pager"]);
    eprintln!("failed units:\n{}", text(&failed.stdout));

    // Stop: SIGRTMIN+3 makes systemd halt; it must go down on its own.
    let t1 = Instant::now();
    let outcome = stop(
        &ct.runtime(),
        &ct.name,
        &StopOptions {
            timeout: Some(Duration::from_secs(60)),
            ..StopOptions::default()
        },
    )
    .unwrap();
    eprintln!(
        "stopped ({outcome:?}) in {:.3} s",
        t1.elapsed().as_secs_f64()
    );
    assert_eq!(
        outcome,
        StopOutcome::Halted,
        "systemd did not halt by itself"
    );
    let code = h.child.wait().unwrap().code();
    // reboot(2) with a halt command in a pid namespace kills init with SIGINT.
    assert!(matches!(code, Some(0) | Some(130)), "monitor exit {code:?}");

    // Nothing left: process, cgroup (sub-cgroups included), mount, state.
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "init survived"
    );
    assert_eq!(
        ct.cgroup_dirs(),
        Vec::<PathBuf>::new(),
        "cgroups left behind"
    );
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let root = ct.rootfs().display().to_string();
    assert!(
        !mi.lines().any(|l| l.contains(&root)),
        "a mount of the rootfs is visible on the host"
    );
    assert!(StateStore::new(&ct.runtime(), &ct.name)
        .peek()
        .unwrap()
        .is_none());
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Ok(root_link) = std::fs::read_link(format!("/proc/{p}/root")) {
            assert!(
                !root_link.starts_with(ct.rootfs()),
                "process {p} still runs in the container's rootfs"
            );
        }
    }
}
