//! The entry handler: every write is relative to the destination's fd.
//!
//! Defences (see docs/security.md section (b), "Tar:" rows):
//! - names are cleaned like GNU tar (leading `/` stripped) and `..` is
//!   refused;
//! - parents are resolved with `openat2(RESOLVE_IN_ROOT)`, so a symlink from
//!   the archive can never lead outside (CVE-2021-38511);
//! - the final component is never followed: existing non-directories are
//!   unlinked and entries are created with `O_CREAT|O_EXCL|O_NOFOLLOW`,
//!   `mkdirat`, `symlinkat`, `mknodat`, `linkat` without `AT_SYMLINK_FOLLOW`
//!   (RUSTSEC-2018-0002, CVE-2026-33056);
//! - hardlink targets are resolved inside the root and must exist and not be
//!   directories;
//! - directory metadata is applied last, deepest first, by re-opening each
//!   directory with `RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS`.
#![forbid(unsafe_code)]

mod dirs;
mod name;
mod pax;
mod sparse;
mod write;

use self::dirs::DirMeta;
use self::name::{clean, cstr, join, lossy};
use self::pax::{own_pax, parse_pax, pax_num, pax_time, PaxSparse};
use crate::decode::{self, Pipe};
use crate::error::{Error, Result};
use crate::exclude::Excludes;
use crate::idmap::IdMaps;
use crate::sys::{self, is_dir, is_eexist, is_enoent, Time};
use crate::xattr::{self, Action, Bad};
use crate::{Report, Reporter, Skip, UnpackOptions};
use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::rc::Rc;
use std::time::Instant;
use tar::EntryType;

const WRITE_BUF: usize = 256 << 10;

/// How ids and xattrs are treated.
pub(crate) struct Mode {
    /// `None`: ids verbatim (privileged, unshifted).
    pub(crate) maps: Option<IdMaps>,
    /// Inside a mapped user namespace: ids are checked against `maps` (an
    /// identity map) but capabilities and ACLs are written as stored, and the
    /// kernel shifts them. Device nodes are skipped.
    pub(crate) kernel_shifts: bool,
}

struct Unpacker<'a> {
    archive: &'a Path,
    root: Rc<OwnedFd>,
    mode: &'a Mode,
    skip_devices: bool,
    excludes: Excludes,
    cache: Option<(Vec<u8>, Rc<OwnedFd>)>,
    dirs: Vec<DirMeta>,
    report: Report,
    buf: Vec<u8>,
    /// The most bytes one member may claim (`UnpackOptions::max_file_size`).
    max_file: u64,
    /// Normalized-stream positions to archive offsets (`tarnorm::Marks`).
    marks: Rc<std::cell::RefCell<crate::tarnorm::Marks>>,
}

/// Unpacks `archive` into `dest` with the given id treatment.
pub(crate) fn run(
    archive: &Path,
    dest: &Path,
    opts: &UnpackOptions,
    mode: &Mode,
    rep: &dyn Reporter,
) -> Result<Report> {
    let start = Instant::now();
    let odest = |source| Error::OpenDest {
        path: dest.to_owned(),
        source,
    };
    let dcs = CString::new(dest.as_os_str().as_encoded_bytes()).map_err(|_| {
        odest(io::Error::new(
            io::ErrorKind::InvalidInput,
            "path contains a nul byte",
        ))
    })?;
    // Never through a symlink: one planted at the destination would have
    // us unpack into, and chown, whatever it points at.
    if std::fs::symlink_metadata(dest).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(odest(io::Error::new(
            io::ErrorKind::InvalidInput,
            "it is a symbolic link; give the directory itself",
        )));
    }
    let root =
        sys::open(&dcs, libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW).map_err(odest)?;
    {
        // The destination must be empty: we never merge into an existing tree.
        let d = sys::openat(root.as_fd(), c".", libc::O_RDONLY | libc::O_DIRECTORY, 0)
            .map_err(odest)?;
        let mut rd = std::fs::read_dir(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&d)
        ))
        .map_err(odest)?;
        if rd.next().is_some() {
            return Err(Error::DestNotEmpty {
                path: dest.to_owned(),
            });
        }
    }
    let oarch = |source| Error::OpenArchive {
        path: archive.to_owned(),
        source,
    };
    let mut f = File::open(archive).map_err(oarch)?;
    let fmt = decode::sniff(&mut f).map_err(oarch)?;
    let len = f.metadata().map_err(oarch)?.len();
    let threads = if opts.threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        opts.threads
    } as u32;
    let id = rep.start(&format!("unpack {}", archive.display()), Some(len));

    let mut u = Unpacker {
        archive,
        root: Rc::new(root),
        mode,
        skip_devices: opts.skip_devices || mode.kernel_shifts,
        excludes: Excludes::new(&opts.excludes),
        cache: None,
        dirs: Vec::new(),
        report: Report::default(),
        buf: vec![0; WRITE_BUF],
        max_file: opts.max_file_size.unwrap_or(crate::DEFAULT_MAX_FILE_SIZE),
        marks: Rc::default(),
    };
    let res = std::thread::scope(|s| {
        let (tx, free, pipe) = decode::channel();
        s.spawn(move || decode::pump(f, fmt, threads, rep, id, tx, free));
        u.entries(pipe)
    });
    rep.finish(id);
    res?;
    u.finish()?;
    u.report.elapsed = start.elapsed();
    Ok(u.report)
}

impl Unpacker<'_> {
    fn entries(&mut self, pipe: Pipe) -> Result<()> {
        let count = pipe.count.clone();
        let rec = pipe.rec.clone();
        self.marks = pipe.marks.clone();
        // Where the parser is, as an offset in the decoded archive.
        let offset = {
            let (count, marks) = (count.clone(), pipe.marks.clone());
            move || marks.borrow().archive_offset(count.get())
        };
        let archive = self.archive;
        let mut ar = tar::Archive::new(pipe);
        let mut last = String::from("(start of archive)");
        let read_err = |last: &str, source: io::Error| {
            let msg = source.to_string();
            if source.kind() == io::ErrorKind::UnexpectedEof || msg.contains("unexpected EOF") {
                Error::Truncated {
                    archive: archive.to_owned(),
                    entry: format!("after {last}"),
                    offset: offset(),
                }
            } else {
                Error::Read {
                    archive: archive.to_owned(),
                    entry: format!("after {last}"),
                    offset: offset(),
                    source,
                }
            }
        };
        let mut entries = ar.entries().map_err(|e| read_err(&last, e))?;
        loop {
            // Record what the parser reads while finding the next member, so
            // the raw pax records can be parsed here (see `own_pax`).
            let start = count.get();
            *rec.borrow_mut() = Some(Vec::new());
            let item = entries.next();
            let recorded = rec.borrow_mut().take().unwrap_or_default();
            let Some(item) = item else { break };
            let mut e = item.map_err(|e| read_err(&last, e))?;
            last = lossy(&e.path_bytes());
            let pax = own_pax(&recorded, start, e.raw_header_position()).ok_or_else(|| {
                Error::Unsafe {
                    entry: last.clone(),
                    offset: self.at(e.raw_header_position()),
                    why: "extension headers do not lead to this member (parser disagreement)",
                }
            })?;
            self.entry(&mut e, pax.as_deref())?;
            // Consume what is left of the member so the next search starts
            // at a block boundary right after it.
            io::copy(&mut e, &mut io::sink()).map_err(|e| read_err(&last, e))?;
        }
        // Read to the end so a truncated or corrupt compressed stream (or
        // its integrity check) is noticed even after the end-of-archive
        // blocks. Trailing data is normally a few KiB of zero padding.
        let mut rest = ar.into_inner();
        *rest.rec.borrow_mut() = None;
        io::copy(&mut rest, &mut io::sink())
            .map_err(|e| read_err(&format!("{last} (end of archive)"), e))?;
        Ok(())
    }

    fn map_uid(&self, entry: &str, id: u64) -> Result<u32> {
        let unmapped = || Error::Unmapped {
            entry: entry.to_owned(),
            which: "uid",
            id,
        };
        let id32 = u32::try_from(id).map_err(|_| unmapped())?;
        match &self.mode.maps {
            None => Ok(id32),
            Some(m) => m.host_uid(id32).ok_or_else(unmapped),
        }
    }

    fn map_gid(&self, entry: &str, id: u64) -> Result<u32> {
        let unmapped = || Error::Unmapped {
            entry: entry.to_owned(),
            which: "gid",
            id,
        };
        let id32 = u32::try_from(id).map_err(|_| unmapped())?;
        match &self.mode.maps {
            None => Ok(id32),
            Some(m) => m.host_gid(id32).ok_or_else(unmapped),
        }
    }

    /// Host ids of container root (owner of implicit directories).
    fn root_ids(&self) -> (u32, u32) {
        match &self.mode.maps {
            None => (0, 0),
            Some(m) => (m.host_uid(0).unwrap_or(0), m.host_gid(0).unwrap_or(0)),
        }
    }

    fn werr(&self, step: &'static str, path: &[u8], source: io::Error) -> Error {
        Error::Write {
            step,
            path: lossy(path),
            source,
        }
    }

    fn bad(&self, entry: &str, offset: u64, why: &'static str) -> Error {
        Error::BadEntry {
            entry: entry.to_owned(),
            offset,
            why,
        }
    }

    /// The archive offset of a position the parser reports.
    fn at(&self, pos: u64) -> u64 {
        self.marks.borrow().archive_offset(pos)
    }

    fn entry(&mut self, e: &mut tar::Entry<'_, Pipe>, pax: Option<&[u8]>) -> Result<()> {
        let hpos = self.at(e.raw_header_position());
        let mut raw = e.path_bytes().into_owned();
        let mut name = lossy(&raw);
        let ty = e.header().entry_type();
        if ty.is_pax_global_extensions() {
            // `tarnorm` applies global headers and drops them; one left
            // here had no ustar magic.
            return Err(self.bad(&name, hpos, "extension header without ustar magic"));
        }
        if ty.is_pax_local_extensions() || ty.is_gnu_longname() || ty.is_gnu_longlink() {
            // An extension header the parser did not consume (no ustar/gnu
            // magic). Another tar could apply it; refuse the ambiguity.
            return Err(self.bad(&name, hpos, "extension header without ustar magic"));
        }

        // Pax: xattrs and nanosecond times.
        let mut xattrs: Vec<(String, Vec<u8>)> = Vec::new();
        let mut mtime: Option<(i64, u32)> = None;
        let mut atime: Option<(i64, u32)> = None;
        let mut sparse = PaxSparse::default();
        let mut text_acls: Vec<(String, Vec<u8>)> = Vec::new();
        let mut acl_skips: Vec<&str> = Vec::new();
        let records = match pax {
            Some(d) => parse_pax(d).ok_or_else(|| self.bad(&name, hpos, "malformed pax header"))?,
            None => Vec::new(),
        };
        let mut pax_uid = None;
        let mut pax_gid = None;
        let mut link_override: Option<Vec<u8>> = None;
        for (key, v) in records {
            let num = || pax_num(v).ok_or_else(|| self.bad(&name, hpos, "bad numeric pax record"));
            if let Some(x) = key.strip_prefix(b"SCHILY.xattr.") {
                let x = String::from_utf8(x.to_vec())
                    .map_err(|_| self.bad(&name, hpos, "xattr name is not utf-8"))?;
                xattrs.push((x, v.to_vec()));
            } else if let Some(kind) = key.strip_prefix(b"SCHILY.acl.") {
                // `tar --acls` text form; the raw system.posix_acl_* xattr,
                // if also present, wins (see below).
                let xname = match kind {
                    b"access" => "system.posix_acl_access",
                    b"default" => "system.posix_acl_default",
                    _ => continue,
                };
                match xattr::acl_from_text(v) {
                    Ok(v) => text_acls.push((xname.to_owned(), v)),
                    Err(None) => acl_skips.push(xname),
                    Err(Some(why)) => return Err(self.bad(&name, hpos, why)),
                }
            } else if key == b"mtime" {
                mtime = Some(pax_time(v).ok_or_else(|| self.bad(&name, hpos, "bad pax mtime"))?);
            } else if key == b"atime" {
                atime = pax_time(v);
            } else if key == b"path" {
                raw = v.to_vec();
                name = lossy(&raw);
            } else if key == b"linkpath" {
                link_override = Some(v.to_vec());
            } else if key == b"uid" {
                pax_uid = Some(num()?);
            } else if key == b"gid" {
                pax_gid = Some(num()?);
            } else if key == b"size" {
                // The crate must have used the same size to find the data and
                // the next header, or the two parsers see different archives
                // (CVE-2025-62518 class).
                let want = num()?;
                if want != e.size() {
                    return Err(Error::Unsafe {
                        entry: name,
                        offset: hpos,
                        why: "pax size disagrees with the parser's view of the member",
                    });
                }
            } else if key.starts_with(b"GNU.sparse.") {
                let v = v.to_vec();
                let n = pax_num(&v);
                match key {
                    b"GNU.sparse.major" => sparse.major = n,
                    b"GNU.sparse.minor" => sparse.minor = n,
                    b"GNU.sparse.realsize" | b"GNU.sparse.size" => sparse.realsize = n,
                    b"GNU.sparse.name" => sparse.name = Some(v),
                    _ => sparse.other = true,
                }
            }
        }
        let pax_sparse = if sparse.major.is_some() || sparse.other || sparse.realsize.is_some() {
            // GNU tar's pax sparse format 1.0 (what `tar --xattrs -S` and
            // bsdtar write): the map is at the start of the data. `tarnorm`
            // rewrites old-GNU sparse and pax 0.0 and 0.1 into it.
            match (
                sparse.major,
                sparse.minor,
                sparse.realsize,
                sparse.name.take(),
            ) {
                (Some(1), Some(0), Some(real), n) if ty.is_file() => {
                    if let Some(n) = n {
                        raw = n;
                        name = lossy(&raw);
                    }
                    Some(real)
                }
                _ => {
                    return Err(self.bad(
                        &name,
                        hpos,
                        "unsupported pax sparse format (GNU tar writes 0.0, 0.1 and 1.0)",
                    ))
                }
            }
        } else {
            None
        };
        for (k, v) in text_acls {
            if !xattrs.iter().any(|(x, _)| *x == k) {
                xattrs.push((k, v));
            }
        }
        let h = e.header();
        let mtime = match mtime {
            Some(t) => t,
            None => (
                h.mtime()
                    .map_err(|_| self.bad(&name, hpos, "bad mtime field"))? as i64,
                0,
            ),
        };
        let mode = h
            .mode()
            .map_err(|_| self.bad(&name, hpos, "bad mode field"))?
            & 0o7777;
        let uid = match pax_uid {
            Some(u) => u,
            None => h
                .uid()
                .map_err(|_| self.bad(&name, hpos, "bad uid field"))?,
        };
        let gid = match pax_gid {
            Some(g) => g,
            None => h
                .gid()
                .map_err(|_| self.bad(&name, hpos, "bad gid field"))?,
        };
        let devno = if matches!(ty, EntryType::Char | EntryType::Block) {
            let maj = h
                .device_major()
                .ok()
                .flatten()
                .ok_or_else(|| self.bad(&name, hpos, "bad device major"))?;
            let min = h
                .device_minor()
                .ok()
                .flatten()
                .ok_or_else(|| self.bad(&name, hpos, "bad device minor"))?;
            (maj, min)
        } else {
            (0, 0)
        };

        let comps = clean(&raw).map_err(|()| Error::Unsafe {
            entry: name.clone(),
            offset: hpos,
            why: "name contains `..`",
        })?;
        if comps.iter().any(|c| c.contains(&0)) {
            return Err(self.bad(&name, hpos, "name contains a nul byte"));
        }
        let path = join(&comps);
        if self.excludes.matches(&path) {
            self.report.skipped.push(Skip {
                path: lossy(&path),
                reason: "excluded".into(),
            });
            return Ok(());
        }
        if matches!(ty, EntryType::Char | EntryType::Block) && self.skip_devices {
            self.report.skipped.push(Skip {
                path: lossy(&path),
                reason: if self.mode.kernel_shifts {
                    "device node (cannot be created in a user namespace)".into()
                } else {
                    "device node (skip_devices)".into()
                },
            });
            return Ok(());
        }
        let known = matches!(
            ty,
            EntryType::Regular
                | EntryType::Continuous
                | EntryType::Directory
                | EntryType::Symlink
                | EntryType::Link
                | EntryType::Fifo
                | EntryType::Char
                | EntryType::Block
        );
        if !known {
            // What `tarnorm` leaves: GNU's volume labels (`V`), multi-volume
            // continuations (`M`) and old long-name lists (`N`), which GNU
            // tar does not extract as files either.
            if ty.as_byte() == b'M' {
                return Err(self.bad(
                    &name,
                    hpos,
                    "a multi-volume continuation: the member began in another volume",
                ));
            }
            self.report.skipped.push(Skip {
                path: lossy(&path),
                reason: match ty.as_byte() {
                    b'V' => "a GNU volume label, not a file (GNU tar does not extract it)".into(),
                    t => format!("unsupported entry type {:?}", t as char),
                },
            });
            return Ok(());
        }

        for x in acl_skips {
            if xattrs.iter().any(|(k, _)| k == x) {
                continue; // the raw xattr came too, and is applied
            }
            self.report.skipped.push(Skip {
                path: lossy(&path),
                reason: format!("{x} uses user or group names (tar --acls without --numeric-owner); not applied"),
            });
        }
        let huid = self.map_uid(&name, uid)?;
        let hgid = self.map_gid(&name, gid)?;
        let mut xa: Vec<(CString, Vec<u8>)> = Vec::new();
        for (k, v) in &xattrs {
            let maps = self.mode.maps.as_ref();
            match xattr::rewrite(k, v, maps, self.mode.kernel_shifts) {
                Ok(Action::Drop) => {}
                Ok(Action::Set(v)) => {
                    let k = cstr(k.as_bytes())
                        .ok_or_else(|| self.bad(&name, hpos, "xattr name contains a nul byte"))?;
                    xa.push((k, v));
                }
                Err(Bad::Unmapped(which, id)) => {
                    return Err(Error::Unmapped {
                        entry: name.clone(),
                        which,
                        id,
                    })
                }
                Err(Bad::Malformed(why)) => return Err(self.bad(&name, hpos, why)),
            }
        }
        // Order matters: capabilities after chown+chmod, then ACLs, then the rest.
        let rank = |k: &CString| match k.as_bytes() {
            b"security.capability" => 0,
            b"system.posix_acl_access" | b"system.posix_acl_default" => 1,
            _ => 2,
        };
        xa.sort_by_key(|(k, _)| rank(k));
        let atime: Time = atime;
        let mtime: Time = Some(mtime);

        let Some((last, parents)) = comps.split_last() else {
            // The root entry (`.`, `./`, `/`): only a directory is allowed
            // (CVE-2021-29136, umoci).
            if ty != EntryType::Directory {
                return Err(Error::Unsafe {
                    entry: name,
                    offset: hpos,
                    why: "root entry is not a directory",
                });
            }
            self.dirs.push(DirMeta {
                id: None,
                path: Vec::new(),
                uid: huid,
                gid: hgid,
                mode,
                atime,
                mtime,
                xattrs: xa,
            });
            self.report.entries += 1;
            return Ok(());
        };
        let cname = cstr(last).unwrap();
        let parent = self.dir(parents, true, &name)?;
        let pfd = parent.as_fd();

        match ty {
            EntryType::Directory => {
                if !self.make_room(pfd, &cname, &path, true)? {
                    sys::mkdirat(pfd, &cname, 0o700).map_err(|e| self.werr("mkdirat", &path, e))?;
                }
                let st = sys::lstatat(pfd, &cname).map_err(|e| self.werr("fstatat", &path, e))?;
                self.dirs.push(DirMeta {
                    id: Some((st.st_dev, st.st_ino)),
                    path,
                    uid: huid,
                    gid: hgid,
                    mode,
                    atime,
                    mtime,
                    xattrs: xa,
                });
            }
            EntryType::Regular | EntryType::Continuous => {
                let claim = pax_sparse.unwrap_or(e.size());
                if claim > self.max_file {
                    return Err(Error::TooBig {
                        entry: name,
                        offset: hpos,
                        size: claim,
                        cap: self.max_file,
                    });
                }
                let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW;
                let fd = match sys::openat(pfd, &cname, flags, 0o600) {
                    Err(err) if is_eexist(&err) => {
                        self.make_room(pfd, &cname, &path, false)?;
                        sys::openat(pfd, &cname, flags, 0o600)
                    }
                    r => r,
                }
                .map_err(|e| self.werr("openat", &path, e))?;
                let mut f = File::from(fd);
                if let Some(real) = pax_sparse {
                    self.write_pax_sparse(e, &mut f, real, &name, &path)?;
                    self.report.bytes += real;
                    let fd = f.as_fd();
                    sys::fchown(fd, huid, hgid).map_err(|e| self.werr("fchown", &path, e))?;
                    sys::fchmod(fd, mode).map_err(|e| self.werr("fchmod", &path, e))?;
                    for (k, v) in &xa {
                        sys::fsetxattr(fd, k, v).map_err(|e| self.werr("fsetxattr", &path, e))?;
                    }
                    sys::futimens(fd, atime, mtime).map_err(|e| self.werr("futimens", &path, e))?;
                    self.report.entries += 1;
                    return Ok(());
                }
                let size = e.size();
                let data_pos = self.at(e.raw_file_position());
                let mut written: u64 = 0;
                loop {
                    let n = match e.read(&mut self.buf) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                        Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => {
                            return Err(Error::Truncated {
                                archive: self.archive.to_owned(),
                                entry: name,
                                offset: data_pos + written,
                            })
                        }
                        Err(source) => {
                            return Err(Error::Read {
                                archive: self.archive.to_owned(),
                                entry: name,
                                offset: data_pos + written,
                                source,
                            })
                        }
                    };
                    f.write_all(&self.buf[..n])
                        .map_err(|e| self.werr("write", &path, e))?;
                    written += n as u64;
                }
                if written != size {
                    // A short read without an error: the archive ended.
                    return Err(Error::Truncated {
                        archive: self.archive.to_owned(),
                        entry: name,
                        offset: data_pos + written,
                    });
                }
                self.report.bytes += size;
                let fd = f.as_fd();
                sys::fchown(fd, huid, hgid).map_err(|e| self.werr("fchown", &path, e))?;
                sys::fchmod(fd, mode).map_err(|e| self.werr("fchmod", &path, e))?;
                for (k, v) in &xa {
                    sys::fsetxattr(fd, k, v).map_err(|e| self.werr("fsetxattr", &path, e))?;
                }
                sys::futimens(fd, atime, mtime).map_err(|e| self.werr("futimens", &path, e))?;
            }
            EntryType::Link => {
                let target = link_override
                    .clone()
                    .or_else(|| e.link_name_bytes().map(|c| c.into_owned()))
                    .ok_or_else(|| self.bad(&name, hpos, "hardlink without a target"))?;
                let tname = lossy(&target);
                let tcomps = clean(&target).map_err(|()| Error::Unsafe {
                    entry: name.clone(),
                    offset: hpos,
                    why: "hardlink target contains `..`",
                })?;
                let Some((tlast, tparents)) = tcomps.split_last() else {
                    return Err(Error::Unsafe {
                        entry: name,
                        offset: hpos,
                        why: "hardlink to the root directory",
                    });
                };
                let missing = || Error::LinkTarget {
                    entry: name.clone(),
                    offset: hpos,
                    target: tname.clone(),
                };
                let tlast = cstr(tlast)
                    .ok_or_else(|| self.bad(&name, hpos, "hardlink target contains a nul byte"))?;
                let tdir = match self.dir(tparents, false, &name) {
                    Ok(d) => d,
                    Err(Error::Write { source, .. })
                        if is_enoent(&source) || source.raw_os_error() == Some(libc::ENOTDIR) =>
                    {
                        return Err(missing())
                    }
                    Err(e) => return Err(e),
                };
                let tst = match sys::lstatat(tdir.as_fd(), &tlast) {
                    Ok(st) => st,
                    Err(err) if is_enoent(&err) => return Err(missing()),
                    Err(err) => return Err(self.werr("fstatat", &target, err)),
                };
                if is_dir(&tst) {
                    return Err(Error::Unsafe {
                        entry: name,
                        offset: hpos,
                        why: "hardlink to a directory",
                    });
                }
                if let Ok(st) = sys::lstatat(pfd, &cname) {
                    if st.st_dev == tst.st_dev && st.st_ino == tst.st_ino {
                        self.report.entries += 1;
                        return Ok(()); // already this inode
                    }
                }
                match sys::linkat(tdir.as_fd(), &tlast, pfd, &cname) {
                    Err(err) if is_eexist(&err) => {
                        self.make_room(pfd, &cname, &path, false)?;
                        sys::linkat(tdir.as_fd(), &tlast, pfd, &cname)
                    }
                    r => r,
                }
                .map_err(|e| self.werr("linkat", &path, e))?;
            }
            EntryType::Symlink => {
                let target = link_override
                    .clone()
                    .or_else(|| e.link_name_bytes().map(|c| c.into_owned()))
                    .ok_or_else(|| self.bad(&name, hpos, "symlink without a target"))?;
                if target.is_empty() {
                    return Err(self.bad(&name, hpos, "symlink with an empty target"));
                }
                let ctarget = cstr(&target)
                    .ok_or_else(|| self.bad(&name, hpos, "symlink target contains a nul byte"))?;
                match sys::symlinkat(&ctarget, pfd, &cname) {
                    Err(err) if is_eexist(&err) => {
                        self.make_room(pfd, &cname, &path, false)?;
                        sys::symlinkat(&ctarget, pfd, &cname)
                    }
                    r => r,
                }
                .map_err(|e| self.werr("symlinkat", &path, e))?;
                self.node_meta(pfd, &cname, &path, huid, hgid, None, &xa, atime, mtime)?;
            }
            EntryType::Fifo | EntryType::Char | EntryType::Block => {
                let (maj, min) = devno;
                let kind = match ty {
                    EntryType::Fifo => libc::S_IFIFO,
                    EntryType::Char => libc::S_IFCHR,
                    _ => libc::S_IFBLK,
                };
                match sys::mknodat(pfd, &cname, kind | 0o600, maj, min) {
                    Err(err) if is_eexist(&err) => {
                        self.make_room(pfd, &cname, &path, false)?;
                        sys::mknodat(pfd, &cname, kind | 0o600, maj, min)
                    }
                    r => r,
                }
                .map_err(|e| self.werr("mknodat", &path, e))?;
                self.node_meta(
                    pfd,
                    &cname,
                    &path,
                    huid,
                    hgid,
                    Some(mode),
                    &xa,
                    atime,
                    mtime,
                )?;
            }
            _ => unreachable!("filtered above"),
        }
        self.report.entries += 1;
        Ok(())
    }
}
