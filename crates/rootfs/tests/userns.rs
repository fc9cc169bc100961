//! Unprivileged mode: a real plain user (`davit-test`, created by the test)
//! unpacks through `newuidmap`/`newgidmap` via `examples/unpack --userns`.
//! Needs root to create the user and write /etc/subuid; CI runs as root.

mod common;
use common::*;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Output;

fn unpack_as_user(u: &TestUser, f: &Fixture, archive: &std::path::Path, extra: &[&str]) -> Output {
    open_up(&f.base);
    std::fs::set_permissions(archive, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::os::unix::fs::chown(&f.dest, Some(u.uid), Some(u.gid)).unwrap();
    let mut c = as_user(u, &example_bin());
    c.arg("--userns")
        .arg("--map")
        .arg(format!("u:0:{}:65536", u.subuid))
        .arg("--map")
        .arg(format!("g:0:{}:65536", u.subgid))
        .args(extra)
        .arg(archive)
        .arg(&f.dest);
    c.output().unwrap()
}

fn null_dev() -> [u8; 512] {
    let mut h = header(b"dev/null", b'3', 0, b"", 0o666);
    h[329..337].copy_from_slice(b"0000001\0");
    h[337..345].copy_from_slice(b"0000003\0");
    fix_cksum(&mut h);
    h
}

#[test]
fn device_node_unprivileged_is_skipped_and_reported() {
    if !require_root("device_node_unprivileged_is_skipped_and_reported") {
        return;
    }
    let u = test_user();
    let f = Fixture::new();
    let mut t = Raw::default();
    let mut owned = header(b"etc/owned", b'0', 2, b"", 0o4755);
    owned[108..116].copy_from_slice(b"0000005\0");
    owned[116..124].copy_from_slice(b"0000007\0");
    fix_cksum(&mut owned);
    t.dir("./", 0o755)
        .dir("dev/", 0o755)
        .push(null_dev(), b"")
        .dir("etc/", 0o755)
        .push(owned, b"ok");
    let a = f.archive("a.tar", &t.end());
    let out = unpack_as_user(&u, &f, &a, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let skipped = &report["skipped"];
    assert_eq!(skipped.as_array().unwrap().len(), 1, "{report}");
    assert_eq!(skipped[0]["path"], "dev/null");
    assert!(!f.dest.join("dev/null").exists());
    // The kernel shifted the owners; setuid survived (chmod after chown).
    let md = std::fs::metadata(f.dest.join("etc/owned")).unwrap();
    assert_eq!(
        (md.uid(), md.gid(), md.mode() & 0o7777),
        (u.subuid + 5, u.subgid + 7, 0o4755)
    );
    let root = std::fs::metadata(&f.dest).unwrap();
    assert_eq!((root.uid(), root.gid()), (u.subuid, u.subgid));
    let pts = std::fs::metadata(f.dest.join("dev/pts")).unwrap();
    assert_eq!(
        (pts.uid(), pts.gid(), pts.is_dir()),
        (u.subuid, u.subgid, true)
    );
    f.assert_outside_unchanged();
}

#[test]
fn userns_hostile_archives_stay_inside() {
    if !require_root("userns_hostile_archives_stay_inside") {
        return;
    }
    let u = test_user();
    type Build = Box<dyn Fn(&Fixture) -> Vec<u8>>;
    let cases: Vec<(&str, Build, bool)> = vec![
        (
            "dotdot",
            Box::new(|_| Raw::default().file("../outside/evil", b"x", 0o644).end()),
            false,
        ),
        (
            "symlink-then-file",
            Box::new(|_| {
                Raw::default()
                    .symlink("evil", "../outside/secret")
                    .file("evil", b"pwned", 0o644)
                    .end()
            }),
            true,
        ),
        (
            "symlink-then-dir",
            Box::new(|f| {
                Raw::default()
                    .symlink("s", &f.outside.display().to_string())
                    .dir("s/", 0o777)
                    .end()
            }),
            true,
        ),
        (
            "hardlink-out",
            Box::new(|_| Raw::default().hardlink("hl", "../outside/secret").end()),
            false,
        ),
        (
            "root-symlink",
            Box::new(|f| {
                Raw::default()
                    .symlink("./", &f.outside.display().to_string())
                    .end()
            }),
            false,
        ),
        (
            "uid-outside-map",
            Box::new(|_| {
                let mut h = header(b"f", b'0', 0, b"", 0o644);
                h[108..116].copy_from_slice(b"0200000\0"); // 65536: the caller's own slot
                fix_cksum(&mut h);
                Raw::default().push(h, b"").end()
            }),
            false,
        ),
    ];
    for (what, build, ok) in cases {
        let f = Fixture::new();
        let a = f.archive("a.tar", &build(&f));
        let out = unpack_as_user(&u, &f, &a, &[]);
        assert_eq!(
            out.status.success(),
            ok,
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        f.assert_outside_unchanged();
    }
}

#[test]
fn userns_map_outside_subuid_fails_with_helper_error() {
    if !require_root("userns_map_outside_subuid_fails_with_helper_error") {
        return;
    }
    let u = test_user();
    let f = Fixture::new();
    let a = f.archive("a.tar", &Raw::default().file("x", b"x", 0o644).end());
    open_up(&f.base);
    std::os::unix::fs::chown(&f.dest, Some(u.uid), Some(u.gid)).unwrap();
    // A range the user does not own: newuidmap must refuse, and we must
    // notice (youki ignored the status).
    let out = as_user(&u, &example_bin())
        .args(["--userns", "--map", "b:0:3000000000:65536"])
        .arg(&a)
        .arg(&f.dest)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("Helper") && err.contains("newuidmap"), "{err}");
    assert!(!f.dest.join("x").exists());
}
