//! `base::copy_tree`, the in-process copy of a container's tree (`copy`,
//! `copy -s`, snapshots): everything an overlay upper holds survives, and a
//! hostile tree's links are copied as links, never followed.
//! Run as root (CI does); off CI a non-root run skips loudly.

use davit_rootfs::{base::copy_tree, digest};
use davit_testkit::require_root;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::Path;

/// `mknod PATH ARGS...` (c 0 0: a whiteout; p: a FIFO).
fn mknod(p: &Path, args: &[&str]) {
    let ok = std::process::Command::new("mknod")
        .arg(p)
        .args(args)
        .status()
        .unwrap()
        .success();
    assert!(ok, "mknod {}", p.display());
}

fn chown(p: &Path, u: u32, g: u32) {
    std::os::unix::fs::lchown(p, Some(u), Some(g)).unwrap();
}

fn chmod(p: &Path, m: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
}

/// An overlay upper with one of everything.
fn upper(u: &Path) {
    std::fs::create_dir_all(u.join("etc/ro")).unwrap();
    std::fs::write(u.join("etc/hostname"), "box\n").unwrap();
    std::fs::write(u.join("etc/ro/f"), "in a read-only directory").unwrap();
    std::fs::write(u.join("big"), vec![7u8; 3 << 20]).unwrap();
    // A set-uid file of another owner, with a file capability (v2, raw).
    std::fs::write(u.join("suid"), "#!/bin/sh\n").unwrap();
    chown(&u.join("suid"), 1001, 1002);
    chmod(&u.join("suid"), 0o4755);
    let mut cap = vec![0u8; 20];
    cap[..4].copy_from_slice(&0x0200_0001u32.to_le_bytes());
    cap[4] = 1 << 2; // CAP_DAC_READ_SEARCH, permitted
    xattr::set(u.join("suid"), "security.capability", &cap).unwrap();
    xattr::set(u.join("etc/hostname"), "user.note", b"kept").unwrap();
    // Overlayfs's own: an opaque directory and a whiteout.
    std::fs::create_dir(u.join("opaque")).unwrap();
    xattr::set(u.join("opaque"), "trusted.overlay.opaque", b"y").unwrap();
    mknod(&u.join("etc/gone"), &["c", "0", "0"]);
    mknod(&u.join("fifo"), &["p"]);
    // Hardlinks, across directories.
    std::fs::hard_link(u.join("etc/hostname"), u.join("opaque/also")).unwrap();
    // Links that point out of the tree, and one that dangles.
    symlink("/etc/passwd", u.join("passwd")).unwrap();
    symlink("/", u.join("host")).unwrap();
    symlink("nowhere", u.join("dangling")).unwrap();
    std::os::unix::fs::lchown(u.join("host"), Some(1003), Some(1003)).unwrap();
    chmod(&u.join("etc/ro"), 0o555);
    chown(&u.join("etc"), 1000, 1000);
    chmod(&u.join("opaque"), 0o1777);
}

#[test]
fn a_copy_keeps_everything_an_upper_holds() {
    if !require_root("a_copy_keeps_everything_an_upper_holds") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let (from, to) = (t.path().join("upper"), t.path().join("copy"));
    std::fs::create_dir(&from).unwrap();
    upper(&from);
    chmod(&from, 0o751);
    chown(&from, 1000, 1000);
    copy_tree(&from, &to).unwrap();
    // Owners, modes, sizes, times, hashes, link targets and xattrs (the
    // record of a base) are the same, entry by entry.
    let (a, b) = (digest::tree(&from).unwrap(), digest::tree(&to).unwrap());
    assert_eq!(a.changes_from(&b), Vec::<String>::new());
    assert_eq!(a.text(), b.text());
    let md = |p: &str| std::fs::symlink_metadata(to.join(p)).unwrap();
    assert_eq!(md("").mode() & 0o7777, 0o751);
    assert_eq!(
        md("suid").mode() & 0o7777,
        0o4755,
        "set-uid survives the chown"
    );
    assert_eq!(md("suid").uid(), 1001);
    assert!(xattr::get(to.join("suid"), "security.capability")
        .unwrap()
        .is_some());
    assert_eq!(
        xattr::get(to.join("opaque"), "trusted.overlay.opaque").unwrap(),
        Some(b"y".to_vec())
    );
    assert_eq!(md("etc/gone").rdev(), 0);
    assert_eq!(md("etc/gone").mode() & libc::S_IFMT, libc::S_IFCHR);
    assert_eq!(md("fifo").mode() & libc::S_IFMT, libc::S_IFIFO);
    assert_eq!(
        md("opaque/also").ino(),
        md("etc/hostname").ino(),
        "hardlink kept"
    );
    assert_eq!(md("etc/hostname").nlink(), 2);
    assert_eq!(std::fs::read_link(to.join("host")).unwrap(), Path::new("/"));
    assert_eq!(md("host").uid(), 1003);
    assert_eq!(md("etc/ro").mode() & 0o7777, 0o555);
    assert_eq!(
        md("etc/ro").mtime(),
        std::fs::metadata(from.join("etc/ro")).unwrap().mtime()
    );
    assert_eq!(std::fs::read(to.join("big")).unwrap(), vec![7u8; 3 << 20]);
    // The links were copied, not followed: nothing of the host came along.
    assert!(md("host").file_type().is_symlink());
    assert!(md("passwd").file_type().is_symlink());
    // And the copy is not tied to the source.
    std::fs::write(to.join("etc/hostname"), "changed").unwrap();
    assert_eq!(std::fs::read(from.join("etc/hostname")).unwrap(), b"box\n");
}

#[test]
fn a_source_or_destination_that_is_a_link_is_refused() {
    if !require_root("a_source_or_destination_that_is_a_link_is_refused") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let outside = t.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("secret"), "host").unwrap();
    // The tree itself is a link to a host directory: not copied.
    symlink(&outside, t.path().join("link")).unwrap();
    let e = copy_tree(&t.path().join("link"), &t.path().join("c1")).unwrap_err();
    assert!(e.to_string().contains("cannot open"), "{e}");
    assert!(!t.path().join("c1").exists());
    // An existing destination (a link to a host directory here) is never
    // written into.
    std::fs::create_dir(t.path().join("src")).unwrap();
    std::fs::write(t.path().join("src/x"), "x").unwrap();
    symlink(&outside, t.path().join("c2")).unwrap();
    let e = copy_tree(&t.path().join("src"), &t.path().join("c2")).unwrap_err();
    assert!(e.to_string().contains("cannot mkdir"), "{e}");
    assert!(!outside.join("x").exists());
}
