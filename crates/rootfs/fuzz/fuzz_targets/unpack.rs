//! Feeds arbitrary bytes as a tar archive through the whole entry handler
//! (root mode, shifted ids) into a scratch dir, then checks that nothing
//! outside the destination changed. Run as root:
//! `RUSTC_BOOTSTRAP=1 cargo fuzz run unpack` from crates/rootfs.
#![no_main]

use davit_rootfs::{unpack, IdMap, Quiet, UnpackOptions};
use libfuzzer_sys::fuzz_target;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

struct Scratch {
    base: PathBuf,
    dest: PathBuf,
    archive: PathBuf,
    before: Vec<String>,
}

/// Everything under `base` except `dest` and the archive, with metadata.
fn listing(base: &Path) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let mut ents: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
        ents.sort();
        for p in ents {
            let rel = p.strip_prefix(root).unwrap();
            if rel == Path::new("dest") || rel == Path::new("in.tar") {
                continue;
            }
            let md = std::fs::symlink_metadata(&p).unwrap();
            let data = if md.is_file() { std::fs::read(&p).unwrap() } else { Vec::new() };
            out.push(format!("{} {:o} {} {} {} {:?}", rel.display(), md.mode(), md.uid(), md.nlink(), md.mtime(), data));
            if md.is_dir() {
                walk(root, &p, out);
            }
        }
    }
    walk(base, base, &mut out);
    // A sentinel in the parent of base catches `../` escapes one level up.
    out.push(format!("{:?}", std::fs::read_dir(base.parent().unwrap()).unwrap().count()));
    out
}

fn scratch() -> &'static Scratch {
    static S: OnceLock<Scratch> = OnceLock::new();
    S.get_or_init(|| {
        let top = std::env::temp_dir().join(format!("davit-fuzz-{}", std::process::id()));
        let base = top.join("base");
        std::fs::create_dir_all(base.join("outside/sub")).unwrap();
        std::fs::write(base.join("outside/secret"), b"secret").unwrap();
        let before = listing(&base);
        Scratch {
            dest: base.join("dest"),
            archive: base.join("in.tar"),
            base,
            before,
        }
    })
}

/// Repairs the checksum of every block that looks like a ustar header, so
/// mutations get past the first check.
fn fix_checksums(data: &mut [u8]) {
    for h in data.chunks_exact_mut(512) {
        if &h[257..262] == b"ustar" {
            h[148..156].copy_from_slice(b"        ");
            let sum: u32 = h.iter().map(|&b| b as u32).sum();
            h[148..156].copy_from_slice(format!("{:06o}\0 ", sum).as_bytes());
        }
    }
}

fuzz_target!(|input: &[u8]| {
    let s = scratch();
    // First byte: flags (bit 0: repair tar checksums, bit 1: two threads,
    // which sends multi-block xz through the parallel block decoder); the
    // rest is the archive.
    let Some((&flags, rest)) = input.split_first() else { return };
    let mut data = rest.to_vec();
    if flags & 1 == 1 {
        fix_checksums(&mut data);
    }
    let _ = std::fs::remove_dir_all(&s.dest);
    std::fs::create_dir(&s.dest).unwrap();
    std::fs::write(&s.archive, &data).unwrap();
    let opts = UnpackOptions {
        maps: Some(IdMap::single(1_000_000, 65536)),
        excludes: vec!["./ex".into()],
        skip_devices: false,
        threads: if flags & 2 == 2 { 2 } else { 1 },
        // The default member cap (64 GiB): sparse holes cost nothing.
        ..Default::default()
    };
    let _ = unpack(&s.archive, &s.dest, &opts, &Quiet);
    assert_eq!(listing(&s.base), s.before, "something outside dest changed");
});
