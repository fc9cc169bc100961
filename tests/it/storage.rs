//! Overlay storage end to end: one verified base per build, shared by every
//! container of that build; `copy`, `cache verify`, `check --verify` and
//! `cache prune`. As root (an idmapped base) and as a plain user (a base
//! shifted into its range). See: issue 7.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use crate::common::*;
use crate::run::Env;

fn du(p: &Path) -> u64 {
    let out = ok(Command::new("du").args(["-s", "-B1"]).arg(p));
    stdout(&out)
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

fn base_digest(cmd: &mut Command) -> String {
    let v = json(&ok(cmd.args(["cache", "verify", "--json"])));
    let bases: Vec<&serde_json::Value> = v
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["kind"] == "base")
        .collect();
    assert_eq!(bases.len(), 1, "{v}");
    assert_eq!(bases[0]["ok"], true, "{v}");
    bases[0]["digest"].as_str().unwrap().to_owned()
}

fn visible_entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn twenty_overlay_containers_share_one_base_and_stay_apart() {
    if !require_root("twenty_overlay_containers_share_one_base_and_stay_apart") {
        return;
    }
    let env = Env::new("ovl20");
    let bases = env.path().join("bases");
    let containers = env.path().join("containers");
    let mut keys = Vec::new();
    for i in 0..20 {
        let out = env.create(&format!("o{i}"), &["--json"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let v = json(&out);
        assert_eq!(v["storage"], "overlay", "{v}");
        assert_eq!(v["base"]["idmapped"], true, "{v}");
        assert_eq!(
            v["base"]["made"],
            i == 0,
            "only the first create unpacks: {v}"
        );
        keys.push(v["base"]["key"].as_str().unwrap().to_owned());
    }
    keys.dedup();
    assert_eq!(keys.len(), 1, "one base for all: {keys:?}");
    let base_root = bases.join(&keys[0]).join("rootfs");
    // A raw base holds setuid-root programs of the image: no other host
    // user may reach it.
    for d in [bases.clone(), bases.join(&keys[0])] {
        let mode = std::fs::metadata(&d).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700, "{} is {mode:o}", d.display());
    }
    // The base keeps the image's own ids (it is idmapped at start).
    assert_eq!(
        std::fs::symlink_metadata(base_root.join("bin/busybox"))
            .unwrap()
            .uid(),
        0
    );
    let digest = base_digest(&mut env.davit());

    for i in 0..20 {
        let script = format!(
            "echo o{i} > /root/mine && echo extra >> /etc/hosts && rm /bin/ls && cat /root/mine"
        );
        let out = ok(env
            .davit()
            .args(["start", &format!("o{i}"), "--", "sh", "-c", &script]));
        assert_eq!(stdout(&out).trim(), format!("o{i}"));
    }
    // Each sees only its own writes; the base saw none.
    let out = ok(env.davit().args([
        "start",
        "o7",
        "--",
        "sh",
        "-c",
        "cat /root/mine; grep -c extra /etc/hosts; test -e /bin/ls && echo has-ls || echo no-ls; cat /etc/hostname",
    ]));
    assert_eq!(
        stdout(&out).split_whitespace().collect::<Vec<_>>(),
        ["o7", "1", "no-ls", "o7"],
        "o7 saw its own write and its own hostname template"
    );
    assert!(base_root.join("bin/ls").exists() || base_root.join("bin/ls").is_symlink());
    assert!(!base_root.join("root/mine").exists());
    assert!(!read_to_string(&base_root.join("etc/hosts")).contains("extra"));
    assert_eq!(base_digest(&mut env.davit()), digest, "the base changed");

    // The host sees the container's writes under its map, in its upper.
    let up = containers.join("o3/overlay/upper");
    let md = std::fs::symlink_metadata(up.join("root/mine")).unwrap();
    assert_eq!((md.uid(), md.gid()), (1000000, 1000000));
    let wh = std::fs::symlink_metadata(up.join("bin/ls")).unwrap();
    assert!(
        std::os::unix::fs::FileTypeExt::is_char_device(&wh.file_type()) && wh.rdev() == 0,
        "a deletion is a whiteout in the upper"
    );
    // Init runs as the mapped root; inside, the base's root files are root's.
    ok(env.davit().args(["start", "-d", "o0"]));
    let v = json(&ok(env.davit().args(["info", "o0", "--json"])));
    assert_eq!(v["storage"], "overlay");
    let pid = v["pid"].as_i64().unwrap();
    let status = read_to_string(Path::new(&format!("/proc/{pid}/status")));
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("1000000")),
        "{status}"
    );
    let out = ok(env.davit().args([
        "attach",
        "o0",
        "--",
        "sh",
        "-c",
        "stat -c %u /bin/busybox; grep ' / ' /proc/self/mounts",
    ]));
    let s = stdout(&out);
    assert!(s.starts_with("0\n") && s.contains(" / overlay "), "{s}");
    ok(env.davit().args(["stop", "o0", "-k"]));
    assert_eq!(base_digest(&mut env.davit()), digest, "the base changed");

    // Disk: the base once, and small upper dirs.
    let base_bytes = du(&bases);
    let mut total = 0;
    for i in 0..20 {
        let n = du(&containers.join(format!("o{i}")));
        assert!(n < 128 * 1024, "o{i} uses {n} bytes");
        total += n;
    }
    assert!(
        total < base_bytes,
        "20 containers use {total} bytes, the base {base_bytes}"
    );
    eprintln!("base {base_bytes} bytes; 20 containers {total} bytes in all");

    // Destroy keeps the base until prune; nothing is left mounted or orphaned.
    for i in 0..20 {
        ok(env.davit().args(["destroy", &format!("o{i}")]));
    }
    assert!(env.mounts_under().is_empty(), "{:?}", env.mounts_under());
    assert!(visible_entries(&containers).is_empty());
    assert_eq!(visible_entries(&bases), keys, "the base stays until prune");
    let v = json(&ok(env.davit().args(["cache", "prune", "--json"])));
    assert_eq!(v["bases"]["removed"], serde_json::json!(keys), "{v}");
    assert!(visible_entries(&bases).is_empty());
}

#[test]
fn prune_keeps_bases_in_use_verify_catches_tampering_and_copy_shares_the_base() {
    if !require_root("prune_keeps_bases_in_use_verify_catches_tampering_and_copy_shares_the_base") {
        return;
    }
    let env = Env::new("ovlprune");
    let bases = env.path().join("bases");
    for n in ["a", "b"] {
        let out = env.create(n, &[]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let key = visible_entries(&bases).pop().unwrap();
    ok(env.davit().args(["destroy", "a"]));
    let v = json(&ok(env.davit().args(["cache", "prune", "--json"])));
    assert_eq!(v["bases"]["removed"], serde_json::json!([]), "{v}");
    assert_eq!(v["bases"]["in_use"][0][0], key.as_str(), "{v}");
    assert!(bases.join(&key).is_dir(), "a base in use was pruned");

    // copy --snapshot: the clone shares the base and starts from b's upper.
    ok(env
        .davit()
        .args(["start", "b", "--", "sh", "-c", "echo from-b > /root/note"]));
    let v = json(&ok(env.davit().args([
        "copy",
        "b",
        "c",
        "--snapshot",
        "--json",
    ])));
    assert_eq!(v["storage"], "overlay", "{v}");
    let out = ok(env.davit().args([
        "start",
        "c",
        "--",
        "sh",
        "-c",
        "cat /root/note /etc/hostname; hostname; grep -cw c /etc/hosts; grep -cw b /etc/hosts; echo from-c > /root/note",
    ]));
    assert_eq!(
        stdout(&out).split_whitespace().collect::<Vec<_>>(),
        ["from-b", "c", "c", "1", "0"],
        "the clone carries b's upper and is renamed in /etc/hostname and /etc/hosts"
    );
    let out = ok(env.davit().args(["start", "b", "--", "cat", "/root/note"]));
    assert_eq!(stdout(&out).trim(), "from-b", "the copy wrote into b");
    let v = json(&ok(env.davit().args(["cache", "list", "--json"])));
    assert_eq!(v["bases"][0]["users"].as_array().unwrap().len(), 2, "{v}");
    // A dir container has no snapshot; a full copy works.
    assert!(env.create("d", &["--storage", "dir"]).status.success());
    let out = run(env.davit().args(["copy", "d", "e", "--snapshot"]));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("dir storage"), "{}", stderr(&out));
    ok(env.davit().args(["copy", "d", "e"]));
    assert!(env.path().join("containers/e/rootfs/bin/busybox").is_file());
    let out = run(env.davit().args(["check", "--verify", "d"]));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    // A broken layer is named as the overlay step, with a way out.
    let work = env.path().join("containers/c/overlay/work");
    std::fs::rename(&work, work.with_extension("gone")).unwrap();
    let out = run(env.davit().args(["start", "c", "--", "true"]));
    assert_ne!(out.status.code(), Some(0));
    assert!(
        stderr(&out).contains("mount the overlay root") && stderr(&out).contains("ENOENT"),
        "{}",
        stderr(&out)
    );
    std::fs::rename(work.with_extension("gone"), &work).unwrap();

    // Tampering with the base is caught, by path.
    let v = json(&ok(env.davit().args(["check", "--verify", "b", "--json"])));
    assert_eq!(v["ok"], true);
    let passwd = bases.join(&key).join("rootfs/etc/passwd");
    let mut text = read_to_string(&passwd);
    text.push_str("evil:x:0:0::/:/bin/sh\n");
    std::fs::write(&passwd, text).unwrap();
    for args in [&["check", "--verify", "b"][..], &["cache", "verify"][..]] {
        let out = run(env.davit().args(args));
        assert_eq!(out.status.code(), Some(5), "{args:?}: {}", stderr(&out));
        let all = format!("{}{}", stdout(&out), stderr(&out));
        assert!(all.contains("./etc/passwd: changed"), "{args:?}: {all}");
    }

    for n in ["b", "c", "d", "e"] {
        ok(env.davit().args(["destroy", n]));
    }
    let v = json(&ok(env.davit().args(["cache", "prune", "--json"])));
    assert_eq!(v["bases"]["removed"], serde_json::json!([key]), "{v}");
    assert!(visible_entries(&bases).is_empty());
    assert!(visible_entries(&env.path().join("containers")).is_empty());
    assert!(env.mounts_under().is_empty(), "{:?}", env.mounts_under());
}

#[test]
fn plain_user_overlay_shares_a_base_shifted_into_its_range() {
    if !require_root("plain_user_overlay_shares_a_base_shifted_into_its_range") {
        return;
    }
    let u = plain_user();
    let us = UserSetup::new("uovl");
    let home = &us.home;
    let d = |args: &[&str]| us.davit(args);
    let mut base_key = String::new();
    for n in ["u1", "u2"] {
        let out = us.create(n, &["--json"]);
        assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
        let v = json(&out);
        assert_eq!(v["storage"], "overlay", "{v}");
        assert_eq!(v["base"]["idmapped"], false, "{v}");
        base_key = v["base"]["key"].as_str().unwrap().to_owned();
    }
    let data = home.join("data/davit");
    let base_root = data.join("bases").join(&base_key).join("rootfs");
    assert_eq!(
        std::fs::symlink_metadata(base_root.join("bin/busybox"))
            .unwrap()
            .uid(),
        u.subuid,
        "a plain user's base is shifted into its range"
    );
    let digest = base_digest(&mut u.davit(home));

    ok(&mut d(&["start", "-d", "u1"]));
    let v = json(&ok(&mut d(&["info", "u1", "--json"])));
    let pid = v["pid"].as_i64().unwrap();
    let status = read_to_string(Path::new(&format!("/proc/{pid}/status")));
    assert!(
        status.lines().any(|l| l.starts_with("Uid:")
            && l.split_whitespace().nth(1) == Some(u.subuid.to_string().as_str())),
        "{status}"
    );
    ok(&mut d(&[
        "attach",
        "u1",
        "--",
        "sh",
        "-c",
        "echo mine > /root/f && rm /bin/ls",
    ]));
    let md = std::fs::symlink_metadata(data.join("containers/u1/overlay/upper/root/f")).unwrap();
    assert_eq!((md.uid(), md.gid()), (u.subuid, u.subuid));
    let out = ok(&mut d(&[
        "start",
        "u2",
        "--",
        "sh",
        "-c",
        "test -e /root/f && echo leak; test -e /bin/ls && echo has-ls; id -u",
    ]));
    assert_eq!(
        stdout(&out).split_whitespace().collect::<Vec<_>>(),
        ["has-ls", "0"]
    );
    ok(&mut d(&["stop", "u1", "-k"]));
    assert_eq!(base_digest(&mut u.davit(home)), digest, "the base changed");
    ok(&mut d(&["check", "--verify", "u2"]));

    // A plain user's copy is made inside its user namespace: the clone has
    // u1's file, its own name, and the same owners on the host.
    ok(&mut d(&["copy", "u1", "u3", "--snapshot"]));
    let out = ok(&mut d(&[
        "start",
        "u3",
        "--",
        "sh",
        "-c",
        "cat /root/f /etc/hostname; grep -cw u3 /etc/hosts",
    ]));
    assert_eq!(
        stdout(&out).split_whitespace().collect::<Vec<_>>(),
        ["mine", "u3", "1"]
    );
    let md = std::fs::symlink_metadata(data.join("containers/u3/overlay/upper/root/f")).unwrap();
    assert_eq!(md.uid(), u.subuid);

    for n in ["u1", "u2", "u3"] {
        ok(&mut d(&["destroy", n]));
    }
    assert!(visible_entries(&data.join("containers")).is_empty());
    assert!(data.join("bases").join(&base_key).is_dir());
    let v = json(&ok(&mut d(&["cache", "prune", "--json"])));
    assert_eq!(v["bases"]["removed"], serde_json::json!([base_key]), "{v}");
    assert!(
        visible_entries(&data.join("bases")).is_empty(),
        "the subuid-owned base was removed inside the user namespace"
    );
}

/// Where the bases' filesystem cannot be idmapped (ext2 here), root falls
/// back to a base shifted into the container's range, says so, and the
/// container works the same. The ext2 image is loop-mounted in a private
/// mount namespace that lives only as long as this test's shell.
#[test]
fn without_idmapped_mounts_root_falls_back_to_a_shifted_base_and_says_so() {
    if !require_root("without_idmapped_mounts_root_falls_back_to_a_shifted_base_and_says_so") {
        return;
    }
    let env = Env::new("ovlfb");
    let img = env.path().join("ext2.img");
    let mnt = env.path().join("ext2");
    std::fs::create_dir(&mnt).unwrap();
    ok(Command::new("truncate").args(["-s", "64M"]).arg(&img));
    ok(Command::new("mkfs.ext2").arg("-q").arg(&img));
    let f = fixture();
    let server = format!("file://{}", f.tree_a.display());
    let create = busybox_create_args("fb", &server, &f.key.public)
        .iter()
        .map(|a| format!("'{}'", a.to_string_lossy()))
        .collect::<Vec<_>>()
        .join(" ")
        + " --json";
    let bin = davit_bin().display().to_string();
    let script = format!(
        "set -e; mount --make-rprivate /; mount -o loop '{img}' '{mnt}'; \
         '{bin}' {create} > '{out}'; \
         '{bin}' start fb -- sh -c 'echo ok > /root/f; stat -c %u /bin/busybox'; \
         '{bin}' check --verify fb; '{bin}' destroy fb; '{bin}' cache prune; echo bases:; ls '{mnt}/bases'",
        img = img.display(),
        mnt = mnt.display(),
        out = env.path().join("create.json").display(),
    );
    let c = env.davit();
    let mut sh = Command::new("unshare");
    sh.args(["-m", "sh", "-c", &script])
        .envs(c.get_envs().filter_map(|(k, v)| v.map(|v| (k, v))))
        .env("DAVIT_BASES_DIR", mnt.join("bases"));
    let out = run(&mut sh);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let v: serde_json::Value =
        serde_json::from_str(&read_to_string(&env.path().join("create.json"))).unwrap();
    assert_eq!(v["storage"], "overlay", "{v}");
    assert_eq!(v["base"]["idmapped"], false, "{v}");
    assert_eq!(v["base"]["shifted"]["uid"][0]["host"], 1000000, "{v}");
    let note = v["note"].as_str().unwrap_or_default();
    assert!(
        note.contains("shifted") && note.contains("mount_setattr"),
        "the fallback and its reason are said: {v}"
    );
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.first().copied(), Some("0"), "{lines:?}");
    assert!(
        lines.iter().any(|l| l.contains("matches its record")),
        "{lines:?}"
    );
    assert_eq!(
        lines.last().copied(),
        Some("bases:"),
        "prune removed the shifted base: {lines:?}"
    );
    assert!(env.mounts_under().is_empty(), "{:?}", env.mounts_under());
}
