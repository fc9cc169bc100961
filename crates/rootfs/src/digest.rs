//! The integrity record of a tree: one line per entry (path, type, mode,
//! owner, size, mtime, device, xattrs and the sha256 of the content or
//! link target), sorted by path, and the sha256 of all lines. A base is
//! recorded when it is unpacked and compared with a fresh walk by
//! `davit cache verify`, which names each path that differs.
//!
//! The walk never follows a symlink and never leaves the tree's filesystem
//! (a mount point inside is recorded but not entered).
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// A tree's integrity record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeDigest {
    /// sha256 of [`TreeDigest::lines`] joined with newlines.
    pub digest: String,
    /// Entries recorded (the top directory included).
    pub entries: u64,
    /// Regular-file bytes hashed.
    pub bytes: u64,
    /// One `PATH\tRECORD` line per entry, sorted by path; the path is
    /// escaped (see [`escape`]).
    pub lines: Vec<String>,
}

impl TreeDigest {
    /// The manifest file's text: the lines, each ending in a newline.
    pub fn text(&self) -> String {
        let mut s = String::with_capacity(self.lines.iter().map(|l| l.len() + 1).sum());
        for l in &self.lines {
            s.push_str(l);
            s.push('\n');
        }
        s
    }

    /// Parses a manifest written by [`TreeDigest::text`].
    pub fn from_text(text: &str) -> TreeDigest {
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        TreeDigest {
            digest: digest_of(&lines),
            entries: lines.len() as u64,
            bytes: 0,
            lines,
        }
    }

    /// The differences from `recorded` to `self`, one per path: `changed`,
    /// `added` or `removed`, with the fields that differ.
    pub fn changes_from(&self, recorded: &TreeDigest) -> Vec<String> {
        let split = |l: &String| -> (String, String) {
            match l.split_once('\t') {
                Some((p, r)) => (p.to_owned(), r.to_owned()),
                None => (l.clone(), String::new()),
            }
        };
        let old: BTreeMap<String, String> = recorded.lines.iter().map(split).collect();
        let new: BTreeMap<String, String> = self.lines.iter().map(split).collect();
        let mut out = Vec::new();
        for (p, r) in &old {
            match new.get(p) {
                None => out.push(format!("{p}: removed")),
                Some(n) if n != r => out.push(format!("{p}: changed ({})", field_diff(r, n))),
                Some(_) => {}
            }
        }
        for p in new.keys() {
            if !old.contains_key(p) {
                out.push(format!("{p}: added"));
            }
        }
        out
    }
}

const FIELDS: [&str; 9] = [
    "type", "mode", "uid", "gid", "size", "mtime", "rdev", "content", "xattrs",
];

fn field_diff(old: &str, new: &str) -> String {
    let o: Vec<&str> = old.split(' ').collect();
    let n: Vec<&str> = new.split(' ').collect();
    let names: Vec<&str> = FIELDS
        .iter()
        .enumerate()
        .filter(|(i, _)| o.get(*i) != n.get(*i))
        .map(|(_, f)| *f)
        .collect();
    if names.is_empty() {
        "record".into()
    } else {
        names.join(", ")
    }
}

fn digest_of(lines: &[String]) -> String {
    let mut h = Sha256::new();
    for l in lines {
        h.update(l.as_bytes());
        h.update(b"\n");
    }
    hex::encode(h.finalize())
}

/// Escapes a path for a manifest line: bytes outside printable ASCII, `\`
/// and tab become `\xNN`.
pub fn escape(p: &[u8]) -> String {
    let mut s = String::with_capacity(p.len());
    for &b in p {
        if (0x21..0x7f).contains(&b) && b != b'\\' || b == b' ' {
            s.push(b as char);
        } else {
            let _ = write!(s, "\\x{b:02x}");
        }
    }
    s
}

fn io(what: &str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.to_owned();
    let path = path.to_owned();
    move |source| Error::Base { what, path, source }
}

fn sha256_reader(mut r: impl Read, buf: &mut [u8]) -> std::io::Result<(String, u64)> {
    let mut h = Sha256::new();
    let mut n = 0u64;
    loop {
        let got = match r.read(buf) {
            Ok(0) => break,
            Ok(g) => g,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        h.update(&buf[..got]);
        n += got as u64;
    }
    Ok((hex::encode(h.finalize()), n))
}

/// Records the tree at `root`.
///
/// # Errors
/// [`Error::Base`] when an entry cannot be read.
pub fn tree(root: &Path) -> Result<TreeDigest> {
    let top = std::fs::symlink_metadata(root).map_err(io("cannot read", root))?;
    if !top.is_dir() {
        return Err(Error::Base {
            what: "not a directory:".into(),
            path: root.to_owned(),
            source: std::io::ErrorKind::NotADirectory.into(),
        });
    }
    let dev = top.dev();
    let mut lines = Vec::new();
    // Regular files: their line's index, path, and the line's text before
    // and after the content's hash, which the hashers fill in.
    let mut files: Vec<(usize, PathBuf, String, String)> = Vec::new();
    // (relative path bytes, absolute path), depth first, sorted.
    let mut stack: Vec<(Vec<u8>, PathBuf)> = vec![(b".".to_vec(), root.to_owned())];
    while let Some((rel, abs)) = stack.pop() {
        let md = std::fs::symlink_metadata(&abs).map_err(io("cannot read", &abs))?;
        let ft = md.file_type();
        let (kind, content) = if ft.is_file() {
            ("f", String::new())
        } else if ft.is_symlink() {
            let t = std::fs::read_link(&abs).map_err(io("cannot read", &abs))?;
            (
                "l",
                hex::encode(Sha256::digest(t.as_os_str().as_encoded_bytes())),
            )
        } else if ft.is_dir() {
            ("d", "-".into())
        } else if ft.is_char_device() {
            ("c", "-".into())
        } else if ft.is_block_device() {
            ("b", "-".into())
        } else if ft.is_fifo() {
            ("p", "-".into())
        } else {
            ("s", "-".into())
        };
        let mut xh = Sha256::new();
        let mut names: Vec<_> = xattr::list(&abs)
            .map_err(io("cannot list the xattrs of", &abs))?
            .collect();
        names.sort();
        for n in &names {
            let v = xattr::get(&abs, n)
                .map_err(io("cannot read an xattr of", &abs))?
                .unwrap_or_default();
            xh.update(n.as_encoded_bytes());
            xh.update([0]);
            xh.update((v.len() as u64).to_le_bytes());
            xh.update(&v);
        }
        let xattrs = if names.is_empty() {
            "-".to_owned()
        } else {
            hex::encode(xh.finalize())
        };
        let size = if ft.is_dir() { 0 } else { md.size() };
        let head = format!(
            "{}\t{kind} {:o} {} {} {size} {}.{:09} {} ",
            escape(&rel),
            md.mode() & 0o7777,
            md.uid(),
            md.gid(),
            md.mtime(),
            md.mtime_nsec(),
            md.rdev(),
        );
        if ft.is_file() {
            files.push((lines.len(), abs.clone(), head, format!(" {xattrs}")));
            lines.push(String::new());
        } else {
            lines.push(format!("{head}{content} {xattrs}"));
        }
        if ft.is_dir() && md.dev() == dev {
            let mut kids: Vec<(Vec<u8>, PathBuf)> = std::fs::read_dir(&abs)
                .map_err(io("cannot list", &abs))?
                .map(|e| {
                    e.map(|e| {
                        let name = e.file_name();
                        let mut r = rel.clone();
                        r.push(b'/');
                        r.extend_from_slice(name.as_encoded_bytes());
                        (r, e.path())
                    })
                })
                .collect::<std::io::Result<_>>()
                .map_err(io("cannot list", &abs))?;
            // Popped in ascending order.
            kids.sort_by(|a, b| b.0.cmp(&a.0));
            stack.extend(kids);
        }
    }
    let mut bytes = 0u64;
    for (i, line, n) in hash_files(&files)? {
        lines[i] = line;
        bytes += n;
    }
    lines.sort();
    Ok(TreeDigest {
        digest: digest_of(&lines),
        entries: lines.len() as u64,
        bytes,
        lines,
    })
}

/// Hashes the regular files of a walk on up to four threads (the content
/// is most of a digest's time: 144 MB for a Debian base), each file opened
/// without following a link. Returns each file's line index, finished
/// line and size; the first error stops every thread.
fn hash_files(files: &[(usize, PathBuf, String, String)]) -> Result<Vec<(usize, String, u64)>> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 4)
        .min(files.len().max(1));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failed = std::sync::atomic::AtomicBool::new(false);
    let hash_some = || -> Result<Vec<(usize, String, u64)>> {
        use std::sync::atomic::Ordering::Relaxed;
        let mut buf = vec![0u8; 1 << 20];
        let mut done = Vec::new();
        while !failed.load(Relaxed) {
            let Some((i, abs, head, tail)) = files.get(next.fetch_add(1, Relaxed)) else {
                break;
            };
            let hashed = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(abs)
                .and_then(|f| sha256_reader(f, &mut buf));
            match hashed {
                Ok((h, n)) => done.push((*i, format!("{head}{h}{tail}"), n)),
                Err(e) => {
                    failed.store(true, Relaxed);
                    return Err(io("cannot read", abs)(e));
                }
            }
        }
        Ok(done)
    };
    let parts: Vec<Result<Vec<_>>> = std::thread::scope(|s| {
        let workers: Vec<_> = (1..threads).map(|_| s.spawn(hash_some)).collect();
        let mut parts = vec![hash_some()];
        parts.extend(workers.into_iter().map(|w| {
            w.join().unwrap_or_else(|_| {
                Err(Error::Base {
                    what: "a digest thread panicked while hashing".into(),
                    path: PathBuf::new(),
                    source: std::io::ErrorKind::Other.into(),
                })
            })
        }));
        parts
    });
    let mut all = Vec::with_capacity(files.len());
    for p in parts {
        all.extend(p?);
    }
    Ok(all)
}

/// Compares the tree at `root` with `recorded`.
///
/// # Errors
/// [`Error::Tampered`] naming the first differences (at most 20), or the
/// walk's error.
pub fn verify(root: &Path, recorded: &TreeDigest) -> Result<TreeDigest> {
    let now = tree(root)?;
    if now.digest == recorded.digest {
        return Ok(now);
    }
    let mut changes = now.changes_from(recorded);
    if changes.is_empty() {
        changes.push("the manifest's digest does not match its lines".into());
    }
    let more = changes.len().saturating_sub(20);
    changes.truncate(20);
    Err(Error::Tampered {
        path: root.to_owned(),
        changes,
        more,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Files hashed on several threads: each line carries its own file's
    /// hash and the bytes add up.
    #[test]
    fn each_file_line_has_its_own_hash_however_many_threads_hash() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path().join("root");
        let mut want = BTreeMap::new();
        let mut total = 0u64;
        for i in 0..300u32 {
            let d = r.join(format!("d{}", i % 7));
            std::fs::create_dir_all(&d).unwrap();
            let body = format!("file {i}\n").repeat(i as usize);
            std::fs::write(d.join(format!("f{i}")), &body).unwrap();
            total += body.len() as u64;
            want.insert(
                format!("./d{}/f{i}", i % 7),
                hex::encode(Sha256::digest(body.as_bytes())),
            );
        }
        let d = tree(&r).unwrap();
        assert_eq!(d.bytes, total);
        assert_eq!(d.entries, 1 + 7 + 300);
        for l in &d.lines {
            let (path, rec) = l.split_once('\t').unwrap();
            if let Some(h) = want.get(path) {
                assert_eq!(rec.split(' ').nth(7), Some(h.as_str()), "{l}");
            }
        }
        assert!(d.lines.iter().filter(|l| l.contains("\tf ")).count() == 300);
    }

    #[test]
    fn any_change_is_named_and_an_untouched_tree_matches() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path().join("root");
        std::fs::create_dir_all(r.join("etc")).unwrap();
        std::fs::write(r.join("etc/hosts"), "127.0.0.1 localhost\n").unwrap();
        std::fs::write(r.join("etc/tab\tname"), "x").unwrap();
        std::os::unix::fs::symlink("hosts", r.join("etc/link")).unwrap();
        let d = tree(&r).unwrap();
        assert_eq!(d.entries, 5);
        assert!(
            d.lines
                .iter()
                .any(|l| l.starts_with("./etc/tab\\x09name\t")),
            "{:?}",
            d.lines
        );
        // Reading it again changes nothing; the manifest round-trips.
        assert_eq!(verify(&r, &d).unwrap().digest, d.digest);
        assert_eq!(TreeDigest::from_text(&d.text()).digest, d.digest);

        std::fs::write(r.join("etc/hosts"), "6.6.6.6 localhost\n").unwrap();
        let e = verify(&r, &d).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("./etc/hosts: changed (") && msg.contains("content"),
            "{msg}"
        );
        assert_eq!(e.kind(), crate::ErrorKind::Corrupt);

        let d = tree(&r).unwrap();
        std::fs::remove_file(r.join("etc/link")).unwrap();
        std::fs::write(r.join("new"), "").unwrap();
        let msg = verify(&r, &d).unwrap_err().to_string();
        assert!(
            msg.contains("./etc/link: removed") && msg.contains("./new: added"),
            "{msg}"
        );

        let d = tree(&r).unwrap();
        std::fs::set_permissions(
            r.join("new"),
            std::os::unix::fs::PermissionsExt::from_mode(0o4755),
        )
        .unwrap();
        let msg = verify(&r, &d).unwrap_err().to_string();
        assert!(msg.contains("./new: changed (mode"), "{msg}");

        let d = tree(&r).unwrap();
        xattr::set(r.join("new"), "user.davit.test", b"1").unwrap();
        let msg = verify(&r, &d).unwrap_err().to_string();
        assert!(msg.contains("xattrs"), "{msg}");
    }
}
