//! What a long-lived monitor keeps mapped once its container runs.
//!
//! A monitor does a start's whole setup (id maps, cgroups, mounts, the
//! network) and then only waits: for init, on the console, for a signal.
//! The pages of its binary that the setup ran stay mapped, and every
//! monitor's RSS counted them in full (about 3 MiB of its 5.3 MiB).
//! [`clean_ranges`] picks the mappings of the binary that hold nothing of
//! the process's own: read-only, private, and no anonymous (copy-on-write)
//! page. Dropping their page-table entries (`sys::drop_clean_exe_pages`)
//! loses nothing: a later access faults the same bytes back in from the
//! file, which is a sealed memfd no one can write. Mappings that were
//! written once (the relocated `.data.rel.ro`, read-only now) keep their
//! private pages and are left alone.
#![forbid(unsafe_code)]

/// The address ranges `[start, end)` in `smaps` (the text of
/// `/proc/self/smaps`) that map the file `dev`:`ino` (device numbers as
/// major, minor) read-only and privately and hold no anonymous page.
pub(crate) fn clean_ranges(smaps: &str, dev: (u64, u64), ino: u64) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    // The mapping being read, if it is one of the file's read-only ones.
    let mut current: Option<(usize, usize)> = None;
    let mut clean = false;
    let mut finish = |current: &mut Option<(usize, usize)>, clean: bool| {
        if let (Some(r), true) = (current.take(), clean) {
            out.push(r);
        }
    };
    for line in smaps.lines() {
        if let Some(head) = mapping_header(line) {
            finish(&mut current, clean);
            clean = false;
            let p = head.perms;
            let read_only_private = p.starts_with('r') && p.ends_with('p') && !p.contains('w');
            if head.ino == ino && head.dev == dev && read_only_private {
                current = Some(head.range);
            }
            continue;
        }
        if current.is_some() {
            if let Some(kb) = line.strip_prefix("Anonymous:") {
                clean = kb.trim().trim_end_matches("kB").trim() == "0";
            }
        }
    }
    finish(&mut current, clean);
    out
}

/// A mapping's header line in smaps.
#[derive(Debug, PartialEq)]
struct Header<'a> {
    range: (usize, usize),
    perms: &'a str,
    dev: (u64, u64),
    ino: u64,
}

/// The header line `START-END PERMS OFFSET MAJ:MIN INODE [PATH]`; `None`
/// for the field lines below it (`Rss:       12 kB`).
fn mapping_header(line: &str) -> Option<Header<'_>> {
    let mut f = line.split_ascii_whitespace();
    let (s, e) = f.next()?.split_once('-')?;
    let range = (
        usize::from_str_radix(s, 16).ok()?,
        usize::from_str_radix(e, 16).ok()?,
    );
    let perms = f.next()?;
    if perms.len() != 4 {
        return None;
    }
    let _offset = f.next()?;
    let (maj, min) = f.next()?.split_once(':')?;
    let dev = (
        u64::from_str_radix(maj, 16).ok()?,
        u64::from_str_radix(min, 16).ok()?,
    );
    let ino = f.next()?.parse().ok()?;
    Some(Header {
        range,
        perms,
        dev,
        ino,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
55a29d5a7000-55a29d672000 r--p 00000000 00:01 9231                       /memfd:pentacle_sealed (deleted)
Size:                812 kB
Rss:                 420 kB
Anonymous:             0 kB
VmFlags: rd mr mw me sd
55a29d672000-55a29da1e000 r-xp 000ca000 00:01 9231                       /memfd:pentacle_sealed (deleted)
Rss:                2736 kB
Anonymous:             0 kB
55a29da1e000-55a29da30000 r--p 00475000 00:01 9231                       /memfd:pentacle_sealed (deleted)
Rss:                  72 kB
Anonymous:            72 kB
55a29da30000-55a29da32000 rw-p 00486000 00:01 9231                       /memfd:pentacle_sealed (deleted)
Anonymous:             8 kB
7f507e3ab000-7f507e501000 r-xp 00026000 fe:00 326279                     /usr/lib/x86_64-linux-gnu/libc.so.6
Anonymous:             0 kB
7f507e5b8000-7f507e5ba000 r-xp 00000000 00:00 0                          [vdso]
Anonymous:             0 kB
7fa0000000-7fa0001000 r-xs 00000000 00:01 9231                       /memfd:pentacle_sealed (deleted)
Anonymous:             0 kB
7fb0000000-7fb0001000 r-xp 00000000 00:01 9231                       /memfd:pentacle_sealed (deleted)
Rss:                   4 kB
";

    #[test]
    fn only_the_binarys_clean_read_only_private_mappings_are_picked() {
        let r = clean_ranges(SMAPS, (0, 1), 9231);
        // The header and text are picked; the relocated (anonymous) rodata,
        // the data, libc, the vdso and a shared mapping are not, nor a
        // mapping whose Anonymous line is missing (not known to be clean).
        assert_eq!(
            r,
            vec![
                (0x55a29d5a7000, 0x55a29d672000),
                (0x55a29d672000, 0x55a29da1e000)
            ]
        );
        // Another file's inode, or the same inode on another device: none.
        assert!(clean_ranges(SMAPS, (0, 1), 9232).is_empty());
        assert!(clean_ranges(SMAPS, (0xfe, 0), 9231).is_empty());
        assert_eq!(clean_ranges(SMAPS, (0xfe, 0), 326279).len(), 1);
    }

    #[test]
    fn a_field_line_is_not_a_header() {
        assert!(mapping_header("Rss:                2736 kB").is_none());
        assert!(mapping_header("VmFlags: rd ex mr mw me sd").is_none());
        let h = mapping_header("7f5000-7f6000 r-xp 00026000 fe:00 326279   /x").unwrap();
        let want = Header {
            range: (0x7f5000, 0x7f6000),
            perms: "r-xp",
            dev: (0xfe, 0),
            ino: 326279,
        };
        assert_eq!(h, want);
    }
}
