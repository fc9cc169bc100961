//! `davit serve`: a static server for an LXC-layout tree, over HTTP or
//! HTTPS, built on axum and tower-http's `ServeDir` (GET, HEAD, `Range`,
//! conditional requests). Paths with `//` are treated as `/`, as LXC
//! clients send them, and dot-files (locks, half-written builds) are never
//! served, however the name is spelled (`/%2esecret` is `/.secret`). A
//! symlink in the tree is followed only while it stays inside the tree
//! (a mirror's `meta/1.0` is one); one that leads out answers 404.
#![forbid(unsafe_code)]

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use tower::ServiceExt;
use tower_http::services::ServeDir;

use crate::error::{Error, Result};
use crate::transport::collapse_slashes;

/// A callback that receives one access-log line per request:
/// `METHOD PATH STATUS`.
pub type AccessLog = Arc<dyn Fn(&str) + Send + Sync>;

/// How to serve.
pub struct ServeOptions {
    /// The tree to serve.
    pub dir: PathBuf,
    /// Address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// PEM certificate chain and key for HTTPS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Access log.
    pub log: Option<AccessLog>,
}

struct St {
    dir: PathBuf,
    /// `dir` with every symlink resolved, to check where a request leads.
    real: PathBuf,
    log: Option<AccessLog>,
}

/// Whether a request for `path` (as sent, percent-encoded) must be
/// refused: any component that starts with a dot once decoded (what
/// `ServeDir` opens is the decoded name), or a file that resolves, through
/// symlinks, to a place outside the tree.
fn refused(st: &St, path: &str) -> bool {
    let decoded = percent_encoding::percent_decode_str(path).decode_utf8_lossy();
    if decoded.split('/').any(|c| c.starts_with('.')) {
        return true;
    }
    match std::fs::canonicalize(st.dir.join(decoded.trim_start_matches('/'))) {
        Ok(real) => !real.starts_with(&st.real),
        // Missing: ServeDir answers 404 itself.
        Err(_) => false,
    }
}

async fn handle(State(st): State<Arc<St>>, mut req: Request) -> Response {
    let method = req.method().clone();
    let raw = req.uri().path().to_string();
    let path = collapse_slashes(&raw);
    let resp = if refused(&st, &path) {
        StatusCode::NOT_FOUND.into_response()
    } else {
        let pq = match req.uri().query() {
            Some(q) => format!("{path}?{q}"),
            None => path.clone(),
        };
        if let Ok(u) = pq.parse::<Uri>() {
            *req.uri_mut() = u;
        }
        match ServeDir::new(&st.dir)
            .append_index_html_on_directories(false)
            .oneshot(req)
            .await
        {
            Ok(r) => r.map(Body::new),
            Err(never) => match never {},
        }
    };
    if let Some(log) = &st.log {
        log(&format!("{method} {raw} {}", resp.status().as_u16()));
    }
    resp
}

/// Serves until the process is stopped. `ready` gets the bound address
/// before the first request is accepted.
///
/// # Errors
/// [`Error::Io`] when the address cannot be bound or the certificate read.
pub fn serve(o: ServeOptions, ready: impl FnOnce(SocketAddr)) -> Result<()> {
    if !o.dir.is_dir() {
        return Err(Error::io(
            "serve",
            &o.dir,
            std::io::Error::new(std::io::ErrorKind::NotFound, "not a directory"),
        ));
    }
    let real = std::fs::canonicalize(&o.dir).map_err(|e| Error::io("serve", &o.dir, e))?;
    let listener = TcpListener::bind(o.listen)
        .map_err(|e| Error::io("listen on", PathBuf::from(o.listen.to_string()), e))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| Error::io("listen on", PathBuf::from(o.listen.to_string()), e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::io("listen on", PathBuf::from(o.listen.to_string()), e))?;
    let st = Arc::new(St {
        dir: o.dir.clone(),
        real,
        log: o.log.clone(),
    });
    let app = axum::Router::new().fallback(handle).with_state(st);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::io("start the server runtime for", &o.dir, e))?;
    rt.block_on(async move {
        match o.tls {
            Some((cert, key)) => {
                let _ = rustls::crypto::ring::default_provider().install_default();
                let cfg = axum_server::tls_rustls::RustlsConfig::from_pem_file(&cert, &key)
                    .await
                    .map_err(|e| Error::io("load the TLS certificate and key", &cert, e))?;
                ready(addr);
                axum_server::from_tcp_rustls(listener, cfg)
                    .serve(app.into_make_service())
                    .await
                    .map_err(|e| Error::io("serve", &o.dir, e))
            }
            None => {
                ready(addr);
                axum_server::from_tcp(listener)
                    .serve(app.into_make_service())
                    .await
                    .map_err(|e| Error::io("serve", &o.dir, e))
            }
        }
    })
}
