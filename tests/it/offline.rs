//! Mirrors, bundles, local imports, LXC's cache, and interop with real LXC
//! and nginx. See: issue 6 ("Offline caching and air-gapped installs").

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::*;

fn mirror_cmd(from: &str, to: &Path, key: &Path, extra: &[&str]) -> Command {
    let mut c = davit();
    c.args(["mirror", "--from", from, "--to"])
        .arg(to)
        .arg("--keyring")
        .arg(key)
        .args(extra);
    c
}

/// An upstream with two images: busybox 1.36 default and tiny, build A.
fn two_image_upstream(dir: &Path) -> PathBuf {
    let f = fixture();
    let up = dir.join("upstream");
    copy_tree(&f.tree_a, &up);
    publish_busybox(&up, &f.key, BUILD_A, &["--variant", "tiny"]);
    up
}

#[test]
fn mirror_is_verified_incremental_and_pruned() {
    let f = fixture();
    let t = tempfile::tempdir().unwrap();
    let up = two_image_upstream(t.path());
    let srv = Served::start(&up, None, &t.path().join("up.log"));
    let m = t.path().join("mirror");
    let v = json(&ok(&mut mirror_cmd(
        &srv.url,
        &m,
        &f.key.public,
        &["--keep", "1", "--json"],
    )));
    assert_eq!(v["downloaded"].as_array().unwrap().len(), 2, "{v}");
    // Upstream's index and signature are kept byte for byte.
    for n in [
        "index-system",
        "index-system.asc",
        "index-user",
        "index-user.asc",
    ] {
        assert_eq!(
            std::fs::read(m.join("meta/1.0").join(n)).unwrap(),
            std::fs::read(up.join("meta/1.0").join(n)).unwrap(),
            "{n}"
        );
    }
    // Every signature came along, so old LXC clients (one .asc per file) work too.
    for n in [
        "rootfs.tar.xz.asc",
        "meta.tar.xz.asc",
        "SHA256SUMS",
        "SHA256SUMS.asc",
    ] {
        assert!(build_dir(&m, BUILD_A).join(n).is_file(), "{n}");
    }
    ok(&mut fetch_busybox(
        &format!("file://{}", m.display()),
        &t.path().join("c1"),
        &f.key.public,
        &[],
    ));
    ok(&mut fetch_busybox(
        &format!("file://{}", m.display()),
        &t.path().join("c1"),
        &f.key.public,
        &["--variant", "tiny"],
    ));

    // A new build upstream: the second run transfers only it, then prunes the old one.
    publish_busybox(&up, &f.key, BUILD_B, &[]);
    let before = srv.requests().len();
    let v = json(&ok(&mut mirror_cmd(
        &srv.url,
        &m,
        &f.key.public,
        &["--keep", "1", "--json"],
    )));
    let second: Vec<String> = srv.requests()[before..].to_vec();
    let tarballs: Vec<&String> = second.iter().filter(|l| l.contains(".tar.xz ")).collect();
    assert_eq!(
        tarballs.len(),
        2,
        "only build B's rootfs and meta: {second:?}"
    );
    assert!(tarballs.iter().all(|l| l.contains(BUILD_B)), "{second:?}");
    assert_eq!(
        v["downloaded"],
        serde_json::json!([format!("busybox/1.36/amd64/default/{BUILD_B}")])
    );
    assert_eq!(
        v["pruned"],
        serde_json::json!([format!("busybox/1.36/amd64/default/{BUILD_A}")])
    );
    assert!(!build_dir(&m, BUILD_A).exists());
    let v = json(&ok(&mut fetch_busybox(
        &format!("file://{}", m.display()),
        &t.path().join("c1"),
        &f.key.public,
        &["--json"],
    )));
    assert_eq!(v["entry"]["manifest"]["image"]["build"], BUILD_B);
}

#[test]
fn filtered_mirror_says_not_mirrored_and_can_resign() {
    let f = fixture();
    let t = tempfile::tempdir().unwrap();
    let up = two_image_upstream(t.path());
    let server = format!("file://{}", up.display());
    let m = t.path().join("mirror");
    ok(&mut mirror_cmd(
        &server,
        &m,
        &f.key.public,
        &["--variant", "tiny"],
    ));
    // Upstream's index still lists the default variant, which is not here.
    let out = run(&mut fetch_busybox(
        &format!("file://{}", m.display()),
        &t.path().join("c"),
        &f.key.public,
        &[],
    ));
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("not mirrored there"),
        "{}",
        stderr(&out)
    );
    ok(&mut fetch_busybox(
        &format!("file://{}", m.display()),
        &t.path().join("c"),
        &f.key.public,
        &["--variant", "tiny"],
    ));

    // Re-signed with a site key: the index lists only what the mirror has.
    let m2 = t.path().join("mirror2");
    let other = &f.other;
    ok(&mut mirror_cmd(
        &server,
        &m2,
        &f.key.public,
        &[
            "--variant",
            "tiny",
            "--sign-key",
            &other.fpr,
            "--gnupg-home",
            other.home.to_str().unwrap(),
        ],
    ));
    let idx = read_to_string(&m2.join("meta/1.0/index-system"));
    assert_eq!(idx.lines().count(), 1, "{idx}");
    assert!(idx.contains(";tiny;"), "{idx}");
    ok(&mut fetch_busybox(
        &format!("file://{}", m2.display()),
        &t.path().join("c2"),
        &other.public,
        &["--variant", "tiny"],
    ));
    let out = run(&mut fetch_busybox(
        &format!("file://{}", m2.display()),
        &t.path().join("c3"),
        &f.key.public,
        &["--variant", "tiny"],
    ));
    assert_eq!(
        out.status.code(),
        Some(5),
        "the site key must be trusted explicitly: {}",
        stderr(&out)
    );
    // A tampered upstream never reaches the mirror.
    let bad = t.path().join("bad");
    copy_tree(&up, &bad);
    flip_byte(&build_dir(&bad, BUILD_A).join("rootfs.tar.xz"), 3000);
    let m3 = t.path().join("mirror3");
    let out = run(&mut mirror_cmd(
        &format!("file://{}", bad.display()),
        &m3,
        &f.key.public,
        &[],
    ));
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(!m3.join("meta/1.0/index-system").exists());
    assert!(!build_dir(&m3, BUILD_A).exists());
}

/// Tiny deterministic generator for kill delays (seed printed on failure).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

#[test]
fn killed_mirror_leaves_a_consistent_tree() {
    let f = fixture();
    let t = tempfile::tempdir().unwrap();
    let up = t.path().join("upstream");
    copy_tree(&f.tree_a, &up);
    let srv = Served::start(&up, None, &t.path().join("up.log"));
    let m = t.path().join("mirror");
    ok(&mut mirror_cmd(
        &srv.url,
        &m,
        &f.key.public,
        &["--keep", "2"],
    ));
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut rng = Lcg(seed);
    let mut killed = 0;
    for round in 0..12 {
        publish_busybox(&up, &f.key, &format!("20261110_00:{round:02}"), &[]);
        // A killed davit cannot remove its temporary GnuPG home: keep it
        // in this test's directory.
        let mut child = mirror_cmd(&srv.url, &m, &f.key.public, &["--keep", "2"])
            .env("TMPDIR", t.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.next(250)));
        if child.try_wait().unwrap().is_none() {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            )
            .unwrap();
            killed += 1;
        }
        child.wait().unwrap();
        // Whatever the moment, a client sees a complete, verifiable tree.
        let out = run(&mut fetch_busybox(
            &format!("file://{}", m.display()),
            &t.path().join(format!("c{round}")),
            &f.key.public,
            &[],
        ));
        assert!(
            out.status.success(),
            "round {round} (seed {seed}): {}",
            stderr(&out)
        );
    }
    assert!(
        killed >= 10,
        "only {killed} runs were killed mid-way (seed {seed})"
    );
    // The next full run converges and leaves no partial directories.
    ok(&mut mirror_cmd(
        &srv.url,
        &m,
        &f.key.public,
        &["--keep", "2"],
    ));
    let partial: Vec<PathBuf> = walk(&m)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".partial-")
        })
        .collect();
    assert!(partial.is_empty(), "{partial:?}");
}

#[test]
fn export_bundle_round_trip_and_tamper() {
    let f = fixture();
    let t = tempfile::tempdir().unwrap();
    let c1 = t.path().join("c1");
    ok(&mut fetch_busybox(
        &format!("file://{}", f.tree_a.display()),
        &c1,
        &f.key.public,
        &[],
    ));
    let bundle = t.path().join("busybox.davit");
    let mut c = davit();
    ok(c.args(["export", "busybox", "1.36", "amd64", "-o"])
        .arg(&bundle)
        .arg("--cache-dir")
        .arg(&c1));
    // Import on an "air-gapped" host: no server at all.
    let c2 = t.path().join("c2");
    let mut c = davit();
    let v = json(&ok(c
        .arg("import")
        .arg(&bundle)
        .arg("--cache-dir")
        .arg(&c2)
        .arg("--keyring")
        .arg(&f.key.public)
        .arg("--json")));
    assert!(
        v["entry"]["manifest"]["server"]
            .as_str()
            .unwrap()
            .starts_with("bundle "),
        "{v}"
    );
    let e1 = c1.join("v1/download/busybox/1.36/amd64/default");
    let e2 = c2.join("v1/download/busybox/1.36/amd64/default");
    assert_eq!(
        std::fs::read(e1.join("rootfs.tar.xz")).unwrap(),
        std::fs::read(e2.join("rootfs.tar.xz")).unwrap()
    );
    ok(&mut fetch_busybox(
        "https://127.0.0.1:9",
        &c2,
        &f.key.public,
        &["--offline"],
    ));
    // The bundle verifies with the same keys as a download.
    let mut c = davit();
    let out = run(c
        .arg("import")
        .arg(&bundle)
        .arg("--cache-dir")
        .arg(t.path().join("c3"))
        .arg("--no-builtin-key"));
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    // One flipped byte inside the rootfs, or inside the index, is refused.
    let data = std::fs::read(&bundle).unwrap();
    let rootfs = std::fs::read(e1.join("rootfs.tar.xz")).unwrap();
    let at = data
        .windows(64)
        .position(|w| w == &rootfs[4096..4160])
        .expect("rootfs inside the bundle");
    let idx = std::fs::read(e1.join("index-system")).unwrap();
    let at_idx = data
        .windows(idx.len())
        .position(|w| w == idx.as_slice())
        .expect("index inside the bundle");
    for (what, pos) in [("rootfs", at + 10), ("index", at_idx + 3)] {
        let bad = t.path().join(format!("bad-{what}.davit"));
        let mut d = data.clone();
        d[pos] ^= 0x01;
        std::fs::write(&bad, d).unwrap();
        let c4 = t.path().join(format!("c4-{what}"));
        let mut c = davit();
        let out = run(c
            .arg("import")
            .arg(&bad)
            .arg("--cache-dir")
            .arg(&c4)
            .arg("--keyring")
            .arg(&f.key.public));
        assert_eq!(out.status.code(), Some(5), "{what}: {}", stderr(&out));
        assert!(
            !c4.join("v1/download/busybox").exists(),
            "{what}: an altered bundle reached the cache"
        );
    }
}

#[test]
fn local_rootfs_and_meta_import() {
    let f = fixture();
    let t = tempfile::tempdir().unwrap();
    let bd = build_dir(&f.tree_a, BUILD_A);
    let import = |dir: &Path, cache: &Path, extra: &[&str]| {
        let mut c = davit();
        c.args(["import", "--rootfs"])
            .arg(dir.join("rootfs.tar.xz"))
            .arg("--meta")
            .arg(dir.join("meta.tar.xz"));
        c.args([
            "--dist",
            "busybox",
            "--release",
            "1.36",
            "--arch",
            "amd64",
            "--build",
            "local1",
            "--cache-dir",
        ])
        .arg(cache);
        c.arg("--keyring").arg(&f.key.public).args(extra);
        c
    };
    // Signed pair (.asc beside each file): verified.
    let v = json(&ok(&mut import(&bd, &t.path().join("c1"), &["--json"])));
    assert_eq!(v["entry"]["manifest"]["verified"], "detached");
    assert_eq!(v["entry"]["manifest"]["signer"], f.key.fpr);
    // Unsigned pair: refused without --no-validate, accepted (loudly) with it.
    let bare = t.path().join("bare");
    std::fs::create_dir(&bare).unwrap();
    for n in ["rootfs.tar.xz", "meta.tar.xz"] {
        std::fs::copy(bd.join(n), bare.join(n)).unwrap();
    }
    let out = run(&mut import(&bare, &t.path().join("c2"), &[]));
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(stderr(&out).contains("--no-validate"), "{}", stderr(&out));
    assert!(!t.path().join("c2/v1/download/busybox").exists());
    let out = ok(&mut import(
        &bare,
        &t.path().join("c2"),
        &["--no-validate", "--json"],
    ));
    assert!(stderr(&out).contains("signatures are NOT checked"));
    assert_eq!(json(&out)["entry"]["manifest"]["verified"], "none");
    // A bad signature is still refused.
    let badsig = t.path().join("badsig");
    copy_tree(&bd, &badsig);
    std::fs::copy(bd.join("meta.tar.xz.asc"), badsig.join("rootfs.tar.xz.asc")).unwrap();
    let out = run(&mut import(&badsig, &t.path().join("c3"), &[]));
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
}

#[test]
fn cache_list_and_prune() {
    let f = fixture();
    let t = tempfile::tempdir().unwrap();
    let cache = t.path().join("c");
    let up = two_image_upstream(t.path());
    let server = format!("file://{}", up.display());
    ok(&mut fetch_busybox(&server, &cache, &f.key.public, &[]));
    ok(&mut fetch_busybox(
        &server,
        &cache,
        &f.key.public,
        &["--variant", "tiny"],
    ));
    let list = |c: &Path| {
        let mut cmd = davit();
        json(&ok(cmd
            .args(["cache", "list", "--json", "--cache-dir"])
            .arg(c)))
    };
    let v = list(&cache);
    assert_eq!(v["images"].as_array().unwrap().len(), 2, "{v}");
    assert!(v["images"][0]["size"].as_u64().unwrap() > 100_000);
    let mut cmd = davit();
    let v = json(&ok(cmd
        .args([
            "cache",
            "prune",
            "--older-than",
            "1d",
            "--json",
            "--cache-dir",
        ])
        .arg(&cache)));
    assert_eq!(v["removed"].as_array().unwrap().len(), 0);
    let mut cmd = davit();
    let v = json(&ok(cmd
        .args(["cache", "prune", "--json", "--cache-dir"])
        .arg(&cache)));
    assert_eq!(v["removed"].as_array().unwrap().len(), 2);
    assert_eq!(list(&cache)["images"].as_array().unwrap().len(), 0);
}

// ---- interop with real LXC and nginx (root, as in CI) ----

fn require_lxc(test: &str) -> bool {
    if !require_root(test) {
        return false;
    }
    let have = Command::new("lxc-create")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !have && std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: lxc-create is missing; .ci/run installs the lxc package");
    }
    if !have {
        eprintln!("!!! SKIPPING {test}: install the lxc package");
    }
    have
}

/// LXC's download template with its own lxcpath and cache, trusting the
/// test CA through a WGETRC file (nothing system-wide changes).
fn lxc_create(
    dir: &Path,
    name: &str,
    server: &str,
    ca: Option<&Path>,
    extra: &[&str],
) -> std::process::Output {
    let lxcpath = dir.join("lxcpath");
    std::fs::create_dir_all(&lxcpath).unwrap();
    let mut c = Command::new("lxc-create");
    c.arg("-P")
        .arg(&lxcpath)
        .args([
            "-n", name, "-t", "download", "--", "--server", server, "-d", "busybox", "-r", "1.36",
            "-a", "amd64",
        ])
        .args(extra);
    c.env("LXC_CACHE_PATH", dir.join("lxc-cache"))
        .env("NO_PROXY", "127.0.0.1")
        .stdin(Stdio::null());
    if let Some(ca) = ca {
        let rc = dir.join("wgetrc");
        std::fs::write(&rc, format!("ca_certificate = {}\n", ca.display())).unwrap();
        c.env("WGETRC", rc);
    }
    run(&mut c)
}

fn host_port(url: &str) -> String {
    url.trim_start_matches("https://")
        .trim_start_matches("http://")
        .to_string()
}

/// Removes LXC's `lxc.pivot` cgroups if this test created them.
struct PivotGuard(Vec<PathBuf>);
impl PivotGuard {
    fn new() -> PivotGuard {
        let existing = walk(Path::new("/sys/fs/cgroup"))
            .into_iter()
            .filter(|p| p.ends_with("lxc.pivot"))
            .collect();
        PivotGuard(existing)
    }
}
impl Drop for PivotGuard {
    fn drop(&mut self) {
        if let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") {
            for h in rd.flatten() {
                let p = h.path().join("lxc.pivot");
                if p.is_dir() && !self.0.contains(&p) {
                    let _ = std::fs::remove_dir(&p);
                }
            }
        }
    }
}

fn check_lxc_container(dir: &Path, name: &str, out: &std::process::Output) {
    assert!(
        out.status.success(),
        "lxc-create {name}: {}\n{}",
        stdout(out),
        stderr(out)
    );
    let ct = dir.join("lxcpath").join(name);
    assert!(ct.join("rootfs/bin/busybox").is_file());
    assert!(read_to_string(&ct.join("config")).contains("lxc.arch = x86_64"));
    assert_eq!(
        read_to_string(&ct.join("rootfs/etc/hostname")).trim(),
        name,
        "LXC substituted LXC_NAME"
    );
    // And LXC runs it.
    let _pivot = PivotGuard::new();
    let o = run(Command::new("lxc-execute")
        .arg("-P")
        .arg(dir.join("lxcpath"))
        .args([
            "-n",
            name,
            "-s",
            "lxc.net.0.type=empty",
            "-s",
            "lxc.apparmor.profile=unconfined",
            "--",
            "/bin/busybox",
            "echo",
            "works",
        ]));
    assert!(
        stdout(&o).contains("works"),
        "lxc-execute {name}: {}\n{}",
        stdout(&o),
        stderr(&o)
    );
}

struct Nginx(Child);
impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// nginx with its own config in `dir`, serving `tree` over HTTPS.
fn nginx(dir: &Path, tree: &Path, tls: &Tls) -> (Nginx, String) {
    let port = free_port();
    let conf = dir.join("nginx.conf");
    let d = dir.display();
    std::fs::write(
        &conf,
        format!(
            "daemon off; master_process off; pid {d}/nginx.pid; error_log {d}/nginx-error.log;\n\
             events {{}}\n\
             http {{ access_log {d}/nginx-access.log; client_body_temp_path {d}/tmp; proxy_temp_path {d}/tmp; fastcgi_temp_path {d}/tmp; uwsgi_temp_path {d}/tmp; scgi_temp_path {d}/tmp;\n\
               server {{ listen 127.0.0.1:{port} ssl; ssl_certificate {}; ssl_certificate_key {}; root {}; location / {{ autoindex off; }} }} }}\n",
            tls.cert.display(),
            tls.key.display(),
            tree.display()
        ),
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("tmp")).unwrap();
    let child = Command::new("nginx")
        .arg("-c")
        .arg(&conf)
        .arg("-p")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let up = wait_for(Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    assert!(
        up,
        "nginx did not start: {}",
        std::fs::read_to_string(dir.join("nginx-error.log")).unwrap_or_default()
    );
    (Nginx(child), format!("127.0.0.1:{port}"))
}

#[test]
fn real_lxc_creates_from_davit_serve_mirror_and_nginx() {
    if !require_lxc("real_lxc_creates_from_davit_serve_mirror_and_nginx") {
        return;
    }
    let f = fixture();
    let t = tempfile::tempdir().unwrap();
    let tls = make_tls(t.path());
    // 1. davit serve over HTTPS.
    let srv = Served::start(
        &f.tree_a,
        Some((&tls.cert, &tls.key)),
        &t.path().join("serve.log"),
    );
    let out = lxc_create(
        t.path(),
        "from-serve",
        &host_port(&srv.url),
        Some(&tls.ca),
        &[],
    );
    check_lxc_container(t.path(), "from-serve", &out);
    // 2. A davit mirror tree, served by davit serve.
    let m = t.path().join("mirror");
    ok(&mut mirror_cmd(
        &srv.url,
        &m,
        &f.key.public,
        &["--ca-cert", tls.ca.to_str().unwrap()],
    ));
    let msrv = Served::start(
        &m,
        Some((&tls.cert, &tls.key)),
        &t.path().join("mirror.log"),
    );
    let d2 = t.path().join("m");
    let out = lxc_create(
        &d2,
        "from-mirror",
        &host_port(&msrv.url),
        Some(&tls.ca),
        &[],
    );
    check_lxc_container(&d2, "from-mirror", &out);
    // 3. The same mirror tree served by nginx, for LXC and for davit.
    let (_ngx, addr) = nginx(t.path(), &m, &tls);
    let d3 = t.path().join("n");
    let out = lxc_create(&d3, "from-nginx", &addr, Some(&tls.ca), &[]);
    check_lxc_container(&d3, "from-nginx", &out);
    ok(&mut fetch_busybox(
        &format!("https://{addr}"),
        &t.path().join("c"),
        &f.key.public,
        &["--ca-cert", tls.ca.to_str().unwrap()],
    ));
    let log = read_to_string(&t.path().join("nginx-access.log"));
    assert!(
        log.contains("//images/busybox/1.36/amd64/default/"),
        "LXC's // paths reached nginx: {log}"
    );
}

#[test]
fn lxc_cache_seed_works_with_the_server_stopped() {
    if !require_lxc("lxc_cache_seed_works_with_the_server_stopped") {
        return;
    }
    let f = fixture();
    let t = tempfile::tempdir().unwrap();
    let mut srv = Served::start(&f.tree_a, None, &t.path().join("serve.log"));
    let lxc_cache = t.path().join("lxc-cache");
    let v = json(&ok(&mut fetch_busybox(
        &srv.url,
        &t.path().join("c"),
        &f.key.public,
        &[
            "--lxc-cache",
            "--lxc-cache-dir",
            lxc_cache.to_str().unwrap(),
            "--json",
        ],
    )));
    let seeded = PathBuf::from(v["lxc_cache"].as_str().unwrap());
    assert_eq!(
        seeded,
        lxc_cache.join("download/busybox/1.36/amd64/default")
    );
    assert_eq!(
        read_to_string(&seeded.join("build_id")),
        format!("{BUILD_A}\n")
    );
    for n in [
        "rootfs.tar.xz",
        "config",
        "config-user",
        "excludes-user",
        "expiry",
        "templates",
        "create-message",
    ] {
        assert!(seeded.join(n).is_file(), "{n}");
    }
    let url = srv.url.clone();
    srv.stop();
    let out = lxc_create(
        t.path(),
        "offline",
        &host_port(&url),
        None,
        &["--force-cache"],
    );
    assert!(
        stdout(&out).contains("Using image from local cache"),
        "{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    check_lxc_container(t.path(), "offline", &out);
}
