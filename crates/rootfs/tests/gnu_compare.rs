//! davit vs GNU tar on the same tarball, compared field by field.
//!
//! The tarball is made by GNU tar itself (`--xattrs -S`, so pax format with
//! sparse 1.0) from a tree with setuid/setgid files, file capabilities,
//! POSIX ACLs (access and default), hardlinks, names and link targets over
//! 100 bytes, a sparse file, a fifo, device nodes, symlinks, odd directory
//! modes, many owners and nanosecond mtimes.
//!
//! GNU tar runs as `tar --numeric-owner --xattrs --xattrs-include='*' -xpf`
//! inside `unshare --map-users/--map-groups` with the same map, so the
//! kernel does its shifting. A userns cannot mknod, so device nodes are
//! `--exclude`d from that tar run. Choice: in root mode davit creates them
//! and they are compared against GNU tar run as real root (no userns) with
//! the map's offset added to their owners; in user mode davit skips them and
//! must report exactly those paths as skipped.

mod common;
use common::*;
use davit_rootfs::{unpack, IdMap, Quiet, UnpackOptions};
use std::collections::BTreeSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

const DEVICES: [&str; 2] = ["dev/null", "dev/loop0"];

const BUILD: &str = r#"
set -eu
mkdir tree && cd tree
mkdir -p bin etc/acldir usr/lib run dev/pts tmp secret odd
printf su > bin/su; chmod 4755 bin/su
printf sg > bin/sg; chown 0:5 bin/sg; chmod 2755 bin/sg
printf ping > bin/ping; setcap cap_net_raw+ep bin/ping
printf both > bin/both; chown 0:0 bin/both; chmod 6750 bin/both; setcap cap_sys_admin,cap_chown+eip bin/both
ln bin/su bin/su-link
printf shared > usr/a; chown 1000:1000 usr/a; ln usr/a usr/b; ln usr/a usr/lib/c
printf acl > etc/acl; setfacl -m u:5:r,g:7:rw etc/acl
setfacl -m u:6:rwx etc/acldir; setfacl -d -m u:5:rx,g:9:r etc/acldir
printf x > etc/userx; setfattr -n user.foo -v bar etc/userx; setfattr -n trusted.t -v 1 etc/userx
A=$(printf 'a%.0s' $(seq 1 80)); B=$(printf 'b%.0s' $(seq 1 90))
mkdir -p long/$A; printf long > long/$A/$B
ln -s /long/$A/$B longlink
ln long/$A/$B long/$A/hard-$B
truncate -s 10M sparse; printf x | dd of=sparse bs=1 seek=5000000 conv=notrunc status=none
mkfifo -m 0620 run/fifo; chown 4:4 run/fifo
mknod -m 0666 dev/null c 1 3; mknod -m 0660 dev/loop0 b 7 0; chown 0:6 dev/loop0
ln -s usr/lib lib; ln -s /usr/lib abslib; chown -h 7:7 lib
chmod 1777 tmp; chown 3:3 secret; chmod 0700 secret; chmod 0511 odd; chmod 2775 run
printf s > secret/in; chown 65534:65534 secret/in; chmod 0400 secret/in
printf big > usr/lib/hi; chown 65535:65535 usr/lib/hi
find . -exec touch -h -d '2020-01-02 03:04:05.123456789' {} +
touch -h -d '2021-05-06 07:08:09.987654321' bin/su lib tmp .
cd ..
tar --xattrs --xattrs-include='*' -S --numeric-owner -cpf src.tar -C tree .
"#;

fn build(base: &Path) -> PathBuf {
    let out = Command::new("sh")
        .arg("-c")
        .arg(BUILD)
        .current_dir(base)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let a = base.join("src.tar");
    std::fs::set_permissions(&a, std::fs::Permissions::from_mode(0o644)).unwrap();
    a
}

/// A userns cannot mknod: GNU tar there leaves the devices out.
fn device_excludes() -> Vec<String> {
    DEVICES.iter().map(|d| format!("--exclude=./{d}")).collect()
}

fn assert_same(davit: &Path, tar: &Path, skip: &BTreeSet<&str>) {
    let (a, ga) = describe(davit, skip);
    let (b, gb) = describe(tar, skip);
    let mut diffs = Vec::new();
    for k in a.keys().chain(b.keys()).collect::<BTreeSet<_>>() {
        if a.get(k) != b.get(k) {
            diffs.push(format!(
                "{}\n  davit: {:?}\n  tar:   {:?}",
                k.display(),
                a.get(k),
                b.get(k)
            ));
        }
    }
    assert!(
        diffs.is_empty(),
        "{} differences:\n{}",
        diffs.len(),
        diffs.join("\n")
    );
    assert_eq!(ga, gb, "hardlink groups differ");
    assert!(ga.len() >= 3, "hardlinks present: {ga:?}");
    assert!(a.len() > 30, "tree is populated");
}

#[test]
fn gnu_tar_matches_root_mode() {
    if !require_root("gnu_tar_matches_root_mode") {
        return;
    }
    let tmp = tempfile::Builder::new()
        .prefix("davit-cmp-")
        .tempdir()
        .unwrap();
    let base = tmp.path();
    let archive = build(base);
    let (host_u, host_g) = (1_000_000u32, 1_100_000u32);
    let maps =
        IdMap::parse_spec(&[format!("u:0:{host_u}:65536"), format!("g:0:{host_g}:65536")]).unwrap();
    let d_davit = base.join("davit");
    let d_tar = base.join("tar");
    std::fs::create_dir(&d_davit).unwrap();
    std::fs::create_dir(&d_tar).unwrap();
    let opts = UnpackOptions {
        maps: Some(maps),
        ..Default::default()
    };
    let report = unpack(&archive, &d_davit, &opts, &Quiet).unwrap();
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    tar_in_userns(None, host_u, host_g, &archive, &d_tar, &device_excludes());
    let skip: BTreeSet<&str> = DEVICES.into_iter().collect();
    assert_same(&d_davit, &d_tar, &skip);

    // Device nodes: GNU tar as real root, owners shifted by hand.
    let d_real = base.join("real");
    std::fs::create_dir(&d_real).unwrap();
    let out = Command::new("tar")
        .args(["--numeric-owner", "--xattrs", "--xattrs-include=*", "-xpf"])
        .arg(&archive)
        .arg("-C")
        .arg(&d_real)
        .args(DEVICES.iter().map(|d| format!("./{d}")))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for d in DEVICES {
        let a = std::fs::symlink_metadata(d_davit.join(d)).unwrap();
        let b = std::fs::symlink_metadata(d_real.join(d)).unwrap();
        assert_eq!(
            (
                a.mode(),
                a.rdev(),
                a.uid(),
                a.gid(),
                a.mtime(),
                a.mtime_nsec()
            ),
            (
                b.mode(),
                b.rdev(),
                b.uid() + host_u,
                b.gid() + host_g,
                b.mtime(),
                b.mtime_nsec()
            ),
            "{d}"
        );
    }
}

#[test]
fn gnu_tar_matches_userns_mode() {
    if !require_root("gnu_tar_matches_userns_mode") {
        return;
    }
    let u = test_user();
    let tmp = tempfile::Builder::new()
        .prefix("davit-cmp-")
        .tempdir()
        .unwrap();
    let base = tmp.path();
    let archive = build(base);
    open_up(base);
    let d_davit = base.join("davit");
    let d_tar = base.join("tar");
    std::fs::create_dir(&d_davit).unwrap();
    std::fs::create_dir(&d_tar).unwrap();
    std::os::unix::fs::chown(&d_davit, Some(u.uid), Some(u.gid)).unwrap();
    let out = as_user(&u, &example_bin())
        .arg("--userns")
        .arg("--map")
        .arg(format!("u:0:{}:65536", u.subuid))
        .arg("--map")
        .arg(format!("g:0:{}:65536", u.subgid))
        .arg(&archive)
        .arg(&d_davit)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "davit as {}: {}",
        u.name,
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut skipped: Vec<&str> = report["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["path"].as_str().unwrap())
        .collect();
    skipped.sort();
    let mut want = DEVICES.to_vec();
    want.sort();
    assert_eq!(skipped, want, "device nodes are skipped and reported");
    tar_in_userns(
        Some(&u),
        u.subuid,
        u.subgid,
        &archive,
        &d_tar,
        &device_excludes(),
    );
    let skip: BTreeSet<&str> = DEVICES.into_iter().collect();
    assert_same(&d_davit, &d_tar, &skip);
}

#[test]
fn gnu_tar_acls_text_form_is_applied_and_shifted() {
    if !require_root("gnu_tar_acls_text_form_is_applied_and_shifted") {
        return;
    }
    // `tar --acls` stores SCHILY.acl.* text instead of the raw xattr.
    let tmp = tempfile::Builder::new()
        .prefix("davit-acl-")
        .tempdir()
        .unwrap();
    let base = tmp.path();
    // Ids without a host name are stored numerically; ids with one (5 is
    // `games`, 7 is `lp` on Debian) are stored as names.
    let script = r#"set -eu
mkdir -p t/d n/d; printf x > t/f; printf x > n/f
setfacl -m u:4242:r,g:4343:rw t/f; setfacl -d -m u:4244:rx t/d
setfacl -m u:5:r,g:7:rw n/f; setfacl -d -m u:5:rx n/d
tar --acls --numeric-owner -cf num.tar -C t .
tar --acls -cf named.tar -C n ."#;
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(base)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let maps = IdMap::single(1_000_000, 65536);
    let opts = UnpackOptions {
        maps: Some(maps),
        ..Default::default()
    };
    let d = base.join("num");
    std::fs::create_dir(&d).unwrap();
    let r = unpack(&base.join("num.tar"), &d, &opts, &Quiet).unwrap();
    assert!(r.skipped.is_empty(), "{:?}", r.skipped);
    let acl = |p: &Path, def: bool| {
        let mut c = Command::new("getfacl");
        c.args(["-n", "-c", "-p"]);
        if def {
            c.arg("-d");
        }
        String::from_utf8(c.arg(p).output().unwrap().stdout).unwrap()
    };
    let f = acl(&d.join("f"), false);
    assert!(
        f.contains("user:1004242:r--") && f.contains("group:1004343:rw-"),
        "{f}"
    );
    let dd = acl(&d.join("d"), true);
    assert!(dd.contains("user:1004244:r-x"), "{dd}");

    // Named qualifiers cannot be resolved safely: reported, not applied
    // (uids 5/6 and gid 7 have names on Debian hosts: games, man, lp).
    let d = base.join("named");
    std::fs::create_dir(&d).unwrap();
    let r = unpack(&base.join("named.tar"), &d, &opts, &Quiet).unwrap();
    let mut skipped: Vec<&str> = r.skipped.iter().map(|s| s.path.as_str()).collect();
    skipped.sort();
    assert_eq!(skipped, ["d", "f"], "{:?}", r.skipped);
}
