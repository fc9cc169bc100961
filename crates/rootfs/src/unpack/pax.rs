//! PAX and GNU extension headers: finding a member's raw pax records and
//! reading their values (numbers, times, sparse keys).

#[derive(Default)]
pub(super) struct PaxSparse {
    pub(super) major: Option<u64>,
    pub(super) minor: Option<u64>,
    pub(super) realsize: Option<u64>,
    pub(super) name: Option<Vec<u8>>,
    pub(super) other: bool,
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
pub(super) fn parse_pax(d: &[u8]) -> Option<Vec<(&[u8], &[u8])>> {
    Some(crate::tarnorm::last_of_each(
        crate::tarnorm::parse_records(d)?.into_iter(),
    ))
}

pub(super) fn pax_num(v: &[u8]) -> Option<u64> {
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// Parses a pax time (`123.456789`, possibly negative) to (sec, nsec).
pub(super) fn pax_time(v: &[u8]) -> Option<(i64, u32)> {
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
