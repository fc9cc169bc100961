//! Getting bytes from a server: the [`Transport`] seam, its HTTP(S) and
//! `file://` implementations, and the retrying, resuming, hashing download loop.
#![forbid(unsafe_code)]

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::Reporter;

/// Where images come from, parsed from `--server`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Server {
    /// `https://` or `http://` base URL without a trailing slash.
    Http {
        /// The base URL.
        base: String,
        /// Whether the scheme is plain `http`.
        plain: bool,
    },
    /// A directory holding an LXC-layout tree (`file:///dir`, or an absolute path).
    Dir(PathBuf),
}

/// The default image server.
pub const DEFAULT_SERVER: &str = "https://images.linuxcontainers.org";

impl Server {
    /// Parses `https://host[:port][/prefix]`, `http://...`, `file:///dir`,
    /// an absolute directory path, or a bare `host[:port][/prefix]`, which
    /// means https as in LXC.
    ///
    /// # Errors
    /// [`Error::BadServer`] for an empty value, an unknown scheme or a
    /// relative `file://` path.
    pub fn parse(s: &str) -> Result<Server> {
        let bad = |why: &str| Error::BadServer {
            server: s.to_string(),
            why: why.to_string(),
        };
        let t = s.trim();
        if t.is_empty() {
            return Err(bad("it is empty"));
        }
        if let Some(rest) = t.strip_prefix("file://") {
            if !rest.starts_with('/') {
                return Err(bad(
                    "a file:// server needs an absolute path, e.g. file:///srv/images",
                ));
            }
            return Ok(Server::Dir(PathBuf::from(rest)));
        }
        if t.starts_with('/') {
            return Ok(Server::Dir(PathBuf::from(t)));
        }
        let (plain, rest) = if let Some(r) = t.strip_prefix("https://") {
            (false, r)
        } else if let Some(r) = t.strip_prefix("http://") {
            (true, r)
        } else if t.contains("://") {
            return Err(bad("the scheme must be https://, http:// or file://"));
        } else {
            (false, t)
        };
        let rest = rest.trim_end_matches('/');
        if rest.is_empty() || rest.starts_with('/') {
            return Err(bad("it names no host"));
        }
        let scheme = if plain { "http" } else { "https" };
        Ok(Server::Http {
            base: format!("{scheme}://{rest}"),
            plain,
        })
    }

    /// The URL (or `file://` URL) of a server path such as `/meta/1.0/index-system`.
    pub fn url(&self, path: &str) -> String {
        let path = collapse_slashes(path);
        match self {
            Server::Http { base, .. } => format!("{base}/{}", path.trim_start_matches('/')),
            Server::Dir(dir) => format!(
                "file://{}/{}",
                dir.display().to_string().trim_end_matches('/'),
                path.trim_start_matches('/')
            ),
        }
    }

    /// A short form for messages and the manifest.
    pub fn display(&self) -> String {
        match self {
            Server::Http { base, .. } => base.clone(),
            Server::Dir(d) => format!("file://{}", d.display()),
        }
    }
}

/// Turns `a//b///c` into `a/b/c`, the way nginx `merge_slashes` does.
pub fn collapse_slashes(p: &str) -> String {
    let mut out = String::with_capacity(p.len());
    let mut prev = false;
    for c in p.chars() {
        if c == '/' && prev {
            continue;
        }
        prev = c == '/';
        out.push(c);
    }
    out
}

/// A response body starting at `offset` of the resource.
pub struct Response {
    /// The byte offset where `body` starts (0 unless a range was honoured).
    pub offset: u64,
    /// The full size of the resource, when known.
    pub total: Option<u64>,
    /// The URL after redirects.
    pub final_url: String,
    /// The bytes.
    pub body: Box<dyn Read + Send>,
}

/// Why a request failed, before any step name is attached.
#[derive(Debug)]
pub struct Failure {
    /// The HTTP status, if the server answered.
    pub status: Option<u16>,
    /// The URL after redirects.
    pub final_url: String,
    /// The transport error, if any.
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl Failure {
    /// 4xx answers are final: retrying them only wastes the user's time.
    pub fn retryable(&self) -> bool {
        !matches!(self.status, Some(400..=499))
    }
}

/// Gets a resource from `from` bytes on.
pub trait Transport: Sync {
    /// Starts a GET of `url`, asking for bytes from `from` on.
    ///
    /// # Errors
    /// A [`Failure`] with the status and final URL.
    fn get(&self, url: &str, from: u64) -> std::result::Result<Response, Failure>;
}

/// How long a server may send nothing (no answer, no body bytes) before
/// the request counts as failed and is retried from where it stopped.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// The most a `rootfs.tar.xz` may be unless the caller says otherwise: the
/// largest upstream images are under 1 GiB, so an endless stream stops
/// long before it fills a disk.
pub const DEFAULT_MAX_IMAGE: u64 = 16 << 30;

/// Options for the HTTP transport.
#[derive(Debug, Clone, Default)]
pub struct HttpOptions {
    /// Extra PEM CA certificates to trust, beside the system ones.
    pub ca_certs: Vec<PathBuf>,
    /// How long a stalled server may be silent; [`DEFAULT_READ_TIMEOUT`]
    /// when `None`.
    pub read_timeout: Option<Duration>,
    /// The most a rootfs tarball may be; [`DEFAULT_MAX_IMAGE`] when `None`.
    pub max_image: Option<u64>,
}

/// HTTP(S) through reqwest with rustls. Honours `HTTPS_PROXY`, `HTTP_PROXY`
/// and `NO_PROXY`, follows redirects but never from https to http.
pub struct Http {
    client: reqwest::blocking::Client,
}

impl Http {
    /// Builds the client.
    ///
    /// # Errors
    /// [`Error::Io`] when a CA file cannot be read, [`Error::Usage`] when it
    /// holds no usable certificate.
    pub fn new(opts: &HttpOptions) -> Result<Http> {
        let policy = reqwest::redirect::Policy::custom(|attempt| {
            let downgrade = attempt.url().scheme() == "http"
                && attempt.previous().iter().any(|u| u.scheme() == "https");
            if downgrade {
                attempt.error("refusing a redirect from https to http")
            } else if attempt.previous().len() >= 10 {
                attempt.error("too many redirects")
            } else {
                attempt.follow()
            }
        });
        let mut b = reqwest::blocking::Client::builder()
            .use_rustls_tls()
            .user_agent(concat!("davit/", env!("CARGO_PKG_VERSION"), " compat:7"))
            .redirect(policy)
            .connect_timeout(Duration::from_secs(30))
            // reqwest's blocking client applies this to the wait for the
            // answer and to each read of the body: a stall, not a total.
            .timeout(opts.read_timeout.unwrap_or(DEFAULT_READ_TIMEOUT));
        for ca in &opts.ca_certs {
            let pem = std::fs::read(ca).map_err(|e| Error::io("read the CA certificate", ca, e))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                Error::Usage(format!("{} holds no PEM certificate: {e}", ca.display()))
            })?;
            if certs.is_empty() {
                return Err(Error::Usage(format!(
                    "{} holds no PEM certificate",
                    ca.display()
                )));
            }
            for c in certs {
                b = b.add_root_certificate(c);
            }
        }
        let client = b
            .build()
            .map_err(|e| Error::Usage(format!("cannot set up HTTPS: {e}")))?;
        Ok(Http { client })
    }
}

fn parse_content_range(v: &str) -> Option<(u64, Option<u64>)> {
    // bytes START-END/TOTAL
    let v = v.strip_prefix("bytes ")?;
    let (range, total) = v.split_once('/')?;
    let (start, _) = range.split_once('-')?;
    Some((start.parse().ok()?, total.parse().ok()))
}

impl Transport for Http {
    fn get(&self, url: &str, from: u64) -> std::result::Result<Response, Failure> {
        let mut req = self.client.get(url);
        if from > 0 {
            req = req.header(reqwest::header::RANGE, format!("bytes={from}-"));
        }
        let resp = req.send().map_err(|e| Failure {
            status: e.status().map(|s| s.as_u16()),
            final_url: e
                .url()
                .map(|u| u.to_string())
                .unwrap_or_else(|| url.to_string()),
            source: Some(Box::new(e)),
        })?;
        let final_url = resp.url().to_string();
        let status = resp.status();
        if !(status.is_success()) {
            return Err(Failure {
                status: Some(status.as_u16()),
                final_url,
                source: None,
            });
        }
        let len = resp.content_length();
        let (offset, total) = if status.as_u16() == 206 {
            let cr = resp
                .headers()
                .get(reqwest::header::CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_content_range);
            match cr {
                Some((start, total)) => (start, total),
                None => {
                    return Err(Failure {
                        status: Some(206),
                        final_url,
                        source: Some("a 206 answer without a usable Content-Range".into()),
                    })
                }
            }
        } else {
            (0, len)
        };
        Ok(Response {
            offset,
            total,
            final_url,
            body: Box::new(resp),
        })
    }
}

/// `file://` URLs: a mirror directory or a USB stick.
pub struct FileTransport;

impl Transport for FileTransport {
    fn get(&self, url: &str, from: u64) -> std::result::Result<Response, Failure> {
        let path = url.strip_prefix("file://").unwrap_or(url);
        let fail = |status, e: io::Error| Failure {
            status,
            final_url: url.to_string(),
            source: Some(Box::new(e)),
        };
        let mut f = File::open(path).map_err(|e| {
            // Map "no such file" to 404 so callers treat it like a server's answer.
            let st = (e.kind() == io::ErrorKind::NotFound).then_some(404);
            fail(st, e)
        })?;
        let meta = f.metadata().map_err(|e| fail(None, e))?;
        if meta.is_dir() {
            return Err(fail(Some(404), io::Error::other("is a directory")));
        }
        let offset = from.min(meta.len());
        f.seek(SeekFrom::Start(offset)).map_err(|e| fail(None, e))?;
        Ok(Response {
            offset,
            total: Some(meta.len()),
            final_url: url.to_string(),
            body: Box::new(f),
        })
    }
}

/// How hard to try.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    /// Tries per URL without progress (the first one included).
    pub attempts: u32,
    /// The first back-off; it doubles each time.
    pub base: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            attempts: 4,
            base: Duration::from_millis(500),
        }
    }
}

/// Where downloaded bytes go.
pub(crate) trait Sink {
    fn reset(&mut self) -> io::Result<()>;
    fn put(&mut self, b: &[u8]) -> io::Result<()>;
    /// Bytes free where the sink writes, when it writes to a filesystem.
    fn room(&self) -> Option<u64> {
        None
    }
}

impl Sink for Vec<u8> {
    fn reset(&mut self) -> io::Result<()> {
        self.clear();
        Ok(())
    }
    fn put(&mut self, b: &[u8]) -> io::Result<()> {
        self.extend_from_slice(b);
        Ok(())
    }
}

impl Sink for File {
    fn reset(&mut self) -> io::Result<()> {
        self.set_len(0)?;
        self.seek(SeekFrom::Start(0)).map(|_| ())
    }
    fn put(&mut self, b: &[u8]) -> io::Result<()> {
        self.write_all(b)
    }
    fn room(&self) -> Option<u64> {
        let st = nix::sys::statvfs::fstatvfs(self).ok()?;
        Some(st.blocks_available() as u64 * st.fragment_size() as u64)
    }
}

/// What a finished download produced.
#[derive(Debug, Clone)]
#[allow(dead_code)]
pub(crate) struct Got {
    pub bytes: u64,
    pub sha256: String,
    pub final_url: String,
}

/// Downloads `url` into `sink`, hashing as it streams. Network errors and
/// 5xx are retried with exponential back-off, resuming with `Range` where
/// the server honours it; a 4xx is final. `limit` caps the size.
#[allow(clippy::too_many_arguments)]
pub(crate) fn download(
    t: &dyn Transport,
    url: &str,
    step: &str,
    label: &str,
    sink: &mut dyn Sink,
    limit: Option<u64>,
    retry: Retry,
    rep: &dyn Reporter,
) -> Result<Got> {
    let mut hasher = Sha256::new();
    let mut received: u64 = 0;
    let mut failures: u32 = 0;
    let mut bar: Option<u64> = None;
    let mut last_final = url.to_string();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let attempt: std::result::Result<(), Failure> = (|| {
            let mut resp = t.get(url, received)?;
            last_final = resp.final_url.clone();
            if resp.offset != received {
                // The server ignored the range: start over.
                sink.reset().map_err(|e| Failure {
                    status: None,
                    final_url: last_final.clone(),
                    source: Some(Box::new(e)),
                })?;
                hasher = Sha256::new();
                received = resp.offset;
                if received != 0 {
                    return Err(Failure {
                        status: None,
                        final_url: last_final.clone(),
                        source: Some(
                            format!(
                                "the server resumed at byte {} instead of {received}",
                                resp.offset
                            )
                            .into(),
                        ),
                    });
                }
            }
            if let (Some(total), Some(limit)) = (resp.total, limit) {
                if total > limit {
                    return Err(Failure {
                        status: None,
                        final_url: last_final.clone(),
                        source: Some(Box::new(TooBig(limit))),
                    });
                }
            }
            // The whole file must fit: say so now, not when the disk is full.
            if let (Some(total), Some(room)) = (resp.total, sink.room()) {
                let need = total.saturating_sub(received);
                if need > room {
                    return Err(Failure {
                        status: None,
                        final_url: last_final.clone(),
                        source: Some(Box::new(LocalWrite(io::Error::new(
                            io::ErrorKind::StorageFull,
                            format!(
                                "{need} more bytes are needed and the cache's filesystem has {room} free; free some space or point --cache-dir elsewhere"
                            ),
                        )))),
                    });
                }
            }
            let id = *bar.get_or_insert_with(|| rep.start(label, resp.total));
            loop {
                let n = match resp.body.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        return Err(Failure {
                            status: None,
                            final_url: last_final.clone(),
                            source: Some(Box::new(e)),
                        })
                    }
                };
                if limit.is_some_and(|l| received + n as u64 > l) {
                    // Not retried: the same server would send the same.
                    return Err(Failure {
                        status: None,
                        final_url: last_final.clone(),
                        source: Some(Box::new(TooBig(limit.unwrap_or(0)))),
                    });
                }
                sink.put(&buf[..n]).map_err(|e| Failure {
                    status: None,
                    final_url: last_final.clone(),
                    source: Some(Box::new(LocalWrite(e))),
                })?;
                hasher.update(&buf[..n]);
                received += n as u64;
                failures = 0;
                rep.advance(id, n as u64);
            }
            if let Some(total) = resp.total {
                if received < total {
                    return Err(Failure {
                        status: None,
                        final_url: last_final.clone(),
                        source: Some(
                            format!("the connection closed at byte {received} of {total}").into(),
                        ),
                    });
                }
            }
            Ok(())
        })();
        match attempt {
            Ok(()) => {
                if let Some(id) = bar {
                    rep.finish(id);
                }
                return Ok(Got {
                    bytes: received,
                    sha256: hex::encode(hasher.finalize()),
                    final_url: last_final,
                });
            }
            Err(f) => {
                let local = f.source.as_ref().is_some_and(|s| s.is::<LocalWrite>());
                let too_big = f.source.as_ref().is_some_and(|s| s.is::<TooBig>());
                failures += 1;
                if local || too_big || !f.retryable() || failures >= retry.attempts {
                    if let Some(id) = bar {
                        rep.finish(id);
                    }
                    if local {
                        let e = f
                            .source
                            .and_then(|s| s.downcast::<LocalWrite>().ok())
                            .map(|b| b.0)
                            .unwrap_or_else(|| io::Error::other("write"));
                        return Err(Error::io("write the download of", Path::new(url), e));
                    }
                    return Err(Error::Download {
                        step: step.to_string(),
                        url: url.to_string(),
                        final_url: f.final_url,
                        status: f.status,
                        received,
                        source: f.source,
                    });
                }
                let wait = retry.base * 2u32.saturating_pow(failures - 1);
                let why = match (f.status, &f.source) {
                    (Some(s), _) => format!("HTTP {s}"),
                    (None, Some(e)) => e.to_string(),
                    (None, None) => "error".into(),
                };
                rep.warn(&format!(
                    "{step}: {url}: {why}; retrying in {:.1}s from byte {received}",
                    wait.as_secs_f64()
                ));
                std::thread::sleep(wait);
            }
        }
    }
}

/// A download over its cap: never retried.
#[derive(Debug)]
struct TooBig(u64);

impl std::fmt::Display for TooBig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "it is larger than the {} bytes allowed (--max-download SIZE raises the cap)",
            self.0
        )
    }
}

impl std::error::Error for TooBig {}

/// A local write error, kept apart from network errors so it is never retried.
#[derive(Debug)]
struct LocalWrite(io::Error);
impl std::fmt::Display for LocalWrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "local write failed: {}", self.0)
    }
}
impl std::error::Error for LocalWrite {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_servers() {
        assert_eq!(
            Server::parse("images.linuxcontainers.org").unwrap(),
            Server::Http {
                base: "https://images.linuxcontainers.org".into(),
                plain: false
            }
        );
        assert_eq!(
            Server::parse("mirror.example/lxc-images/").unwrap(),
            Server::Http {
                base: "https://mirror.example/lxc-images".into(),
                plain: false
            }
        );
        assert_eq!(
            Server::parse("http://127.0.0.1:8080").unwrap(),
            Server::Http {
                base: "http://127.0.0.1:8080".into(),
                plain: true
            }
        );
        assert_eq!(
            Server::parse("file:///srv/x").unwrap(),
            Server::Dir("/srv/x".into())
        );
        assert!(Server::parse("file://rel").is_err());
        assert!(Server::parse("ftp://x").is_err());
        assert!(Server::parse("").is_err());
        let s = Server::parse("https://h/p").unwrap();
        assert_eq!(
            s.url("/images/a/b//rootfs.tar.xz"),
            "https://h/p/images/a/b/rootfs.tar.xz"
        );
    }

    #[test]
    fn content_range() {
        assert_eq!(
            parse_content_range("bytes 100-199/200"),
            Some((100, Some(200)))
        );
        assert_eq!(parse_content_range("bytes 5-9/*"), Some((5, None)));
        assert_eq!(parse_content_range("junk"), None);
    }

    /// A transport that drops the connection after `cut` bytes on the first
    /// call, answers 500 once, then serves the rest with a range.
    struct Flaky {
        data: Vec<u8>,
        calls: std::sync::Mutex<Vec<u64>>,
        status: Option<u16>,
    }
    impl Transport for Flaky {
        fn get(&self, _url: &str, from: u64) -> std::result::Result<Response, Failure> {
            let mut calls = self.calls.lock().unwrap();
            calls.push(from);
            if let Some(s) = self.status {
                return Err(Failure {
                    status: Some(s),
                    final_url: "u".into(),
                    source: None,
                });
            }
            if calls.len() == 2 {
                return Err(Failure {
                    status: Some(503),
                    final_url: "u".into(),
                    source: None,
                });
            }
            let total = self.data.len() as u64;
            let end = if calls.len() == 1 {
                10
            } else {
                self.data.len()
            };
            let body = self.data[from as usize..end].to_vec();
            Ok(Response {
                offset: from,
                total: Some(total),
                final_url: "u".into(),
                body: Box::new(io::Cursor::new(body)),
            })
        }
    }

    #[test]
    fn resumes_and_retries_5xx_but_not_4xx() {
        let data: Vec<u8> = (0..100u8).collect();
        let t = Flaky {
            data: data.clone(),
            calls: Default::default(),
            status: None,
        };
        let mut out = Vec::new();
        let r = Retry {
            attempts: 4,
            base: Duration::from_millis(1),
        };
        let got = download(&t, "u", "s", "l", &mut out, None, r, &crate::Quiet).unwrap();
        assert_eq!(out, data);
        assert_eq!(got.sha256, hex::encode(Sha256::digest(&data)));
        assert_eq!(*t.calls.lock().unwrap(), vec![0, 10, 10]);

        let t = Flaky {
            data,
            calls: Default::default(),
            status: Some(404),
        };
        let e = download(&t, "u", "s", "l", &mut out, None, r, &crate::Quiet).unwrap_err();
        assert!(matches!(
            e,
            Error::Download {
                status: Some(404),
                ..
            }
        ));
        assert_eq!(t.calls.lock().unwrap().len(), 1);
    }
}
