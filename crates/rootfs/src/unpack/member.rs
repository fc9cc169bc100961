//! One tar member as davit sees it: its cleaned path, one [`Kind`] per entry
//! type with what only that type carries, and the owner, mode, times and
//! xattrs after the member's pax records are applied over its header.

use super::name::{bad, clean, join, lossy};
use super::pax::Pax;
use crate::error::{Error, Result};
use std::io::Read;
use tar::{EntryType, Header};

/// What a member is. Every tar entry type maps to one variant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Kind {
    /// A directory.
    Dir,
    /// A regular or contiguous file. `sparse` is the apparent size of a GNU
    /// pax sparse 1.0 member, whose data starts with its region map.
    File { sparse: Option<u64> },
    /// A hard link to an earlier member. `None`: the member names no target
    /// (refused when it is written, after the skips, as before).
    HardLink { target: Option<Vec<u8>> },
    /// A symbolic link, its target as stored (never followed).
    Symlink { target: Option<Vec<u8>> },
    /// A named pipe.
    Fifo,
    /// A character device.
    Char { major: u32, minor: u32 },
    /// A block device.
    Block { major: u32, minor: u32 },
    /// A type davit does not write (GNU volume labels `V`, multi-volume
    /// continuations `M`, old long-name lists `N`): its type byte.
    Other(u8),
}

/// One member: the header, with its pax records applied.
#[derive(Debug)]
pub(super) struct Member {
    /// The name for messages: the pax `path` (or sparse name), GNU long name
    /// or header name, printable.
    pub(super) name: String,
    /// Archive offset of the member's header.
    pub(super) offset: u64,
    /// The cleaned path (no leading `/`, no `.` components), components
    /// joined by `/`; empty for the root entry.
    pub(super) path: Vec<u8>,
    pub(super) kind: Kind,
    /// Permission bits, setuid/setgid/sticky included (`& 0o7777`).
    pub(super) mode: u32,
    /// Container ids, as stored.
    pub(super) uid: u64,
    pub(super) gid: u64,
    pub(super) mtime: (i64, u32),
    pub(super) atime: Option<(i64, u32)>,
    /// `SCHILY.xattr.*`, then the text ACLs not also given raw.
    pub(super) xattrs: Vec<(String, Vec<u8>)>,
    /// ACL xattrs whose text form names users or groups: not applied.
    pub(super) acl_skips: Vec<&'static str>,
    /// The size of the member's data in the archive (the parser's).
    pub(super) size: u64,
}

impl Member {
    /// Reads the member `e` whose header is at archive offset `hpos`; `pax`
    /// is the data of its own pax `x` header (see `pax::own_pax`).
    ///
    /// # Errors
    /// [`Error::BadEntry`] for a malformed field or a stray extension
    /// header, [`Error::Unsafe`] for a name with `..` or a pax size that
    /// disagrees with the parser's.
    pub(super) fn read<R: Read>(
        e: &tar::Entry<'_, R>,
        pax: Option<&[u8]>,
        hpos: u64,
    ) -> Result<Member> {
        let mut raw = e.path_bytes().into_owned();
        let mut name = lossy(&raw);
        let ty = e.header().entry_type();
        if ty.is_pax_global_extensions() {
            // `tarnorm` applies global headers and drops them; one left
            // here had no ustar magic.
            return Err(bad(&name, hpos, "extension header without ustar magic"));
        }
        if ty.is_pax_local_extensions() || ty.is_gnu_longname() || ty.is_gnu_longlink() {
            // An extension header the parser did not consume (no ustar/gnu
            // magic). Another tar could apply it; refuse the ambiguity.
            return Err(bad(&name, hpos, "extension header without ustar magic"));
        }
        let mut p = Pax::read(pax, e.size(), &mut raw, &mut name, hpos)?;
        let sparse = p
            .sparse
            .real_size(ty.is_file(), &mut raw, &mut name, hpos)?;
        let h = e.header();
        let mtime = match p.mtime {
            Some(t) => t,
            None => (
                h.mtime().map_err(|_| bad(&name, hpos, "bad mtime field"))? as i64,
                0,
            ),
        };
        let mode = h.mode().map_err(|_| bad(&name, hpos, "bad mode field"))? & 0o7777;
        let uid = match p.uid {
            Some(u) => u,
            None => h.uid().map_err(|_| bad(&name, hpos, "bad uid field"))?,
        };
        let gid = match p.gid {
            Some(g) => g,
            None => h.gid().map_err(|_| bad(&name, hpos, "bad gid field"))?,
        };
        let link = || {
            p.linkpath
                .clone()
                .or_else(|| e.link_name_bytes().map(|c| c.into_owned()))
        };
        let kind = match ty {
            EntryType::Directory => Kind::Dir,
            EntryType::Regular | EntryType::Continuous => Kind::File { sparse },
            EntryType::Link => Kind::HardLink { target: link() },
            EntryType::Symlink => Kind::Symlink { target: link() },
            EntryType::Fifo => Kind::Fifo,
            EntryType::Char => {
                let (major, minor) = devno(h, &name, hpos)?;
                Kind::Char { major, minor }
            }
            EntryType::Block => {
                let (major, minor) = devno(h, &name, hpos)?;
                Kind::Block { major, minor }
            }
            t => Kind::Other(t.as_byte()),
        };
        let comps = clean(&raw).map_err(|()| Error::Unsafe {
            entry: name.clone(),
            offset: hpos,
            why: "name contains `..`",
        })?;
        if comps.iter().any(|c| c.contains(&0)) {
            return Err(bad(&name, hpos, "name contains a nul byte"));
        }
        let path = join(&comps);
        Ok(Member {
            name,
            offset: hpos,
            path,
            kind,
            mode,
            uid,
            gid,
            mtime,
            atime: p.atime,
            xattrs: p.xattrs,
            acl_skips: p.acl_skips,
            size: e.size(),
        })
    }

    /// The components of the cleaned path (none for the root entry).
    pub(super) fn comps(&self) -> Vec<&[u8]> {
        if self.path.is_empty() {
            return Vec::new();
        }
        self.path.split(|&b| b == b'/').collect()
    }

    /// A device node (character or block).
    pub(super) fn is_device(&self) -> bool {
        matches!(self.kind, Kind::Char { .. } | Kind::Block { .. })
    }
}

/// The device numbers of a character or block device header.
fn devno(h: &Header, name: &str, hpos: u64) -> Result<(u32, u32)> {
    let maj = h
        .device_major()
        .ok()
        .flatten()
        .ok_or_else(|| bad(name, hpos, "bad device major"))?;
    let min = h
        .device_minor()
        .ok()
        .flatten()
        .ok_or_else(|| bad(name, hpos, "bad device minor"))?;
    Ok((maj, min))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unpack::pax::own_pax;
    use std::io;

    /// Reads every member of the in-memory archive `data` as `entries` does:
    /// the pax data comes from the raw bytes, not from the crate.
    fn read_all(data: &[u8]) -> Vec<Result<Member>> {
        let mut ar = tar::Archive::new(data);
        let mut start = 0;
        let mut out = Vec::new();
        for e in ar.entries().unwrap() {
            let e = e.unwrap();
            let hpos = e.raw_header_position();
            let pax = own_pax(data, start, hpos).expect("extension headers lead to the member");
            out.push(Member::read(&e, pax.as_deref(), hpos));
            start = e.raw_file_position() + e.size();
        }
        out
    }

    fn header(ty: EntryType, size: u64) -> Header {
        let mut h = Header::new_ustar();
        h.set_entry_type(ty);
        h.set_size(size);
        h.set_mode(0o104755);
        h.set_uid(1000);
        h.set_gid(100);
        h.set_mtime(1_700_000_000);
        h
    }

    /// A ustar header whose name field is `name` verbatim (the crate's
    /// `set_path` refuses `..` and absolute names, which archives can hold).
    fn raw_named(ty: EntryType, name: &[u8]) -> Header {
        let mut h = header(ty, 0);
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_cksum();
        h
    }

    #[test]
    fn every_entry_type_maps_to_one_kind() {
        let mut b = tar::Builder::new(Vec::new());
        b.append_data(&mut header(EntryType::Directory, 0), "d/", io::empty())
            .unwrap();
        b.append_data(&mut header(EntryType::Regular, 5), "d/f", &b"hello"[..])
            .unwrap();
        b.append_link(&mut header(EntryType::Link, 0), "d/h", "d/f")
            .unwrap();
        b.append_link(&mut header(EntryType::Symlink, 0), "d/s", "../f")
            .unwrap();
        let mut c = header(EntryType::Char, 0);
        c.set_device_major(1).unwrap();
        c.set_device_minor(3).unwrap();
        b.append_data(&mut c, "dev/null", io::empty()).unwrap();
        let mut blk = header(EntryType::Block, 0);
        blk.set_device_major(8).unwrap();
        blk.set_device_minor(1).unwrap();
        b.append_data(&mut blk, "dev/sda1", io::empty()).unwrap();
        b.append_data(&mut header(EntryType::Fifo, 0), "p", io::empty())
            .unwrap();
        b.append_data(&mut header(EntryType::new(b'V'), 0), "label", io::empty())
            .unwrap();
        let data = b.into_inner().unwrap();

        let m: Vec<Member> = read_all(&data).into_iter().map(|m| m.unwrap()).collect();
        let kinds: Vec<(&[u8], &Kind)> = m.iter().map(|m| (&m.path[..], &m.kind)).collect();
        assert_eq!(
            kinds,
            vec![
                (&b"d"[..], &Kind::Dir),
                (b"d/f", &Kind::File { sparse: None }),
                (
                    b"d/h",
                    &Kind::HardLink {
                        target: Some(b"d/f".to_vec())
                    }
                ),
                (
                    b"d/s",
                    &Kind::Symlink {
                        target: Some(b"../f".to_vec())
                    }
                ),
                (b"dev/null", &Kind::Char { major: 1, minor: 3 }),
                (b"dev/sda1", &Kind::Block { major: 8, minor: 1 }),
                (b"p", &Kind::Fifo),
                (b"label", &Kind::Other(b'V')),
            ]
        );
        let f = &m[1];
        assert_eq!(f.name, "d/f");
        assert_eq!((f.uid, f.gid), (1000, 100));
        assert_eq!(f.mode, 0o4755, "file type bits dropped, setuid kept");
        assert_eq!(f.mtime, (1_700_000_000, 0));
        assert_eq!(f.atime, None);
        assert_eq!(f.size, 5);
        assert!(f.xattrs.is_empty() && f.acl_skips.is_empty());
        assert_eq!(f.offset, 512, "after the directory's header");
        assert_eq!(f.comps(), vec![&b"d"[..], b"f"]);
        assert!(m[4].is_device() && m[5].is_device() && !m[6].is_device());
    }

    #[test]
    fn pax_records_override_the_header() {
        let long = format!("{}/file", "a".repeat(120));
        let mut b = tar::Builder::new(Vec::new());
        b.append_pax_extensions([
            ("path", long.as_bytes()),
            ("linkpath", b"elsewhere".as_slice()),
            ("mtime", b"12.5"),
            ("atime", b"-1.25"),
            ("uid", b"70000"),
            ("gid", b"70001"),
            ("SCHILY.xattr.user.k", b"v"),
        ])
        .unwrap();
        b.append_link(&mut header(EntryType::Symlink, 0), "short", "target")
            .unwrap();
        let data = b.into_inner().unwrap();

        let m = read_all(&data).pop().unwrap().unwrap();
        assert_eq!(m.path, long.as_bytes());
        assert_eq!(m.name, long);
        assert_eq!(m.comps().len(), 2);
        assert_eq!(
            m.kind,
            Kind::Symlink {
                target: Some(b"elsewhere".to_vec())
            }
        );
        assert_eq!(m.mtime, (12, 500_000_000));
        assert_eq!(m.atime, Some((-2, 750_000_000)));
        assert_eq!((m.uid, m.gid), (70000, 70001));
        assert_eq!(m.xattrs, vec![("user.k".to_owned(), b"v".to_vec())]);
        assert_eq!(m.offset, 1024, "after the pax header and its data");
    }

    #[test]
    fn gnu_long_names_are_read() {
        let long = format!("{}/f", "b".repeat(150));
        let mut b = tar::Builder::new(Vec::new());
        let mut h = header(EntryType::Regular, 2);
        b.append_data(&mut h, &long, &b"hi"[..]).unwrap();
        let data = b.into_inner().unwrap();

        let m = read_all(&data).pop().unwrap().unwrap();
        assert_eq!(m.path, long.as_bytes());
        assert_eq!(m.kind, Kind::File { sparse: None });
        assert_eq!(m.size, 2);
    }

    #[test]
    fn pax_sparse_members_carry_their_real_size_and_name() {
        let mut b = tar::Builder::new(Vec::new());
        b.append_pax_extensions([
            ("GNU.sparse.major", b"1".as_slice()),
            ("GNU.sparse.minor", b"0"),
            ("GNU.sparse.realsize", b"4096"),
            ("GNU.sparse.name", b"real/name"),
        ])
        .unwrap();
        b.append_data(
            &mut header(EntryType::Regular, 0),
            "GNUSparseFile.0/name",
            io::empty(),
        )
        .unwrap();
        b.append_pax_extensions([("GNU.sparse.major", b"1".as_slice())])
            .unwrap();
        b.append_data(&mut header(EntryType::Directory, 0), "d/", io::empty())
            .unwrap();
        let data = b.into_inner().unwrap();

        let mut m = read_all(&data);
        let dir = m.pop().unwrap().unwrap_err();
        assert!(
            matches!(dir, Error::BadEntry { why, .. } if why.starts_with("unsupported pax sparse")),
            "{dir:?}"
        );
        let f = m.pop().unwrap().unwrap();
        assert_eq!(f.path, b"real/name");
        assert_eq!(f.kind, Kind::File { sparse: Some(4096) });
    }

    #[test]
    fn names_are_cleaned_and_dotdot_refused() {
        let mut b = tar::Builder::new(Vec::new());
        for (ty, name) in [
            (EntryType::Regular, &b"/./a//b/"[..]),
            (EntryType::Directory, b"./"),
            (EntryType::Regular, b"a/../b"),
            (EntryType::Link, b"l"),
        ] {
            b.append(&raw_named(ty, name), io::empty()).unwrap();
        }
        let data = b.into_inner().unwrap();

        let m = read_all(&data);
        let m0 = m[0].as_ref().unwrap();
        assert_eq!((&m0.path[..], m0.name.as_str()), (&b"a/b"[..], "/./a//b/"));
        let root = m[1].as_ref().unwrap();
        assert!(root.path.is_empty() && root.comps().is_empty());
        assert_eq!(root.kind, Kind::Dir);
        let err = m[2].as_ref().unwrap_err();
        assert!(
            matches!(err, Error::Unsafe { why: "name contains `..`", entry, .. } if entry == "a/../b"),
            "{err:?}"
        );
        // No target is not an error yet: the member may still be skipped.
        assert_eq!(m[3].as_ref().unwrap().kind, Kind::HardLink { target: None });
    }
}
