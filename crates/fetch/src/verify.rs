//! Signature checks with gpgme in a private, temporary GnuPG home.
//!
//! The home holds only the keys the user trusts: the official key shipped in
//! the binary, `--keyring` files and the keys directory. Nothing touches
//! `~/.gnupg` and nothing asks a keyserver, so air-gapped hosts verify too.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use gpgme::{Context, Protocol, SignatureSummary};

use crate::error::{Error, Result};

/// The fingerprint of the official image signing key,
/// "LXC pre-built images <lxc-devel@lists.linuxcontainers.org>".
pub const OFFICIAL_FINGERPRINT: &str = "E7FB0CAEC8173D669066514CBAEFF88C22F6E216";

/// The official public key block, shipped in the binary.
pub const OFFICIAL_KEY: &[u8] = include_bytes!("../keys/linuxcontainers-images.asc");

fn gpgme_init() -> &'static gpgme::Gpgme {
    static G: OnceLock<gpgme::Gpgme> = OnceLock::new();
    G.get_or_init(gpgme::init)
}

/// A private GnuPG home holding the trusted keys.
pub struct Keyring {
    home: tempfile::TempDir,
    trusted: Vec<String>,
    sources: Vec<String>,
}

/// Temporary GnuPG homes are `davit-gpg-PID-XXXXXX`.
const HOME_PREFIX: &str = "davit-gpg-";

/// Removes the temporary GnuPG homes of davit processes that are gone
/// (killed before they could clean up), in `tmp`: only directories of our
/// own uid whose pid no longer exists. A live pid, even a reused one, keeps
/// its directory.
fn sweep_stale_homes(tmp: &Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(rd) = std::fs::read_dir(tmp) else {
        return;
    };
    let me = std::fs::metadata("/proc/self").map(|m| m.uid()).ok();
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(HOME_PREFIX))
            .and_then(|r| r.split_once('-'))
            .and_then(|(p, _)| p.parse::<u32>().ok())
        else {
            continue;
        };
        let ours = e
            .metadata()
            .is_ok_and(|m| m.is_dir() && Some(m.uid()) == me);
        if ours && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("trusted", &self.trusted)
            .field("sources", &self.sources)
            .finish()
    }
}

/// Where extra trusted keys come from.
#[derive(Debug, Clone, Default)]
pub struct KeyOptions {
    /// Trust the shipped official key (on by default in the CLI).
    pub builtin: bool,
    /// `--keyring FILE` (armoured or binary, one or more keys each).
    pub files: Vec<PathBuf>,
    /// Directories whose `*.asc`, `*.gpg`, `*.pgp` and `*.key` files are
    /// trusted keys (`/etc/davit/keys/`, `$XDG_CONFIG_HOME/davit/keys/`).
    /// A directory that does not exist is skipped.
    pub dirs: Vec<PathBuf>,
}

impl Keyring {
    /// Builds the private home and imports every trusted key.
    ///
    /// # Errors
    /// [`Error::Io`] for an unreadable key file, [`Error::Usage`] for a file
    /// that holds no OpenPGP key, [`Error::Gpg`] when gpg cannot run.
    pub fn load(opts: &KeyOptions) -> Result<Keyring> {
        gpgme_init();
        sweep_stale_homes(&std::env::temp_dir());
        let home = tempfile::Builder::new()
            .prefix(&format!("{HOME_PREFIX}{}-", std::process::id()))
            .tempdir()
            .map_err(|e| Error::io("create a temporary GnuPG home in", std::env::temp_dir(), e))?;
        // No keyserver, no network: verification must work air-gapped.
        std::fs::write(
            home.path().join("gpg.conf"),
            "no-auto-key-retrieve\nno-autostart\ntrust-model always\n",
        )
        .map_err(|e| Error::io("write", home.path().join("gpg.conf"), e))?;
        let mut ring = Keyring {
            home,
            trusted: Vec::new(),
            sources: Vec::new(),
        };
        if opts.builtin {
            ring.import(OFFICIAL_KEY, "the built-in linuxcontainers.org key")?;
        }
        for f in &opts.files {
            let data = std::fs::read(f).map_err(|e| Error::io("read the keyring", f, e))?;
            ring.import(&data, &f.display().to_string())?;
        }
        for d in &opts.dirs {
            let rd = match std::fs::read_dir(d) {
                Ok(rd) => rd,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io("read the keys directory", d, e)),
            };
            let mut files: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
            files.sort();
            for f in files {
                let ext = f.extension().and_then(|e| e.to_str()).unwrap_or("");
                if !matches!(ext, "asc" | "gpg" | "pgp" | "key") {
                    continue;
                }
                let data = std::fs::read(&f).map_err(|e| Error::io("read the key", &f, e))?;
                ring.import(&data, &f.display().to_string())?;
            }
        }
        Ok(ring)
    }

    fn context(&self) -> Result<Context> {
        let mut ctx =
            Context::from_protocol(Protocol::OpenPgp).map_err(|e| Error::gpg("start gpgme", e))?;
        let home = self
            .home
            .path()
            .to_str()
            .ok_or_else(|| Error::Usage("the temporary directory path is not UTF-8".into()))?;
        ctx.set_engine_home_dir(home)
            .map_err(|e| Error::gpg("use the private GnuPG home", e))?;
        ctx.set_offline(true);
        Ok(ctx)
    }

    fn import(&mut self, data: &[u8], label: &str) -> Result<()> {
        let mut ctx = self.context()?;
        let res = ctx
            .import(data)
            .map_err(|e| Error::gpg(&format!("import {label}"), e))?;
        let mut n = 0;
        for imp in res.imports() {
            if let Ok(fpr) = imp.fingerprint() {
                // Map a subkey's fingerprint to its primary key.
                let primary = ctx
                    .get_key(fpr)
                    .ok()
                    .and_then(|k| k.fingerprint().ok().map(str::to_string))
                    .unwrap_or_else(|| fpr.to_string());
                if !self.trusted.contains(&primary) {
                    self.trusted.push(primary);
                }
                n += 1;
            }
        }
        if n == 0 {
            return Err(Error::Usage(format!("{label} holds no OpenPGP public key")));
        }
        self.sources.push(label.to_string());
        Ok(())
    }

    /// The primary fingerprints of every trusted key.
    pub fn fingerprints(&self) -> &[String] {
        &self.trusted
    }

    /// Checks a detached signature over `data` (a file). `label` names the
    /// file in errors. Returns the signer's primary fingerprint.
    ///
    /// # Errors
    /// [`Error::Signature`] for a bad, missing, expired or revoked signature
    /// or one by a key outside the trusted set.
    pub fn verify_file(&self, data: &Path, sig: &[u8], label: &str) -> Result<String> {
        let f = std::fs::File::open(data).map_err(|e| Error::io("read", data, e))?;
        self.verify_with(
            gpgme::Data::from_seekable_stream(f).map_err(|e| Error::gpg("read data", e.error()))?,
            sig,
            label,
        )
    }

    /// Like [`Keyring::verify_file`] for bytes in memory.
    ///
    /// # Errors
    /// As [`Keyring::verify_file`].
    pub fn verify_bytes(&self, data: &[u8], sig: &[u8], label: &str) -> Result<String> {
        self.verify_with(
            gpgme::Data::from_bytes(data).map_err(|e| Error::gpg("read data", e))?,
            sig,
            label,
        )
    }

    fn verify_with(&self, mut data: gpgme::Data<'_>, sig: &[u8], label: &str) -> Result<String> {
        let fail = |why: String, signer: Option<String>| Error::Signature {
            file: label.to_string(),
            why,
            signer,
        };
        if sig.iter().all(|b| b.is_ascii_whitespace()) {
            return Err(fail("the signature file is empty".into(), None));
        }
        let mut ctx = self.context()?;
        let res = match ctx.verify_detached(sig, &mut data) {
            Ok(r) => r,
            Err(e) => return Err(fail(format!("gpg could not read the signature: {e}"), None)),
        };
        let mut why = "no signature found in the .asc file".to_string();
        let mut signer = None;
        for s in res.signatures() {
            let fpr = s.fingerprint().ok().map(str::to_string);
            let primary = fpr
                .as_deref()
                .and_then(|f| ctx.get_key(f).ok())
                .and_then(|k| k.fingerprint().ok().map(str::to_string))
                .or(fpr.clone());
            signer = primary.clone();
            let sum = s.summary();
            match s.status() {
                Err(e) if e.code() == gpgme::Error::NO_PUBKEY.code() => {
                    why = "signed by a key that is not trusted (add it with --keyring or to the keys directory)".into();
                    continue;
                }
                Err(e) if e.code() == gpgme::Error::KEY_EXPIRED.code() => {
                    why = "the signing key has expired".into();
                    continue;
                }
                Err(e) if e.code() == gpgme::Error::CERT_REVOKED.code() => {
                    why = "the signing key has been revoked".into();
                    continue;
                }
                Err(e) if e.code() == gpgme::Error::SIG_EXPIRED.code() => {
                    why = "the signature has expired".into();
                    continue;
                }
                Err(e) if e.code() == gpgme::Error::BAD_SIGNATURE.code() => {
                    why = "bad signature: the file is not what was signed".into();
                    continue;
                }
                Err(e) => {
                    why = format!("gpg says: {e}");
                    continue;
                }
                Ok(()) => {}
            }
            if sum.intersects(SignatureSummary::KEY_REVOKED) {
                why = "the signing key has been revoked".into();
                continue;
            }
            if sum.intersects(SignatureSummary::KEY_EXPIRED) {
                why = "the signing key has expired".into();
                continue;
            }
            if sum.intersects(SignatureSummary::SIG_EXPIRED) {
                why = "the signature has expired".into();
                continue;
            }
            if sum.intersects(SignatureSummary::RED) {
                why = "gpg marks the signature as bad".into();
                continue;
            }
            match primary {
                Some(p) if self.trusted.iter().any(|t| t.eq_ignore_ascii_case(&p)) => return Ok(p),
                _ => why = "signed by a key outside the trusted set".into(),
            }
        }
        Err(fail(why, signer))
    }
}

/// Signs files with a secret key from a GnuPG home (for `davit publish`).
pub struct Signer {
    ctx: Context,
    /// The signing key's primary fingerprint.
    pub fingerprint: String,
}

impl Signer {
    /// Selects `key` (fingerprint, key id or user id) from `home` (or the
    /// default GnuPG home when `None`).
    ///
    /// # Errors
    /// [`Error::Usage`] when no secret key matches, [`Error::Gpg`] when gpg
    /// cannot run.
    pub fn new(home: Option<&Path>, key: &str) -> Result<Signer> {
        gpgme_init();
        let mut ctx =
            Context::from_protocol(Protocol::OpenPgp).map_err(|e| Error::gpg("start gpgme", e))?;
        if let Some(h) = home {
            let hs = h
                .to_str()
                .ok_or_else(|| Error::Usage(format!("{} is not UTF-8", h.display())))?;
            ctx.set_engine_home_dir(hs)
                .map_err(|e| Error::gpg("use the GnuPG home", e))?;
        }
        ctx.set_armor(true);
        ctx.set_offline(true);
        let _ = ctx.set_pinentry_mode(gpgme::PinentryMode::Loopback);
        let k = ctx.get_secret_key(key).or_else(|_| {
            let mut keys = ctx
                .find_secret_keys([key])
                .map_err(|e| Error::gpg("list secret keys", e))?;
            keys.next().and_then(|k| k.ok()).ok_or_else(|| {
                Error::Usage(format!(
                    "no secret key {key:?} in {}; list them with `gpg --list-secret-keys`",
                    home.map(|h| h.display().to_string())
                        .unwrap_or_else(|| "the default GnuPG home".into())
                ))
            })
        })?;
        let fingerprint = k.fingerprint().unwrap_or("").to_string();
        ctx.add_signer(&k)
            .map_err(|e| Error::gpg("select the signing key", e))?;
        Ok(Signer { ctx, fingerprint })
    }

    /// Returns an armoured detached signature over the file at `path`.
    ///
    /// # Errors
    /// [`Error::Io`] if it cannot be read, [`Error::Gpg`] when signing fails.
    pub fn sign_file(&mut self, path: &Path) -> Result<Vec<u8>> {
        let f = std::fs::File::open(path).map_err(|e| Error::io("read", path, e))?;
        let data =
            gpgme::Data::from_seekable_stream(f).map_err(|e| Error::gpg("read data", e.error()))?;
        let mut out = Vec::new();
        self.ctx
            .sign_detached(data, &mut out)
            .map_err(|e| Error::gpg(&format!("sign {}", path.display()), e))?;
        Ok(out)
    }

    /// Returns an armoured detached signature over `data`.
    ///
    /// # Errors
    /// [`Error::Gpg`] when signing fails (e.g. a passphrase is needed).
    pub fn sign(&mut self, data: &[u8], label: &str) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.ctx
            .sign_detached(data, &mut out)
            .map_err(|e| Error::gpg(&format!("sign {label}"), e))?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn homes_of_dead_processes_are_swept_and_live_ones_kept() {
        let t = tempfile::tempdir().unwrap();
        let mine = std::process::id();
        let dead = {
            // A pid that existed and is gone: a child we reaped.
            let mut c = std::process::Command::new("true").spawn().unwrap();
            let pid = c.id();
            c.wait().unwrap();
            pid
        };
        let live = t.path().join(format!("davit-gpg-{mine}-abc"));
        let stale = t.path().join(format!("davit-gpg-{dead}-def"));
        let other = t.path().join("davit-gpg-notapid");
        for d in [&live, &stale, &other] {
            std::fs::create_dir(d).unwrap();
            std::fs::write(d.join("pubring.kbx"), "x").unwrap();
        }
        sweep_stale_homes(t.path());
        assert!(live.exists() && other.exists());
        assert!(!stale.exists(), "a dead process's home was left");
    }

    use super::*;

    const SUMS: &[u8] = include_bytes!("../../../tests/fixtures/upstream/SHA256SUMS");
    const SUMS_ASC: &[u8] = include_bytes!("../../../tests/fixtures/upstream/SHA256SUMS.asc");

    #[test]
    fn official_key_has_the_pinned_fingerprint() {
        let k = Keyring::load(&KeyOptions {
            builtin: true,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(k.fingerprints(), [OFFICIAL_FINGERPRINT.to_string()]);
    }

    #[test]
    fn real_upstream_sha256sums_verifies() {
        let k = Keyring::load(&KeyOptions {
            builtin: true,
            ..Default::default()
        })
        .unwrap();
        let who = k.verify_bytes(SUMS, SUMS_ASC, "SHA256SUMS").unwrap();
        assert_eq!(who, OFFICIAL_FINGERPRINT);
    }

    #[test]
    fn one_flipped_byte_fails() {
        let k = Keyring::load(&KeyOptions {
            builtin: true,
            ..Default::default()
        })
        .unwrap();
        for pos in [0, SUMS.len() / 2, SUMS.len() - 2] {
            let mut bad = SUMS.to_vec();
            bad[pos] ^= 0x01;
            let e = k.verify_bytes(&bad, SUMS_ASC, "SHA256SUMS").unwrap_err();
            assert!(matches!(e, Error::Signature { .. }), "{e}");
            assert!(e.to_string().contains("SHA256SUMS"), "{e}");
        }
    }

    #[test]
    fn untrusted_and_empty_signatures_fail() {
        // A keyring without the official key: the same good signature is untrusted.
        let dir = tempfile::tempdir().unwrap();
        let k = Keyring::load(&KeyOptions {
            builtin: false,
            dirs: vec![dir.path().into()],
            ..Default::default()
        })
        .unwrap();
        let e = k.verify_bytes(SUMS, SUMS_ASC, "SHA256SUMS").unwrap_err();
        assert!(e.to_string().contains("not trusted"), "{e}");
        let k = Keyring::load(&KeyOptions {
            builtin: true,
            ..Default::default()
        })
        .unwrap();
        assert!(k.verify_bytes(SUMS, b"", "x").is_err());
        assert!(k.verify_bytes(SUMS, b"garbage", "x").is_err());
    }
}
