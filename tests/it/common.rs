//! Shared test harness: a throwaway GPG key, the busybox image published
//! with `davit publish`, `davit serve` over HTTP and HTTPS, and a small
//! fault-injecting HTTP server for dropped connections and error statuses.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

pub fn davit_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_davit"))
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Root-only tests: under CI=true a missing privilege fails the test;
/// elsewhere the test says so loudly and returns.
pub use davit_testkit::require_root;

pub fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    out
}

pub fn ok(cmd: &mut Command) -> Output {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A bases directory of this test process's own, so that no test sees or
/// prunes the host's `/var/lib/davit/bases`. Removed when the run ends.
fn scratch_bases() -> &'static Path {
    static D: OnceLock<PathBuf> = OnceLock::new();
    D.get_or_init(|| {
        let d = tempfile::Builder::new()
            .prefix("davit-it-bases-")
            .tempdir()
            .unwrap()
            .keep();
        watch_until_exit(&d, &[]);
        d.join("bases")
    })
}

/// A davit command with a clean, predictable environment.
pub fn davit() -> Command {
    let mut c = Command::new(davit_bin());
    c.env_remove("DAVIT_SERVER")
        .env_remove("DAVIT_CACHE_DIR")
        .env("DAVIT_BASES_DIR", scratch_bases())
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("DAVIT_RETRY_BASE_MS", "20")
        .stdin(Stdio::null());
    c
}

/// A throwaway signing key in its own GnuPG home.
pub struct Key {
    pub home: PathBuf,
    pub fpr: String,
    pub public: PathBuf,
}

pub fn gen_key(dir: &Path, name: &str) -> Key {
    let home = dir.join(format!("gnupg-{name}"));
    std::fs::create_dir_all(&home).unwrap();
    std::fs::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    ok(Command::new("gpg").env("GNUPGHOME", &home).args([
        "--batch",
        "--passphrase",
        "",
        "--quick-gen-key",
        &format!("davit test {name} <{name}@davit.invalid>"),
        "ed25519",
        "sign",
        "never",
    ]));
    let out = ok(Command::new("gpg")
        .env("GNUPGHOME", &home)
        .args(["--list-secret-keys", "--with-colons"]));
    let fpr = stdout(&out)
        .lines()
        .find(|l| l.starts_with("fpr:"))
        .and_then(|l| l.split(':').nth(9))
        .unwrap()
        .to_string();
    let public = dir.join(format!("{name}.asc"));
    let out = ok(Command::new("gpg")
        .env("GNUPGHOME", &home)
        .args(["--export", "--armor", &fpr]));
    std::fs::write(&public, out.stdout).unwrap();
    Key { home, fpr, public }
}

impl Drop for Key {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .env("GNUPGHOME", &self.home)
            .args(["--kill", "all"])
            .output();
    }
}

/// Publishes the busybox image into `tree` with the recipe in images/.
pub fn publish_busybox(tree: &Path, key: &Key, build: &str, extra: &[&str]) {
    let mut c = Command::new(repo().join("images/busybox/build.sh"));
    c.env("DAVIT", davit_bin())
        .args([
            "--to",
            tree.to_str().unwrap(),
            "--key",
            &key.fpr,
            "--gnupg-home",
            key.home.to_str().unwrap(),
            "--build",
            build,
            "--",
        ])
        .args(["--xz-block-size", "512K"])
        .args(extra);
    ok(&mut c);
}

/// `davit publish TAR --dist DIST --release 1 --arch amd64` into `tree`,
/// signed with `key`, plus `extra` (e.g. `--create-message FILE`): a signed
/// image of a hand-made (often hostile) tarball.
pub fn publish_tarball(tar: &Path, dist: &str, key: &Key, tree: &Path, extra: &[&std::ffi::OsStr]) {
    ok(davit()
        .arg("publish")
        .arg(tar)
        .args([
            "--dist",
            dist,
            "--release",
            "1",
            "--arch",
            "amd64",
            "--key",
            &key.fpr,
            "--gnupg-home",
        ])
        .arg(&key.home)
        .args(extra)
        .arg("--to")
        .arg(tree));
}

/// Built once per test run: trees A (one build) and B (a newer build too),
/// and the key that signed them.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub key: Key,
    pub other: Key,
    pub tree_a: PathBuf,
    pub tree_b: PathBuf,
}

/// A static is never dropped, so the fixture's GnuPG agents (started by
/// signing) and its directory would outlive the test run. A small watcher
/// process waits for this process to exit, then stops the agents and
/// removes the directory.
// The watcher must outlive this process, so it is never waited for.
#[allow(clippy::zombie_processes)]
fn watch_until_exit(dir: &Path, homes: &[&Path]) {
    let kills: String = homes
        .iter()
        .map(|h| format!("GNUPGHOME='{}' gpgconf --kill all; ", h.display()))
        .collect();
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; {kills}rm -rf '{}'",
        dir.display(),
        pid = std::process::id()
    );
    Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the fixture watcher");
}

pub const BUILD_A: &str = "20261101_00:00";
pub const BUILD_B: &str = "20261102_00:00";

pub fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("davit-it-")
            .tempdir()
            .unwrap();
        let key = gen_key(dir.path(), "good");
        let other = gen_key(dir.path(), "other");
        let tree_a = dir.path().join("tree-a");
        publish_busybox(&tree_a, &key, BUILD_A, &[]);
        let tree_b = dir.path().join("tree-b");
        copy_tree(&tree_a, &tree_b);
        publish_busybox(&tree_b, &key, BUILD_B, &[]);
        watch_until_exit(dir.path(), &[&key.home, &other.home]);
        Fixture {
            dir,
            key,
            other,
            tree_a,
            tree_b,
        }
    })
}

pub fn copy_tree(from: &Path, to: &Path) {
    ok(Command::new("cp").arg("-a").arg(from).arg(to));
}

pub fn build_dir(tree: &Path, build: &str) -> PathBuf {
    tree.join("images/busybox/1.36/amd64/default").join(build)
}

/// path -> sha256 of every file under `dir`.
pub fn snapshot(dir: &Path) -> BTreeMap<String, String> {
    use sha2::{Digest, Sha256};
    let mut out = BTreeMap::new();
    if !dir.exists() {
        return out;
    }
    for e in walk(dir) {
        if e.is_file() {
            let data = std::fs::read(&e).unwrap();
            out.insert(
                e.strip_prefix(dir).unwrap().display().to_string(),
                hex::encode(Sha256::digest(&data)),
            );
        }
    }
    out
}

pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(rd) = std::fs::read_dir(&d) {
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() && !p.is_symlink() {
                    stack.push(p.clone());
                }
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

pub fn flip_byte(p: &Path, at: usize) {
    let mut d = std::fs::read(p).unwrap();
    let i = at.min(d.len() - 1);
    d[i] ^= 0x20;
    std::fs::write(p, d).unwrap();
}

pub fn sign(key: &Key, file: &Path) {
    let asc = PathBuf::from(format!("{}.asc", file.display()));
    let _ = std::fs::remove_file(&asc);
    ok(Command::new("gpg")
        .env("GNUPGHOME", &key.home)
        .args([
            "--batch",
            "--yes",
            "--armor",
            "--detach-sign",
            "--local-user",
            &key.fpr,
            "--output",
        ])
        .arg(&asc)
        .arg(file));
}

/// `davit serve` in the background; killed on drop.
pub struct Served {
    pub child: Child,
    pub url: String,
    pub port: u16,
    pub log: PathBuf,
}

impl Served {
    pub fn start(tree: &Path, tls: Option<(&Path, &Path)>, log: &Path) -> Served {
        Self::start_on(tree, tls, log, "127.0.0.1:0")
    }

    pub fn start_on(tree: &Path, tls: Option<(&Path, &Path)>, log: &Path, listen: &str) -> Served {
        let mut c = Command::new(davit_bin());
        c.arg("serve")
            .arg(tree)
            .args(["--listen", listen, "--access-log"])
            .arg(log);
        if let Some((cert, key)) = tls {
            c.arg("--tls-cert").arg(cert).arg("--tls-key").arg(key);
        }
        let mut child = c
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        // "serving DIR on SCHEME://ADDR"
        let url = line.trim().rsplit(' ').next().unwrap().to_string();
        let port = url.rsplit(':').next().unwrap().parse().unwrap();
        Served {
            child,
            url,
            port,
            log: log.to_path_buf(),
        }
    }

    /// Access-log lines so far.
    pub fn requests(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    pub fn count(&self, suffix: &str) -> usize {
        self.requests()
            .iter()
            .filter(|l| l.split(' ').nth(1).is_some_and(|p| p.ends_with(suffix)))
            .count()
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A self-signed CA and a server certificate for 127.0.0.1, as PEM files.
pub struct Tls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub fn make_tls(dir: &Path) -> Tls {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "davit test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let srv_key = KeyPair::generate().unwrap();
    let srv_params =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    let srv = srv_params.signed_by(&srv_key, &ca, &ca_key).unwrap();
    let t = Tls {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    };
    std::fs::write(&t.ca, ca.pem()).unwrap();
    std::fs::write(&t.cert, srv.pem()).unwrap();
    std::fs::write(&t.key, srv_key.serialize_pem()).unwrap();
    t
}

/// What the fault server does to a request whose path ends with `suffix`.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Answer with this status.
    Status(u16),
    /// Send the headers for the full body but only this many bytes, then close.
    DropAfter(usize),
    /// Send the body slowly, `bytes` per 100 ms.
    Slow(usize),
    /// 302 to another path.
    Redirect(String),
    /// 200 with no length, then zeros until the client hangs up (at most
    /// 256 MiB, so the test's server always stops).
    Endless,
    /// Send the headers for the full body and this many bytes, then go
    /// silent (for at most 30 s) with the connection open.
    Stall(usize),
    /// Claim this Content-Length, send nothing and close.
    ClaimLength(u64),
}

struct Rule {
    suffix: String,
    fault: Fault,
    times: usize,
}

/// A minimal HTTP/1.1 file server over a tree that injects faults.
/// Real sockets, real dropped connections; it serves Range requests.
pub struct FaultServer {
    pub url: String,
    rules: Arc<Mutex<Vec<Rule>>>,
    log: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    port: u16,
}

impl FaultServer {
    pub fn start(tree: &Path) -> FaultServer {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let rules: Arc<Mutex<Vec<Rule>>> = Arc::default();
        let log: Arc<Mutex<Vec<String>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (r, lg, st, tree) = (rules.clone(), log.clone(), stop.clone(), tree.to_path_buf());
        std::thread::spawn(move || {
            for conn in l.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (r, lg, tree) = (r.clone(), lg.clone(), tree.clone());
                std::thread::spawn(move || {
                    let _ = handle(conn, &tree, &r, &lg);
                });
            }
        });
        FaultServer {
            url: format!("http://127.0.0.1:{port}"),
            rules,
            log,
            stop,
            port,
        }
    }

    /// Applies `fault` to the next `times` requests ending with `suffix`.
    pub fn fault(&self, suffix: &str, fault: Fault, times: usize) {
        self.rules.lock().unwrap().push(Rule {
            suffix: suffix.into(),
            fault,
            times,
        });
    }

    pub fn count(&self, suffix: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|p| p.ends_with(suffix))
            .count()
    }

    pub fn requests(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for FaultServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn handle(
    mut conn: TcpStream,
    tree: &Path,
    rules: &Mutex<Vec<Rule>>,
    log: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut rd = BufReader::new(conn.try_clone()?);
    let mut first = String::new();
    rd.read_line(&mut first)?;
    let mut path = first.split(' ').nth(1).unwrap_or("/").to_string();
    // As an HTTP proxy it gets absolute URLs: keep the path.
    if let Some(rest) = path.strip_prefix("http://") {
        path = rest
            .find('/')
            .map(|i| rest[i..].to_string())
            .unwrap_or_else(|| "/".into());
    }
    let mut range: Option<u64> = None;
    loop {
        let mut h = String::new();
        if rd.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        let lower = h.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("range: bytes=") {
            range = v.trim().trim_end_matches('-').parse().ok();
        }
    }
    log.lock().unwrap().push(path.clone());
    let fault = {
        let mut rs = rules.lock().unwrap();
        let mut f = None;
        for r in rs.iter_mut() {
            if r.times > 0 && path.ends_with(&r.suffix) {
                r.times -= 1;
                f = Some(r.fault.clone());
                break;
            }
        }
        f
    };
    let clean: String = {
        let mut s = String::new();
        for c in path.chars() {
            if !(c == '/' && s.ends_with('/')) {
                s.push(c);
            }
        }
        s
    };
    if let Some(Fault::Status(code)) = fault {
        write!(
            conn,
            "HTTP/1.1 {code} Fault\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )?;
        return Ok(());
    }
    if let Some(Fault::Redirect(to)) = &fault {
        write!(conn, "HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
        return Ok(());
    }
    if let Some(Fault::Endless) = &fault {
        write!(conn, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")?;
        let zeros = vec![0u8; 64 * 1024];
        for _ in 0..4096 {
            conn.write_all(&zeros)?;
        }
        return Ok(());
    }
    if let Some(Fault::ClaimLength(n)) = &fault {
        write!(
            conn,
            "HTTP/1.1 200 OK\r\nContent-Length: {n}\r\nConnection: close\r\n\r\n"
        )?;
        return Ok(());
    }
    let file = tree.join(clean.trim_start_matches('/'));
    let Ok(data) = std::fs::read(&file) else {
        write!(
            conn,
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )?;
        return Ok(());
    };
    let start = range.unwrap_or(0).min(data.len() as u64) as usize;
    let body = &data[start..];
    if range.is_some() {
        write!(
            conn,
            "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {start}-{}/{}\r\n",
            data.len().saturating_sub(1),
            data.len()
        )?;
    } else {
        write!(conn, "HTTP/1.1 200 OK\r\n")?;
    }
    write!(
        conn,
        "Content-Length: {}\r\nAccept-Ranges: bytes\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    match fault {
        Some(Fault::DropAfter(n)) => {
            conn.write_all(&body[..n.min(body.len())])?;
            conn.flush()?;
            let _ = conn.shutdown(std::net::Shutdown::Both);
        }
        Some(Fault::Stall(n)) => {
            conn.write_all(&body[..n.min(body.len())])?;
            conn.flush()?;
            std::thread::sleep(Duration::from_secs(30));
        }
        Some(Fault::Slow(n)) => {
            for chunk in body.chunks(n.max(1)) {
                conn.write_all(chunk)?;
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        _ => conn.write_all(body)?,
    }
    Ok(())
}

/// Waits until `f` is true or the timeout passes.
pub fn wait_for(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

/// A plain user with /etc/subuid and /etc/subgid ranges, created if missing.
pub struct PlainUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
    /// The first host id of its /etc/subuid range (useradd may have made one).
    pub subuid: u32,
}

pub fn plain_user() -> &'static PlainUser {
    static U: OnceLock<PlainUser> = OnceLock::new();
    U.get_or_init(|| {
        // Created once under a machine-wide lock (davit-testkit), whichever
        // test binary asks first.
        let u = davit_testkit::ensure_user(&davit_testkit::UserSpec {
            name: "davit-it",
            create_home: true,
            system: false,
            shell: "/bin/sh",
            subids: davit_testkit::Subids::KeepOr(1_065_536),
        });
        PlainUser {
            name: u.name,
            uid: u.uid,
            gid: u.gid,
            home: u.home,
            subuid: u.subuid,
        }
    })
}

impl PlainUser {
    /// davit run as this user, with its own XDG dirs under `dir`.
    pub fn davit(&self, dir: &Path) -> Command {
        for d in ["cache", "config", "data", "run"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        // Whatever a test put in the cache and config dirs becomes the
        // user's; data (containers and bases owned by its subordinate ids)
        // and run are left as davit made them.
        let owner = format!("{}:{}", self.uid, self.gid);
        ok(Command::new("chown")
            .arg("-R")
            .arg(&owner)
            .arg(dir.join("cache"))
            .arg(dir.join("config")));
        ok(Command::new("chown")
            .arg(&owner)
            .arg(dir)
            .arg(dir.join("data"))
            .arg(dir.join("run")));
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid",
            &self.uid.to_string(),
            "--regid",
            &self.gid.to_string(),
            "--init-groups",
            "--",
        ])
        .arg(davit_bin())
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
        .env("HOME", &self.home)
        .env("XDG_CACHE_HOME", dir.join("cache"))
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .env("XDG_DATA_HOME", dir.join("data"))
        .env("XDG_RUNTIME_DIR", dir.join("run"))
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("DAVIT_RETRY_BASE_MS", "20")
        .stdin(Stdio::null());
        c
    }
}

pub fn read_to_string(p: &Path) -> String {
    let mut s = String::new();
    std::fs::File::open(p)
        .unwrap()
        .read_to_string(&mut s)
        .unwrap();
    s
}

/// stdout parsed as JSON, or a failure that shows both streams.
pub fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", stdout(out), stderr(out)))
}

/// `davit fetch busybox 1.36 amd64` from `server` into `cache`, trusting `key`.
pub fn fetch_busybox(server: &str, cache: &Path, key: &Path, extra: &[&str]) -> Command {
    let mut c = davit();
    c.args([
        "fetch",
        "busybox",
        "1.36",
        "amd64",
        "--server",
        server,
        "--cache-dir",
    ])
    .arg(cache)
    .arg("--keyring")
    .arg(key)
    .args(extra);
    c
}

/// A directory a plain user can read: a copy of tree A (`tree`) and the
/// fixture's public key (`key.asc`). Removed on drop.
pub fn user_readable_tree(tag: &str) -> tempfile::TempDir {
    let f = fixture();
    let t = tempfile::Builder::new()
        .prefix(&format!("davit-it-{tag}-"))
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::set_permissions(
        t.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    copy_tree(&f.tree_a, &t.path().join("tree"));
    std::fs::copy(&f.key.public, t.path().join("key.asc")).unwrap();
    ok(Command::new("chmod").args(["-R", "a+rX"]).arg(t.path()));
    t
}

/// `create NAME busybox 1.36 amd64 --network none --server SERVER --keyring KEY`.
pub fn busybox_create_args(name: &str, server: &str, key: &Path) -> Vec<std::ffi::OsString> {
    let mut v: Vec<std::ffi::OsString> = [
        "create",
        name,
        "busybox",
        "1.36",
        "amd64",
        "--network",
        "none",
        "--server",
        server,
        "--keyring",
    ]
    .iter()
    .map(Into::into)
    .collect();
    v.push(key.into());
    v
}

/// The plain test user with a copy of the fixture server it can read and
/// a home of its own for its XDG directories (containers under
/// `home/data/davit`).
pub struct UserSetup {
    pub t: tempfile::TempDir,
    pub home: PathBuf,
    pub server: String,
    pub key: PathBuf,
}

impl UserSetup {
    pub fn new(tag: &str) -> UserSetup {
        let t = user_readable_tree(tag);
        UserSetup {
            home: t.path().join("home"),
            server: format!("file://{}", t.path().join("tree").display()),
            key: t.path().join("key.asc"),
            t,
        }
    }

    /// `davit ARGS…` as the user.
    pub fn davit(&self, args: &[&str]) -> Command {
        let mut c = plain_user().davit(&self.home);
        c.args(args);
        c
    }

    /// `davit create NAME` of the fixture's busybox image, as the user.
    pub fn create(&self, name: &str, extra: &[&str]) -> Output {
        run(self
            .davit(&[])
            .args(busybox_create_args(name, &self.server, &self.key))
            .args(extra))
    }
}

impl Drop for UserSetup {
    /// After a failed test: stop whatever the user's containers left
    /// running (their monitors and inits are the user's, started here).
    fn drop(&mut self) {
        let dir = self.home.join("data/davit/containers");
        if let Ok(rd) = std::fs::read_dir(&dir) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !name.starts_with('.') {
                    let _ = self.davit(&["stop", "-k", &name]).output();
                }
            }
        }
    }
}
