//! GNU tar's reading of member sizes, applied to the decoded stream before
//! the `tar` crate parses it (issue 17, "size differential").
//!
//! The crate skips the header's size worth of data after every member.
//! GNU tar (what an image is reviewed with) skips none after a directory,
//! whatever its header or pax `size` says, and none after a hard link
//! unless a pax `size` says so. A crafted archive could otherwise unpack,
//! here, a member (a setuid file, say) that `tar -t` never lists, or drop
//! one it lists. So each member header is read here first: a directory's
//! size field and pax `size` records are rewritten to zero, a hard link's
//! size field too, and every other member's data is passed through
//! untouched. Extension headers (pax, GNU long names) are capped at
//! [`MAX_EXTENSION`] bytes.
//!
//! Headers with a bad checksum or an unreadable size are passed through as
//! they are, and the rest of the stream with them: the parser rejects them.
#![forbid(unsafe_code)]

use std::io::{self, Read};

/// The largest pax or GNU long-name header accepted (bsdtar's and Go's cap).
pub(crate) const MAX_EXTENSION: u64 = 1 << 20;

const BLOCK: usize = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// The next block is a header (or an end-of-archive block).
    Header,
    /// This many bytes of member data (padding included) pass through.
    Data(u64),
    /// Old-GNU sparse extension blocks follow, then this much data.
    SparseExt(u64),
    /// Interpretation stopped (a bad header): the rest passes through.
    Raw,
}

/// The normalizing reader around the decoded stream.
pub(crate) struct Norm<R> {
    inner: R,
    state: State,
    /// Bytes ready to hand out (headers and extension data we rewrote).
    out: Vec<u8>,
    pos: usize,
}

fn round(n: u64) -> Option<u64> {
    n.checked_add(511).map(|x| x / 512 * 512)
}

/// A header's size field: octal (NUL or space terminated, leading spaces
/// allowed) or GNU base-256.
fn parse_size(f: &[u8]) -> Option<u64> {
    if f[0] & 0x80 != 0 {
        let mut v: u64 = u64::from(f[0] & 0x7f);
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

fn checksum_ok(h: &[u8]) -> bool {
    let Some(want) = parse_size(&h[148..156]) else {
        return false;
    };
    let unsigned: u64 = h
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u64::from(b)
            }
        })
        .sum();
    let signed: i64 = h
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                i64::from(b as i8)
            }
        })
        .sum();
    want == unsigned || i64::try_from(want).is_ok_and(|w| w == signed)
}

/// Size field to zero, checksum recomputed (unsigned, as POSIX says).
fn zero_size(h: &mut [u8]) {
    h[124..136].copy_from_slice(b"00000000000\0");
    h[148..156].fill(b' ');
    let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
}

fn is_extension(ty: u8) -> bool {
    matches!(ty, b'x' | b'g' | b'L' | b'K')
}

/// The value ranges of `size` records in pax data `d`, and the last value.
fn pax_sizes(d: &[u8]) -> (Vec<std::ops::Range<usize>>, Option<u64>) {
    let mut ranges = Vec::new();
    let mut last = None;
    let mut p = 0;
    while p < d.len() {
        if d[p..].iter().all(|&b| b == 0) {
            break;
        }
        let Some(sp) = d[p..].iter().take(21).position(|&b| b == b' ') else {
            break;
        };
        let Some(len) = std::str::from_utf8(&d[p..p + sp])
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
        else {
            break;
        };
        if len < sp + 3 || p.checked_add(len).is_none_or(|e| e > d.len()) || d[p + len - 1] != b'\n'
        {
            break;
        }
        let rec = p + sp + 1..p + len - 1;
        if let Some(v) = d[rec.clone()].strip_prefix(b"size=") {
            let start = rec.end - v.len();
            ranges.push(start..rec.end);
            last = std::str::from_utf8(v).ok().and_then(|s| s.parse().ok());
        }
        p += len;
    }
    (ranges, last)
}

impl<R: Read> Norm<R> {
    pub(crate) fn new(inner: R) -> Norm<R> {
        Norm {
            inner,
            state: State::Header,
            out: Vec::new(),
            pos: 0,
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
        Ok(v)
    }

    /// Reads a header block (and, for extension headers, everything up to
    /// and including the member header they belong to) into `out`.
    fn header(&mut self) -> io::Result<()> {
        let mut staged: Vec<u8> = Vec::new();
        // Where, in `staged`, pax data sit: to zero a directory's size.
        let mut pax_size: Option<u64> = None;
        let mut pax_ranges: Vec<std::ops::Range<usize>> = Vec::new();
        loop {
            let mut h = self.take(BLOCK)?;
            if h.len() < BLOCK || h.iter().all(|&b| b == 0) {
                staged.extend_from_slice(&h);
                self.state = if h.len() < BLOCK {
                    State::Raw
                } else {
                    State::Header
                };
                break;
            }
            let size = match parse_size(&h[124..136]) {
                Some(s) if checksum_ok(&h) => s,
                _ => {
                    staged.extend_from_slice(&h);
                    self.state = State::Raw;
                    break;
                }
            };
            let ty = h[156];
            if is_extension(ty) {
                if size > MAX_EXTENSION {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "an extension header (type {:?}) of {size} bytes, over the cap of {MAX_EXTENSION}",
                            ty as char
                        ),
                    ));
                }
                staged.extend_from_slice(&h);
                let at = staged.len();
                let data = self.take(round(size).unwrap_or(0) as usize)?;
                let short = (data.len() as u64) < round(size).unwrap_or(0);
                staged.extend_from_slice(&data);
                if short {
                    self.state = State::Raw;
                    break;
                }
                if ty == b'x' {
                    let (ranges, last) = pax_sizes(&data[..size as usize]);
                    if last.is_some() {
                        pax_size = last;
                    }
                    pax_ranges.extend(ranges.into_iter().map(|r| r.start + at..r.end + at));
                }
                continue;
            }
            self.state = match ty {
                b'5' => {
                    // GNU tar reads no data after a directory.
                    if size != 0 {
                        zero_size(&mut h);
                    }
                    for r in &pax_ranges {
                        staged[r.clone()].fill(b'0');
                    }
                    State::Header
                }
                b'1' => {
                    // Nor after a hard link, unless pax says how much.
                    if size != 0 {
                        zero_size(&mut h);
                    }
                    match pax_size {
                        Some(n) if n > 0 => State::Data(round(n).unwrap_or(u64::MAX)),
                        _ => State::Header,
                    }
                }
                b'S' => {
                    let n = round(pax_size.unwrap_or(size)).unwrap_or(u64::MAX);
                    if h[482] != 0 {
                        State::SparseExt(n)
                    } else {
                        State::Data(n)
                    }
                }
                _ => State::Data(round(pax_size.unwrap_or(size)).unwrap_or(u64::MAX)),
            };
            staged.extend_from_slice(&h);
            break;
        }
        self.out = staged;
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
                return Ok(n);
            }
            match self.state {
                State::Raw => return self.inner.read(buf),
                State::Data(0) => self.state = State::Header,
                State::Data(rem) => {
                    let want = buf.len().min(usize::try_from(rem).unwrap_or(usize::MAX));
                    let n = self.inner.read(&mut buf[..want])?;
                    self.state = State::Data(rem - n as u64);
                    if n == 0 {
                        self.state = State::Raw;
                    }
                    return Ok(n);
                }
                State::SparseExt(n) => {
                    let b = self.take(BLOCK)?;
                    self.state = if b.len() < BLOCK {
                        State::Raw
                    } else if b[504] != 0 {
                        State::SparseExt(n)
                    } else {
                        State::Data(n)
                    };
                    self.out = b;
                    self.pos = 0;
                    if self.out.is_empty() {
                        return Ok(0);
                    }
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

    fn hdr(name: &str, ty: u8, size: u64) -> Vec<u8> {
        let mut h = vec![0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..108].copy_from_slice(b"0000644\0");
        h[108..116].copy_from_slice(b"0000000\0");
        h[116..124].copy_from_slice(b"0000000\0");
        h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
        h[136..148].copy_from_slice(b"00000000000\0");
        h[156] = ty;
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].fill(b' ');
        let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        h
    }

    fn read_all(v: Vec<u8>) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        Norm::new(io::Cursor::new(v)).read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn directory_and_hardlink_sizes_become_zero_and_data_passes() {
        let mut a = hdr("d/", b'5', 512);
        a.extend(hdr("d/x", b'0', 1024));
        a.extend(vec![7u8; 1024]);
        a.extend(hdr("l", b'1', 512));
        a.extend(vec![0u8; 1024]);
        let out = read_all(a.clone()).unwrap();
        assert_eq!(out.len(), a.len());
        assert_eq!(parse_size(&out[124..136]), Some(0));
        assert!(checksum_ok(&out[..512]));
        // The regular member's header and data are untouched.
        assert_eq!(out[512..2048], a[512..2048]);
        assert_eq!(parse_size(&out[2048 + 124..2048 + 136]), Some(0));
        assert!(checksum_ok(&out[2048..2560]));
    }

    #[test]
    fn a_pax_size_on_a_directory_is_zeroed_and_on_a_file_obeyed() {
        let rec = b"12 size=512\n";
        let mut a = hdr("PaxHeaders/d", b'x', rec.len() as u64);
        let mut d = rec.to_vec();
        d.resize(512, 0);
        a.extend(d);
        a.extend(hdr("d", b'5', 0));
        a.extend(hdr("after", b'0', 0));
        a.extend(vec![0u8; 1024]);
        let out = read_all(a).unwrap();
        assert_eq!(&out[512..524], b"12 size=000\n");
        // A file: the pax size says how much data follows (header says 0).
        let mut b = hdr("PaxHeaders/f", b'x', rec.len() as u64);
        let mut d = rec.to_vec();
        d.resize(512, 0);
        b.extend(d);
        b.extend(hdr("f", b'0', 0));
        b.extend(hdr("looks-like-a-header", b'0', 0)); // f's data
        b.extend(vec![0u8; 1024]);
        let out = read_all(b.clone()).unwrap();
        assert_eq!(out, b);
    }

    #[test]
    fn huge_extension_headers_are_refused_and_bad_headers_pass_through() {
        let mut a = hdr("PaxHeaders/x", b'x', MAX_EXTENSION + 1);
        a.extend(vec![0u8; 512]);
        let e = read_all(a).unwrap_err();
        assert!(e.to_string().contains("over the cap"), "{e}");
        let mut bad = hdr("d/", b'5', 512);
        bad[148] = b'9'; // checksum now wrong
        bad.extend(vec![1u8; 512]);
        assert_eq!(read_all(bad.clone()).unwrap(), bad);
        assert_eq!(
            parse_size(&[0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]),
            Some(256)
        );
    }
}
