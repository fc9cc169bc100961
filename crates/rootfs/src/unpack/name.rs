//! Member names: cleaned like GNU tar, joined, and made printable or C strings.

use std::ffi::CString;

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
