//! Shared helpers: a raw tar writer (for archives the `tar` builder refuses
//! to make), privilege checks and tree snapshots.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Returns false (after a loud message) when not root; under `CI=true` it
/// panics instead, so CI cannot silently skip.
pub use davit_testkit::require_root;

/// One raw 512-byte ustar header.
pub fn header(name: &[u8], typ: u8, size: u64, link: &[u8], mode: u32) -> [u8; 512] {
    let mut h = [0u8; 512];
    let (n, prefix) = if name.len() > 100 {
        let cut = name[..name.len() - 1]
            .iter()
            .rposition(|&b| b == b'/')
            .expect("splittable");
        (&name[cut + 1..], &name[..cut])
    } else {
        (name, &b""[..])
    };
    h[..n.len()].copy_from_slice(n);
    h[345..345 + prefix.len()].copy_from_slice(prefix);
    let oct = |h: &mut [u8; 512], off: usize, len: usize, v: u64| {
        let s = format!("{:0w$o}\0", v, w = len - 1);
        h[off..off + len].copy_from_slice(s.as_bytes());
    };
    oct(&mut h, 100, 8, mode as u64);
    oct(&mut h, 108, 8, 0);
    oct(&mut h, 116, 8, 0);
    oct(&mut h, 124, 12, size);
    oct(&mut h, 136, 12, 1_700_000_000);
    h[156] = typ;
    h[157..157 + link.len()].copy_from_slice(link);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    fix_cksum(&mut h);
    h
}

pub fn fix_cksum(h: &mut [u8; 512]) {
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| b as u32).sum();
    let s = format!("{:06o}\0 ", sum);
    h[148..156].copy_from_slice(s.as_bytes());
}

/// A raw tar stream under construction.
#[derive(Default)]
pub struct Raw(pub Vec<u8>);

impl Raw {
    pub fn push(&mut self, h: [u8; 512], data: &[u8]) -> &mut Self {
        self.0.extend_from_slice(&h);
        self.0.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.0.resize(self.0.len() + pad, 0);
        self
    }
    pub fn dir(&mut self, name: &str, mode: u32) -> &mut Self {
        self.push(header(name.as_bytes(), b'5', 0, b"", mode), b"")
    }
    pub fn file(&mut self, name: &str, data: &[u8], mode: u32) -> &mut Self {
        self.push(
            header(name.as_bytes(), b'0', data.len() as u64, b"", mode),
            data,
        )
    }
    pub fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.push(
            header(name.as_bytes(), b'2', 0, target.as_bytes(), 0o777),
            b"",
        )
    }
    pub fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.push(
            header(name.as_bytes(), b'1', 0, target.as_bytes(), 0o644),
            b"",
        )
    }
    /// A pax `x` header carrying `records` for the next member.
    pub fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
        let mut body = Vec::new();
        for (k, v) in records {
            let rest = k.len() + v.len() + 3; // ' ' '=' '\n'
            let mut len = rest + 1;
            while format!("{len}").len() + rest != len {
                len += 1;
            }
            body.extend_from_slice(format!("{len} {k}=").as_bytes());
            body.extend_from_slice(v);
            body.push(b'\n');
        }
        self.push(
            header(b"PaxHeader", b'x', body.len() as u64, b"", 0o644),
            &body,
        )
    }
    pub fn end(&mut self) -> Vec<u8> {
        self.0.extend_from_slice(&[0u8; 1024]);
        std::mem::take(&mut self.0)
    }
}

/// What a test fixture looks like: `base/outside` (sentinel) and
/// `base/dest` (the unpack target).
pub struct Fixture {
    pub tmp: tempfile::TempDir,
    pub base: PathBuf,
    pub dest: PathBuf,
    pub outside: PathBuf,
    pub before: BTreeMap<PathBuf, String>,
}

impl Fixture {
    pub fn new() -> Fixture {
        let tmp = tempfile::Builder::new()
            .prefix("davit-rootfs-")
            .tempdir()
            .unwrap();
        let base = tmp.path().to_owned();
        let outside = base.join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(outside.join("secret"), b"secret").unwrap();
        std::fs::set_permissions(
            outside.join("secret"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        std::fs::create_dir(outside.join("sub")).unwrap();
        let dest = base.join("dest");
        std::fs::create_dir(&dest).unwrap();
        let mut f = Fixture {
            tmp,
            base,
            dest,
            outside,
            before: BTreeMap::new(),
        };
        f.before = f.outside_snapshot();
        f
    }

    pub fn archive(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.base.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    /// Everything in `base` except `dest` (and the archives, which are
    /// files directly in base whose names end in `.tar*`).
    pub fn outside_snapshot(&self) -> BTreeMap<PathBuf, String> {
        let mut m = BTreeMap::new();
        snap(&self.base, &self.base, &mut m, &|p: &Path| {
            p.starts_with("dest") || p.to_string_lossy().contains(".tar")
        });
        m
    }

    /// Asserts nothing outside `dest` changed.
    pub fn assert_outside_unchanged(&self) {
        let now = self.outside_snapshot();
        assert_eq!(self.before, now, "something outside dest changed");
    }
}

pub fn snap(
    root: &Path,
    dir: &Path,
    m: &mut BTreeMap<PathBuf, String>,
    skip: &dyn Fn(&Path) -> bool,
) {
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        let rel = p.strip_prefix(root).unwrap().to_owned();
        if skip(&rel) {
            continue;
        }
        let md = std::fs::symlink_metadata(&p).unwrap();
        let mut desc = format!(
            "mode={:o} uid={} gid={} size={} mtime={}",
            md.mode(),
            md.uid(),
            md.gid(),
            md.size(),
            md.mtime()
        );
        if md.file_type().is_symlink() {
            desc.push_str(&format!(" -> {:?}", std::fs::read_link(&p).unwrap()));
        } else if md.is_file() {
            desc.push_str(&format!(" data={:?}", std::fs::read(&p).unwrap()));
        }
        m.insert(rel, desc);
        if md.is_dir() {
            snap(root, &p, m, skip);
        }
    }
}

/// The `examples/unpack` binary built next to this test binary.
pub fn example_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let p = dir.join("examples/unpack");
    assert!(
        p.exists(),
        "{} missing: run `cargo test` (it builds examples)",
        p.display()
    );
    p
}

pub use davit_testkit::TestUser;

/// Creates `davit-test` if needed and gives it `/etc/subuid` and
/// `/etc/subgid` ranges after every existing one (idempotent; existing
/// lines are kept), once under a machine-wide lock (davit-testkit).
pub fn test_user() -> TestUser {
    davit_testkit::ensure_user(&davit_testkit::UserSpec {
        name: "davit-test",
        create_home: false,
        system: false,
        shell: "/usr/sbin/nologin",
        subids: davit_testkit::Subids::KeepOrAfterAll,
    })
}

/// `setpriv` prefix that runs a command as the test user.
pub fn as_user(u: &TestUser, cmd: &Path) -> std::process::Command {
    let mut c = std::process::Command::new("setpriv");
    c.arg(format!("--reuid={}", u.uid))
        .arg(format!("--regid={}", u.gid))
        .arg("--init-groups")
        .arg("--")
        .arg(cmd);
    c
}

/// Makes `p` and its ancestors up to `/` traversable by other users.
pub fn open_up(p: &Path) {
    let mut cur = Some(p);
    while let Some(c) = cur {
        if c == Path::new("/") || c.as_os_str().is_empty() {
            break;
        }
        let md = std::fs::metadata(c).unwrap();
        let mode = md.permissions().mode();
        if mode & 0o005 != 0o005 {
            std::fs::set_permissions(c, std::fs::Permissions::from_mode(mode | 0o005)).unwrap();
        }
        cur = c.parent();
    }
}
