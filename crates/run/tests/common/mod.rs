//! Helpers shared by the runner's integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// The host id container root maps to in these tests.
pub const HOST_BASE: u32 = 100_000;

/// Root-only tests: under `CI=true` a missing privilege fails the test;
/// elsewhere it says so loudly and the test returns.
pub fn have_root() -> bool {
    davit_testkit::require_root("this test")
}

/// The example driver that hosts the monitor (`cargo build --examples`).
pub fn driver() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let p = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples/driver");
    assert!(
        p.exists(),
        "build the example driver first: {}",
        p.display()
    );
    p
}

/// Bytes as text.
pub fn text(o: &[u8]) -> String {
    String::from_utf8_lossy(o).into_owned()
}

/// `lchown -R` to `uid:uid`, never following a link.
pub fn lchown_tree(p: &std::path::Path, uid: u32) {
    let id = Some(nix::unistd::Uid::from_raw(uid));
    let gid = Some(nix::unistd::Gid::from_raw(uid));
    nix::unistd::fchownat(None, p, id, gid, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW).unwrap();
    if p.is_dir() && !p.is_symlink() {
        for e in std::fs::read_dir(p).unwrap() {
            lchown_tree(&e.unwrap().path(), uid);
        }
    }
}

/// A minimal busybox rootfs at `rootfs`: the host's static busybox with a
/// link per applet, `/sbin/init`, root in passwd and root and tty in group,
/// and the usual empty directories. Owned by the caller (root) until
/// [`lchown_tree`].
pub fn busybox_rootfs(rootfs: &std::path::Path) {
    use std::os::unix::fs::symlink;
    for d in [
        "bin", "sbin", "etc", "proc", "sys", "dev", "tmp", "root", "test",
    ] {
        std::fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    let list = std::process::Command::new("/bin/busybox")
        .arg("--list")
        .output()
        .unwrap();
    for applet in String::from_utf8(list.stdout).unwrap().lines() {
        if applet != "busybox" {
            symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
        }
    }
    symlink("/bin/busybox", rootfs.join("sbin/init")).unwrap();
    std::fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::write(rootfs.join("etc/group"), "root:x:0:\ntty:x:5:\n").unwrap();
}

/// The config's id map: container 0..65536 at host `base`, uids and gids.
pub fn idmap_toml(base: impl std::fmt::Display) -> String {
    format!(
        "[[idmap.uid]]\ncontainer = 0\nhost = {base}\nlen = 65536\n\
         [[idmap.gid]]\ncontainer = 0\nhost = {base}\nlen = 65536\n"
    )
}

/// One test container: a temp dir holding `config.toml` and the runtime
/// dir, its name and a unique cgroup prefix. Each test file builds the
/// rootfs and config its own way, and adds its own checks and `Drop`.
pub struct Ct {
    pub tmp: tempfile::TempDir,
    pub name: String,
    pub prefix: String,
    /// The host network config the monitor reads (net tests only).
    pub net_config: Option<PathBuf>,
}

impl Ct {
    pub fn config_path(&self) -> PathBuf {
        self.tmp.path().join("config.toml")
    }

    pub fn runtime(&self) -> PathBuf {
        self.tmp.path().join("run")
    }

    /// The monitor's arguments to run `cmd` (the configured init if empty).
    pub fn args(&self, cmd: &[&str]) -> davit_run::monitor::MonitorArgs {
        let mut a = davit_run::monitor::MonitorArgs::new(self.config_path(), self.runtime());
        a.cgroup_prefix = self.prefix.clone();
        a.command = cmd.iter().map(|s| s.to_string()).collect();
        a.net_config = self.net_config.clone();
        a
    }

    /// Run in the foreground through the driver and collect the output.
    pub fn run(&self, cmd: &[&str]) -> std::process::Output {
        std::process::Command::new(driver())
            .arg(davit_run::monitor::MONITOR_ARG)
            .args(self.args(cmd).to_args())
            .output()
            .unwrap()
    }

    /// This container's prefix directory in every cgroup hierarchy.
    pub fn prefix_dirs(&self) -> Vec<PathBuf> {
        std::fs::read_dir("/sys/fs/cgroup")
            .unwrap()
            .map(|e| e.unwrap().path().join(&self.prefix))
            .filter(|p| p.exists())
            .collect()
    }

    /// After a failed test: SIGKILL what is left in our cgroups (only ours,
    /// by pid) and remove them.
    pub fn kill_cgroups(&self) {
        for d in self.prefix_dirs() {
            for sub in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                if !sub.path().is_dir() {
                    continue;
                }
                if let Ok(procs) = std::fs::read_to_string(sub.path().join("cgroup.procs")) {
                    for p in procs.lines().filter_map(|l| l.parse::<i32>().ok()) {
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(p),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                    }
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
                let _ = std::fs::remove_dir(sub.path());
            }
            let _ = std::fs::remove_dir(&d);
        }
    }

    pub fn attach(&self, cmd: &[&str]) -> std::process::Output {
        std::process::Command::new(driver())
            .arg("attach")
            .arg(self.runtime())
            .arg(&self.name)
            .arg("--")
            .args(cmd)
            .output()
            .unwrap()
    }
}

/// What a privileged container's root tries against the device policy
/// (issue 13, row 10): make `/dev/kmsg` with mknod and read it, mount a
/// devtmpfs and read the block device `$1` through it (when given); the
/// usual nodes keep working.
pub const DEVICE_ATTACK: &str = "mknod /tmp/kmsg c 1 11 && echo MKNOD-OK; \
     head -c 1 /tmp/kmsg >/dev/null 2>&1 && echo KMSG-READ || echo KMSG-DENIED; \
     mkdir -p /tmp/d && mount -t devtmpfs none /tmp/d && echo DEVTMPFS-MOUNTED; \
     if [ -n \"$1\" ]; then dd if=/tmp/d/$1 of=/dev/null bs=512 count=1 2>/dev/null \
       && echo DISK-READ || echo DISK-DENIED; fi; umount /tmp/d; \
     head -c 1 /dev/zero >/dev/null && head -c 1 /dev/urandom >/dev/null && echo x >/dev/null && echo USUAL-OK";

/// A block device that root on this host may open and read (the host's
/// own sandbox may forbid some), for [`DEVICE_ATTACK`].
pub fn readable_block_device() -> Option<String> {
    let mut names: Vec<String> = std::fs::read_dir("/sys/block")
        .ok()?
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
        .into_iter()
        .find(|n| std::fs::File::open(format!("/dev/{n}")).is_ok())
}

/// Run [`DEVICE_ATTACK`] in `ct` (privileged) against `disk` (empty: none)
/// and assert that only the allowed devices opened.
pub fn assert_device_attack_fails(ct: &Ct, disk: &str) {
    let out = ct.run(&["/bin/sh", "-c", DEVICE_ATTACK, "sh", disk]);
    let o = text(&out.stdout);
    assert!(
        o.contains("MKNOD-OK") && o.contains("DEVTMPFS-MOUNTED"),
        "{o}{}",
        text(&out.stderr)
    );
    assert!(o.contains("KMSG-DENIED"), "read the kernel log:\n{o}");
    if !disk.is_empty() {
        assert!(o.contains("DISK-DENIED"), "read {disk}:\n{o}");
    }
    assert!(o.contains("USUAL-OK"), "{o}");
}
