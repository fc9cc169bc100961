//! Member names: cleaned like GNU tar, joined, made printable or C strings,
//! and the two errors that name a member or a path (a bad entry, a failed write).

use crate::error::Error;
use std::ffi::CString;
use std::io;

/// An entry name for messages and reports: lossy UTF-8 with control and
/// invisible format characters escaped (`text::printable`), so an archive
/// cannot drive the terminal of whoever reads the error (issue 17).
pub(super) fn lossy(b: &[u8]) -> String {
    crate::text::printable(&String::from_utf8_lossy(b), false).into_owned()
}

pub(super) fn cstr(b: &[u8]) -> Option<CString> {
    CString::new(b.to_vec()).ok()
}

/// Splits a member name into components: leading `/` and `.` components are
/// dropped (as GNU tar does), `..` is refused. `Err(())` means `..`.
pub(super) fn clean(name: &[u8]) -> std::result::Result<Vec<&[u8]>, ()> {
    let mut out = Vec::new();
    for c in name.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err(()),
            c => out.push(c),
        }
    }
    Ok(out)
}

pub(super) fn join(comps: &[&[u8]]) -> Vec<u8> {
    comps.join(&b'/')
}

/// A write step on `path` failed.
pub(super) fn werr(step: &'static str, path: &[u8], source: io::Error) -> Error {
    Error::Write {
        step,
        path: lossy(path),
        source,
    }
}

/// The member `entry` at archive offset `offset` is malformed.
pub(super) fn bad(entry: &str, offset: u64, why: &'static str) -> Error {
    Error::BadEntry {
        entry: entry.to_owned(),
        offset,
        why,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_names() {
        assert_eq!(clean(b"/a//./b/").unwrap(), vec![&b"a"[..], b"b"]);
        assert!(clean(b"a/../b").is_err());
        assert!(clean(b"./").unwrap().is_empty());
        assert!(clean(b"..").is_err());
    }
}
