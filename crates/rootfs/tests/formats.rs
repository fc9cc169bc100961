//! Every supported container format unpacks to the same tree: plain tar,
//! multi-block xz, concatenated xz streams, concatenated gzip members and
//! concatenated zstd frames (as made by the system tools).

mod common;
use common::*;
use davit_rootfs::{unpack, IdMap, Quiet, UnpackOptions};
use std::io::Write;
use std::process::{Command, Stdio};

fn compress(tool: &str, args: &[&str], data: &[u8]) -> Vec<u8> {
    let mut c = Command::new(tool)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut i = c.stdin.take().unwrap();
    let d = data.to_vec();
    let w = std::thread::spawn(move || i.write_all(&d).unwrap());
    let out = c.wait_with_output().unwrap();
    w.join().unwrap();
    assert!(out.status.success(), "{tool}");
    out.stdout
}

/// Compresses the two halves separately and concatenates the results.
fn concat(tool: &str, args: &[&str], data: &[u8]) -> Vec<u8> {
    let (a, b) = data.split_at(data.len() / 2 + 7);
    let mut v = compress(tool, args, a);
    v.extend(compress(tool, args, b));
    v
}

#[test]
fn all_formats_give_the_same_tree() {
    if !require_root("all_formats_give_the_same_tree") {
        return;
    }
    // A tar of a few MB with varied members (more than one xz block).
    let mut t = Raw::default();
    t.dir("./", 0o755).dir("d/", 0o750);
    let mut seed: u32 = 1;
    for i in 0..40 {
        let len = 1000 + (i * 37_123) % 200_000;
        let data: Vec<u8> = (0..len)
            .map(|_| {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (seed >> 24) as u8 & 0x1f
            })
            .collect();
        t.file(&format!("d/f{i}"), &data, 0o644);
    }
    t.symlink("d/link", "f1").hardlink("d/hard", "d/f2");
    let tar = t.end();

    let variants: Vec<(&str, Vec<u8>)> = vec![
        ("plain.tar", tar.clone()),
        (
            "multiblock.tar.xz",
            compress("xz", &["-T2", "--block-size=65536", "-c"], &tar),
        ),
        ("concat.tar.xz", concat("xz", &["-T1", "-c"], &tar)),
        (
            "concat-multiblock.tar.xz",
            concat("xz", &["-T2", "--block-size=100000", "-c"], &tar),
        ),
        (
            "crc32-multiblock.tar.xz",
            compress(
                "xz",
                &["-T2", "--block-size=70000", "--check=crc32", "-c"],
                &tar,
            ),
        ),
        (
            "sha256-multiblock.tar.xz",
            compress(
                "xz",
                &["-T2", "--block-size=70000", "--check=sha256", "-c"],
                &tar,
            ),
        ),
        ("concat.tar.gz", concat("gzip", &["-c"], &tar)),
        ("concat.tar.zst", concat("zstd", &["-q", "-c"], &tar)),
    ];
    let mut first: Option<std::collections::BTreeMap<std::path::PathBuf, String>> = None;
    for (name, bytes) in variants {
        let f = Fixture::new();
        let a = f.archive(name, &bytes);
        for threads in [1, 0] {
            let _ = std::fs::remove_dir_all(&f.dest);
            std::fs::create_dir(&f.dest).unwrap();
            let opts = UnpackOptions {
                maps: Some(IdMap::single(1_000_000, 65536)),
                threads,
                ..Default::default()
            };
            let r = unpack(&a, &f.dest, &opts, &Quiet).unwrap_or_else(|e| panic!("{name}: {e:?}"));
            assert_eq!(r.entries, 44, "{name}");
            let mut m = Default::default();
            // dev/ and dev/pts are made at unpack time (mtime = now).
            snap(&f.dest, &f.dest, &mut m, &|p| p.starts_with("dev"));
            match &first {
                None => first = Some(m),
                Some(want) => {
                    let diff: Vec<_> = want
                        .keys()
                        .chain(m.keys())
                        .filter(|k| want.get(*k) != m.get(*k))
                        .collect();
                    assert!(diff.is_empty(), "{name} threads={threads}: {diff:?} differ");
                }
            }
        }
        f.assert_outside_unchanged();
    }
}

#[test]
fn corrupt_multiblock_xz_is_an_error() {
    if !require_root("corrupt_multiblock_xz_is_an_error") {
        return;
    }
    let mut t = Raw::default();
    for i in 0..20 {
        let data: Vec<u8> = (0..100_000u32)
            .map(|x| (x.wrapping_mul(2_654_435_761) >> (i % 7 + 20)) as u8)
            .collect();
        t.file(&format!("f{i}"), &data, 0o644);
    }
    let tar = t.end();
    let good = compress("xz", &["-T2", "--block-size=200000", "-c"], &tar);
    // Flip bytes in the middle of the compressed data of a later block, and
    // separately in the index at the end: both must be errors.
    for at in [good.len() / 2, good.len() - 30] {
        let mut bad = good.clone();
        bad[at] ^= 0x55;
        let f = Fixture::new();
        let a = f.archive("bad.tar.xz", &bad);
        let opts = UnpackOptions {
            maps: Some(IdMap::single(1_000_000, 65536)),
            threads: 2,
            ..Default::default()
        };
        let e = unpack(&a, &f.dest, &opts, &Quiet).expect_err("corrupt xz must fail");
        assert_eq!(
            e.kind(),
            davit_rootfs::ErrorKind::Corrupt,
            "flip at {at}: {e:?}"
        );
        f.assert_outside_unchanged();
    }
}
