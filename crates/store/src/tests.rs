//! The store on a temporary layout: staging and rename, references and
//! prune, the cut-short rename, and the lifecycle of a real container
//! unpacked from a real tarball (as root: CI runs these as root, and
//! under `CI=true` a missing root fails instead of skipping).

use std::fs;
use std::path::{Path, PathBuf};

use davit_rootfs::base::ImageId;
use davit_run::config::Backend;
use davit_run::ContainerConfig;

use crate::{
    save_config, Access, Container, CopyRequest, CreateRequest, ErrorKind, ImageFiles, Layout,
    Quiet, Store, PENDING_CONFIG,
};

/// A config that loads: privileged, so it needs no id map.
fn config(name: &str, rootfs: impl Into<PathBuf>) -> ContainerConfig {
    let mut c = ContainerConfig::new(name, rootfs);
    c.privileged = true;
    c
}

struct Env {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    store: Store,
}

fn env(access: Access) -> Env {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_owned();
    let mut l = Layout::new(
        root.join("lib/containers"),
        root.join("run"),
        PathBuf::from("/nonexistent/davit"),
    );
    l.net_config = root.join("no-net-config.toml");
    fs::create_dir_all(&l.runtime).unwrap();
    let store = Store::with_access(l, access);
    Env {
        _tmp: tmp,
        root,
        store,
    }
}

/// Whether the test may go on as root; fails under CI=true without it.
fn root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var("CI").is_err(),
        "this test needs root, and CI=true says root is there"
    );
    eprintln!("SKIPPED: needs root");
    false
}

struct TestImage {
    dir: PathBuf,
    tarball: PathBuf,
}

impl ImageFiles for TestImage {
    fn image(&self) -> ImageId {
        ImageId {
            dist: "testos".into(),
            release: "1".into(),
            arch: "amd64".into(),
            variant: "default".into(),
            build: "20261202_00:00".into(),
        }
    }
    fn rootfs(&self) -> PathBuf {
        self.tarball.clone()
    }
    fn rootfs_sha256(&self) -> String {
        "0".repeat(64)
    }
    fn meta_file(&self, name: &str, _unprivileged: bool) -> Option<PathBuf> {
        let p = self.dir.join(name);
        p.is_file().then_some(p)
    }
}

/// A plain tar with `/etc/hostname`, `/etc/hosts` and a program.
fn image(at: &Path, truncated: bool) -> TestImage {
    fs::create_dir_all(at).unwrap();
    let tarball = at.join("rootfs.tar");
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |path: &str, data: &[u8], mode: u32| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_cksum();
        b.append_data(&mut h, path, data).unwrap();
    };
    add("etc/hostname", b"LXC_NAME\n", 0o644);
    add("etc/hosts", b"127.0.1.1 LXC_NAME\n", 0o644);
    add("bin/hello", &[7u8; 4096], 0o755);
    let mut bytes = b.into_inner().unwrap();
    if truncated {
        bytes.truncate(700);
    }
    fs::write(&tarball, bytes).unwrap();
    fs::write(at.join("templates"), "/etc/hostname\n/etc/hosts\n").unwrap();
    fs::write(at.join("create-message"), "welcome\n").unwrap();
    TestImage {
        dir: at.to_owned(),
        tarball,
    }
}

fn dot_entries(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.') && !n.ends_with(".lock"))
        .collect()
}

fn dir_request(name: &str) -> CreateRequest {
    CreateRequest {
        name: name.into(),
        privileged: true,
        storage: Some(Backend::Dir),
        ..CreateRequest::default()
    }
}

#[test]
fn a_create_is_committed_whole_and_a_failed_one_leaves_nothing() {
    if !root() {
        return;
    }
    let e = env(Access::Root);
    let img = image(&e.root.join("img"), false);
    let made = e
        .store
        .begin_create(dir_request("web"))
        .unwrap()
        .finish(&img, &Quiet)
        .unwrap();
    let containers = &e.store.layout().containers;
    assert_eq!(made.dir, containers.join("web"));
    assert_eq!(
        fs::read_to_string(made.dir.join("rootfs/etc/hostname")).unwrap(),
        "web\n",
        "the image's template was not filled"
    );
    assert_eq!(made.message.as_deref(), Some("welcome\n"));
    assert!(made.default_pids);
    let cfg = e.store.container("web").unwrap().load_config().unwrap();
    assert_eq!(cfg.name, "web");
    assert_eq!(cfg.limits.pids, Some(davit_run::config::DEFAULT_PIDS));
    assert!(
        dot_entries(containers).is_empty(),
        "{:?}",
        dot_entries(containers)
    );

    // The same name again: refused without --force, nothing touched.
    let again = e.store.begin_create(dir_request("web")).err().unwrap();
    assert_eq!(again.kind(), ErrorKind::Usage);
    assert!(again.to_string().contains("already exists"), "{again}");

    // A truncated archive: an error, and no container and no staging left.
    let bad = image(&e.root.join("bad-img"), true);
    let err = e
        .store
        .begin_create(dir_request("broken"))
        .unwrap()
        .finish(&bad, &Quiet)
        .expect_err("a truncated tarball was unpacked");
    assert!(matches!(err.kind(), ErrorKind::Rootfs(_)), "{err:?}");
    assert!(!containers.join("broken").exists());
    assert!(
        dot_entries(containers).is_empty(),
        "{:?}",
        dot_entries(containers)
    );
    assert_eq!(
        e.store.container("broken").err().unwrap().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(e.store.names(), ["web"]);
}

#[test]
fn copy_snapshot_restore_rename_and_destroy_of_a_dir_container() {
    if !root() {
        return;
    }
    let e = env(Access::Root);
    let img = image(&e.root.join("img"), false);
    e.store
        .begin_create(dir_request("web"))
        .unwrap()
        .finish(&img, &Quiet)
        .unwrap();
    let c = e.store.container("web").unwrap();

    // copy: the clone names itself in /etc/hostname and /etc/hosts.
    let copied = e
        .store
        .copy(&CopyRequest {
            from: "web".into(),
            to: "web2".into(),
            snapshot: false,
        })
        .unwrap();
    assert_eq!(
        fs::read_to_string(copied.dir.join("rootfs/etc/hostname")).unwrap(),
        "web2\n"
    );
    assert_eq!(copied.config.rootfs, copied.dir.join("rootfs"));
    let snap_of_dir = e.store.copy(&CopyRequest {
        from: "web".into(),
        to: "web3".into(),
        snapshot: true,
    });
    assert_eq!(snap_of_dir.err().unwrap().kind(), ErrorKind::Usage);
    assert!(!e.store.layout().containers.join("web3").exists());

    // snapshot, change, restore: the tree is back as it was.
    let hello = c.rootfs().join("bin/hello");
    let s = e.store.snapshot("web", None).unwrap();
    assert_eq!(s.snap, "snap0");
    fs::write(&hello, b"changed").unwrap();
    e.store.restore("web", "snap0").unwrap();
    assert_eq!(fs::read(&hello).unwrap(), vec![7u8; 4096]);
    let names: Vec<String> = e
        .store
        .snapshots("web")
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["snap0"]);
    assert_eq!(
        e.store.restore("web", "nope").err().unwrap().kind(),
        ErrorKind::NotFound
    );
    e.store.delete_snapshot("web", "snap0").unwrap();
    assert!(e.store.snapshots("web").unwrap().is_empty());

    // rename: the directory, the config's paths and the hostname move.
    e.store.rename("web", "www").unwrap();
    let w = e.store.container("www").unwrap();
    let cfg = w.load_config().unwrap();
    assert_eq!(cfg.name, "www");
    assert_eq!(cfg.rootfs, w.dir.join("rootfs"));
    assert_eq!(
        fs::read_to_string(w.rootfs().join("etc/hostname")).unwrap(),
        "www\n"
    );
    assert!(e.store.container("web").is_err());
    assert_eq!(
        e.store.rename("www", "web2").err().unwrap().kind(),
        ErrorKind::Usage
    );

    // destroy: nothing left of it.
    e.store.destroy("www", false).unwrap();
    assert!(!w.dir.exists());
    assert_eq!(e.store.names(), ["web2"]);
}

/// A base in the store's bases directory, made the way a create makes one.
fn base(store: &Store, build: &str) -> davit_rootfs::base::Base {
    use davit_rootfs::base::BaseMeta;
    let bs = store.bases();
    fs::create_dir_all(bs.root()).unwrap();
    let mut image = image_id();
    image.build = build.into();
    let key = image.base_key(None);
    let lock = bs.lock(&key).unwrap();
    let st = bs.staging(&key, &lock).unwrap();
    fs::write(st.join("rootfs/file"), b"x").unwrap();
    let rec = davit_rootfs::digest::tree(&st.join("rootfs")).unwrap();
    let meta = BaseMeta {
        version: 1,
        image,
        source_sha256: String::new(),
        shifted: None,
        userns: false,
        digest: String::new(),
        entries: 0,
        bytes: 0,
        created_at: 0,
    };
    bs.commit(&key, &st, meta, &rec, &lock).unwrap()
}

fn image_id() -> ImageId {
    ImageId {
        dist: "testos".into(),
        release: "1".into(),
        arch: "amd64".into(),
        variant: "default".into(),
        build: "b".into(),
    }
}

#[test]
fn prune_keeps_a_base_a_live_container_uses_and_removes_the_rest() {
    let e = env(Access::Root);
    let used = base(&e.store, "used");
    let stale = base(&e.store, "stale");
    assert!(e.store.has_base(&used.meta.image, None));
    // A container whose config names the base, and one that is gone but
    // left its reference behind.
    let dir = e.store.layout().containers.join("web");
    fs::create_dir_all(&dir).unwrap();
    let mut cfg = config("web", dir.join("rootfs"));
    cfg.storage.backend = Backend::Overlay;
    cfg.storage.base = Some(used.rootfs());
    cfg.storage.upper = Some(dir.join("overlay/upper"));
    cfg.storage.work = Some(dir.join("overlay/work"));
    save_config(&dir.join("config.toml"), &cfg).unwrap();
    drop(e.store.add_base_ref(&used.rootfs(), &dir).unwrap());
    let gone = e.store.layout().containers.join("gone");
    drop(e.store.add_base_ref(&stale.rootfs(), &gone).unwrap());

    let p = e.store.prune_bases().unwrap();
    assert_eq!(p.removed, std::slice::from_ref(&stale.key));
    assert_eq!(p.in_use, [(used.key.clone(), vec![dir.clone()])]);
    assert!(used.dir.exists() && !stale.dir.exists());
    e.store.verify_base(&used).unwrap();

    // The container drops its reference: the base goes at the next prune.
    e.store.unref_base(&used.rootfs(), &dir).unwrap();
    let p = e.store.prune_bases().unwrap();
    assert_eq!(p.removed, std::slice::from_ref(&used.key));
    assert!(!used.dir.exists());
}

#[test]
fn verify_base_finds_a_changed_file() {
    let e = env(Access::Root);
    let b = base(&e.store, "v");
    e.store.verify_base(&b).unwrap();
    fs::write(b.rootfs().join("file"), b"y").unwrap();
    let err = e
        .store
        .verify_base(&b)
        .expect_err("a changed base verified");
    assert_eq!(
        err.kind(),
        ErrorKind::Rootfs(davit_rootfs::ErrorKind::Corrupt),
        "{err}"
    );
}

#[test]
fn a_rename_cut_short_is_finished_on_the_next_load() {
    let t = tempfile::tempdir().unwrap();
    // Killed after the directory moved: the pending config names it.
    let c = Container {
        name: "new".into(),
        dir: t.path().join("new"),
    };
    fs::create_dir(&c.dir).unwrap();
    save_config(&c.config_path(), &config("old", "/x")).unwrap();
    save_config(&c.dir.join(PENDING_CONFIG), &config("new", "/y")).unwrap();
    assert_eq!(c.load_config().unwrap().name, "new");
    assert!(!c.dir.join(PENDING_CONFIG).exists());
    // Killed before: the pending config is dropped, the old one stays.
    let o = Container {
        name: "old".into(),
        dir: t.path().join("old"),
    };
    fs::create_dir(&o.dir).unwrap();
    save_config(&o.config_path(), &config("old", "/x")).unwrap();
    save_config(&o.dir.join(PENDING_CONFIG), &config("new", "/y")).unwrap();
    assert_eq!(o.load_config().unwrap().name, "old");
    assert!(!o.dir.join(PENDING_CONFIG).exists());
}

#[test]
fn save_config_replaces_the_file_whole_and_leaves_no_temporary() {
    use std::os::unix::fs::PermissionsExt;
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("config.toml");
    save_config(&p, &config("a", "/x")).unwrap();
    save_config(&p, &config("b", "/x")).unwrap();
    assert_eq!(ContainerConfig::load(&p).unwrap().name, "b");
    assert_eq!(
        fs::metadata(&p).unwrap().permissions().mode() & 0o777,
        0o644
    );
    let names: Vec<_> = fs::read_dir(t.path()).unwrap().flatten().collect();
    assert_eq!(names.len(), 1, "a temporary file was left");
}

#[test]
fn a_plain_user_without_a_map_cannot_unpack_privileged() {
    let e = env(Access::UserNs);
    let err = e
        .store
        .unpack_into(
            &crate::UnpackRequest {
                tarball: e.root.join("x.tar"),
                dir: e.root.join("out"),
                maps: None,
                exclude_file: None,
                max_file_size: None,
            },
            &Quiet,
        )
        .expect_err("unpacked unshifted as a plain user");
    assert_eq!(err.kind(), ErrorKind::Usage);
    assert!(!e.root.join("out").exists());
}
