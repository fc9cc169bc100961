//! PAX and GNU extension headers: finding a member's own pax records and
//! reading what they say over its header (path, link path, ids, times,
//! size, xattrs and ACLs, sparse keys).

use super::name::{bad, lossy};
use crate::error::{Error, Result};
use crate::xattr;

/// A member's `GNU.sparse.*` records.
#[derive(Default)]
pub(super) struct PaxSparse {
    major: Option<u64>,
    minor: Option<u64>,
    realsize: Option<u64>,
    name: Option<Vec<u8>>,
    other: bool,
}

/// What a member's pax records say; the header fills in what they leave out.
#[derive(Default)]
pub(super) struct Pax {
    /// `SCHILY.xattr.*`, then the `SCHILY.acl.*` text ACLs not also given raw.
    pub(super) xattrs: Vec<(String, Vec<u8>)>,
    /// ACL xattrs whose text form names users or groups: not applied, reported.
    pub(super) acl_skips: Vec<&'static str>,
    pub(super) mtime: Option<(i64, u32)>,
    pub(super) atime: Option<(i64, u32)>,
    pub(super) uid: Option<u64>,
    pub(super) gid: Option<u64>,
    /// `linkpath`: replaces the header's link name.
    pub(super) linkpath: Option<Vec<u8>>,
    pub(super) sparse: PaxSparse,
}

impl Pax {
    /// Applies the records of `data` (the member's own `x` header) in order.
    /// A `path` record replaces `raw` and `name`, so later errors name the
    /// member as the records do; a `size` record must equal `size`, the
    /// parser's view of the member.
    pub(super) fn read(
        data: Option<&[u8]>,
        size: u64,
        raw: &mut Vec<u8>,
        name: &mut String,
        hpos: u64,
    ) -> Result<Pax> {
        let mut pax = Pax::default();
        let mut text_acls: Vec<(String, Vec<u8>)> = Vec::new();
        let records = match data {
            Some(d) => parse_pax(d).ok_or_else(|| bad(name, hpos, "malformed pax header"))?,
            None => Vec::new(),
        };
        for (key, v) in records {
            let num = || pax_num(v).ok_or_else(|| bad(name, hpos, "bad numeric pax record"));
            if let Some(x) = key.strip_prefix(b"SCHILY.xattr.") {
                let x = String::from_utf8(x.to_vec())
                    .map_err(|_| bad(name, hpos, "xattr name is not utf-8"))?;
                pax.xattrs.push((x, v.to_vec()));
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
                    Err(None) => pax.acl_skips.push(xname),
                    Err(Some(why)) => return Err(bad(name, hpos, why)),
                }
            } else if key == b"mtime" {
                pax.mtime = Some(pax_time(v).ok_or_else(|| bad(name, hpos, "bad pax mtime"))?);
            } else if key == b"atime" {
                pax.atime = pax_time(v);
            } else if key == b"path" {
                *raw = v.to_vec();
                *name = lossy(raw);
            } else if key == b"linkpath" {
                pax.linkpath = Some(v.to_vec());
            } else if key == b"uid" {
                pax.uid = Some(num()?);
            } else if key == b"gid" {
                pax.gid = Some(num()?);
            } else if key == b"size" {
                // The crate must have used the same size to find the data and
                // the next header, or the two parsers see different archives
                // (CVE-2025-62518 class).
                let want = num()?;
                if want != size {
                    return Err(Error::Unsafe {
                        entry: name.clone(),
                        offset: hpos,
                        why: "pax size disagrees with the parser's view of the member",
                    });
                }
            } else if key.starts_with(b"GNU.sparse.") {
                let v = v.to_vec();
                let n = pax_num(&v);
                let sparse = &mut pax.sparse;
                match key {
                    b"GNU.sparse.major" => sparse.major = n,
                    b"GNU.sparse.minor" => sparse.minor = n,
                    b"GNU.sparse.realsize" | b"GNU.sparse.size" => sparse.realsize = n,
                    b"GNU.sparse.name" => sparse.name = Some(v),
                    _ => sparse.other = true,
                }
            }
        }
        for (k, v) in text_acls {
            if !pax.xattrs.iter().any(|(x, _)| *x == k) {
                pax.xattrs.push((k, v));
            }
        }
        Ok(pax)
    }
}

impl PaxSparse {
    /// The apparent size of a sparse member, `None` if the records name no
    /// sparse format. A `GNU.sparse.name` replaces `raw` and `name`.
    pub(super) fn real_size(
        &mut self,
        is_file: bool,
        raw: &mut Vec<u8>,
        name: &mut String,
        hpos: u64,
    ) -> Result<Option<u64>> {
        if !(self.major.is_some() || self.other || self.realsize.is_some()) {
            return Ok(None);
        }
        // GNU tar's pax sparse format 1.0 (what `tar --xattrs -S` and
        // bsdtar write): the map is at the start of the data. `tarnorm`
        // rewrites old-GNU sparse and pax 0.0 and 0.1 into it.
        match (self.major, self.minor, self.realsize, self.name.take()) {
            (Some(1), Some(0), Some(real), n) if is_file => {
                if let Some(n) = n {
                    *raw = n;
                    *name = lossy(raw);
                }
                Ok(Some(real))
            }
            _ => Err(bad(
                name,
                hpos,
                "unsupported pax sparse format (GNU tar writes 0.0, 0.1 and 1.0)",
            )),
        }
    }
}

/// Finds the raw data of the pax `x` header that belongs to the member at
/// `hpos`, from the bytes the parser read (`recorded`, starting at archive
/// offset `start`, which is right after the previous member's data).
///
/// The `tar` crate splits pax records on newlines, so a value containing
/// `\n` (binary xattrs, `SCHILY.acl.*` text) makes it drop records, and
/// with them `size`, `path` or `uid`: a parser differential. Parsing the
/// records here, length-prefixed as POSIX says, and checking the crate's
/// size against ours closes that. Returns `None` if the extension headers
/// between the previous member and this one cannot be walked exactly.
pub(super) fn own_pax(recorded: &[u8], start: u64, hpos: u64) -> Option<Option<Vec<u8>>> {
    let mut p = start.div_ceil(512) * 512;
    let mut pax = None;
    while p < hpos {
        let rel = (p - start) as usize;
        let h = tar::Header::from_byte_slice(recorded.get(rel..rel + 512)?);
        let ty = h.entry_type();
        if !(ty.is_pax_local_extensions() || ty.is_gnu_longname() || ty.is_gnu_longlink()) {
            return None;
        }
        let size = h.entry_size().ok()?;
        let data = recorded.get(rel + 512..rel + 512 + usize::try_from(size).ok()?)?;
        if ty.is_pax_local_extensions() {
            pax = Some(data.to_vec());
        }
        p = p
            .checked_add(512)?
            .checked_add(size.checked_add(511)? / 512 * 512)?;
    }
    (p == hpos).then_some(pax)
}

/// Parses pax records (`tarnorm::parse_records`). Later records override
/// earlier ones (as in GNU tar).
fn parse_pax(d: &[u8]) -> Option<Vec<(&[u8], &[u8])>> {
    Some(crate::tarnorm::last_of_each(
        crate::tarnorm::parse_records(d)?.into_iter(),
    ))
}

fn pax_num(v: &[u8]) -> Option<u64> {
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// Parses a pax time (`123.456789`, possibly negative) to (sec, nsec).
fn pax_time(v: &[u8]) -> Option<(i64, u32)> {
    let s = std::str::from_utf8(v).ok()?;
    let (neg, s) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if int.is_empty()
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let sec: i64 = int.parse().ok()?;
    let mut ns: u32 = 0;
    for (i, b) in frac.bytes().take(9).enumerate() {
        ns += (b - b'0') as u32 * 10u32.pow(8 - i as u32);
    }
    if neg {
        if ns == 0 {
            Some((-sec, 0))
        } else {
            Some((-sec - 1, 1_000_000_000 - ns))
        }
    } else {
        Some((sec, ns))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_records_are_length_prefixed() {
        let d = b"22 SCHILY.xattr.a=x\ny\n12 path=p/q\n9 path=r\n\0\0";
        let r = parse_pax(d).unwrap();
        assert_eq!(
            r,
            vec![
                (&b"SCHILY.xattr.a"[..], &b"x\ny"[..]),
                (&b"path"[..], &b"r"[..])
            ]
        );
        assert!(parse_pax(b"99 path=x\n").is_none(), "length past the end");
        assert!(parse_pax(b"9 path=xy").is_none(), "no newline");
        assert!(parse_pax(b"6 =ab\n").is_none(), "empty key");
        assert!(parse_pax(b"x path=a\n").is_none());
    }

    #[test]
    fn pax_times() {
        assert_eq!(
            pax_time(b"1700000000.123456789"),
            Some((1700000000, 123456789))
        );
        assert_eq!(pax_time(b"12.5"), Some((12, 500000000)));
        assert_eq!(pax_time(b"-1.25"), Some((-2, 750000000)));
        assert_eq!(pax_time(b"7"), Some((7, 0)));
        assert_eq!(pax_time(b"x"), None);
    }
}
