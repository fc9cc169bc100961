//! `davit fetch`, `images`, `publish` and `serve` end to end.
//! See: issue 2 ("Foundation and `davit fetch`").

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

fn fetch_cmd(server: &str, cache: &Path, key: &Key) -> Command {
    fetch_busybox(server, cache, &key.public, &[])
}

fn entry(cache: &Path) -> PathBuf {
    cache.join("v1/download/busybox/1.36/amd64/default")
}

#[test]
fn fetch_from_file_server_caches_exact_files() {
    let f = fixture();
    let t = tempfile::tempdir().unwrap();
    let cache = t.path().join("cache");
    let out =
        ok(fetch_cmd(&format!("file://{}", f.tree_b.display()), &cache, &f.key).arg("--json"));
    let v = json(&out);
    assert_eq!(v["outcome"], "downloaded");
    assert_eq!(v["entry"]["manifest"]["image"]["build"], BUILD_B);
    assert_eq!(v["entry"]["manifest"]["verified"], "sha256sums");
    assert_eq!(v["entry"]["manifest"]["signer"], f.key.fpr);
    let mut names: Vec<String> = std::fs::read_dir(entry(&cache))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "SHA256SUMS",
            "SHA256SUMS.asc",
            "build_id",
            "config",
            "config-user",
            "create-message",
            "excludes-user",
            "expiry",
            "index-system",
            "index-system.asc",
            "last_checked",
            "manifest.json",
            "meta.tar.xz",
            "rootfs.tar.xz",
            "templates"
        ]
    );
    assert_eq!(
        read_to_string(&entry(&cache).join("build_id")),
        format!("{BUILD_B}\n")
    );
    // The cached tarballs are the published bytes.
    let bd = build_dir(&f.tree_b, BUILD_B);
    for n in [
        "rootfs.tar.xz",
        "meta.tar.xz",
        "SHA256SUMS",
        "SHA256SUMS.asc",
    ] {
        assert_eq!(
            std::fs::read(entry(&cache).join(n)).unwrap(),
            std::fs::read(bd.join(n)).unwrap(),
            "{n}"
        );
    }
    // Every device node of the image is listed for unprivileged unpack.
    let ex = read_to_string(&entry(&cache).join("excludes-user"));
    if nix::unistd::geteuid().is_root() {
        for d in ["./dev/null", "./dev/zero", "./dev/console", "./dev/ptmx"] {
            assert!(
                ex.lines().any(|l| l == d),
                "{d} missing from excludes-user: {ex}"
            );
        }
    }
    // No staging leftovers.
    assert_eq!(
        std::fs::read_dir(cache.join("v1/staging")).unwrap().count(),
        0
    );
}

#[test]
fn published_tarball_is_pax_with_dot_slash_names_and_multiblock_xz() {
    let f = fixture();
    let bd = build_dir(&f.tree_a, BUILD_A);
    let list = stdout(&ok(Command::new("tar")
        .arg("-tvJf")
        .arg(bd.join("rootfs.tar.xz"))));
    assert!(
        list.lines().all(|l| l
            .split_whitespace()
            .nth(5)
            .is_some_and(|n| n.starts_with("./"))),
        "{list}"
    );
    assert!(list.contains("./bin/busybox"), "{list}");
    if nix::unistd::geteuid().is_root() {
        assert!(
            list.lines()
                .any(|l| l.starts_with('c') && l.contains("./dev/null")),
            "{list}"
        );
    }
    let info = stdout(&ok(Command::new("xz")
        .args(["--robot", "--list"])
        .arg(bd.join("rootfs.tar.xz"))));
    let blocks: u64 = info
        .lines()
        .find(|l| l.starts_with("totals"))
        .and_then(|l| l.split('\t').nth(3))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        blocks > 1,
        "expected a multi-block xz (block size 512K): {info}"
    );
    // GNU gpg agrees with the published signatures.
    ok(Command::new("gpg")
        .env("GNUPGHOME", &f.key.home)
        .arg("--verify")
        .arg(bd.join("SHA256SUMS.asc"))
        .arg(bd.join("SHA256SUMS")));
    let idx = read_to_string(&f.tree_b.join("meta/1.0/index-system"));
    assert_eq!(
        idx,
        format!(
            "busybox;1.36;amd64;default;{BUILD_B};/images/busybox/1.36/amd64/default/{BUILD_B}/\n"
        )
    );
}

#[test]
fn https_with_test_ca_and_second_fetch_downloads_no_image() {
    let f = fixture();
    let t = tempfile::tempdir().unwrap();
    let tls = make_tls(t.path());
    let srv = Served::start(
        &f.tree_b,
        Some((&tls.cert, &tls.key)),
        &t.path().join("access.log"),
    );
    assert!(srv.url.starts_with("https://127.0.0.1:"), "{}", srv.url);
    let cache = t.path().join("cache");
    // Without the CA the TLS handshake fails, as a network error naming the URL.
    let out = run(&mut fetch_cmd(&srv.url, &cache, &f.key));
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("downloading the image index: GET https://127.0.0.1"),
        "{}",
        stderr(&out)
    );
    assert!(!entry(&cache).exists());

    let v = json(&ok(fetch_cmd(&srv.url, &cache, &f.key)
        .arg("--ca-cert")
        .arg(&tls.ca)
        .arg("--json")));
    assert_eq!(v["outcome"], "downloaded");
    assert_eq!(srv.count("rootfs.tar.xz"), 1);
    let before = srv.requests().len();
    let v = json(&ok(fetch_cmd(&srv.url, &cache, &f.key)
        .arg("--ca-cert")
        .arg(&tls.ca)
        .arg("--json")));
    assert_eq!(v["outcome"], "up-to-date");
    let second: Vec<String> = srv.requests()[before..].to_vec();
    assert_eq!(
        second.len(),
        2,
        "only the index and its signature: {second:?}"
    );
    assert!(
        second.iter().all(|l| l.contains("/meta/1.0/index-system")),
        "{second:?}"
    );
    assert_eq!(srv.count("rootfs.tar.xz"), 1);
}

#[test]
fn plain_http_works_only_with_signatures() {
    let f = fixture();
    let t = tempfile::tempdir().unwrap();
    let srv = Served::start(&f.tree_a, None, &t.path().join("log"));
    let cache = t.path().join("cache");
    ok(&mut fetch_cmd(&srv.url, &cache, &f.key));
    let out = run(fetch_cmd(&srv.url, &t.path().join("c2"), &f.key).arg("--no-validate"));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("plain http"), "{}", stderr(&out));
    // `//` in paths, as LXC clients send them, is served as `/`.
    let out =
        ok(Command::new("curl").args(["-sf", &format!("{}//meta/1.0//index-system", srv.url)]));
    assert!(stdout(&out).starts_with("busybox;1.36;"));
}

#[test]
fn serve_answers_head_and_range_and_hides_dotfiles() {
    let f = fixture();
    let t = tempfile::tempdir().unwrap();
    let srv = Served::start(&f.tree_a, None, &t.path().join("log"));
    let p = format!(
        "{}/images/busybox/1.36/amd64/default/{BUILD_A}/SHA256SUMS",
        srv.url
    );
    let full = std::fs::read(build_dir(&f.tree_a, BUILD_A).join("SHA256SUMS")).unwrap();
    let out = ok(Command::new("curl").args(["-sf", "-r", "10-", &p]));
    assert_eq!(out.stdout, &full[10..]);
    let out = ok(Command::new("curl").args(["-sfI", &p]));
    assert!(
        stdout(&out).contains(&format!("content-length: {}", full.len())),
        "{}",
        stdout(&out)
    );
    let out = run(Command::new("curl").args([
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("{}/.davit-publish.lock", srv.url),
    ]));
    assert_eq!(stdout(&out), "404");
    // wget (LXC's downloader) sends `Accept-Encoding: identity`; tower-http
    // 0.6 then stripped the extension of a missing file and served another
    // one: `index-system.7` answered with `index-system`, a missing `.asc`
    // with its tarball. A missing file must be a 404.
    for missing in [
        "/meta/1.0/index-system.7",
        &format!("/images/busybox/1.36/amd64/default/{BUILD_A}/rootfs.tar.xz.sig"),
    ] {
        let out = run(Command::new("curl").args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-H",
            "Accept-Encoding: identity",
            &format!("{}/{missing}", srv.url),
        ]));
        assert_eq!(stdout(&out), "404", "{missing}");
    }
}

/// `davit serve` never serves a dot-file, however the name is spelled, and
/// follows a symlink only while it stays in the tree: `/%2esecret` and a
/// link to the host's `/etc` were served before.
#[test]
fn serve_refuses_encoded_dot_files_and_links_out_of_the_tree() {
    let f = fixture();
    let t = tempfile::tempdir().unwrap();
    let tree = t.path().join("tree");
    copy_tree(&f.tree_a, &tree);
    std::fs::write(tree.join(".secret"), "secret").unwrap();
    std::os::unix::fs::symlink("/etc/passwd", tree.join("passwd")).unwrap();
    std::os::unix::fs::symlink("/etc", tree.join("etc")).unwrap();
    // Inside the tree, as a mirror's meta/1.0 is.
    std::os::unix::fs::symlink("images/busybox", tree.join("bb")).unwrap();
    let srv = Served::start(&tree, None, &t.path().join("log"));
    let code = |p: &str| {
        stdout(&run(Command::new("curl").args([
            "-s",
            "--path-as-is",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("{}{p}", srv.url),
        ])))
    };
    for p in [
        "/.secret",
        "/%2esecret",
        "/%2Esecret",
        "/images/%2e%2e/%2esecret",
        "/passwd",
        "/etc/hostname",
        "/etc/passwd",
    ] {
        assert_eq!(code(p), "404", "{p} was served");
    }
    assert_eq!(
        code(&format!("/bb/1.36/amd64/default/{BUILD_A}/SHA256SUMS")),
        "200",
        "a link inside the tree must still work"
    );
}

/// Each case tampers with a copy of tree B (newer than the cached A) and
/// must fail with the verification exit code, leaving the cache unchanged.
#[test]
fn tamper_matrix_fails_verification_and_keeps_cache() {
    let f = fixture();
    let t = tempfile::tempdir().unwrap();
    let cache = t.path().join("cache");
    ok(&mut fetch_cmd(
        &format!("file://{}", f.tree_a.display()),
        &cache,
        &f.key,
    ));
    let before = snapshot(&cache.join("v1/download"));
    assert!(before.contains_key("busybox/1.36/amd64/default/rootfs.tar.xz"));
    let b = |tree: &Path| build_dir(tree, BUILD_B);
    type Case = (&'static str, Box<dyn Fn(&Path)>, &'static str);
    let cases: Vec<Case> = vec![
        (
            "flipped byte in rootfs",
            Box::new(move |tr: &Path| flip_byte(&b(tr).join("rootfs.tar.xz"), 5000)),
            "sha256 of",
        ),
        (
            "flipped byte in meta",
            Box::new(move |tr: &Path| flip_byte(&b(tr).join("meta.tar.xz"), 100)),
            "sha256 of",
        ),
        (
            "flipped byte in index",
            Box::new(|tr: &Path| flip_byte(&tr.join("meta/1.0/index-system"), 3)),
            "bad signature",
        ),
        (
            "index signed by an untrusted key",
            Box::new(|tr: &Path| sign(&fixture().other, &tr.join("meta/1.0/index-system"))),
            "not trusted",
        ),
        (
            "missing index .asc",
            Box::new(|tr: &Path| {
                std::fs::remove_file(tr.join("meta/1.0/index-system.asc")).unwrap()
            }),
            "is missing",
        ),
        (
            "missing rootfs .asc without SHA256SUMS",
            Box::new(move |tr: &Path| {
                for n in ["SHA256SUMS", "SHA256SUMS.asc", "rootfs.tar.xz.asc"] {
                    std::fs::remove_file(b(tr).join(n)).unwrap();
                }
            }),
            "is missing",
        ),
        (
            "valid signature over another file (index)",
            Box::new(|tr: &Path| {
                std::fs::copy(
                    tr.join("meta/1.0/index-system.asc"),
                    tr.join("meta/1.0/index-user.asc"),
                )
                .unwrap();
                std::fs::write(
                    tr.join("meta/1.0/index-system.asc"),
                    std::fs::read(build_dir(tr, BUILD_B).join("SHA256SUMS.asc")).unwrap(),
                )
                .unwrap();
            }),
            "bad signature",
        ),
        (
            "valid signature over another file (rootfs)",
            Box::new(move |tr: &Path| {
                for n in ["SHA256SUMS", "SHA256SUMS.asc"] {
                    std::fs::remove_file(b(tr).join(n)).unwrap();
                }
                std::fs::copy(
                    b(tr).join("meta.tar.xz.asc"),
                    b(tr).join("rootfs.tar.xz.asc"),
                )
                .unwrap();
            }),
            "bad signature",
        ),
        (
            "signed SHA256SUMS that disagrees with the rootfs",
            Box::new(move |tr: &Path| {
                let p = b(tr).join("SHA256SUMS");
                let s = read_to_string(&p);
                let bad: String = s
                    .lines()
                    .map(|l| {
                        if l.ends_with("rootfs.tar.xz") {
                            format!("{}  rootfs.tar.xz\n", "ab".repeat(32))
                        } else {
                            format!("{l}\n")
                        }
                    })
                    .collect();
                std::fs::write(&p, bad).unwrap();
                sign(&fixture().key, &p);
            }),
            "does not match the signed SHA256SUMS",
        ),
    ];
    for (name, tamper, expect) in cases {
        let tree = t.path().join(name.replace(' ', "-"));
        copy_tree(&f.tree_b, &tree);
        tamper(&tree);
        let out = run(&mut fetch_cmd(
            &format!("file://{}", tree.display()),
            &cache,
            &f.key,
        ));
        assert_eq!(out.status.code(), Some(5), "{name}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(expect),
            "{name}: expected {expect:?} in {}",
            stderr(&out)
        );
        assert_eq!(
            snapshot(&cache.join("v1/download")),
            before,
            "{name}: the cache changed"
        );
        assert_eq!(
            std::fs::read_dir(cache.join("v1/staging")).unwrap().count(),
            0,
            "{name}: staging left behind"
        );
    }
    // --no-validate is the only way past, and it says so every time.
    let tree = t.path().join("novalidate");
    copy_tree(&f.tree_b, &tree);
    std::fs::remove_file(tree.join("meta/1.0/index-system.asc")).unwrap();
    let out =
        ok(fetch_cmd(&format!("file://{}", tree.display()), &cache, &f.key).arg("--no-validate"));
    assert!(
        stderr(&out).contains("signatures are NOT checked"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn dropped_connection_resumes_with_range() {
    let f = fixture();
    let t = tempfile::tempdir().unwrap();
    let srv = FaultServer::start(&f.tree_a);
    srv.fault("rootfs.tar.xz", Fault::DropAfter(100_000), 1);
    let cache = t.path().join("cache");
    let out = ok(&mut fetch_cmd(&srv.url, &cache, &f.key));
    assert_eq!(
        srv.count("rootfs.tar.xz"),
        2,
        "{:?}\n{}",
        srv.requests(),
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("retrying") && stderr(&out).contains("from byte 100000"),
        "{}",
        stderr(&out)
    );
    let bd = build_dir(&f.tree_a, BUILD_A);
    assert_eq!(
        std::fs::read(entry(&cache).join("rootfs.tar.xz")).unwrap(),
        std::fs::read(bd.join("rootfs.tar.xz")).unwrap()
    );
}

/// A server that sends an endless rootfs is stopped at the cap, once
/// (never retried), and leaves nothing in the cache; one that goes silent
/// mid-body is timed out and resumed; one that claims more than the cache's
/// filesystem can hold is refused before a byte is written.
#[test]
fn downloads_are_capped_timed_out_and_checked_against_free_space() {
    let f = fixture();
    let t = tempfile::tempdir().unwrap();
    let srv = FaultServer::start(&f.tree_a);
    let cache = t.path().join("cache");

    srv.fault("rootfs.tar.xz", Fault::Endless, 10);
    let start = Instant::now();
    let out = run(fetch_cmd(&srv.url, &cache, &f.key).args(["--max-download", "1M"]));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("larger than the 1048576 bytes allowed"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        srv.count("rootfs.tar.xz"),
        1,
        "an oversized download was retried"
    );
    assert!(start.elapsed() < Duration::from_secs(30));
    assert!(!entry(&cache).join("rootfs.tar.xz").exists());

    let srv = FaultServer::start(&f.tree_a);
    srv.fault("rootfs.tar.xz", Fault::Stall(50_000), 1);
    let start = Instant::now();
    let out = ok(fetch_cmd(&srv.url, &cache, &f.key).env("DAVIT_READ_TIMEOUT", "1"));
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(srv.count("rootfs.tar.xz"), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("from byte 50000"), "{}", stderr(&out));
    assert_eq!(
        std::fs::read(entry(&cache).join("rootfs.tar.xz")).unwrap(),
        std::fs::read(build_dir(&f.tree_a, BUILD_A).join("rootfs.tar.xz")).unwrap()
    );

    if !require_root("downloads_are_capped_timed_out_and_checked_against_free_space") {
        return;
    }
    // A 4 MiB cache filesystem (a tmpfs in a private mount namespace).
    let small = t.path().join("small");
    std::fs::create_dir(&small).unwrap();
    srv.fault("rootfs.tar.xz", Fault::ClaimLength(1 << 30), 1);
    let fetch = fetch_cmd(&srv.url, &small, &f.key);
    let mut c = Command::new("unshare");
    c.args([
        "-m",
        "sh",
        "-c",
        "mount -t tmpfs -o size=4m tmpfs \"$0\" && exec \"$@\"",
    ])
    .arg(&small)
    .arg(fetch.get_program())
    .args(fetch.get_args())
    .envs(fetch.get_envs().filter_map(|(k, v)| v.map(|v| (k, v))))
    .stdin(std::process::Stdio::null());
    let out = run(&mut c);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("more bytes are needed and the cache's filesystem has"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn server_errors_retry_5xx_but_never_4xx() {
    let f = fixture();
    let t = tempfile::tempdir().unwrap();
    let srv = FaultServer::start(&f.tree_a);
    // Two 500s on the index, then it works: 3 requests.
    srv.fault("/meta/1.0/index-system", Fault::Status(500), 2);
    ok(&mut fetch_cmd(&srv.url, &t.path().join("c1"), &f.key));
    assert_eq!(srv.count("/meta/1.0/index-system"), 3);

    // A 404 on the rootfs of a listed build is final: one request, "not
    // found" (the server is out of sync), with the step, URL and status.
    let srv = FaultServer::start(&f.tree_a);
    srv.fault("rootfs.tar.xz", Fault::Status(404), 10);
    let out = run(&mut fetch_cmd(&srv.url, &t.path().join("c2"), &f.key));
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(srv.count("rootfs.tar.xz"), 1);
    let e = stderr(&out);
    assert!(
        e.contains("downloading the rootfs: GET http://127.0.0.1")
            && e.contains("returned HTTP 404 after 0 bytes"),
        "{e}"
    );
    assert!(e.contains("the server has no such file"), "{e}");
    assert!(!entry(&t.path().join("c2")).exists());

    // A 500 that never ends: 4 tries, then the error.
    let srv = FaultServer::start(&f.tree_a);
    srv.fault("meta.tar.xz", Fault::Status(503), 100);
    let out = run(&mut fetch_cmd(&srv.url, &t.path().join("c3"), &f.key));
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert_eq!(srv.count("/meta.tar.xz"), 4);

    // A redirect is followed, and the error names where it went.
    let srv = FaultServer::start(&f.tree_a);
    srv.fault(
        "rootfs.tar.xz",
        Fault::Redirect("/elsewhere/rootfs.missing".into()),
        10,
    );
    let out = run(&mut fetch_cmd(&srv.url, &t.path().join("c4"), &f.key));
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("(redirected to http://127.0.0.1"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn killed_fetch_leaves_nothing_and_refetch_works() {
    let f = fixture();
    let t = tempfile::tempdir().unwrap();
    let srv = FaultServer::start(&f.tree_a);
    srv.fault("rootfs.tar.xz", Fault::Slow(20_000), 1);
    let cache = t.path().join("cache");
    // A killed davit cannot remove its temporary GnuPG home: keep it in
    // this test's directory.
    let mut child = fetch_cmd(&srv.url, &cache, &f.key)
        .env("TMPDIR", t.path())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let staging = cache.join("v1/staging");
    // Wait until part of the rootfs is on disk, then kill -9.
    let started = wait_for(Duration::from_secs(20), || {
        walk(&staging).iter().any(|p| {
            p.ends_with("rootfs.tar.xz")
                && std::fs::metadata(p)
                    .map(|m| m.len() > 40_000)
                    .unwrap_or(false)
        })
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    child.wait().unwrap();
    assert!(started, "the download never started");
    assert!(
        !entry(&cache).exists(),
        "a killed fetch must leave no visible entry"
    );
    let out = ok(fetch_cmd(&srv.url, &cache, &f.key).arg("--json"));
    assert_eq!(json(&out)["outcome"], "downloaded");
    assert_eq!(
        std::fs::read_dir(&staging).unwrap().count(),
        0,
        "stale staging dirs are cleaned up"
    );
    let bd = build_dir(&f.tree_a, BUILD_A);
    assert_eq!(
        std::fs::read(entry(&cache).join("rootfs.tar.xz")).unwrap(),
        std::fs::read(bd.join("rootfs.tar.xz")).unwrap()
    );
}

#[test]
fn concurrent_fetches_download_once() {
    let f = fixture();
    let t = tempfile::tempdir().unwrap();
    let srv = Served::start(&f.tree_a, None, &t.path().join("log"));
    let cache = t.path().join("cache");
    let kids: Vec<_> = (0..4)
        .map(|_| {
            fetch_cmd(&srv.url, &cache, &f.key)
                .arg("--json")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut outcomes = Vec::new();
    for k in kids {
        let out = k.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        outcomes.push(json(&out)["outcome"].as_str().unwrap().to_string());
    }
    outcomes.sort();
    assert_eq!(
        outcomes,
        ["downloaded", "up-to-date", "up-to-date", "up-to-date"]
    );
    assert_eq!(srv.count("rootfs.tar.xz"), 1, "{:?}", srv.requests());
    assert_eq!(srv.count("meta.tar.xz"), 1);
}

#[test]
fn expired_cache_is_used_when_the_server_is_down_and_offline_needs_no_network() {
    let f = fixture();
    let t = tempfile::tempdir().unwrap();
    let tree = t.path().join("tree");
    // An image that expired the moment it was published.
    publish_busybox(&tree, &f.key, BUILD_A, &["--expiry", "0s"]);
    let mut srv = Served::start(&tree, None, &t.path().join("log"));
    let url = srv.url.clone();
    let cache = t.path().join("cache");
    ok(&mut fetch_cmd(&url, &cache, &f.key));
    srv.stop();
    let out = ok(fetch_cmd(&url, &cache, &f.key).arg("--json"));
    let v = json(&out);
    assert_eq!(v["outcome"], "stale");
    let e = stderr(&out);
    assert!(
        e.contains("cannot reach the server") && e.contains("has expired"),
        "{e}"
    );
    // --force-cache / --offline: no network at all.
    for flag in ["--force-cache", "--offline"] {
        let v = json(&ok(fetch_cmd(&url, &cache, &f.key).args([flag, "--json"])));
        assert_eq!(v["outcome"], "offline");
    }
    // Offline without a cached copy: "not found", with what to do.
    let out = run(fetch_cmd(&url, &t.path().join("empty"), &f.key).arg("--offline"));
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no cached copy of busybox/1.36/amd64/default"),
        "{}",
        stderr(&out)
    );
    // With the server down and no cache: a network error.
    let out = run(&mut fetch_cmd(&url, &t.path().join("empty"), &f.key));
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
}

#[test]
fn corrupt_cache_is_refetched_never_used() {
    let f = fixture();
    let t = tempfile::tempdir().unwrap();
    let cache = t.path().join("cache");
    let server = format!("file://{}", f.tree_a.display());
    ok(&mut fetch_cmd(&server, &cache, &f.key));
    let good = std::fs::read(entry(&cache).join("rootfs.tar.xz")).unwrap();
    flip_byte(&entry(&cache).join("rootfs.tar.xz"), 1234);
    // Offline, a corrupt entry is refused with the verification code.
    let out = run(fetch_cmd(&server, &cache, &f.key).arg("--offline"));
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("the cached copy is corrupt"),
        "{}",
        stderr(&out)
    );
    // Online, it is reported and fetched again.
    let out = ok(fetch_cmd(&server, &cache, &f.key).arg("--json"));
    assert_eq!(json(&out)["outcome"], "downloaded");
    assert!(stderr(&out).contains("corrupt"), "{}", stderr(&out));
    assert_eq!(
        std::fs::read(entry(&cache).join("rootfs.tar.xz")).unwrap(),
        good
    );
    // A missing meta file makes the entry corrupt too.
    std::fs::remove_file(entry(&cache).join("config")).unwrap();
    let out = ok(fetch_cmd(&server, &cache, &f.key).arg("--json"));
    assert_eq!(json(&out)["outcome"], "downloaded");
    assert!(entry(&cache).join("config").exists());
    // --flush-cache downloads again even when up to date.
    let out = ok(fetch_cmd(&server, &cache, &f.key).args(["--flush-cache", "--json"]));
    assert_eq!(json(&out)["outcome"], "downloaded");
}

#[test]
fn arch_aliases_case_and_near_matches() {
    let f = fixture();
    let t = tempfile::tempdir().unwrap();
    let server = format!("file://{}", f.tree_a.display());
    let base = |args: &[&str]| {
        let mut c = davit();
        c.arg("fetch")
            .args(args)
            .args(["--server", &server, "--cache-dir"])
            .arg(t.path().join("c"))
            .arg("--keyring")
            .arg(&f.key.public);
        c
    };
    ok(&mut base(&["BusyBox", "1.36", "x86_64"]));
    // ARCH defaults to the host's.
    ok(&mut base(&["busybox", "1.36"]));
    let out = run(&mut base(&["busybx", "1.36", "amd64"]));
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stderr(&out).contains("closest matches: busybox 1.36 amd64 default"),
        "{}",
        stderr(&out)
    );
    let out = run(&mut base(&[
        "busybox",
        "1.36",
        "amd64",
        "--variant",
        "cloud",
    ]));
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stderr(&out).contains("variants of busybox 1.36 amd64: default"),
        "{}",
        stderr(&out)
    );
    let out = run(&mut base(&["busybox", "1.35", "amd64"]));
    assert!(
        stderr(&out).contains("releases of busybox: 1.36"),
        "{}",
        stderr(&out)
    );
    let out = run(&mut base(&["busybox", "1.36", "aarch64"]));
    assert!(
        stderr(&out).contains("busybox 1.36 exists for: amd64"),
        "{}",
        stderr(&out)
    );
    // Off a TTY a missing argument is a usage error, never a prompt.
    let out = run(&mut base(&["busybox"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("missing RELEASE"), "{}", stderr(&out));
}

#[test]
fn images_json_and_table_list_every_variant() {
    let f = fixture();
    let t = tempfile::tempdir().unwrap();
    let tree = t.path().join("tree");
    copy_tree(&f.tree_a, &tree);
    publish_busybox(&tree, &f.key, BUILD_A, &["--variant", "tiny", "--no-user"]);
    let images = |args: &[&str]| {
        let mut c = davit();
        c.arg("images")
            .args(args)
            .args(["--server", &format!("file://{}", tree.display())])
            .arg("--keyring")
            .arg(&f.key.public);
        c
    };
    let out = ok(images(&["--json"]).args(["--index", "system"]));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let arr = v.as_array().unwrap();
    assert_eq!(arr.len(), 2);
    assert_eq!(arr[0]["dist"], "busybox");
    assert_eq!(arr[0]["variant"], "default");
    assert_eq!(arr[1]["variant"], "tiny");
    assert_eq!(
        arr[1]["path"],
        format!("/images/busybox/1.36/amd64/tiny/{BUILD_A}/")
    );
    let out = ok(images(&["busybox", "--variant", "tiny"]).args(["--index", "system"]));
    assert_eq!(stdout(&out), format!("DIST     RELEASE  ARCH   VARIANT  BUILD\nbusybox  1.36     amd64  tiny     {BUILD_A}\n"));
    // index-user lacks the --no-user image, and davit says why.
    let out = ok(&mut images(&["--json", "--index", "user"]));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1);
    let mut c = davit();
    c.args([
        "fetch",
        "busybox",
        "1.36",
        "amd64",
        "--variant",
        "tiny",
        "--index",
        "user",
        "--server",
        &format!("file://{}", tree.display()),
    ])
    .arg("--cache-dir")
    .arg(t.path().join("c"))
    .arg("--keyring")
    .arg(&f.key.public);
    let out = run(&mut c);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stderr(&out).contains("is in index-system but not in index-user"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn plain_user_reads_index_user_and_its_own_cache() {
    if !require_root("plain_user_reads_index_user_and_its_own_cache") {
        return;
    }
    let f = fixture();
    let u = plain_user();
    let t = user_readable_tree("user");
    let tree = t.path().join("tree");
    publish_busybox(&tree, &f.key, BUILD_A, &["--variant", "tiny", "--no-user"]);
    ok(Command::new("chmod").args(["-R", "a+rX"]).arg(&tree));
    let home = t.path().join("home");
    let server = format!("file://{}", tree.display());
    let out = ok(u
        .davit(&home)
        .args(["images", "--json", "--server", &server, "--keyring"])
        .arg(t.path().join("key.asc")));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v.as_array().unwrap().len(),
        1,
        "a plain user reads index-user: {v}"
    );
    let out = ok(u
        .davit(&home)
        .args([
            "fetch",
            "busybox",
            "1.36",
            "amd64",
            "--json",
            "--server",
            &server,
            "--keyring",
        ])
        .arg(t.path().join("key.asc")));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["entry"]["manifest"]["index"], "index-user");
    assert!(
        v["entry"]["dir"]
            .as_str()
            .unwrap()
            .starts_with(home.join("cache/davit").to_str().unwrap()),
        "{v}"
    );
    let out = run(u
        .davit(&home)
        .args([
            "fetch",
            "busybox",
            "1.36",
            "amd64",
            "--variant",
            "tiny",
            "--server",
            &server,
            "--keyring",
        ])
        .arg(t.path().join("key.asc")));
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stderr(&out).contains("not in index-user"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn keys_directory_and_bad_keyring_files() {
    let f = fixture();
    let t = tempfile::tempdir().unwrap();
    let server = format!("file://{}", f.tree_a.display());
    // A plain file that is not a key is a clear usage error naming it.
    let junk = t.path().join("junk.asc");
    std::fs::write(&junk, "not a key").unwrap();
    let out = run(davit()
        .args([
            "fetch",
            "busybox",
            "1.36",
            "amd64",
            "--server",
            &server,
            "--cache-dir",
        ])
        .arg(t.path().join("c"))
        .arg("--keyring")
        .arg(&junk));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("junk.asc holds no OpenPGP public key"),
        "{}",
        stderr(&out)
    );
    // Without the test key the official key alone does not trust the tree.
    let out = run(davit()
        .args([
            "fetch",
            "busybox",
            "1.36",
            "amd64",
            "--server",
            &server,
            "--cache-dir",
        ])
        .arg(t.path().join("c")));
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&f.key.fpr),
        "the error names the signer: {}",
        stderr(&out)
    );
    // A plain user's $XDG_CONFIG_HOME/davit/keys is trusted.
    if nix::unistd::geteuid().is_root() {
        let u = plain_user();
        let t = user_readable_tree("keys");
        let home = t.path().join("home");
        std::fs::create_dir_all(home.join("config/davit/keys")).unwrap();
        std::fs::copy(&f.key.public, home.join("config/davit/keys/test.asc")).unwrap();
        let tree = t.path().join("tree");
        ok(u.davit(&home).args([
            "fetch",
            "busybox",
            "1.36",
            "amd64",
            "--server",
            &format!("file://{}", tree.display()),
        ]));
    }
}

#[test]
fn prompts_on_a_tty_like_the_lxc_template() {
    let f = fixture();
    let t = tempfile::tempdir().unwrap();
    let cache = t.path().join("cache");
    // `script` gives davit a pseudo-terminal; the answers arrive on it.
    let cmd = format!(
        "{} fetch --server file://{} --keyring {} --cache-dir {}",
        davit_bin().display(),
        f.tree_a.display(),
        f.key.public.display(),
        cache.display()
    );
    let mut child = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"busybox\n1.36\n\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("DIST")
            && text.contains("Distribution:")
            && text.contains("Architecture [amd64]:"),
        "{text}"
    );
    assert_eq!(
        read_to_string(&entry(&cache).join("build_id")),
        format!("{BUILD_A}\n")
    );
}

#[test]
fn http_proxy_and_no_proxy_are_honoured() {
    let f = fixture();
    let t = tempfile::tempdir().unwrap();
    // The "proxy" serves the tree; the server named on the command line
    // does not exist, so only a proxied request can succeed.
    let proxy = FaultServer::start(&f.tree_a);
    let dead = "http://127.0.0.1:9";
    let mut c = fetch_cmd(dead, &t.path().join("c1"), &f.key);
    c.env_remove("NO_PROXY")
        .env("HTTP_PROXY", &proxy.url)
        .env("http_proxy", &proxy.url);
    let out = ok(&mut c);
    assert!(
        proxy.count("rootfs.tar.xz") == 1,
        "{:?} {}",
        proxy.requests(),
        stderr(&out)
    );
    // NO_PROXY sends it direct, where nothing listens.
    let mut c = fetch_cmd(dead, &t.path().join("c2"), &f.key);
    c.env("HTTP_PROXY", &proxy.url).env("NO_PROXY", "127.0.0.1");
    let out = run(&mut c);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert_eq!(proxy.count("rootfs.tar.xz"), 1);
}

/// A key that expired, or that was revoked, signs nothing davit accepts.
#[test]
fn expired_and_revoked_keys_are_refused() {
    let f = fixture();
    let t = tempfile::tempdir().unwrap();
    let gpg = |home: &Path, args: &[&str]| {
        let mut c = Command::new("gpg");
        c.env("GNUPGHOME", home)
            .args(["--batch", "--yes", "--passphrase", ""])
            .args(args);
        ok(&mut c)
    };
    let fpr_of = |home: &Path| {
        let o = gpg(home, &["--list-keys", "--with-colons"]);
        stdout(&o)
            .lines()
            .find(|l| l.starts_with("fpr:"))
            .and_then(|l| l.split(':').nth(9))
            .unwrap()
            .to_string()
    };
    // Expired: made and used in 2020, valid for one day.
    let exp = t.path().join("gnupg-expired");
    std::fs::create_dir(&exp).unwrap();
    std::fs::set_permissions(&exp, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    gpg(
        &exp,
        &[
            "--faked-system-time",
            "20200101T000000!",
            "--quick-gen-key",
            "expired <e@davit.invalid>",
            "ed25519",
            "sign",
            "1d",
        ],
    );
    let efpr = fpr_of(&exp);
    // Revoked: its own revocation certificate, imported.
    let rev = t.path().join("gnupg-revoked");
    std::fs::create_dir(&rev).unwrap();
    std::fs::set_permissions(&rev, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    gpg(
        &rev,
        &[
            "--quick-gen-key",
            "revoked <r@davit.invalid>",
            "ed25519",
            "sign",
            "never",
        ],
    );
    let rfpr = fpr_of(&rev);
    for (name, home, fpr, faked, expect) in [
        ("expired", &exp, &efpr, Some("20200101T010000!"), "expired"),
        ("revoked", &rev, &rfpr, None, "revoked"),
    ] {
        let tree = t.path().join(format!("tree-{name}"));
        copy_tree(&f.tree_a, &tree);
        let idx = tree.join("meta/1.0/index-system");
        let asc = tree.join("meta/1.0/index-system.asc");
        let mut args = vec![
            "--armor",
            "--detach-sign",
            "--local-user",
            fpr.as_str(),
            "--output",
            asc.to_str().unwrap(),
        ];
        if let Some(ft) = faked {
            args.splice(0..0, ["--faked-system-time", ft]);
        }
        args.push(idx.to_str().unwrap());
        gpg(home, &args);
        if name == "revoked" {
            let cert = read_to_string(&home.join(format!("openpgp-revocs.d/{fpr}.rev")));
            let cert = cert.replace(
                ":-----BEGIN PGP PUBLIC KEY BLOCK-----",
                "-----BEGIN PGP PUBLIC KEY BLOCK-----",
            );
            let certf = t.path().join("rev.asc");
            std::fs::write(&certf, cert).unwrap();
            gpg(home, &["--import", certf.to_str().unwrap()]);
        }
        let public = t.path().join(format!("{name}.asc"));
        std::fs::write(&public, gpg(home, &["--export", "--armor", fpr]).stdout).unwrap();
        let mut c = davit();
        c.args([
            "fetch",
            "busybox",
            "1.36",
            "amd64",
            "--server",
            &format!("file://{}", tree.display()),
            "--cache-dir",
        ])
        .arg(t.path().join(format!("c-{name}")))
        .arg("--keyring")
        .arg(&public)
        .arg("--keyring")
        .arg(&f.key.public);
        let out = run(&mut c);
        assert_eq!(out.status.code(), Some(5), "{name}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(expect) && stderr(&out).contains(fpr.as_str()),
            "{name}: {}",
            stderr(&out)
        );
        let _ = Command::new("gpgconf")
            .env("GNUPGHOME", home)
            .args(["--kill", "all"])
            .output();
    }
}
