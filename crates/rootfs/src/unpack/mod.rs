//! The entry handler: every write is relative to the destination's fd.
//!
//! [`Unpacker`] drives the stream: `member` reads each tar member (its pax
//! records through `pax`) into one [`Member`], `entry` decides whether it is
//! written and dispatches on its [`Kind`] to `write` (`sparse` for sparse
//! data), and `dirs` resolves parents and applies directory metadata last.
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
mod member;
mod name;
mod pax;
mod sparse;
mod write;

use self::dirs::DirMeta;
use self::member::{Kind, Member};
use self::name::{bad, cstr, lossy};
use self::pax::own_pax;
use self::write::{At, Attrs};
use crate::decode::{self, Pipe};
use crate::error::{Error, Result};
use crate::exclude::Excludes;
use crate::options::UnpackOptions;
use crate::report::{Report, Reporter, Skip};
use crate::sys;
use crate::xattr::{self, Action, Bad};
use davit_types::IdMap;
use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::rc::Rc;
use std::time::Instant;

const WRITE_BUF: usize = 256 << 10;

/// How ids and xattrs are treated.
pub(crate) struct Mode {
    /// `None`: ids verbatim (privileged, unshifted).
    pub(crate) maps: Option<IdMap>,
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

/// Unpacks `archive` into the existing, empty directory `dest` as root,
/// shifting ids through `opts.maps`.
///
/// Creates `dev/pts` at the end. Directory modes and times are applied after
/// their children.
///
/// # Errors
/// [`ErrorKind::Unsafe`] for an entry that would escape or subvert `dest`,
/// or that claims more than `opts.max_file_size`; [`ErrorKind::Corrupt`]
/// for a truncated or malformed archive (with entry and offset);
/// [`ErrorKind::Map`] for an unsafe map; [`ErrorKind::Unmapped`] for an id
/// outside it; [`ErrorKind::Io`] when a write fails. On error `dest` holds a partial
/// tree that the caller should remove.
///
/// [`ErrorKind::Unsafe`]: crate::ErrorKind::Unsafe
/// [`ErrorKind::Corrupt`]: crate::ErrorKind::Corrupt
/// [`ErrorKind::Map`]: crate::ErrorKind::Map
/// [`ErrorKind::Unmapped`]: crate::ErrorKind::Unmapped
/// [`ErrorKind::Io`]: crate::ErrorKind::Io
pub fn unpack(
    archive: &Path,
    dest: &Path,
    opts: &UnpackOptions,
    rep: &dyn Reporter,
) -> Result<Report> {
    if let Some(m) = &opts.maps {
        m.validate()?;
    }
    let mode = Mode {
        maps: opts.maps.clone(),
        kernel_shifts: false,
    };
    let report = run(archive, dest, opts, &mode, rep)?;
    crate::templates::apply(dest, &opts.templates, &opts.template_vars)?;
    Ok(report)
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
        max_file: opts
            .max_file_size
            .unwrap_or(crate::options::DEFAULT_MAX_FILE_SIZE),
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

    /// The archive offset of a position the parser reports.
    fn at(&self, pos: u64) -> u64 {
        self.marks.borrow().archive_offset(pos)
    }

    /// One member: read it, decide whether it is written, then write it
    /// as its kind asks.
    fn entry(&mut self, e: &mut tar::Entry<'_, Pipe>, pax: Option<&[u8]>) -> Result<()> {
        let m = Member::read(e, pax, self.at(e.raw_header_position()))?;
        if !self.admit(&m)? {
            return Ok(());
        }
        let a = self.attrs(&m)?;
        let comps = m.comps();
        let Some((last, parents)) = comps.split_last() else {
            self.write_root(&m, a)?;
            self.report.entries += 1;
            return Ok(());
        };
        let cname = cstr(last).unwrap();
        let parent = self.dir(parents, true, &m.name)?;
        let at = At {
            dir: parent.as_fd(),
            name: &cname,
            path: &m.path,
        };
        match &m.kind {
            Kind::Dir => self.write_dir(at, a)?,
            Kind::File { sparse } => self.write_file(e, &m, *sparse, at, &a)?,
            Kind::HardLink { target } => self.write_hardlink(&m, target.as_deref(), at)?,
            Kind::Symlink { target } => self.write_symlink(&m, target.as_deref(), at, &a)?,
            Kind::Fifo => self.write_node(at, libc::S_IFIFO, (0, 0), &a)?,
            Kind::Char { major, minor } => {
                self.write_node(at, libc::S_IFCHR, (*major, *minor), &a)?
            }
            Kind::Block { major, minor } => {
                self.write_node(at, libc::S_IFBLK, (*major, *minor), &a)?
            }
            Kind::Other(_) => unreachable!("refused or skipped by admit"),
        }
        self.report.entries += 1;
        Ok(())
    }

    /// Whether `m` is written. Excluded members, devices we may not create
    /// and types we do not write are recorded as skips (a multi-volume
    /// continuation is refused), as are the ACLs of `m` that cannot be applied.
    fn admit(&mut self, m: &Member) -> Result<bool> {
        let skip = |reason: String| Skip {
            path: lossy(&m.path),
            reason,
        };
        if self.excludes.matches(&m.path) {
            self.report.skipped.push(skip("excluded".into()));
            return Ok(false);
        }
        if m.is_device() && self.skip_devices {
            self.report.skipped.push(skip(if self.mode.kernel_shifts {
                "device node (cannot be created in a user namespace)".into()
            } else {
                "device node (skip_devices)".into()
            }));
            return Ok(false);
        }
        if let Kind::Other(ty) = m.kind {
            // What `tarnorm` leaves: GNU's volume labels (`V`), multi-volume
            // continuations (`M`) and old long-name lists (`N`), which GNU
            // tar does not extract as files either.
            if ty == b'M' {
                return Err(bad(
                    &m.name,
                    m.offset,
                    "a multi-volume continuation: the member began in another volume",
                ));
            }
            self.report.skipped.push(skip(match ty {
                b'V' => "a GNU volume label, not a file (GNU tar does not extract it)".into(),
                t => format!("unsupported entry type {:?}", t as char),
            }));
            return Ok(false);
        }
        for x in &m.acl_skips {
            if m.xattrs.iter().any(|(k, _)| k == x) {
                continue; // the raw xattr came too, and is applied
            }
            self.report.skipped.push(skip(format!(
                "{x} uses user or group names (tar --acls without --numeric-owner); not applied"
            )));
        }
        Ok(true)
    }

    /// What `m` gets on the host: ids through the map, xattrs rewritten for
    /// the mode (capabilities, ACL ids) and put in the order they must be set.
    fn attrs(&self, m: &Member) -> Result<Attrs> {
        let uid = self.map_uid(&m.name, m.uid)?;
        let gid = self.map_gid(&m.name, m.gid)?;
        let mut xa: Vec<(CString, Vec<u8>)> = Vec::new();
        for (k, v) in &m.xattrs {
            let maps = self.mode.maps.as_ref();
            match xattr::rewrite(k, v, maps, self.mode.kernel_shifts) {
                Ok(Action::Drop) => {}
                Ok(Action::Set(v)) => {
                    let k = cstr(k.as_bytes())
                        .ok_or_else(|| bad(&m.name, m.offset, "xattr name contains a nul byte"))?;
                    xa.push((k, v));
                }
                Err(Bad::Unmapped(which, id)) => {
                    return Err(Error::Unmapped {
                        entry: m.name.clone(),
                        which,
                        id,
                    })
                }
                Err(Bad::Malformed(why)) => return Err(bad(&m.name, m.offset, why)),
            }
        }
        // Order matters: capabilities after chown+chmod, then ACLs, then the rest.
        let rank = |k: &CString| match k.as_bytes() {
            b"security.capability" => 0,
            b"system.posix_acl_access" | b"system.posix_acl_default" => 1,
            _ => 2,
        };
        xa.sort_by_key(|(k, _)| rank(k));
        Ok(Attrs {
            uid,
            gid,
            mode: m.mode,
            xattrs: xa,
            atime: m.atime,
            mtime: Some(m.mtime),
        })
    }
}
