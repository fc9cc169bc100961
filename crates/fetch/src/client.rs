//! `davit fetch` and `davit images`: the steps in order, each named in errors.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::fs::File;
use std::path::PathBuf;

use serde::Serialize;

use crate::cache::{self, Cache, Entry, Manifest};
use crate::error::{Error, ErrorKind, Result};
use crate::index::{Image, Index, IndexKind, Wanted};
use crate::transport::{self, FileTransport, Http, HttpOptions, Retry, Server, Transport};
use crate::verify::{KeyOptions, Keyring};
use crate::Reporter;

/// How to treat the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CacheMode {
    /// Use the cache when the index still lists its build.
    #[default]
    Normal,
    /// `--flush-cache`: download again.
    Flush,
    /// `--offline` / `--force-cache`: no network at all.
    Offline,
}

/// Everything a [`Client`] needs, passed in by the caller.
#[derive(Debug, Clone)]
pub struct Options {
    /// The image server.
    pub server: Server,
    /// HTTPS settings.
    pub http: HttpOptions,
    /// Trusted keys.
    pub keys: KeyOptions,
    /// Verify signatures (`--no-validate` turns this off).
    pub validate: bool,
    /// The cache root.
    pub cache_dir: PathBuf,
    /// Cache policy.
    pub mode: CacheMode,
    /// Which index to read.
    pub index: IndexKind,
    /// Retry policy.
    pub retry: Retry,
    /// Names the source in cache manifests instead of the server URL (a
    /// bundle or a local import).
    pub label: Option<String>,
}

/// How a fetch was satisfied.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// New files were downloaded and verified.
    Downloaded,
    /// The index still lists the cached build; nothing was downloaded.
    UpToDate,
    /// `--offline`/`--force-cache`: the cache was used without the network.
    Offline,
    /// The server could not be reached; the cached copy was used.
    Stale,
}

/// The result of a fetch.
#[derive(Debug, Clone, Serialize)]
pub struct Fetched {
    /// How it was satisfied.
    pub outcome: Outcome,
    /// The verified cache entry.
    pub entry: Entry,
    /// Warnings the user must see (also sent to the reporter).
    pub warnings: Vec<String>,
}

/// An index with the bytes and signature it was read from.
#[derive(Debug, Clone)]
pub struct SignedIndex {
    /// Which index.
    pub kind: IndexKind,
    /// The parsed lines.
    pub index: Index,
    /// The bytes as served.
    pub raw: Vec<u8>,
    /// The detached signature, when verified.
    pub sig: Option<Vec<u8>>,
}

/// A client for one server and cache.
pub struct Client {
    opts: Options,
    transport: Box<dyn Transport>,
    keyring: Option<Keyring>,
    cache: Cache,
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

const SMALL: u64 = 64 << 20;

impl Client {
    /// Sets up the transport and the keyring.
    ///
    /// # Errors
    /// [`ErrorKind::Usage`] for plain http without signature checks, and the
    /// errors of [`Http::new`] and [`Keyring::load`].
    pub fn new(opts: Options) -> Result<Client> {
        if let Server::Http { plain: true, .. } = opts.server {
            if !opts.validate {
                return Err(Error::Usage(format!(
                    "{} is plain http, which is allowed only while signatures are checked: drop --no-validate or use https://",
                    opts.server.display()
                )));
            }
        }
        let transport: Box<dyn Transport> = match &opts.server {
            Server::Http { .. } => Box::new(Http::new(&opts.http)?),
            Server::Dir(_) => Box::new(FileTransport),
        };
        let keyring = if opts.validate {
            Some(Keyring::load(&opts.keys)?)
        } else {
            None
        };
        let cache = Cache::new(&opts.cache_dir);
        Ok(Client {
            opts,
            transport,
            keyring,
            cache,
        })
    }

    /// The server this client reads.
    pub fn server(&self) -> &Server {
        &self.opts.server
    }

    /// The cache this client uses.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    fn get_small(&self, path: &str, step: &str, rep: &dyn Reporter) -> Result<Vec<u8>> {
        let url = self.opts.server.url(path);
        let mut out = Vec::new();
        transport::download(
            self.transport.as_ref(),
            &url,
            step,
            &file_name(path),
            &mut out,
            Some(SMALL),
            self.opts.retry,
            rep,
        )?;
        Ok(out)
    }

    /// Like `get_small`, but a 404 is `None`.
    fn get_optional(&self, path: &str, step: &str, rep: &dyn Reporter) -> Result<Option<Vec<u8>>> {
        match self.get_small(path, step, rep) {
            Ok(b) => Ok(Some(b)),
            Err(Error::Download {
                status: Some(404), ..
            }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn signature(&self, path: &str, step: &str, rep: &dyn Reporter) -> Result<Vec<u8>> {
        let url = self.opts.server.url(path);
        match self.get_optional(path, step, rep)? {
            Some(s) => Ok(s),
            None => Err(Error::Signature {
                file: url.trim_end_matches(".asc").to_string(),
                why: format!("the signature {url} is missing (HTTP 404); use --no-validate only if you trust this server and the path to it"),
                signer: None,
            }),
        }
    }

    /// Downloads and verifies an index.
    ///
    /// # Errors
    /// Network, signature and parse errors, each naming the index URL.
    pub fn index_of(&self, kind: IndexKind, rep: &dyn Reporter) -> Result<Index> {
        Ok(self.signed_index_of(kind, rep)?.index)
    }

    /// Downloads and verifies an index, keeping its bytes and signature so
    /// they can travel with the image (mirrors, bundles).
    ///
    /// # Errors
    /// As [`Client::index_of`].
    pub fn signed_index_of(&self, kind: IndexKind, rep: &dyn Reporter) -> Result<SignedIndex> {
        let path = format!("/meta/1.0/{}", kind.file_name());
        let url = self.opts.server.url(&path);
        rep.step("downloading the image index");
        let raw = self.get_small(&path, "downloading the image index", rep)?;
        let mut sig = None;
        if let Some(k) = &self.keyring {
            let s = self.signature(
                &format!("{path}.asc"),
                "downloading the index signature",
                rep,
            )?;
            k.verify_bytes(&raw, &s, &url)?;
            sig = Some(s);
        } else {
            rep.warn(
                "not verifying signatures (--no-validate): a tampered image would not be noticed",
            );
        }
        let text = std::str::from_utf8(&raw).map_err(|_| Error::Malformed {
            what: "the index".into(),
            file: url.clone(),
            why: "it is not UTF-8".into(),
        })?;
        let index = Index::parse(text, &url)?;
        Ok(SignedIndex {
            kind,
            index,
            raw,
            sig,
        })
    }

    /// The index this client reads.
    ///
    /// # Errors
    /// As [`Client::index_of`].
    pub fn index(&self, rep: &dyn Reporter) -> Result<Index> {
        self.index_of(self.opts.index, rep)
    }

    /// Finds `want` in the index, explaining a miss.
    ///
    /// # Errors
    /// [`Error::NotFound`] with close matches, variants, and (for
    /// `index-user`) whether the image exists for root only.
    pub fn lookup(&self, index: &Index, want: &Wanted, rep: &dyn Reporter) -> Result<Image> {
        if let Some(i) = index.find(want) {
            return Ok(i.clone());
        }
        let idx_name = self.opts.index.file_name();
        let mut msg = format!(
            "no image {} in {} of {}",
            want.tuple(),
            idx_name,
            self.opts.server.display()
        );
        if self.opts.index == IndexKind::User {
            if let Ok(sys) = self.index_of(IndexKind::System, &crate::Quiet) {
                if let Some(i) = sys.find(want) {
                    msg.push_str(&format!(
                        ": {} is in index-system but not in index-user, so its publisher does not mark it as working unprivileged; run as root, or pass --index system to fetch it anyway",
                        i.tuple()
                    ));
                    return Err(Error::NotFound { message: msg });
                }
            }
        }
        let _ = rep;
        let hint = index.explain_missing(want);
        if !hint.is_empty() {
            msg.push_str("; ");
            msg.push_str(&hint);
        }
        Err(Error::NotFound { message: msg })
    }

    fn use_cached(
        &self,
        want: &Wanted,
        outcome: Outcome,
        mut warnings: Vec<String>,
        rep: &dyn Reporter,
    ) -> Result<Fetched> {
        let Some(entry) = self.cache.find(want) else {
            return Err(Error::NotCached {
                image: want.tuple(),
                cache: self.cache.root().to_path_buf(),
            });
        };
        entry.verify().map_err(|e| match e {
            Error::Digest { file, want: w, got, .. } => Error::Digest {
                file,
                against: "the cache manifest (the cached copy is corrupt; run without --offline to fetch it again)".into(),
                want: w,
                got,
            },
            e => e,
        })?;
        if entry.expired(now()) {
            warnings.push(format!(
                "the cached image {} (build {}) has expired; it may lack security fixes",
                entry.manifest.image.tuple(),
                entry.manifest.image.build
            ));
        }
        for w in &warnings {
            rep.warn(w);
        }
        Ok(Fetched {
            outcome,
            entry,
            warnings,
        })
    }

    /// Downloads, verifies and caches the newest build of `want`.
    ///
    /// # Errors
    /// Any [`ErrorKind`]; on error the cache is unchanged.
    pub fn fetch(&self, want: &Wanted, rep: &dyn Reporter) -> Result<Fetched> {
        if self.opts.mode == CacheMode::Offline {
            return self.use_cached(want, Outcome::Offline, Vec::new(), rep);
        }
        let signed = match self.signed_index_of(self.opts.index, rep) {
            Ok(i) => i,
            Err(e)
                if e.kind() == ErrorKind::Network
                    && self.opts.mode == CacheMode::Normal
                    && self.cache.find(want).is_some() =>
            {
                let w = format!("cannot reach the server ({e}); using the cached copy");
                return self.use_cached(want, Outcome::Stale, vec![w], rep);
            }
            Err(e) => return Err(e),
        };
        let index = &signed.index;
        let img = self.lookup(index, want, rep)?;
        let lock = self.cache.lock(&img)?;
        let dir = self.cache.entry_dir(&img);
        let mut warnings = Vec::new();
        if self.opts.mode == CacheMode::Normal {
            if let Some(entry) = self.cache.read(&dir) {
                if entry.manifest.image.build == img.build {
                    match entry.verify() {
                        Ok(()) => {
                            self.cache.touch_checked(&dir, now(), &lock)?;
                            rep.step("the cache is already up to date");
                            let entry = self.cache.read(&dir).unwrap_or(entry);
                            return Ok(Fetched {
                                outcome: Outcome::UpToDate,
                                entry,
                                warnings,
                            });
                        }
                        Err(e) => {
                            let w =
                                format!("the cached copy is corrupt ({e}); downloading it again");
                            rep.warn(&w);
                            warnings.push(w);
                        }
                    }
                }
            }
        }
        let st = self.cache.staging(&img, &lock)?;
        let (mut files, verified, signer) = self.download_build(&img, st.path(), rep)?;
        // Keep the signed index beside the image: bundles and mirrors carry it.
        let iname = signed.kind.file_name();
        write(st.path(), iname, &signed.raw)?;
        files.insert(
            iname.to_string(),
            cache::sha256_file(&st.path().join(iname))?,
        );
        if let Some(sig) = &signed.sig {
            let n = format!("{iname}.asc");
            write(st.path(), &n, sig)?;
            files.insert(n.clone(), cache::sha256_file(&st.path().join(&n))?);
        }
        let entry = self.commit_entry(&img, st, &lock, files, verified, signer, rep)?;
        drop(lock);
        Ok(Fetched {
            outcome: Outcome::Downloaded,
            entry,
            warnings,
        })
    }

    /// Finishes a staged entry whose tarballs are verified: unpacks the
    /// meta, writes `build_id` and the manifest, fsyncs, and commits.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn commit_entry(
        &self,
        img: &Image,
        st: cache::Staging,
        lock: &cache::EntryLock,
        files: BTreeMap<String, String>,
        verified: String,
        signer: Option<String>,
        rep: &dyn Reporter,
    ) -> Result<Entry> {
        let mut manifest = Manifest {
            version: 1,
            server: self
                .opts
                .label
                .clone()
                .unwrap_or_else(|| self.opts.server.display()),
            index: self.opts.index.file_name().to_string(),
            image: img.clone(),
            verified,
            signer,
            files,
            fetched_at: now(),
        };
        rep.step("unpacking the metadata");
        let meta_url = self.opts.server.url(&format!("{}meta.tar.xz", img.path));
        let names = cache::extract_meta(&st.path().join("meta.tar.xz"), st.path(), &meta_url)?;
        write(st.path(), "build_id", format!("{}\n", img.build).as_bytes())?;
        for n in names.iter().map(String::as_str).chain(["build_id"]) {
            manifest
                .files
                .insert(n.to_string(), cache::sha256_file(&st.path().join(n))?);
        }
        for n in manifest.files.keys() {
            cache::fsync_file(&st.path().join(n))?;
        }
        let json = serde_json::to_vec_pretty(&manifest).expect("manifest serialises");
        cache::write_atomic(&st.path().join("manifest.json"), &json)?;
        cache::write_atomic(
            &st.path().join("last_checked"),
            format!("{}\n", now()).as_bytes(),
        )?;
        let dir = self.cache.commit(img, st, lock)?;
        rep.step("the image cache is now ready");
        self.cache.read(&dir).ok_or_else(|| {
            Error::io(
                "read back",
                &dir,
                std::io::Error::other("the new entry is incomplete"),
            )
        })
    }

    /// Downloads rootfs.tar.xz and meta.tar.xz of one build into `dir` and
    /// verifies them. Returns the file digests, the method and the signer.
    fn download_build(
        &self,
        img: &Image,
        dir: &std::path::Path,
        rep: &dyn Reporter,
    ) -> Result<(BTreeMap<String, String>, String, Option<String>)> {
        let files = self.download_build_files(img, dir, false, rep)?;
        let (method, signer) = self.verify_build(img, dir, &files)?;
        Ok((files, method, signer))
    }

    #[allow(clippy::too_many_arguments)]
    fn get_to_file(
        &self,
        img: &Image,
        remote: &str,
        dir: &std::path::Path,
        name: &str,
        step: &str,
        optional: bool,
        rep: &dyn Reporter,
    ) -> Result<Option<String>> {
        let url = self.opts.server.url(&format!("{}{remote}", img.path));
        let dest = dir.join(name);
        let mut f = File::create(&dest).map_err(|e| Error::io("create", &dest, e))?;
        // The rootfs up to its cap; everything else (meta, sums,
        // signatures) is small.
        let limit = Some(if name == "rootfs.tar.xz" {
            self.opts
                .http
                .max_image
                .unwrap_or(transport::DEFAULT_MAX_IMAGE)
        } else {
            SMALL
        });
        match transport::download(
            self.transport.as_ref(),
            &url,
            step,
            name,
            &mut f,
            limit,
            self.opts.retry,
            rep,
        ) {
            // Hashed while it arrived; the one fsync per file comes when
            // the entry (or the mirrored build) is committed.
            Ok(got) => Ok(Some(got.sha256)),
            Err(Error::Download {
                status: Some(404), ..
            }) if optional => {
                drop(f);
                let _ = std::fs::remove_file(&dest);
                Ok(None)
            }
            Err(
                e @ Error::Download {
                    status: Some(404), ..
                },
            ) if name.ends_with(".tar.xz") => Err(Self::missing_build(img, &e)),
            Err(e) => Err(e),
        }
    }

    /// `None` when the server has `path`, else the 404 as a download error
    /// of `step` (other failures are errors).
    fn missing(&self, path: &str, step: &str) -> Result<Option<Error>> {
        let url = self.opts.server.url(path);
        match self.transport.get(&url, 0) {
            Ok(_) => Ok(None),
            Err(f) => {
                let e = Error::Download {
                    step: step.into(),
                    url,
                    final_url: f.final_url,
                    status: f.status,
                    received: 0,
                    source: f.source,
                };
                if matches!(
                    e,
                    Error::Download {
                        status: Some(404),
                        ..
                    }
                ) {
                    Ok(Some(e))
                } else {
                    Err(e)
                }
            }
        }
    }

    /// "Listed but not there": a mirror out of sync, or an image not mirrored.
    fn missing_build(img: &Image, cause: &Error) -> Error {
        Error::NotFound {
            message: format!(
                "{cause}: the index lists {} build {}, but the server has no such file: it or its mirror is out of sync, or this image was not mirrored there; try again later or another --server, or mirror it with `davit mirror --dist {} --release {}`",
                img.tuple(),
                img.build,
                img.dist,
                img.release
            ),
        }
    }

    /// Downloads the files of one build into `dir`: `SHA256SUMS` and its
    /// signature when the server has them, the two tarballs, and the
    /// per-file `.asc` that verification needs (every one that exists with
    /// `all_sigs`, as a mirror wants). Returns name -> sha256.
    pub(crate) fn download_build_files(
        &self,
        img: &Image,
        dir: &std::path::Path,
        all_sigs: bool,
        rep: &dyn Reporter,
    ) -> Result<BTreeMap<String, String>> {
        let mut files = BTreeMap::new();
        let p = |name: &str| format!("{}{name}", img.path);
        let mut listed = BTreeMap::new();
        if self.keyring.is_some() || all_sigs {
            if let Some(h) = self.get_to_file(
                img,
                "SHA256SUMS",
                dir,
                "SHA256SUMS",
                "downloading SHA256SUMS",
                true,
                rep,
            )? {
                files.insert("SHA256SUMS".to_string(), h);
                if let Some(h) = self.get_to_file(
                    img,
                    "SHA256SUMS.asc",
                    dir,
                    "SHA256SUMS.asc",
                    "downloading SHA256SUMS.asc",
                    true,
                    rep,
                )? {
                    files.insert("SHA256SUMS.asc".to_string(), h);
                    let text = std::fs::read(dir.join("SHA256SUMS"))
                        .map_err(|e| Error::io("read", dir.join("SHA256SUMS"), e))?;
                    listed = parse_sums(&text);
                }
            }
        }
        for (name, step) in [
            ("rootfs.tar.xz", "downloading the rootfs"),
            ("meta.tar.xz", "downloading the metadata"),
        ] {
            let asc = format!("{name}.asc");
            let need_sig = self.keyring.is_some() && !listed.contains_key(name);
            if need_sig || all_sigs {
                // Fetch the small signature first: a missing one fails before the big download.
                match self.get_to_file(
                    img,
                    &asc,
                    dir,
                    &asc,
                    &format!("{step} signature"),
                    true,
                    rep,
                )? {
                    Some(h) => {
                        files.insert(asc.clone(), h);
                    }
                    None if need_sig => {
                        // No signature: say "not there" when the whole build is missing.
                        if let Some(e) = self.missing(&p(name), step)? {
                            return Err(Self::missing_build(img, &e));
                        }
                        return Err(Error::Signature {
                            file: self.opts.server.url(&p(name)),
                            why: format!(
                                "the signature {} is missing (HTTP 404) and no signed SHA256SUMS lists the file; use --no-validate only if you trust this server and the path to it",
                                self.opts.server.url(&p(&asc))
                            ),
                            signer: None,
                        });
                    }
                    None => {}
                }
            }
            rep.step(step);
            let h = self
                .get_to_file(img, name, dir, name, step, false, rep)?
                .expect("required file");
            files.insert(name.to_string(), h);
        }
        Ok(files)
    }

    /// Verifies a build's files in `dir` (digests in `files`): one signed
    /// `SHA256SUMS` that lists a file, or the file's own `.asc`.
    pub(crate) fn verify_build(
        &self,
        img: &Image,
        dir: &std::path::Path,
        files: &BTreeMap<String, String>,
    ) -> Result<(String, Option<String>)> {
        let Some(k) = &self.keyring else {
            return Ok(("none".into(), None));
        };
        let url = |name: &str| self.opts.server.url(&format!("{}{name}", img.path));
        let read = |name: &str| {
            std::fs::read(dir.join(name)).map_err(|e| Error::io("read", dir.join(name), e))
        };
        let mut listed = BTreeMap::new();
        let mut signer = None;
        if files.contains_key("SHA256SUMS") && files.contains_key("SHA256SUMS.asc") {
            let text = read("SHA256SUMS")?;
            signer = Some(k.verify_bytes(&text, &read("SHA256SUMS.asc")?, &url("SHA256SUMS"))?);
            listed = parse_sums(&text);
        }
        let mut method = "sha256sums";
        for name in ["rootfs.tar.xz", "meta.tar.xz"] {
            let got = files.get(name).cloned().unwrap_or_default();
            if let Some(want) = listed.get(name) {
                if !want.eq_ignore_ascii_case(&got) {
                    return Err(Error::Digest {
                        file: url(name),
                        against: "the signed SHA256SUMS".into(),
                        want: want.clone(),
                        got,
                    });
                }
            } else {
                method = "detached";
                let asc = format!("{name}.asc");
                if !files.contains_key(&asc) {
                    return Err(Error::Signature {
                        file: url(name),
                        why: format!("the signature {} is missing", url(&asc)),
                        signer: None,
                    });
                }
                signer = Some(k.verify_file(&dir.join(name), &read(&asc)?, &url(name))?);
            }
        }
        Ok((method.to_string(), signer))
    }
}

fn write(dir: &std::path::Path, name: &str, data: &[u8]) -> Result<()> {
    let p = dir.join(name);
    std::fs::write(&p, data).map_err(|e| Error::io("write", &p, e))
}

fn file_name(path: &str) -> String {
    path.rsplit('/').next().unwrap_or(path).to_string()
}

/// Parses `HASH  NAME` lines (binary-mode `*NAME` too).
pub fn parse_sums(text: &[u8]) -> BTreeMap<String, String> {
    String::from_utf8_lossy(text)
        .lines()
        .filter_map(|l| {
            let (h, n) = l.split_once(char::is_whitespace)?;
            let n = n.trim_start().trim_start_matches('*');
            (h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
                .then(|| (n.to_string(), h.to_ascii_lowercase()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_upstream_sums() {
        let s = parse_sums(include_bytes!(
            "../../../tests/fixtures/upstream/SHA256SUMS"
        ));
        assert_eq!(
            s["rootfs.tar.xz"],
            "c2eed8f2bf4fe70287ba9244161f30aefdb86328f5759d7efcdbf2b8a92288d6"
        );
        assert_eq!(s.len(), 9);
    }
}
