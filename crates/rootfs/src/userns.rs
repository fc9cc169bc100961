//! Unprivileged unpack: the extractor runs inside a user namespace mapped by
//! `newuidmap`/`newgidmap`, as `lxc-usernsexec` does, so the kernel shifts
//! owners, POSIX ACLs and file capabilities.
//!
//! Protocol: the parent spawns `EXE __rootfs-userns-child`. Between fork and
//! exec the child unshares a user namespace, sends its pid over a pipe and
//! waits; a parent thread runs the map helpers (checking their exit status),
//! reads `/proc/PID/{uid,gid}_map` back, then releases the child, which
//! becomes root in the namespace before exec so it keeps its capabilities.
//! The request goes as JSON on stdin, the [`Report`] (or the error kind and
//! message) comes back as JSON on stdout, and progress as `progress N` lines
//! on stderr.
#![forbid(unsafe_code)]

use crate::error::{chain, Error, ErrorKind, Result};
use crate::options::UnpackOptions;
use crate::report::{Report, Reporter};
use crate::sys;
use crate::unpack::{self, Mode};
use davit_types::{IdMap, IdRange};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

/// The `argv[1]` that makes the CLI call [`userns_child_main`].
pub const CHILD_ARG: &str = "__rootfs-userns-child";

/// What the child does besides unpacking.
#[derive(Serialize, Deserialize, Default)]
enum Op {
    /// Unpack `archive` into `dest`.
    #[default]
    Unpack,
    /// Remove `dest`.
    Remove,
    /// Record the tree at `dest` ([`crate::digest::tree`]).
    Digest,
    /// [`crate::base::prepare_upper`] for the base `archive`: `dest` is the
    /// upper, `work` the work directory.
    PrepareUpper { work: PathBuf },
    /// Copy the tree `archive` to `dest` ([`crate::base::copy_tree`]), then
    /// rename the host in `tree` (`template_vars[0]`: old, new).
    Copy { tree: PathBuf },
    /// Rename the host in `dest` (`template_vars[0]`: old, new).
    RenameHost,
}

#[derive(Serialize, Deserialize)]
struct Request {
    #[serde(default)]
    op: Op,
    #[serde(default)]
    templates: Vec<String>,
    #[serde(default)]
    template_vars: Vec<(String, String)>,
    archive: PathBuf,
    dest: PathBuf,
    excludes: Vec<String>,
    threads: usize,
    /// The container-side ranges that archive ids must fall in.
    maps: IdMap,
    /// `UnpackOptions::max_file_size`.
    #[serde(default)]
    max_file_size: Option<u64>,
}

#[derive(Serialize, Deserialize)]
enum Reply {
    Ok(Report),
    Digest(crate::digest::TreeDigest),
    Paths(Vec<String>),
    Err { kind: ErrorKind, message: String },
}

/// Unpacks `archive` into the existing, empty `dest` as a plain user: the
/// work happens in `exe __rootfs-userns-child` (see [`userns_child_main`])
/// inside a user namespace carrying `opts.maps`, written by
/// `newuidmap`/`newgidmap`. The caller's own uid and gid are mapped one past
/// the end of the container ranges so that namespace root may write into
/// `dest`; archive ids must still fall in `opts.maps`. Device nodes are
/// skipped and listed in [`Report::skipped`].
///
/// # Errors
/// [`ErrorKind::Map`] if `opts.maps` is missing or unsafe or the kernel's
/// map differs; [`ErrorKind::Helper`] if a map helper or the child cannot run
/// or fails; otherwise the child's error, with its kind.
pub fn unpack_in_userns(
    exe: &Path,
    archive: &Path,
    dest: &Path,
    opts: &UnpackOptions,
    rep: &dyn Reporter,
) -> Result<Report> {
    let maps = opts.maps.as_ref().ok_or_else(|| {
        Error::Ids(davit_types::Error::MapRefused {
            why: "an unprivileged unpack needs an id map".into(),
        })
    })?;
    maps.validate()?;
    let (uid, gid) = (sys::getuid(), sys::getgid());
    let mut umap = maps.uid.clone();
    let mut gmap = maps.gid.clone();
    if uid != 0 {
        let c = u32::try_from(maps.uid_end()).map_err(|_| {
            Error::Ids(davit_types::Error::MapRefused {
                why: "no room above the uid map for the caller's uid".into(),
            })
        })?;
        umap.push(IdRange {
            container: c,
            host: uid,
            len: 1,
        });
        let c = u32::try_from(maps.gid_end()).map_err(|_| {
            Error::Ids(davit_types::Error::MapRefused {
                why: "no room above the gid map for the caller's gid".into(),
            })
        })?;
        gmap.push(IdRange {
            container: c,
            host: gid,
            len: 1,
        });
    } else {
        // Root is unmapped in the namespace: hand dest to container root.
        let (r, g) = (maps.host_uid(0).unwrap(), maps.host_gid(0).unwrap());
        std::os::unix::fs::lchown(dest, Some(r), Some(g)).map_err(|source| Error::OpenDest {
            path: dest.to_owned(),
            source,
        })?;
    }
    let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_owned());
    let req = Request {
        op: Op::Unpack,
        templates: opts.templates.clone(),
        template_vars: opts.template_vars.clone(),
        archive: abs(archive),
        dest: abs(dest),
        excludes: opts.excludes.clone(),
        threads: opts.threads,
        maps: maps.identity(),
        max_file_size: opts.max_file_size,
    };
    let len = std::fs::metadata(archive).map(|m| m.len()).ok();
    let id = rep.start(&format!("unpack {}", archive.display()), len);
    let r = run_child(exe, &req, umap, gmap, id, rep);
    rep.finish(id);
    match r? {
        Reply::Ok(r) => Ok(r),
        _ => Err(protocol("an unpack report")),
    }
}

/// Removes `path`, a tree owned by the ids in `maps`, from inside a user
/// namespace carrying them (a plain user cannot delete files owned by its
/// subordinate ids from outside). The caller's own ids are mapped too.
///
/// # Errors
/// As [`unpack_in_userns`]; [`ErrorKind::Io`] if the removal fails.
pub fn remove_in_userns(exe: &Path, path: &Path, maps: &IdMap) -> Result<()> {
    simple_op(
        exe,
        Op::Remove,
        Path::new(""),
        path,
        maps,
        Vec::new(),
        Vec::new(),
    )
    .map(drop)
}

/// Copies the tree `from` to `to` ([`crate::base::copy_tree`]) inside a
/// user namespace carrying `maps`, so owners, whiteouts and `user.*`
/// xattrs of a plain user's container survive.
///
/// # Errors
/// As [`unpack_in_userns`].
/// Then, like [`crate::templates::rename_host`], renames the host from
/// `rename.0` to `rename.1` in `/etc/hostname` and `/etc/hosts` under `tree`.
pub fn copy_in_userns(
    exe: &Path,
    from: &Path,
    to: &Path,
    tree: &Path,
    maps: &IdMap,
    rename: &(String, String),
) -> Result<()> {
    let from = std::path::absolute(from).unwrap_or_else(|_| from.to_owned());
    let op = Op::Copy {
        tree: std::path::absolute(tree).unwrap_or_else(|_| tree.to_owned()),
    };
    let vars = vec![rename.clone()];
    simple_op(exe, op, &from, to, maps, Vec::new(), vars).map(drop)
}

/// [`crate::templates::rename_host`] on `tree` inside a user namespace
/// carrying `maps`, where a plain user may rewrite files its container's
/// root owns (`davit rename`).
///
/// # Errors
/// As [`unpack_in_userns`].
pub fn rename_host_in_userns(
    exe: &Path,
    tree: &Path,
    maps: &IdMap,
    old: &str,
    new: &str,
) -> Result<()> {
    let tree = std::path::absolute(tree).unwrap_or_else(|_| tree.to_owned());
    let vars = vec![(old.to_owned(), new.to_owned())];
    simple_op(
        exe,
        Op::RenameHost,
        Path::new(""),
        &tree,
        maps,
        Vec::new(),
        vars,
    )
    .map(drop)
}

fn protocol(want: &str) -> Error {
    Error::Child {
        kind: ErrorKind::Helper,
        message: format!("the user namespace child did not reply with {want}"),
    }
}

/// Records the tree at `path` ([`crate::digest::tree`]) from inside a user
/// namespace carrying `maps`, where a plain user can read every file of a
/// tree owned by its subordinate ids.
///
/// # Errors
/// As [`unpack_in_userns`]; [`ErrorKind::Io`] if an entry cannot be read.
pub fn digest_in_userns(
    exe: &Path,
    path: &Path,
    maps: &IdMap,
) -> Result<crate::digest::TreeDigest> {
    match simple_op(
        exe,
        Op::Digest,
        Path::new(""),
        path,
        maps,
        Vec::new(),
        Vec::new(),
    )? {
        Reply::Digest(d) => Ok(d),
        _ => Err(protocol("a digest")),
    }
}

/// [`crate::base::prepare_upper`] inside a user namespace carrying `maps`,
/// for a base whose ids are already shifted into them.
///
/// # Errors
/// As [`unpack_in_userns`].
pub fn prepare_upper_in_userns(
    exe: &Path,
    base_rootfs: &Path,
    upper: &Path,
    work: &Path,
    templates: &[String],
    vars: &[(String, String)],
    maps: &IdMap,
) -> Result<Vec<String>> {
    let op = Op::PrepareUpper {
        work: std::path::absolute(work).unwrap_or_else(|_| work.to_owned()),
    };
    match simple_op(
        exe,
        op,
        base_rootfs,
        upper,
        maps,
        templates.to_vec(),
        vars.to_vec(),
    )? {
        Reply::Paths(p) => Ok(p),
        _ => Err(protocol("a list of paths")),
    }
}

/// Runs one non-unpack `op` in the child, with the caller's ids mapped
/// one past `maps` so the child may work in the caller's directories.
fn simple_op(
    exe: &Path,
    op: Op,
    archive: &Path,
    path: &Path,
    maps: &IdMap,
    templates: Vec<String>,
    template_vars: Vec<(String, String)>,
) -> Result<Reply> {
    maps.validate()?;
    let (uid, gid) = (sys::getuid(), sys::getgid());
    let mut umap = maps.uid.clone();
    let mut gmap = maps.gid.clone();
    if uid != 0 {
        if let (Ok(cu), Ok(cg)) = (u32::try_from(maps.uid_end()), u32::try_from(maps.gid_end())) {
            umap.push(IdRange {
                container: cu,
                host: uid,
                len: 1,
            });
            gmap.push(IdRange {
                container: cg,
                host: gid,
                len: 1,
            });
        }
    }
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    let req = Request {
        op,
        templates,
        template_vars,
        archive: archive.to_owned(),
        dest: abs,
        excludes: Vec::new(),
        threads: 0,
        maps: maps.identity(),
        max_file_size: None,
    };
    run_child(exe, &req, umap, gmap, 0, &crate::report::Quiet)
}

/// Spawns `exe CHILD_ARG` in a new user namespace, writes `umap`/`gmap`
/// with the setuid helpers, sends `req` and returns the child's report.
fn run_child(
    exe: &Path,
    req: &Request,
    umap: Vec<IdRange>,
    gmap: Vec<IdRange>,
    id: u64,
    rep: &dyn Reporter,
) -> Result<Reply> {
    let req = serde_json::to_vec(req).expect("request serializes");

    let helper_err = |source| Error::Helper {
        helper: "pipe".into(),
        source,
    };
    let (pid_r, pid_w) = sys::pipe().map_err(helper_err)?;
    let (go_r, go_w) = sys::pipe().map_err(helper_err)?;
    let child_cmd = format!("{} {CHILD_ARG}", exe.display());
    let mut cmd = Command::new(exe);
    cmd.arg(CHILD_ARG)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    sys::userns_pre_exec(
        &mut cmd,
        pid_w.as_raw_fd(),
        go_r.as_raw_fd(),
        [pid_r.as_raw_fd(), go_w.as_raw_fd()],
    );

    let (spawned, mapped) = std::thread::scope(|s| {
        // `spawn` returns only after the child has exec'd, which it does only
        // after this thread has written its maps.
        let mapper = s.spawn(move || -> Result<()> {
            let mut pid_r = std::fs::File::from(pid_r);
            let mut b = [0u8; 4];
            pid_r.read_exact(&mut b).map_err(|source| Error::Helper {
                helper: "user namespace child (no pid)".into(),
                source,
            })?;
            let pid = u32::from_ne_bytes(b);
            let map = IdMap {
                uid: umap,
                gid: gmap,
            };
            davit_types::idmap::write_maps_with(pid, &map, false, &|cmd| {
                sys::die_with_parent(cmd)
            })?;
            let mut go = std::fs::File::from(go_w);
            go.write_all(b"g").map_err(|source| Error::Helper {
                helper: "user namespace child (release)".into(),
                source,
            })
        });
        let spawned = cmd.spawn();
        drop(pid_w);
        drop(go_r);
        (spawned, mapper.join().expect("mapper thread panicked"))
    });
    mapped?;
    let mut child = spawned.map_err(|source| Error::Helper {
        helper: child_cmd.clone(),
        source,
    })?;

    let mut stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (out, errtext, status) = std::thread::scope(|s| {
        let errs = s.spawn(move || {
            let mut text = String::new();
            for line in BufReader::new(stderr).lines().map_while(|l| l.ok()) {
                match line
                    .strip_prefix("progress ")
                    .and_then(|n| n.parse::<u64>().ok())
                {
                    Some(n) => rep.advance(id, n),
                    None => {
                        text.push_str(&line);
                        text.push('\n');
                    }
                }
            }
            text
        });
        let _ = stdin.write_all(&req);
        drop(stdin);
        let mut out = Vec::new();
        let _ = BufReader::new(stdout).read_to_end(&mut out);
        let status = child.wait();
        (out, errs.join().unwrap_or_default(), status)
    });
    let status = status.map_err(|source| Error::Helper {
        helper: child_cmd.clone(),
        source,
    })?;
    match serde_json::from_slice::<Reply>(&out) {
        Ok(Reply::Err { kind, message }) => Err(Error::Child { kind, message }),
        Ok(r) if status.success() => Ok(r),
        _ => Err(Error::HelperStatus {
            helper: child_cmd,
            status: status.to_string(),
            stderr: errtext.trim().to_owned(),
        }),
    }
}

/// Sends progress to the parent as `progress N` lines, at most one per MiB.
struct StderrProgress {
    pending: AtomicU64,
}

impl Reporter for StderrProgress {
    fn advance(&self, _id: u64, bytes: u64) {
        let p = self.pending.fetch_add(bytes, Ordering::Relaxed) + bytes;
        if p >= 1 << 20
            && self
                .pending
                .compare_exchange(p, 0, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let _ = writeln!(std::io::stderr(), "progress {p}");
        }
    }
    fn finish(&self, _id: u64) {
        let p = self.pending.swap(0, Ordering::Relaxed);
        if p > 0 {
            let _ = writeln!(std::io::stderr(), "progress {p}");
        }
    }
}

fn child() -> Result<Reply> {
    // Already done before exec; repeating it is harmless and makes the
    // entry point safe to call on its own.
    sys::become_root().map_err(|source| Error::Helper {
        helper: "setresuid(0, 0, 0)".into(),
        source,
    })?;
    let mut input = Vec::new();
    std::io::stdin()
        .read_to_end(&mut input)
        .map_err(|source| Error::Helper {
            helper: "read request".into(),
            source,
        })?;
    let req: Request = serde_json::from_slice(&input).map_err(|e| Error::Helper {
        helper: "parse request".into(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
    })?;
    match req.op {
        Op::Unpack => {}
        Op::Remove => {
            std::fs::remove_dir_all(&req.dest).map_err(|source| Error::Remove {
                path: req.dest.clone(),
                source,
            })?;
            return Ok(Reply::Ok(Report::default()));
        }
        Op::Digest => return Ok(Reply::Digest(crate::digest::tree(&req.dest)?)),
        Op::PrepareUpper { work } => {
            return Ok(Reply::Paths(crate::base::prepare_upper(
                &req.archive,
                &req.dest,
                &work,
                &req.templates,
                &req.template_vars,
                None,
            )?))
        }
        Op::Copy { tree } => {
            crate::base::copy_tree(&req.archive, &req.dest)?;
            if let Some((old, new)) = req.template_vars.first() {
                crate::templates::rename_host(&tree, old, new)?;
            }
            return Ok(Reply::Ok(Report::default()));
        }
        Op::RenameHost => {
            if let Some((old, new)) = req.template_vars.first() {
                crate::templates::rename_host(&req.dest, old, new)?;
            }
            return Ok(Reply::Ok(Report::default()));
        }
    }
    let opts = UnpackOptions {
        maps: None,
        excludes: req.excludes,
        skip_devices: true,
        threads: req.threads,
        max_file_size: req.max_file_size,
        ..UnpackOptions::default()
    };
    let mode = Mode {
        maps: Some(req.maps),
        kernel_shifts: true,
    };
    let rep = StderrProgress {
        pending: AtomicU64::new(0),
    };
    let report = unpack::run(&req.archive, &req.dest, &opts, &mode, &rep)?;
    crate::templates::apply(&req.dest, &req.templates, &req.template_vars)?;
    Ok(Reply::Ok(report))
}

/// Entry point of the user-namespace child. The CLI calls it when
/// `argv[1] == "__rootfs-userns-child"` ([`CHILD_ARG`]). It reads the
/// request on stdin, unpacks with the identity map (the kernel shifts ids,
/// ACLs and capabilities), writes the reply on stdout and exits.
pub fn userns_child_main() -> ! {
    let reply = match child() {
        Ok(r) => r,
        Err(e) => Reply::Err {
            kind: e.kind(),
            message: chain(&e),
        },
    };
    let code = i32::from(matches!(reply, Reply::Err { .. }));
    let mut out = std::io::stdout().lock();
    let _ = serde_json::to_writer(&mut out, &reply);
    let _ = out.flush();
    std::process::exit(code)
}
