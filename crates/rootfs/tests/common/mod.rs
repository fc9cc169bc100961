//! Shared helpers: a raw tar writer (for archives the `tar` builder refuses
//! to make), privilege checks and tree snapshots.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

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

/// Every xattr of every path (`getfattr -R -h -d -m - -e hex`).
pub fn xattrs(root: &Path) -> BTreeMap<PathBuf, Vec<String>> {
    let out = Command::new("getfattr")
        .args(["-R", "-h", "-P", "-d", "-m", "-", "-e", "hex", "."])
        .current_dir(root)
        .output()
        .unwrap();
    let mut m: BTreeMap<PathBuf, Vec<String>> = BTreeMap::new();
    let mut cur = PathBuf::new();
    for l in String::from_utf8_lossy(&out.stdout).lines() {
        if let Some(p) = l.strip_prefix("# file: ") {
            cur = PathBuf::from(p.trim_start_matches("./"));
        } else if !l.is_empty() {
            m.entry(cur.clone()).or_default().push(l.to_owned());
        }
    }
    m
}

/// path → description of everything compared; plus hardlink groups.
pub fn describe(
    root: &Path,
    skip: &BTreeSet<&str>,
) -> (BTreeMap<PathBuf, String>, BTreeSet<Vec<PathBuf>>) {
    let mut all = BTreeMap::new();
    snap_all(root, root, &mut all);
    let xa = xattrs(root);
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<u64, Vec<PathBuf>> = BTreeMap::new();
    for (rel, md) in all {
        if skip.contains(rel.to_str().unwrap()) {
            continue;
        }
        let p = root.join(&rel);
        let ft = md.file_type();
        let kind = if ft.is_dir() {
            "dir"
        } else if ft.is_symlink() {
            "symlink"
        } else if ft.is_file() {
            "file"
        } else if ft.is_fifo() {
            "fifo"
        } else if ft.is_char_device() {
            "char"
        } else if ft.is_block_device() {
            "block"
        } else {
            "other"
        };
        let mut d = format!(
            "{kind} uid={} gid={} mtime={}.{:09}",
            md.uid(),
            md.gid(),
            md.mtime(),
            md.mtime_nsec()
        );
        if !ft.is_symlink() {
            d.push_str(&format!(" mode={:o}", md.mode() & 0o7777));
        }
        if ft.is_file() {
            let data = std::fs::read(&p).unwrap();
            let mut h = std::collections::hash_map::DefaultHasher::new();
            data.hash(&mut h);
            d.push_str(&format!(" size={} hash={:x}", md.size(), h.finish()));
        }
        if ft.is_symlink() {
            d.push_str(&format!(
                " -> {}",
                std::fs::read_link(&p).unwrap().display()
            ));
        }
        if ft.is_char_device() || ft.is_block_device() {
            d.push_str(&format!(" rdev={:x}", md.rdev()));
        }
        let key = if rel.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            rel.clone()
        };
        if let Some(x) = xa.get(&key) {
            d.push_str(&format!(" xattrs={x:?}"));
        }
        if !ft.is_dir() && md.nlink() > 1 {
            inodes.entry(md.ino()).or_default().push(rel.clone());
        }
        out.insert(rel, d);
    }
    let groups = inodes
        .into_values()
        .map(|mut v| {
            v.sort();
            v
        })
        .collect();
    (out, groups)
}

pub fn snap_all(root: &Path, dir: &Path, m: &mut BTreeMap<PathBuf, std::fs::Metadata>) {
    m.insert(
        dir.strip_prefix(root).unwrap().to_owned(),
        std::fs::symlink_metadata(dir).unwrap(),
    );
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let md = std::fs::symlink_metadata(&p).unwrap();
        if md.is_dir() {
            snap_all(root, &p, m);
        } else {
            m.insert(p.strip_prefix(root).unwrap().to_owned(), md);
        }
    }
}

/// GNU tar (`--numeric-owner --xattrs --xattrs-include=*`, plus `extra`)
/// extracting `archive` into `dest` inside a user namespace that maps
/// container 0..65536 to `uid`/`gid` (as `prefix` if given, else as root).
pub fn tar_in_userns(
    prefix: Option<&TestUser>,
    uid: u32,
    gid: u32,
    archive: &Path,
    dest: &Path,
    extra: &[String],
) {
    std::os::unix::fs::chown(dest, Some(uid), Some(gid)).unwrap();
    let unshare = Path::new("unshare");
    let mut c = match prefix {
        Some(u) => as_user(u, unshare),
        None => {
            // newuidmap wants a `root:` range even for root. Rather than
            // touching the host's /etc/subuid, bind a private copy over it
            // in a throwaway mount namespace.
            let ids = dest.parent().unwrap().join("subids");
            std::fs::write(&ids, format!("root:{uid}:65536\nroot:{gid}:65536\n")).unwrap();
            let mut c = Command::new(unshare);
            c.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
                .arg(r#"mount --bind "$0" /etc/subuid && mount --bind "$0" /etc/subgid && exec unshare "$@""#)
                .arg(ids);
            c
        }
    };
    c.arg("--user")
        .arg(format!("--map-users={uid},0,65536"))
        .arg(format!("--map-groups={gid},0,65536"))
        .args([
            "--setuid",
            "0",
            "--setgid",
            "0",
            "--",
            "tar",
            "--numeric-owner",
            "--xattrs",
            "--xattrs-include=*",
        ])
        .args(extra)
        .arg("-xpf")
        .arg(archive)
        .arg("-C")
        .arg(dest);
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "tar in userns: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
