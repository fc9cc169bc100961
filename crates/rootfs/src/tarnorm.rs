//! Every tar dialect GNU tar reads, rewritten into the one plain form the
//! `tar` crate parses, before it parses it (issue 17).
//!
//! An image reviewed with `tar -t` must unpack to what `tar -t` listed, so
//! this reader applies GNU tar's reading of each header, member by member:
//!
//! - **Sizes.** No data follows a directory, whatever its size field or pax
//!   `size` says, and none follows a hard link unless a pax `size` says so.
//!   The crate would skip the size field's worth, and so read a member
//!   (a setuid file, say) that `tar -t` never lists, or drop one it lists.
//! - **Extension headers.** Only the last pax header (`x`, or Solaris `X`),
//!   the last GNU long name (`L`) and the last long link (`K`) before a
//!   member count, as in GNU tar; a long name or a pax `path` or
//!   `linkpath` is cut at its first NUL.
//!   Each is capped at [`MAX_EXTENSION`] bytes (bsdtar's and Go's cap).
//!   A pax global header (`g`) applies to every later member until the
//!   next one replaces it (GNU tar's reading): its `uid`, `gid`, `mtime`,
//!   `atime`, `path`, `linkpath`, `size`, `SCHILY.xattr.*` and
//!   `SCHILY.acl.*`, at most [`MAX_GLOBAL`] bytes; one that sets a sparse
//!   key is refused.
//! - **Sparse files.** Old-GNU sparse (`S`) and pax sparse 0.0 and 0.1 are
//!   rewritten as pax sparse 1.0 (the map at the start of the data), the
//!   one form the unpacker writes, seeking over every hole. A member may
//!   have at most [`MAX_SPARSE_REGIONS`] regions.
//! - **Types.** A regular member whose name ends in `/` (pre-POSIX v7
//!   directories) and a GNU dumpdir (`D`) are directories; an unknown type
//!   is a regular file (GNU tar extracts it as one).
//! - **Fields.** Numeric fields that are all NUL are 0, and a checksum
//!   summed over signed bytes (old Sun and GNU tar) is accepted; the header
//!   goes out with its checksum recomputed.
//!
//! A header with a bad checksum or an unreadable size is passed through as
//! it is, and the rest of the stream with it: the parser rejects it.
#![forbid(unsafe_code)]

use std::cell::RefCell;
use std::collections::{HashSet, VecDeque};
use std::io::{self, Read};
use std::rc::Rc;

/// The largest pax or GNU long-name header accepted (bsdtar's and Go's cap).
pub(crate) const MAX_EXTENSION: u64 = 1 << 20;

/// The most bytes of pax global records carried to every member.
pub(crate) const MAX_GLOBAL: usize = 16 << 10;

/// The most data regions one sparse member may list.
pub(crate) const MAX_SPARSE_REGIONS: usize = 1 << 18;

const BLOCK: usize = 512;

/// The member header positions this reader emitted, with where each was in
/// the decoded archive: errors name the archive's own offsets.
#[derive(Debug, Default)]
pub(crate) struct Marks(VecDeque<(u64, u64)>);

impl Marks {
    /// The archive offset of position `p` of the normalized stream.
    pub(crate) fn archive_offset(&self, p: u64) -> u64 {
        match self.0.iter().rev().find(|(out, _)| *out <= p) {
            Some(&(out, arch)) => arch + (p - out),
            None => p,
        }
    }

    fn push(&mut self, out: u64, arch: u64) {
        if self.0.len() == 64 {
            self.0.pop_front();
        }
        self.0.push_back((out, arch));
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// The next block is a header (or an end-of-archive block).
    Header,
    /// This many bytes of member data (padding included) pass through.
    Data(u64),
    /// Interpretation stopped (a bad header): the rest passes through.
    Raw,
}

type Records = Vec<(Vec<u8>, Vec<u8>)>;

/// The normalizing reader around the decoded stream.
pub(crate) struct Norm<R> {
    inner: R,
    state: State,
    /// Bytes ready to hand out (the headers we rewrote).
    out: Vec<u8>,
    pos: usize,
    /// Records of the pax global headers seen so far.
    global: Records,
    /// Bytes read from `inner`, and handed out.
    read_in: u64,
    handed: u64,
    marks: Rc<RefCell<Marks>>,
}

fn round(n: u64) -> Option<u64> {
    n.checked_add(511).map(|x| x / 512 * 512)
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// A numeric header field: octal (NUL or space terminated, leading spaces
/// allowed; empty is 0) or GNU base-256.
fn parse_num(f: &[u8]) -> Option<u64> {
    if f[0] & 0x80 != 0 {
        if f[0] & 0x40 != 0 {
            return None; // negative
        }
        let mut v: u64 = u64::from(f[0] & 0x3f);
        for &b in &f[1..] {
            v = v.checked_mul(256)?.checked_add(u64::from(b))?;
        }
        return Some(v);
    }
    let s: Vec<u8> = f
        .iter()
        .copied()
        .skip_while(|&b| b == b' ')
        .take_while(|&b| b != 0 && b != b' ')
        .collect();
    if s.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(std::str::from_utf8(&s).ok()?, 8).ok()
}

fn sums(h: &[u8]) -> (u64, i64) {
    let mut unsigned = 0u64;
    let mut signed = 0i64;
    for (i, &b) in h.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += u64::from(b);
        signed += i64::from(b as i8);
    }
    (unsigned, signed)
}

/// POSIX's unsigned sum, or the signed one old Sun and GNU tars wrote.
fn checksum_ok(h: &[u8]) -> bool {
    let Some(want) = parse_num(&h[148..156]) else {
        return false;
    };
    let (unsigned, signed) = sums(h);
    want == unsigned || i64::try_from(want).is_ok_and(|w| w == signed)
}

fn fix_checksum(h: &mut [u8]) {
    let (sum, _) = sums(h);
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
}

/// Writes `v` into a numeric field: octal when it fits, else base-256.
fn put_num(f: &mut [u8], v: u64) {
    let digits = f.len() - 1;
    let s = format!("{v:0digits$o}");
    if s.len() <= digits {
        f[..digits].copy_from_slice(s.as_bytes());
        f[digits] = 0;
    } else {
        f.fill(0);
        f[0] = 0x80;
        let n = f.len();
        for (i, b) in v.to_be_bytes().iter().rev().enumerate() {
            f[n - 1 - i] = *b;
        }
    }
}

/// Mode, uid, gid, size and mtime fields that are all NUL (or blank)
/// read as 0, as in GNU tar and bsdtar.
fn zero_blank_fields(h: &mut [u8]) {
    for (off, len) in [(100, 8), (108, 8), (116, 8), (124, 12), (136, 12)] {
        let f = &mut h[off..off + len];
        if f.iter().all(|&b| b == 0 || b == b' ') {
            put_num(f, 0);
        }
    }
}

/// Pax records (`LEN KEY=VALUE\n`) in order, duplicates kept (sparse 0.0
/// repeats its keys), length-prefixed as POSIX says, so values may hold
/// newlines. `None` if malformed.
pub(crate) fn parse_records(d: &[u8]) -> Option<Vec<(&[u8], &[u8])>> {
    let mut out = Vec::new();
    let mut p = 0;
    while p < d.len() {
        if d[p..].iter().all(|&b| b == 0) {
            break;
        }
        let sp = d[p..].iter().take(21).position(|&b| b == b' ')?;
        let len: usize = std::str::from_utf8(&d[p..p + sp]).ok()?.parse().ok()?;
        if len < sp + 3 || p.checked_add(len)? > d.len() || d[p + len - 1] != b'\n' {
            return None;
        }
        let rec = &d[p + sp + 1..p + len - 1];
        let eq = rec.iter().position(|&b| b == b'=')?;
        if eq == 0 {
            return None;
        }
        out.push((&rec[..eq], &rec[eq + 1..]));
        p += len;
    }
    Some(out)
}

fn owned(recs: Vec<(&[u8], &[u8])>) -> Records {
    recs.into_iter()
        .map(|(k, v)| (k.to_vec(), v.to_vec()))
        .collect()
}

/// Serializes records, keeping the last of each key in its place; a
/// record with an empty value deletes the key (POSIX). `size` goes first:
/// the `tar` crate splits records on newlines and stops at the first value
/// that holds one, so it must meet `size` before any such value.
fn serialize(recs: &Records) -> Vec<u8> {
    let mut body = Vec::new();
    let kept = last_of_each(recs.iter().map(|(k, v)| (k.as_slice(), v.as_slice())));
    let order = kept
        .iter()
        .filter(|(k, _)| *k == b"size")
        .chain(kept.iter().filter(|(k, _)| *k != b"size"));
    for &(k, v) in order {
        if v.is_empty() {
            continue;
        }
        let tail = k.len() + v.len() + 3; // ' ', '=', '\n'
        let mut n = tail + 1;
        while n.to_string().len() + tail != n {
            n += 1;
        }
        body.extend_from_slice(n.to_string().as_bytes());
        body.push(b' ');
        body.extend_from_slice(k);
        body.push(b'=');
        body.extend_from_slice(v);
        body.push(b'\n');
    }
    body
}

/// The last record of each key, in the order of those last records (a
/// later record overrides an earlier one, as in GNU tar). Linear: a 1 MiB
/// header holds some 90,000 records.
pub(crate) fn last_of_each<'a>(
    recs: impl DoubleEndedIterator<Item = (&'a [u8], &'a [u8])>,
) -> Vec<(&'a [u8], &'a [u8])> {
    let mut seen = HashSet::new();
    let mut out: Vec<_> = recs.rev().filter(|(k, _)| seen.insert(*k)).collect();
    out.reverse();
    out
}

fn last<'a>(recs: &'a Records, key: &[u8]) -> Option<&'a [u8]> {
    recs.iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_slice())
}

fn dec(v: &[u8]) -> Option<u64> {
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// An extension header (`L`, `K` or `x`) with its data, padded.
fn ext_member(name: &[u8], ty: u8, data: &[u8]) -> Vec<u8> {
    let mut h = vec![0u8; BLOCK];
    h[..name.len()].copy_from_slice(name);
    put_num(&mut h[100..108], 0o644);
    put_num(&mut h[108..116], 0);
    put_num(&mut h[116..124], 0);
    put_num(&mut h[124..136], data.len() as u64);
    put_num(&mut h[136..148], 0);
    h[156] = ty;
    if ty == b'x' {
        h[257..265].copy_from_slice(b"ustar\x0000");
    } else {
        h[257..265].copy_from_slice(b"ustar  \0");
    }
    fix_checksum(&mut h);
    h.extend_from_slice(data);
    h.resize(round(h.len() as u64).unwrap_or(0) as usize, 0);
    h
}

/// The long name, long link and pax headers of a member, as the parser
/// wants them.
fn extensions(name: Option<Vec<u8>>, link: Option<Vec<u8>>, recs: &Records) -> Vec<u8> {
    let mut o = Vec::new();
    for (n, ty) in [(name, b'L'), (link, b'K')] {
        if let Some(n) = n {
            o.extend(ext_member(
                b"././@LongLink",
                ty,
                &[n.as_slice(), b"\0"].concat(),
            ));
        }
    }
    let body = serialize(recs);
    if !body.is_empty() {
        o.extend(ext_member(b"PaxHeaders/member", b'x', &body));
    }
    o
}

/// The data regions of an old-GNU sparse header or extension block:
/// `count` (offset, length) pairs of 12-byte fields from `at`.
fn old_gnu_regions(b: &[u8], at: usize, count: usize, into: &mut Vec<(u64, u64)>) -> Option<()> {
    for i in 0..count {
        let f = &b[at + i * 24..at + i * 24 + 24];
        if f[12] == 0 {
            break; // GNU tar's end of the list: an empty size field
        }
        into.push((parse_num(&f[..12])?, parse_num(&f[12..])?));
    }
    Some(())
}

/// A pax sparse 1.0 map: the count, then offset and length per line,
/// padded to a block.
fn map_text(regions: &[(u64, u64)]) -> Vec<u8> {
    let mut t = format!("{}\n", regions.len());
    for (o, n) in regions {
        t.push_str(&format!("{o}\n{n}\n"));
    }
    let mut t = t.into_bytes();
    t.resize(round(t.len() as u64).unwrap_or(0) as usize, 0);
    t
}

impl<R: Read> Norm<R> {
    pub(crate) fn new(inner: R, marks: Rc<RefCell<Marks>>) -> Norm<R> {
        Norm {
            inner,
            state: State::Header,
            out: Vec::new(),
            pos: 0,
            global: Vec::new(),
            read_in: 0,
            handed: 0,
            marks,
        }
    }

    /// Up to `n` bytes (short only at end of stream).
    fn take(&mut self, n: usize) -> io::Result<Vec<u8>> {
        let mut v = vec![0u8; n];
        let mut got = 0;
        while got < n {
            match self.inner.read(&mut v[got..]) {
                Ok(0) => break,
                Ok(k) => got += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        v.truncate(got);
        self.read_in += got as u64;
        Ok(v)
    }

    fn take_exact(&mut self, n: usize, what: &str) -> io::Result<Vec<u8>> {
        let v = self.take(n)?;
        if v.len() < n {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the archive ends inside {what}"),
            ));
        }
        Ok(v)
    }

    /// A global header replaces the ones before it, as in GNU tar (and
    /// `tar -t` shows).
    fn set_global(&mut self, recs: Records) -> io::Result<()> {
        self.global.clear();
        for (k, v) in recs {
            if k.starts_with(b"GNU.sparse.") {
                return Err(invalid(format!(
                    "a pax global header sets `{}`, a sparse map for every later member; refused",
                    String::from_utf8_lossy(&k)
                )));
            }
            // What GNU tar applies and the unpacker reads. A global `path`
            // names every later member alike, as `tar -t` shows (the last
            // one written wins); `size` is read as GNU tar reads it.
            let carried = matches!(
                k.as_slice(),
                b"uid" | b"gid" | b"mtime" | b"atime" | b"path" | b"linkpath" | b"size"
            ) || k.starts_with(b"SCHILY.xattr.")
                || k.starts_with(b"SCHILY.acl.");
            if carried {
                self.global.retain(|(k2, _)| *k2 != k);
                if !v.is_empty() {
                    self.global.push((k, v));
                }
            }
        }
        let bytes: usize = self.global.iter().map(|(k, v)| k.len() + v.len()).sum();
        if bytes > MAX_GLOBAL {
            return Err(invalid(format!(
                "pax global headers carry {bytes} bytes to every member, over the cap of {MAX_GLOBAL}"
            )));
        }
        Ok(())
    }

    /// Reads the extension headers and the member header they belong to,
    /// and puts the rewritten form in `out`.
    fn header(&mut self) -> io::Result<()> {
        let mut local: Option<Records> = None;
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        let base = self.handed;
        let (mut h, at) = loop {
            let at = self.read_in;
            let mut h = self.take(BLOCK)?;
            let usable = h.len() == BLOCK && h.iter().any(|&b| b != 0) && checksum_ok(&h);
            if usable {
                zero_blank_fields(&mut h);
            }
            let size = if usable {
                parse_num(&h[124..136])
            } else {
                None
            };
            let Some(size) = size else {
                // End of archive (GNU tar and the parser stop at the first
                // zero block), a truncated one, or a bad header: what came
                // before goes out as it was read, the rest passes through,
                // and the parser decides.
                let mut o = extensions(long_name, long_link, &local.unwrap_or_default());
                o.extend_from_slice(&h);
                self.state = State::Raw;
                self.out = o;
                self.pos = 0;
                return Ok(());
            };
            let ty = h[156];
            if !matches!(ty, b'x' | b'X' | b'g' | b'L' | b'K') {
                break (h, at);
            }
            if size > MAX_EXTENSION {
                return Err(invalid(format!(
                    "an extension header (type {:?}) of {size} bytes, over the cap of {MAX_EXTENSION}",
                    ty as char
                )));
            }
            let data = self.take_exact(round(size).unwrap_or(0) as usize, "an extension header")?;
            let data = &data[..size as usize];
            let cut = |d: &[u8]| d[..d.iter().position(|&b| b == 0).unwrap_or(d.len())].to_vec();
            match ty {
                b'L' => long_name = Some(cut(data)),
                b'K' => long_link = Some(cut(data)),
                _ => {
                    let recs = parse_records(data)
                        .map(owned)
                        .ok_or_else(|| invalid(format!("malformed pax header at byte {at}")))?;
                    if ty == b'g' {
                        self.set_global(recs)?;
                    } else {
                        local = Some(recs);
                    }
                }
            }
        };

        let size = parse_num(&h[124..136]).unwrap_or(0);
        let mut recs = self.global.clone();
        recs.extend(local.unwrap_or_default());
        for (k, v) in recs.iter_mut() {
            if matches!(k.as_slice(), b"path" | b"linkpath" | b"GNU.sparse.name") {
                // A name ends at its first NUL, as GNU tar reads it.
                if let Some(n) = v.iter().position(|&b| b == 0) {
                    v.truncate(n);
                }
            }
        }
        let pax_size = match last(&recs, b"size") {
            Some(v) if !v.is_empty() => Some(dec(v).ok_or_else(|| {
                invalid(format!("bad pax size {:?}", String::from_utf8_lossy(v)))
            })?),
            _ => None,
        };
        let data_len = pax_size.unwrap_or(size);
        // GNU tar's name for the member: pax `path`, else the long name,
        // else the header's (a pax path makes a long name moot).
        let path_is_pax = last(&recs, b"path").is_some_and(|v| !v.is_empty());
        if path_is_pax {
            long_name = None;
        }
        if last(&recs, b"linkpath").is_some_and(|v| !v.is_empty()) {
            long_link = None;
        }
        let name_slash = match (last(&recs, b"path"), &long_name) {
            (Some(p), _) if path_is_pax => p.ends_with(b"/"),
            (_, Some(l)) => l.ends_with(b"/"),
            _ => {
                let n = &h[..100];
                let n = &n[..n.iter().position(|&b| b == 0).unwrap_or(100)];
                n.ends_with(b"/")
            }
        };

        let mut ty = h[156];
        let mut prefix: Vec<u8> = Vec::new();
        let mut data_at = None;
        // Sparse members become pax sparse 1.0.
        let has = |k: &[u8]| recs.iter().any(|(k2, _)| k2 == k);
        let regular = matches!(ty, b'0' | b'\0' | b'7');
        let old_gnu = ty == b'S';
        let pax0 = regular
            && !has(b"GNU.sparse.major")
            && (has(b"GNU.sparse.map")
                || has(b"GNU.sparse.offset")
                || has(b"GNU.sparse.numblocks"));
        if old_gnu || pax0 {
            let mut regions: Vec<(u64, u64)> = Vec::new();
            let bad = |what: &str| invalid(format!("bad sparse map ({what}) at byte {at}"));
            let real;
            if old_gnu {
                old_gnu_regions(&h, 386, 4, &mut regions).ok_or_else(|| bad("header"))?;
                real = parse_num(&h[483..495]).ok_or_else(|| bad("real size"))?;
                let mut more = h[482] != 0;
                while more {
                    let b = self.take_exact(BLOCK, "a sparse map")?;
                    old_gnu_regions(&b, 0, 21, &mut regions).ok_or_else(|| bad("extension"))?;
                    more = b[504] != 0;
                    if regions.len() > MAX_SPARSE_REGIONS {
                        break;
                    }
                }
                h[345..500].fill(0);
            } else {
                real = last(&recs, b"GNU.sparse.size")
                    .and_then(dec)
                    .ok_or_else(|| bad("GNU.sparse.size"))?;
                if let Some(map) = last(&recs, b"GNU.sparse.map").filter(|m| !m.is_empty()) {
                    // 0.1: `offset,size,offset,size...`
                    let nums: Option<Vec<u64>> = map.split(|&b| b == b',').map(dec).collect();
                    let nums = nums
                        .filter(|n| n.len() % 2 == 0)
                        .ok_or_else(|| bad("GNU.sparse.map"))?;
                    regions.extend(nums.chunks(2).map(|c| (c[0], c[1])));
                } else {
                    // 0.0: repeated `offset` then `numbytes` records.
                    let mut off = None;
                    for (k, v) in &recs {
                        match k.as_slice() {
                            b"GNU.sparse.offset" => {
                                off = Some(dec(v).ok_or_else(|| bad("offset"))?)
                            }
                            b"GNU.sparse.numbytes" => {
                                let o = off.take().ok_or_else(|| bad("numbytes without offset"))?;
                                regions.push((o, dec(v).ok_or_else(|| bad("numbytes"))?));
                            }
                            _ => {}
                        }
                    }
                }
            }
            if regions.len() > MAX_SPARSE_REGIONS {
                return Err(invalid(format!(
                    "a sparse member with over {MAX_SPARSE_REGIONS} regions at byte {at}; refused"
                )));
            }
            recs.retain(|(k, _)| {
                !(k == b"size"
                    || matches!(
                        k.as_slice(),
                        b"GNU.sparse.size"
                            | b"GNU.sparse.numblocks"
                            | b"GNU.sparse.offset"
                            | b"GNU.sparse.numbytes"
                            | b"GNU.sparse.map"
                            | b"GNU.sparse.realsize"
                    ))
            });
            recs.push((b"GNU.sparse.major".to_vec(), b"1".to_vec()));
            recs.push((b"GNU.sparse.minor".to_vec(), b"0".to_vec()));
            recs.push((
                b"GNU.sparse.realsize".to_vec(),
                real.to_string().into_bytes(),
            ));
            prefix = map_text(&regions);
            put_num(&mut h[124..136], prefix.len() as u64 + data_len);
            ty = b'0';
            data_at = Some(self.read_in);
        }
        let state = match ty {
            b'5' => {
                // GNU tar reads no data after a directory.
                put_num(&mut h[124..136], 0);
                recs.retain(|(k, _)| k != b"size");
                State::Data(0)
            }
            b'1' => {
                // Nor after a hard link, unless pax says how much.
                put_num(&mut h[124..136], 0);
                State::Data(round(pax_size.unwrap_or(0)).unwrap_or(u64::MAX))
            }
            b'D' => {
                // A GNU dumpdir: a directory whose data (the listing of an
                // incremental dump) is skipped, as GNU tar skips it.
                ty = b'5';
                State::Data(round(data_len).unwrap_or(u64::MAX))
            }
            b'0' | b'\0' | b'7' if name_slash => {
                // A pre-POSIX (v7) directory; GNU tar skips its size.
                ty = b'5';
                State::Data(round(data_len).unwrap_or(u64::MAX))
            }
            b'0' | b'\0' | b'1'..=b'7' | b'V' | b'M' | b'N' => {
                State::Data(round(data_len).unwrap_or(u64::MAX))
            }
            _ => {
                ty = b'0'; // unknown: a regular file, as in GNU tar
                State::Data(round(data_len).unwrap_or(u64::MAX))
            }
        };
        h[156] = ty;
        fix_checksum(&mut h);

        let mut o = extensions(long_name, long_link, &recs);
        let mut marks = self.marks.borrow_mut();
        marks.push(base + o.len() as u64, at);
        o.extend_from_slice(&h);
        if let Some(d) = data_at {
            o.extend_from_slice(&prefix);
            marks.push(base + o.len() as u64, d);
        }
        drop(marks);
        self.state = state;
        self.out = o;
        self.pos = 0;
        Ok(())
    }
}

impl<R: Read> Read for Norm<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.pos < self.out.len() {
                let n = buf.len().min(self.out.len() - self.pos);
                buf[..n].copy_from_slice(&self.out[self.pos..self.pos + n]);
                self.pos += n;
                self.handed += n as u64;
                return Ok(n);
            }
            match self.state {
                State::Raw => {
                    let n = self.inner.read(buf)?;
                    self.read_in += n as u64;
                    self.handed += n as u64;
                    return Ok(n);
                }
                State::Data(0) => self.state = State::Header,
                State::Data(rem) => {
                    let want = buf.len().min(usize::try_from(rem).unwrap_or(usize::MAX));
                    let n = self.inner.read(&mut buf[..want])?;
                    self.read_in += n as u64;
                    self.handed += n as u64;
                    self.state = State::Data(rem - n as u64);
                    if n == 0 {
                        self.state = State::Raw;
                    }
                    return Ok(n);
                }
                State::Header => {
                    self.header()?;
                    if self.out.is_empty() {
                        return Ok(0);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdr(name: &[u8], ty: u8, size: u64) -> Vec<u8> {
        let mut h = vec![0u8; 512];
        h[..name.len()].copy_from_slice(name);
        put_num(&mut h[100..108], 0o644);
        put_num(&mut h[108..116], 0);
        put_num(&mut h[116..124], 0);
        put_num(&mut h[124..136], size);
        put_num(&mut h[136..148], 0);
        h[156] = ty;
        h[257..265].copy_from_slice(b"ustar\x0000");
        fix_checksum(&mut h);
        h
    }

    /// A pax header with exactly these records, duplicates kept.
    fn pax(ty: u8, recs: &[(&str, &str)]) -> Vec<u8> {
        let body: Vec<u8> = recs
            .iter()
            .flat_map(|(k, v)| serialize(&vec![(k.as_bytes().to_vec(), v.as_bytes().to_vec())]))
            .collect();
        let mut m = hdr(b"PaxHeaders/x", ty, body.len() as u64);
        m.extend_from_slice(&body);
        m.resize(round(m.len() as u64).unwrap() as usize, 0);
        m
    }

    fn padded(d: &[u8]) -> Vec<u8> {
        let mut v = d.to_vec();
        v.resize(round(v.len() as u64).unwrap() as usize, 0);
        v
    }

    fn norm(v: Vec<u8>) -> io::Result<(Vec<u8>, Rc<RefCell<Marks>>)> {
        let marks = Rc::new(RefCell::new(Marks::default()));
        let mut out = Vec::new();
        Norm::new(io::Cursor::new(v), marks.clone()).read_to_end(&mut out)?;
        Ok((out, marks))
    }

    /// (name, type, size, pax records, data) of every member of a
    /// normalized stream, read the plain way the `tar` crate reads it.
    type Member = (Vec<u8>, u8, u64, Records, Vec<u8>);
    fn members(out: &[u8]) -> Vec<Member> {
        let mut v = Vec::new();
        let mut p = 0;
        let mut recs = Vec::new();
        let mut long = None;
        while p + 512 <= out.len() && out[p..p + 512].iter().any(|&b| b != 0) {
            let h = &out[p..p + 512];
            let (unsigned, _) = sums(h);
            assert_eq!(parse_num(&h[148..156]), Some(unsigned), "checksum");
            let size = match last(&recs, b"size") {
                Some(v) if h[156] != b'x' => dec(v).unwrap(),
                _ => parse_num(&h[124..136]).unwrap(),
            };
            let data = out[p + 512..p + 512 + size as usize].to_vec();
            p += 512 + round(size).unwrap() as usize;
            match h[156] {
                b'x' => recs = owned(parse_records(&data).unwrap()),
                b'L' => long = Some(data[..data.len() - 1].to_vec()),
                ty => {
                    let n = &h[..100];
                    let n = long
                        .take()
                        .unwrap_or_else(|| n[..n.iter().position(|&b| b == 0).unwrap()].to_vec());
                    v.push((n, ty, size, std::mem::take(&mut recs), data));
                }
            }
        }
        v
    }

    fn rec(r: &Records, k: &str) -> Option<String> {
        last(r, k.as_bytes()).map(|v| String::from_utf8(v.to_vec()).unwrap())
    }

    #[test]
    fn directory_and_hardlink_sizes_become_zero_and_data_passes() {
        let mut a = hdr(b"d/", b'5', 512);
        a.extend(hdr(b"d/x", b'0', 1024));
        a.extend(vec![7u8; 1024]);
        a.extend(hdr(b"l", b'1', 512));
        a.extend(vec![0u8; 1024]);
        let (out, _) = norm(a.clone()).unwrap();
        assert_eq!(out.len(), a.len());
        let m = members(&out);
        assert_eq!(m.len(), 3, "the directory's 512 bytes were not data");
        assert_eq!((m[0].1, m[0].2), (b'5', 0));
        assert_eq!((m[1].2, &m[1].4[..]), (1024, &[7u8; 1024][..]));
        assert_eq!((m[2].1, m[2].2), (b'1', 0));
    }

    #[test]
    fn a_pax_size_on_a_directory_is_dropped_and_on_a_file_obeyed() {
        let mut a = pax(b'x', &[("size", "512")]);
        a.extend(hdr(b"d", b'5', 0));
        a.extend(hdr(b"after", b'0', 0));
        a.extend(pax(b'x', &[("size", "512")]));
        a.extend(hdr(b"f", b'0', 0));
        a.extend(hdr(b"looks-like-a-header", b'0', 0)); // f's data
        a.extend(vec![0u8; 1024]);
        let (out, _) = norm(a).unwrap();
        let m = members(&out);
        let names: Vec<&[u8]> = m.iter().map(|m| m.0.as_slice()).collect();
        assert_eq!(names, [&b"d"[..], b"after", b"f"]);
        assert_eq!(rec(&m[0].3, "size"), None);
        assert_eq!(rec(&m[2].3, "size"), Some("512".into()));
    }

    #[test]
    fn huge_extension_headers_are_refused_and_bad_headers_pass_through() {
        let mut a = hdr(b"PaxHeaders/x", b'x', MAX_EXTENSION + 1);
        a.extend(vec![0u8; 512]);
        let e = norm(a).unwrap_err();
        assert!(e.to_string().contains("over the cap"), "{e}");
        let mut bad = hdr(b"d/", b'5', 512);
        bad[148] = b'9'; // checksum now wrong
        bad.extend(vec![1u8; 512]);
        assert_eq!(norm(bad.clone()).unwrap().0, bad);
    }

    #[test]
    fn numbers_octal_base256_blank_and_signed_checksums() {
        let mut f = [0u8; 12];
        put_num(&mut f, 1 << 40);
        assert_eq!(f[0], 0x80, "too big for 11 octal digits");
        assert_eq!(parse_num(&f), Some(1 << 40));
        put_num(&mut f, 0o755);
        assert_eq!(&f, b"00000000755\0");
        assert_eq!(parse_num(b"   644 \0"), Some(0o644));
        assert_eq!(parse_num(&[0xff; 8]), None, "negative base-256");
        // All-NUL uid and gid, and a checksum over signed bytes.
        let mut h = hdr("é".as_bytes(), b'0', 0);
        h[108..124].fill(0);
        h[148..156].fill(b' ');
        let (_, signed) = sums(&h);
        h[148..156].copy_from_slice(format!("{signed:06o}\0 ").as_bytes());
        assert!(checksum_ok(&h));
        let (out, _) = norm([h, vec![0; 1024]].concat()).unwrap();
        assert_eq!(&out[108..124], b"0000000\x000000000\x00");
        let (unsigned, _) = sums(&out[..512]);
        assert_eq!(
            parse_num(&out[148..156]),
            Some(unsigned),
            "rewritten unsigned"
        );
    }

    #[test]
    fn the_last_long_name_and_pax_header_count_and_a_nul_cuts_a_name() {
        let long = |n: &[u8]| {
            let mut m = hdr(b"././@LongLink", b'L', n.len() as u64);
            m.extend(padded(n));
            m
        };
        let mut a = long(b"first\0");
        a.extend(long(b"second\0tail\0"));
        a.extend(pax(b'x', &[("uid", "5")]));
        a.extend(pax(b'X', &[("gid", "6")]));
        a.extend(hdr(b"short", b'0', 0));
        let (out, _) = norm([a, vec![0; 1024]].concat()).unwrap();
        let m = members(&out);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].0, b"second");
        assert_eq!(
            (rec(&m[0].3, "uid"), rec(&m[0].3, "gid")),
            (None, Some("6".into()))
        );
    }

    #[test]
    fn global_headers_apply_until_replaced_and_may_not_set_sparse_maps() {
        let mut a = pax(b'g', &[("uid", "1"), ("gid", "2"), ("comment", "x")]);
        a.extend(hdr(b"a", b'0', 0));
        a.extend(pax(b'x', &[("uid", "7")]));
        a.extend(hdr(b"b", b'0', 0));
        a.extend(pax(b'g', &[("gid", "9")]));
        a.extend(hdr(b"c", b'0', 0));
        let (out, _) = norm([a, vec![0; 1024]].concat()).unwrap();
        let m = members(&out);
        let ids: Vec<(Option<String>, Option<String>)> = m
            .iter()
            .map(|m| (rec(&m.3, "uid"), rec(&m.3, "gid")))
            .collect();
        assert_eq!(
            ids,
            [
                (Some("1".into()), Some("2".into())),
                (Some("7".into()), Some("2".into())),
                (None, Some("9".into())),
            ]
        );
        assert_eq!(
            rec(&m[0].3, "comment"),
            None,
            "only what the unpacker reads"
        );
        for key in ["GNU.sparse.map", "GNU.sparse.major"] {
            let mut a = pax(b'g', &[(key, "1")]);
            a.extend(hdr(b"a", b'0', 0));
            let e = norm(a).unwrap_err();
            assert!(e.to_string().contains(&format!("sets `{key}`")), "{e}");
        }
        // A global path names every member, until a global `path=` ends it;
        // a global size is every member's data size, as GNU tar reads it.
        let mut a = pax(b'g', &[("path", "same"), ("size", "512")]);
        a.extend(hdr(b"a", b'0', 0));
        a.extend(hdr(b"hidden-in-a", b'0', 0));
        a.extend(hdr(b"b", b'0', 0));
        a.extend(vec![0u8; 512]);
        a.extend(pax(b'g', &[("path", "")]));
        a.extend(hdr(b"c", b'0', 0));
        let (out, _) = norm([a, vec![0; 1024]].concat()).unwrap();
        let m = members(&out);
        let got: Vec<(Option<String>, u64)> = m.iter().map(|m| (rec(&m.3, "path"), m.2)).collect();
        assert_eq!(
            got,
            [
                (Some("same".into()), 512),
                (Some("same".into()), 512),
                (None, 0)
            ]
        );
        let big = "v".repeat(MAX_GLOBAL);
        let mut a = pax(b'g', &[("SCHILY.xattr.user.a", &big)]);
        a.extend(hdr(b"a", b'0', 0));
        assert!(norm(a).unwrap_err().to_string().contains("over the cap"));
    }

    #[test]
    fn old_gnu_and_pax_0x_sparse_members_become_pax_1_0() {
        let want_map = b"3\n0\n2\n1000\n3\n4096\n0\n".to_vec();
        // Old GNU: two regions in the header, one in an extension block.
        let mut h = hdr(b"sp", b'S', 5);
        h[257..265].copy_from_slice(b"ustar  \0");
        put_num(&mut h[386..398], 0);
        put_num(&mut h[398..410], 2);
        put_num(&mut h[410..422], 1000);
        put_num(&mut h[422..434], 3);
        h[482] = 1;
        put_num(&mut h[483..495], 4096);
        fix_checksum(&mut h);
        let mut ext = vec![0u8; 512];
        put_num(&mut ext[0..12], 4096);
        put_num(&mut ext[12..24], 0);
        let old = [h, ext, padded(b"abcde")].concat();
        // 0.0: repeated offset/numbytes records; 0.1: one map record.
        let mut p00 = pax(
            b'x',
            &[
                ("GNU.sparse.size", "4096"),
                ("GNU.sparse.numblocks", "3"),
                ("GNU.sparse.offset", "0"),
                ("GNU.sparse.numbytes", "2"),
                ("GNU.sparse.offset", "1000"),
                ("GNU.sparse.numbytes", "3"),
                ("GNU.sparse.offset", "4096"),
                ("GNU.sparse.numbytes", "0"),
            ],
        );
        p00.extend(hdr(b"sp", b'0', 5));
        p00.extend(padded(b"abcde"));
        let mut p01 = pax(
            b'x',
            &[
                ("GNU.sparse.size", "4096"),
                ("GNU.sparse.name", "sp"),
                ("GNU.sparse.map", "0,2,1000,3,4096,0"),
            ],
        );
        p01.extend(hdr(b"GNUSparseFile.1/sp", b'0', 5));
        p01.extend(padded(b"abcde"));
        for (what, a) in [("old GNU", old), ("0.0", p00), ("0.1", p01)] {
            let (out, marks) = norm([a.clone(), vec![0; 1024]].concat()).unwrap();
            let m = members(&out);
            assert_eq!(m.len(), 1, "{what}");
            let (_, ty, size, recs, data) = &m[0];
            assert_eq!(*ty, b'0', "{what}");
            assert_eq!(
                rec(recs, "GNU.sparse.major").as_deref(),
                Some("1"),
                "{what}"
            );
            assert_eq!(
                rec(recs, "GNU.sparse.minor").as_deref(),
                Some("0"),
                "{what}"
            );
            assert_eq!(
                rec(recs, "GNU.sparse.realsize").as_deref(),
                Some("4096"),
                "{what}"
            );
            assert_eq!(rec(recs, "GNU.sparse.offset"), None, "{what}");
            assert_eq!(*size, 512 + 5, "{what}: map block then the data");
            assert_eq!(&data[..want_map.len()], &want_map[..], "{what}");
            assert_eq!(&data[512..], b"abcde", "{what}");
            // Errors name the archive's offsets: the data started after
            // the member's header (and, for old GNU, its extension block).
            let data_out = out.len() as u64 - 1024 - 512;
            let data_in = a.len() as u64 - 512;
            assert_eq!(marks.borrow().archive_offset(data_out), data_in, "{what}");
        }
        // A file that is all hole: pax 0.0 with no regions.
        let mut a = pax(
            b'x',
            &[("GNU.sparse.size", "4096"), ("GNU.sparse.numblocks", "0")],
        );
        a.extend(hdr(b"hole", b'0', 0));
        let (out, _) = norm([a, vec![0; 1024]].concat()).unwrap();
        let m = members(&out);
        assert_eq!(rec(&m[0].3, "GNU.sparse.realsize").as_deref(), Some("4096"));
        assert!(m[0].4.starts_with(b"0\n\0"), "an empty map");
        // Too many regions: old-GNU extension blocks of 21 each.
        let mut h = hdr(b"sp", b'S', 0);
        h[257..265].copy_from_slice(b"ustar  \0");
        h[482] = 1;
        put_num(&mut h[483..495], 1 << 30);
        fix_checksum(&mut h);
        let mut a = h;
        let blocks = MAX_SPARSE_REGIONS / 21 + 2;
        for b in 0..blocks {
            let mut ext = vec![0u8; 512];
            for i in 0..21 {
                put_num(&mut ext[i * 24..i * 24 + 12], ((b * 21 + i) * 2) as u64);
                put_num(&mut ext[i * 24 + 12..i * 24 + 24], 0);
            }
            ext[504] = u8::from(b + 1 < blocks);
            a.extend(ext);
        }
        let e = norm(a).unwrap_err();
        assert!(e.to_string().contains("regions"), "{e}");
    }

    #[test]
    fn v7_directories_dumpdirs_and_unknown_types() {
        let mut a = hdr(b"v7/", b'\0', 0);
        a[257..265].fill(0);
        fix_checksum(&mut a);
        a.extend(hdr(b"slash/", b'0', 0));
        a.extend(hdr(b"dd/", b'D', 6));
        a.extend(padded(b"Yf\0\0\0\0"));
        a.extend(hdr(b"q", b'Q', 2));
        a.extend(padded(b"qq"));
        let (out, _) = norm([a, vec![0; 1024]].concat()).unwrap();
        let m = members(&out);
        let got: Vec<(&[u8], u8)> = m.iter().map(|m| (m.0.as_slice(), m.1)).collect();
        assert_eq!(
            got,
            [
                (&b"v7/"[..], b'5'),
                (b"slash/", b'5'),
                (b"dd/", b'5'),
                (b"q", b'0'),
            ]
        );
        assert_eq!(m[3].4, b"qq");
    }

    #[test]
    fn size_is_the_first_record_the_crate_meets() {
        let mut a = pax(b'x', &[("SCHILY.xattr.user.x", "a\nb"), ("size", "512")]);
        a.extend(hdr(b"f", b'0', 0));
        a.extend(vec![1u8; 512]);
        let (out, _) = norm([a, vec![0; 1024]].concat()).unwrap();
        let size = parse_num(&out[124..136]).unwrap() as usize;
        let body = &out[512..512 + size];
        assert!(
            body.starts_with(b"12 size=512\n"),
            "{:?}",
            String::from_utf8_lossy(body)
        );
        // The crate itself now reads the member's 512 bytes.
        let mut ar = tar::Archive::new(io::Cursor::new(out.clone()));
        let sizes: Vec<u64> = ar.entries().unwrap().map(|e| e.unwrap().size()).collect();
        assert_eq!(sizes, [512]);
    }

    #[test]
    fn a_stream_that_ends_inside_a_header_passes_through() {
        for n in [0, 1, 100, 300, 511] {
            let h = hdr(b"f", b'0', 0);
            assert_eq!(norm(h[..n].to_vec()).unwrap().0, &h[..n], "{n}");
        }
        let mut a = pax(b'x', &[("path", "p")]);
        a.extend(&hdr(b"f", b'0', 0)[..200]);
        let (out, _) = norm(a).unwrap();
        assert!(out.ends_with(&hdr(b"f", b'0', 0)[..200]));
    }

    #[test]
    fn a_pax_path_ends_at_its_first_nul() {
        let mut a = pax(b'x', &[("path", "kept\0dropped"), ("linkpath", "t\0u")]);
        a.extend(hdr(b"f", b'2', 0));
        let (out, _) = norm([a, vec![0; 1024]].concat()).unwrap();
        let m = members(&out);
        assert_eq!(rec(&m[0].3, "path").as_deref(), Some("kept"));
        assert_eq!(rec(&m[0].3, "linkpath").as_deref(), Some("t"));
    }

    #[test]
    fn records_serialize_with_exact_lengths() {
        for v in ["", "x", "12345678", &"y".repeat(95), &"z".repeat(994)] {
            let r: Records = vec![(b"comment".to_vec(), v.as_bytes().to_vec())];
            let back = owned(parse_records(&serialize(&r)).unwrap());
            assert_eq!(back, if v.is_empty() { vec![] } else { r }, "{}", v.len());
        }
    }
}
