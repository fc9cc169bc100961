//! The tar compatibility corpus (issue 17): every archive `corpus/make.py`
//! builds with the real tools (GNU tar in each format, bsdtar, Python's
//! tarfile) or by hand (NUL id fields, signed checksums, v7 directories,
//! Solaris `X`, pax globals, dumpdirs, repeated long names and pax headers,
//! a long name with a NUL, sizes on directories and hard links, old-GNU and
//! pax 0.0/0.1/1.0 sparse files...) is unpacked by davit, with shifted
//! ids, and by GNU tar in a user namespace with the same map. The trees
//! must match in paths, types, modes, owners, sizes, contents, link
//! targets, hardlink groups, mtimes and xattrs, and the paths davit writes
//! must be those `tar -t` lists (which is what `bsdtar -t` lists too, but
//! for one archive with a pax global `path`, which bsdtar ignores).
//! The few deliberate refusals are listed in `EXPECT` with their message.

mod common;
use common::*;
use davit_rootfs::{unpack, IdMap, Quiet, UnpackOptions};
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// What davit must do with each archive: `None` unpack it as GNU tar
/// does; `Some(text)` refuse it with an error containing `text`.
const EXPECT: &[(&str, Option<&str>)] = &[
    ("bsd-gnutar", None),
    ("bsd-pax", None),
    ("bsd-pax-acl", None),
    ("bsd-restricted-pax", None),
    ("bsd-ustar", None),
    ("bsd-v7", None),
    ("gnu-gnu", None),
    ("gnu-incremental", None),
    ("gnu-oldgnu", None),
    ("gnu-pax-global", None),
    ("gnu-pax-local-opt", None),
    ("gnu-posix", None),
    ("gnu-posix-named-acl-xattrs", None),
    ("gnu-posix-numeric-acl", None),
    ("gnu-sparse-0.0", None),
    ("gnu-sparse-0.1", None),
    ("gnu-sparse-1.0", None),
    ("gnu-sparse-oldgnu", None),
    ("gnu-transform-dotless", None),
    ("gnu-ustar", None),
    ("gnu-v7", None),
    ("hand-base256", None),
    ("hand-contiguous-and-unknown", None),
    ("hand-dir-size", None),
    ("hand-dumpdir", None),
    ("hand-global-path", None),
    ("hand-hardlink-size", None),
    ("hand-longname-nul", None),
    ("hand-nul-ids", None),
    ("hand-pax-global", None),
    ("hand-pax-path-nul", None),
    ("hand-prefix", None),
    ("hand-regular-with-slash", None),
    ("hand-signed-checksum", None),
    ("hand-solaris-x", None),
    ("hand-space-terminated", None),
    ("hand-star", None),
    ("hand-star-full-prefix", None),
    ("hand-two-longlinks", None),
    ("hand-two-longnames", None),
    ("hand-two-pax", None),
    ("hand-v7-dirs", None),
    ("py-gnu", None),
    ("py-pax", None),
    ("py-pax-global", None),
    ("py-pax-unicode", None),
    ("py-ustar", None),
    // A sparse map for every member.
    (
        "refuse-global-sparse",
        Some("a pax global header sets `GNU.sparse.map`, a sparse map for every later member; refused"),
    ),
    // 1 TiB apparent size, over the default cap of 64 GiB (the holes would
    // cost nothing: see hostile.rs for the same archive under a raised cap).
    (
        "refuse-sparse-1tib",
        Some("claims 1099511627776 bytes, over the cap of 68719476736"),
    ),
];

/// The archives whose listing bsdtar and GNU tar disagree on (a global
/// `path`; davit follows GNU tar).
const BSD_IGNORES_GLOBALS: &[&str] = &["hand-global-path"];

/// Root's map (a plain user's is its /etc/subuid range).
const HOST_U: u32 = 1_000_000;
const HOST_G: u32 = 1_100_000;

fn corpus(dir: &Path) -> Vec<PathBuf> {
    let make = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/make.py");
    let out = Command::new("python3")
        .arg(&make)
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        make.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "tar"))
        .collect();
    v.sort();
    v
}

/// Member paths as a lister prints them, normalized (`./` and a trailing
/// `/` dropped, the root left out). `None` if the tool failed and `strict`
/// (bsdtar exits 1 after a warning, such as on two pax headers for one
/// member, and still lists every member).
fn listing(tool: &str, archive: &Path, strict: bool) -> Option<BTreeSet<String>> {
    let out = Command::new(tool).arg("-tf").arg(archive).output().unwrap();
    if strict && !out.status.success() {
        return None;
    }
    Some(
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| {
                let l = l.strip_prefix("./").unwrap_or(l);
                l.trim_end_matches('/').to_owned()
            })
            .filter(|l| !l.is_empty() && l != ".")
            .collect(),
    )
}

/// Whether `tar -t` lists a root entry (`./`, `.`, `/`).
fn has_root_entry(archive: &Path) -> bool {
    let out = Command::new("tar")
        .arg("-tf")
        .arg(archive)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| matches!(l, "./" | "." | "/"))
}

/// Every path in the tree, relative, without the root.
fn tree_paths(root: &Path) -> BTreeSet<String> {
    let mut all = BTreeMap::new();
    snap_all(root, root, &mut all);
    all.into_keys()
        .filter(|p| !p.as_os_str().is_empty())
        .map(|p| p.to_str().unwrap().to_owned())
        .collect()
}

/// The `dev/pts` mount point the unpacker adds to every rootfs.
const ADDED: [&str; 2] = ["dev", "dev/pts"];

/// Who unpacks: root (the library, chowning to the map), or a plain user
/// (the `unpack` example with `--userns`: newuidmap, the kernel shifts).
#[derive(Clone, Copy)]
enum Who<'a> {
    Root,
    User(&'a TestUser),
}

impl Who<'_> {
    fn ids(self) -> (u32, u32) {
        match self {
            Who::Root => (HOST_U, HOST_G),
            Who::User(u) => (u.subuid, u.subgid),
        }
    }

    /// davit's unpack: its skip report, or its error text.
    fn unpack(self, archive: &Path, dest: &Path) -> Result<Vec<String>, String> {
        let (hu, hg) = self.ids();
        let spec = [format!("u:0:{hu}:65536"), format!("g:0:{hg}:65536")];
        match self {
            Who::Root => {
                let opts = UnpackOptions {
                    maps: Some(IdMap::parse_spec(&spec).unwrap()),
                    ..Default::default()
                };
                match unpack(archive, dest, &opts, &Quiet) {
                    Ok(r) => Ok(r.skipped.iter().map(|s| format!("{s:?}")).collect()),
                    Err(e) => Err(format!(
                        "{e}: {}",
                        std::error::Error::source(&e).map_or(String::new(), |s| s.to_string())
                    )),
                }
            }
            Who::User(u) => {
                let out = as_user(u, &example_bin())
                    .arg("--userns")
                    .args(["--map", &spec[0], "--map", &spec[1]])
                    .arg(archive)
                    .arg(dest)
                    .output()
                    .unwrap();
                if !out.status.success() {
                    return Err(String::from_utf8_lossy(&out.stderr).into_owned());
                }
                let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                Ok(v["skipped"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|s| s.to_string())
                    .collect())
            }
        }
    }
}

fn check(archive: &Path, base: &Path, who: Who<'_>) -> Result<(), String> {
    let name = archive.file_stem().unwrap().to_str().unwrap();
    let expect = EXPECT
        .iter()
        .find(|(n, _)| *n == name)
        .ok_or_else(|| format!("{name}: not in EXPECT (add it, with what davit must do)"))?
        .1;
    let d_davit = base.join(format!("{name}.davit"));
    let d_tar = base.join(format!("{name}.tar"));
    std::fs::create_dir(&d_davit).unwrap();
    std::fs::create_dir(&d_tar).unwrap();
    let (hu, hg) = who.ids();
    match who {
        // An archive without a root entry leaves the root as it was made.
        Who::Root => std::os::unix::fs::chown(&d_davit, Some(hu), Some(hg)).unwrap(),
        Who::User(u) => std::os::unix::fs::chown(&d_davit, Some(u.uid), Some(u.gid)).unwrap(),
    }
    match (expect, who.unpack(archive, &d_davit)) {
        (Some(want), Err(msg)) => {
            return if msg.contains(want) {
                Ok(())
            } else {
                Err(format!("{name}: refused, but with {msg:?}, not {want:?}"))
            };
        }
        (Some(want), Ok(_)) => {
            return Err(format!("{name}: unpacked; it must be refused ({want})"))
        }
        (None, Err(msg)) => return Err(format!("{name}: refused: {msg}")),
        (None, Ok(skipped)) => {
            if !skipped.is_empty() {
                return Err(format!("{name}: skipped {skipped:?}"));
            }
        }
    }
    let prefix = match who {
        Who::Root => None,
        Who::User(u) => Some(u),
    };
    tar_in_userns(
        prefix,
        hu,
        hg,
        archive,
        &d_tar,
        // Without the delay GNU tar sets a directory's time when it leaves
        // it, so a member that comes back to it later (bsdtar's order)
        // leaves the time of the unpack; davit, like bsdtar, sets every
        // directory's time last.
        &["--acls".to_owned(), "--delay-directory-restore".to_owned()],
    );
    let mut errs = Vec::new();

    // The listing: what davit wrote is what `tar -t` lists, plus only the
    // parents of listed members and the dev/pts mount point.
    let gnu = listing("tar", archive, true).ok_or_else(|| format!("{name}: tar -t failed"))?;
    let gnu_root = has_root_entry(archive);
    let bsd = listing("bsdtar", archive, false);
    let wrote = tree_paths(&d_davit);
    let explained = |p: &String| {
        gnu.contains(p)
            || ADDED.contains(&p.as_str())
            || gnu.iter().any(|l| l.starts_with(&format!("{p}/")))
    };
    let hidden: Vec<&String> = wrote.iter().filter(|p| !explained(p)).collect();
    let dropped: Vec<&String> = gnu.iter().filter(|p| !wrote.contains(*p)).collect();
    if !hidden.is_empty() || !dropped.is_empty() {
        errs.push(format!(
            "listing: davit wrote {hidden:?} that tar -t does not list, and not {dropped:?} that it does"
        ));
    }
    // bsdtar lists what GNU tar lists (so davit agrees with both), except
    // where a pax global header sets `path`: bsdtar ignores global headers.
    let bsd_differs = BSD_IGNORES_GLOBALS.contains(&name);
    match bsd {
        Some(bsd) if (bsd == gnu) == bsd_differs => errs.push(format!(
            "bsdtar -t {} GNU tar's listing: {bsd:?}",
            if bsd_differs {
                "now agrees with"
            } else {
                "differs from"
            }
        )),
        None => errs.push("bsdtar -t failed".into()),
        _ => {}
    }

    // The trees, entry by entry.
    let added: BTreeSet<&str> = ADDED.into_iter().filter(|p| !gnu.contains(*p)).collect();
    let (mut a, ga) = describe(&d_davit, &added);
    let (mut b, gb) = describe(&d_tar, &added);
    // Directories the archive does not list (its members' parents, and the
    // root when making dev/ touched it) have the time they were made.
    let untimed = |p: &Path| {
        let s = p.to_str().unwrap();
        if s.is_empty() {
            !added.is_empty() || !gnu_root
        } else {
            !gnu.contains(s)
        }
    };
    // A root the archive has no entry for also keeps the owner it was made
    // with (the caller's, as a plain user; GNU tar's run chowns its own).
    for m in [&mut a, &mut b] {
        for (p, d) in m.iter_mut() {
            let unowned = p.as_os_str().is_empty() && !gnu_root;
            if untimed(p) {
                *d = d
                    .split(' ')
                    .filter(|w| !w.starts_with("mtime="))
                    .filter(|w| !(unowned && (w.starts_with("uid=") || w.starts_with("gid="))))
                    .collect::<Vec<_>>()
                    .join(" ");
            }
        }
    }
    for k in a.keys().chain(b.keys()).collect::<BTreeSet<_>>() {
        if a.get(k) != b.get(k) {
            errs.push(format!(
                "{}\n    davit: {:?}\n    tar:   {:?}",
                k.display(),
                a.get(k),
                b.get(k)
            ));
        }
    }
    if ga != gb {
        errs.push(format!("hardlink groups: davit {ga:?}, tar {gb:?}"));
    }
    if b.len() < 2 {
        errs.push(format!("GNU tar unpacked only {:?}", b.keys()));
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(format!("{name}:\n  {}", errs.join("\n  ")))
    }
}

fn run_corpus(who: Who<'_>, test: &str) {
    let tmp = tempfile::Builder::new()
        .prefix("davit-corpus-")
        .tempdir()
        .unwrap();
    let archives = corpus(&tmp.path().join("corpus"));
    assert_eq!(
        archives.len(),
        EXPECT.len(),
        "every archive has an expectation and every expectation an archive"
    );
    let work = tmp.path().join("work");
    std::fs::create_dir(&work).unwrap();
    if let Who::User(u) = who {
        open_up(&work);
        for a in &archives {
            std::fs::set_permissions(a, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        std::os::unix::fs::chown(&work, Some(u.uid), Some(u.gid)).unwrap();
    }
    let failures: Vec<String> = archives
        .iter()
        .filter_map(|a| check(a, &work, who).err())
        .collect();
    assert!(
        failures.is_empty(),
        "{test}: {} of {} archives differ:\n{}",
        failures.len(),
        archives.len(),
        failures.join("\n")
    );
}

#[test]
fn the_corpus_unpacks_as_gnu_tar_unpacks_it() {
    if !require_root("the_corpus_unpacks_as_gnu_tar_unpacks_it") {
        return;
    }
    run_corpus(Who::Root, "as root");
}

/// The same as a plain user: davit in a user namespace that newuidmap
/// mapped, against GNU tar in one with the same map, run as that user.
#[test]
fn the_corpus_unpacks_as_gnu_tar_unpacks_it_for_a_plain_user() {
    if !require_root("the_corpus_unpacks_as_gnu_tar_unpacks_it_for_a_plain_user") {
        return;
    }
    let u = test_user();
    run_corpus(Who::User(&u), "as a plain user");
}
