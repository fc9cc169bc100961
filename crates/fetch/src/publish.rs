//! `davit publish`: turns a built rootfs (a directory or a tarball) into a
//! signed image-server tree in the LXC layout, which stock `lxc-download`
//! and davit both accept.
//!
//! ```text
//! TO/meta/1.0/index-system(.asc)  index-user(.asc)
//! TO/images/DIST/RELEASE/ARCH/VARIANT/BUILD/
//!     rootfs.tar.xz(.asc)  meta.tar.xz(.asc)  SHA256SUMS(.asc)
//! ```
//! Each build directory is written under a temporary name and renamed into
//! place before the indexes name it; the indexes are replaced atomically,
//! signature first.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Seek, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::Serialize;

use crate::cache::write_atomic;
use crate::error::{Error, Result};
use crate::index::{Image, Index};
use crate::verify::Signer;
use crate::Reporter;

/// What to publish.
#[derive(Debug, Clone)]
pub struct PublishOptions {
    /// A rootfs directory, or a tarball (plain, xz, gzip or zstd).
    pub rootfs: PathBuf,
    /// Distribution name.
    pub dist: String,
    /// Release name.
    pub release: String,
    /// Debian-style architecture.
    pub arch: String,
    /// Variant.
    pub variant: String,
    /// Build id; default: now as `%Y%m%d_%H:%M` (UTC).
    pub build: Option<String>,
    /// The server tree to write into.
    pub to: PathBuf,
    /// How many builds of this image to keep.
    pub keep: usize,
    /// Seconds from now until the image expires.
    pub expiry_secs: i64,
    /// The `config` file; default: LXC's common.conf include and `lxc.arch`.
    pub config: Option<String>,
    /// The `config-user` file; default: config plus userns.conf.
    pub config_user: Option<String>,
    /// The `create-message`.
    pub create_message: Option<String>,
    /// Files that get placeholder substitution (`templates`).
    pub templates: Vec<String>,
    /// List the image in `index-user` (it works unprivileged).
    pub user: bool,
    /// xz preset (0-9).
    pub xz_preset: u32,
    /// xz block size in bytes; every block decodes independently, so
    /// multi-block images unpack on several threads.
    pub xz_block_size: u64,
    /// Replace a build with the same id.
    pub force: bool,
}

/// What `publish` did.
#[derive(Debug, Clone, Serialize)]
pub struct Published {
    /// The index line.
    pub image: Image,
    /// The build directory.
    pub dir: PathBuf,
    /// sha256 of each published file.
    pub files: Vec<(String, String)>,
    /// Device nodes listed in `excludes-user`.
    pub device_nodes: usize,
    /// Builds removed by `keep`.
    pub pruned: Vec<String>,
    /// The signing key's fingerprint.
    pub signer: String,
}

/// LXC's `lxc.arch` personality for a Debian architecture name.
pub fn personality(arch: &str) -> &str {
    match arch {
        "amd64" => "x86_64",
        "arm64" => "aarch64",
        "armhf" => "armv7l",
        "armel" => "armv5tel",
        "i386" => "i686",
        "ppc64el" => "ppc64le",
        other => other,
    }
}

/// A reader for a tarball that may be compressed, chosen by magic bytes.
///
/// # Errors
/// [`Error::Io`].
pub fn open_tarball(p: &Path) -> Result<Box<dyn Read + Send>> {
    let mut f = File::open(p).map_err(|e| Error::io("read", p, e))?;
    let mut magic = [0u8; 6];
    let n = f.read(&mut magic).map_err(|e| Error::io("read", p, e))?;
    f.rewind().map_err(|e| Error::io("read", p, e))?;
    let r = BufReader::with_capacity(1 << 20, f);
    Ok(match &magic[..n] {
        [0xfd, b'7', b'z', b'X', b'Z', 0] => {
            Box::new(liblzma::read::XzDecoder::new_multi_decoder(r))
        }
        [0x1f, 0x8b, ..] => Box::new(flate2::bufread::MultiGzDecoder::new(r)),
        [0x28, 0xb5, 0x2f, 0xfd, ..] => {
            Box::new(zstd::Decoder::with_buffer(r).map_err(|e| Error::io("read", p, e))?)
        }
        _ => Box::new(r),
    })
}

fn xz_writer<W: Write>(w: W, preset: u32, block: u64) -> Result<liblzma::write::XzEncoder<W>> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1);
    let stream = liblzma::stream::MtStreamBuilder::new()
        .preset(preset)
        .threads(threads)
        .block_size(block)
        .check(liblzma::stream::Check::Crc64)
        .encoder()
        .map_err(|e| Error::Usage(format!("cannot set up the xz encoder: {e}")))?;
    Ok(liblzma::write::XzEncoder::new_stream(w, stream))
}

/// One pax record: `LEN key=value\n`, where LEN counts itself.
fn pax_record(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    let body = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = body + 1;
    loop {
        let total = body + len.to_string().len();
        if total == len {
            break;
        }
        len = total;
    }
    out.extend_from_slice(format!("{len} {key}=").as_bytes());
    out.extend_from_slice(value);
    out.push(b'\n');
}

fn set_name(h: &mut tar::Header, name: &[u8]) {
    let n = name.len().min(99);
    let old = h.as_old_mut();
    old.name = [0; 100];
    old.name[..n].copy_from_slice(&name[..n]);
}

fn set_link(h: &mut tar::Header, name: &[u8]) {
    let n = name.len().min(99);
    let old = h.as_old_mut();
    old.linkname = [0; 100];
    old.linkname[..n].copy_from_slice(&name[..n]);
}

/// Writes a directory tree as a pax tar with `./` names, xattrs, real
/// device nodes and hardlinks, in sorted order. Returns the device nodes.
fn tar_dir<W: Write>(root: &Path, w: W, rep: &dyn Reporter) -> Result<(W, Vec<String>)> {
    let mut b = tar::Builder::new(w);
    b.mode(tar::HeaderMode::Complete);
    let mut devices = Vec::new();
    let mut links: HashMap<(u64, u64), Vec<u8>> = HashMap::new();
    let mut stack: Vec<PathBuf> = vec![PathBuf::new()];
    let bar = rep.start("packing the rootfs", None);
    while let Some(rel) = stack.pop() {
        let full = root.join(&rel);
        let md = fs::symlink_metadata(&full).map_err(|e| Error::io("stat", &full, e))?;
        let ft = md.file_type();
        if ft.is_socket() {
            continue;
        }
        let name: Vec<u8> = if rel.as_os_str().is_empty() {
            b"./".to_vec()
        } else {
            let mut n = b"./".to_vec();
            n.extend_from_slice(rel.as_os_str().as_encoded_bytes());
            if ft.is_dir() {
                n.push(b'/');
            }
            n
        };
        let mut h = tar::Header::new_ustar();
        h.set_mode(md.mode() & 0o7777);
        h.set_uid(md.uid() as u64);
        h.set_gid(md.gid() as u64);
        h.set_mtime(md.mtime().max(0) as u64);
        h.set_size(0);
        let mut pax = Vec::new();
        if name.len() > 99 {
            pax_record(&mut pax, "path", &name);
        }
        if md.mtime_nsec() != 0 {
            pax_record(
                &mut pax,
                "mtime",
                format!("{}.{:09}", md.mtime(), md.mtime_nsec()).as_bytes(),
            );
        }
        if let Ok(names) = xattr::list(&full) {
            let mut names: Vec<_> = names.collect();
            names.sort();
            for x in names {
                if let Ok(Some(v)) = xattr::get(&full, &x) {
                    let key = format!("SCHILY.xattr.{}", x.to_string_lossy());
                    pax_record(&mut pax, &key, &v);
                }
            }
        }
        let mut data: Option<File> = None;
        if ft.is_dir() {
            h.set_entry_type(tar::EntryType::Directory);
            let mut kids: Vec<PathBuf> = fs::read_dir(&full)
                .map_err(|e| Error::io("read the directory", &full, e))?
                .map(|e| e.map(|e| rel.join(e.file_name())))
                .collect::<io::Result<_>>()
                .map_err(|e| Error::io("read the directory", &full, e))?;
            kids.sort();
            kids.reverse();
            stack.extend(kids);
        } else if ft.is_symlink() {
            h.set_entry_type(tar::EntryType::Symlink);
            let target = fs::read_link(&full).map_err(|e| Error::io("read the link", &full, e))?;
            let t = target.as_os_str().as_encoded_bytes();
            if t.len() > 99 {
                pax_record(&mut pax, "linkpath", t);
            }
            set_link(&mut h, t);
        } else if ft.is_file() {
            let key = (md.dev(), md.ino());
            if md.nlink() > 1 {
                if let Some(first) = links.get(&key) {
                    h.set_entry_type(tar::EntryType::Link);
                    if first.len() > 99 {
                        pax_record(&mut pax, "linkpath", first);
                    }
                    set_link(&mut h, first);
                } else {
                    links.insert(key, name.clone());
                }
            }
            if h.entry_type() != tar::EntryType::Link {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(md.len());
                data = Some(File::open(&full).map_err(|e| Error::io("read", &full, e))?);
            }
        } else if ft.is_char_device() || ft.is_block_device() {
            h.set_entry_type(if ft.is_char_device() {
                tar::EntryType::Char
            } else {
                tar::EntryType::Block
            });
            let rdev = md.rdev();
            h.set_device_major(nix::sys::stat::major(rdev) as u32)
                .map_err(|e| Error::io("pack", &full, e))?;
            h.set_device_minor(nix::sys::stat::minor(rdev) as u32)
                .map_err(|e| Error::io("pack", &full, e))?;
            devices.push(String::from_utf8_lossy(&name).into_owned());
        } else if ft.is_fifo() {
            h.set_entry_type(tar::EntryType::Fifo);
        }
        if !pax.is_empty() {
            let mut ph = tar::Header::new_ustar();
            let mut pname = b"./PaxHeaders/".to_vec();
            pname.extend_from_slice(
                rel.file_name()
                    .map(|f| f.as_encoded_bytes())
                    .unwrap_or(b"root"),
            );
            set_name(&mut ph, &pname);
            ph.set_entry_type(tar::EntryType::XHeader);
            ph.set_mode(0o644);
            ph.set_size(pax.len() as u64);
            ph.set_cksum();
            b.append(&ph, pax.as_slice())
                .map_err(|e| Error::io("write the tarball for", &full, e))?;
        }
        set_name(&mut h, &name);
        h.set_cksum();
        let size = h.size().unwrap_or(0);
        match data {
            Some(f) => b
                .append(&h, f.take(size))
                .map_err(|e| Error::io("pack", &full, e))?,
            None => b
                .append(&h, io::empty())
                .map_err(|e| Error::io("pack", &full, e))?,
        }
        rep.advance(bar, size);
    }
    rep.finish(bar);
    let w = b
        .into_inner()
        .map_err(|e| Error::io("finish the tarball of", root, e))?;
    Ok((w, devices))
}

/// Device nodes in a tarball, as `./path` lines.
fn tar_devices(p: &Path) -> Result<Vec<String>> {
    let mut ar = tar::Archive::new(open_tarball(p)?);
    let mut out = Vec::new();
    let bad = |e: io::Error| Error::Malformed {
        what: "the rootfs tarball".into(),
        file: p.display().to_string(),
        why: e.to_string(),
    };
    for e in ar.entries().map_err(bad)? {
        let e = e.map_err(bad)?;
        let t = e.header().entry_type();
        if t == tar::EntryType::Char || t == tar::EntryType::Block {
            let name = String::from_utf8_lossy(&e.path_bytes()).into_owned();
            let name = format!(
                "./{}",
                name.trim_start_matches("./").trim_start_matches('/')
            );
            out.push(name);
        }
    }
    Ok(out)
}

fn meta_tar(files: &[(&str, String)], mtime: u64) -> Result<Vec<u8>> {
    let mut raw = tar::Builder::new(Vec::new());
    for (name, body) in files {
        let mut h = tar::Header::new_ustar();
        h.set_path(name)
            .map_err(|e| Error::io("pack", Path::new(name), e))?;
        h.set_mode(0o644);
        h.set_mtime(mtime);
        h.set_size(body.len() as u64);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        raw.append(&h, body.as_bytes())
            .map_err(|e| Error::io("pack", Path::new(name), e))?;
    }
    let raw = raw
        .into_inner()
        .map_err(|e| Error::io("pack", Path::new("meta.tar"), e))?;
    let mut xz = xz_writer(Vec::new(), 6, 1 << 20)?;
    xz.write_all(&raw)
        .map_err(|e| Error::io("compress", Path::new("meta.tar.xz"), e))?;
    xz.finish()
        .map_err(|e| Error::io("compress", Path::new("meta.tar.xz"), e))
}

fn sha256(p: &Path) -> Result<String> {
    crate::cache::sha256_file(p)
}

fn check_name(what: &str, v: &str) -> Result<()> {
    let ok = !v.is_empty()
        && v != "."
        && v != ".."
        && !v.contains(['/', ';', '\\'])
        && !v.chars().any(|c| c.is_control() || c.is_whitespace());
    if ok {
        Ok(())
    } else {
        Err(Error::Usage(format!(
            "{what} {v:?} may not be empty or hold '/', ';', spaces or control characters"
        )))
    }
}

/// The build directories of one image (`images/D/R/A/V/`), oldest first;
/// dot-names (builds in progress) left out.
pub(crate) fn build_dirs(img_dir: &Path) -> Result<Vec<String>> {
    let mut builds: Vec<String> = fs::read_dir(img_dir)
        .map_err(|e| Error::io("read", img_dir, e))?
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    builds.sort();
    Ok(builds)
}

/// Publishes one build and updates both indexes.
///
/// # Errors
/// [`Error::Usage`] for bad names or an existing build without `force`,
/// [`Error::Io`] and [`Error::Gpg`] otherwise. On error the tree keeps its
/// previous state.
pub fn publish(o: &PublishOptions, signer: &mut Signer, rep: &dyn Reporter) -> Result<Published> {
    let now = time::OffsetDateTime::now_utc();
    let build = match &o.build {
        Some(b) => b.clone(),
        None => now
            .format(time::macros::format_description!(
                "[year][month][day]_[hour]:[minute]"
            ))
            .expect("formats"),
    };
    for (w, v) in [
        ("dist", &o.dist),
        ("release", &o.release),
        ("arch", &o.arch),
        ("variant", &o.variant),
        ("build", &build),
    ] {
        check_name(w, v)?;
    }
    fs::create_dir_all(&o.to).map_err(|e| Error::io("create", &o.to, e))?;
    let lockp = o.to.join(".davit-publish.lock");
    let lf = File::create(&lockp).map_err(|e| Error::io("create", &lockp, e))?;
    let _lock = Flock::lock(lf, FlockArg::LockExclusive)
        .map_err(|(_, e)| Error::io("lock", &lockp, io::Error::from(e)))?;

    let img_dir =
        o.to.join("images")
            .join(&o.dist)
            .join(&o.release)
            .join(&o.arch)
            .join(&o.variant);
    let final_dir = img_dir.join(&build);
    if final_dir.exists() && !o.force {
        return Err(Error::Usage(format!(
            "{} already exists; pass --build with a new id, or --force to replace it",
            final_dir.display()
        )));
    }
    fs::create_dir_all(&img_dir).map_err(|e| Error::io("create", &img_dir, e))?;
    let tmp = tempfile::Builder::new()
        .prefix(".partial-")
        .tempdir_in(&img_dir)
        .map_err(|e| Error::io("create a temporary directory in", &img_dir, e))?;

    // rootfs.tar.xz
    rep.step("packing the rootfs");
    let rootfs_out = tmp.path().join("rootfs.tar.xz");
    let f = File::create(&rootfs_out).map_err(|e| Error::io("create", &rootfs_out, e))?;
    let w = xz_writer(BufWriter::new(f), o.xz_preset, o.xz_block_size)?;
    let md = fs::metadata(&o.rootfs).map_err(|e| Error::io("read", &o.rootfs, e))?;
    let (w, devices) = if md.is_dir() {
        tar_dir(&o.rootfs, w, rep)?
    } else {
        let devices = tar_devices(&o.rootfs)?;
        let mut w = w;
        io::copy(&mut open_tarball(&o.rootfs)?, &mut w)
            .map_err(|e| Error::io("recompress", &o.rootfs, e))?;
        (w, devices)
    };
    let bw = w
        .finish()
        .map_err(|e| Error::io("compress", &rootfs_out, e))?;
    let f = bw
        .into_inner()
        .map_err(|e| Error::io("write", &rootfs_out, e.into_error()))?;
    f.sync_all()
        .map_err(|e| Error::io("fsync", &rootfs_out, e))?;

    // meta.tar.xz
    let pers = personality(&o.arch);
    let config = o.config.clone().unwrap_or_else(|| {
        format!("lxc.include = LXC_TEMPLATE_CONFIG/common.conf\nlxc.arch = {pers}\n")
    });
    let config_user = o
        .config_user
        .clone()
        .unwrap_or_else(|| format!("{config}lxc.include = LXC_TEMPLATE_CONFIG/userns.conf\n"));
    let mut excludes = devices.join("\n");
    excludes.push('\n');
    let message = o.create_message.clone().unwrap_or_else(|| {
        format!(
            "You just created a {} {} {} ({}) container.\n",
            o.dist, o.release, o.arch, build
        )
    });
    let expiry = now.unix_timestamp() + o.expiry_secs;
    let mut templates = o.templates.join("\n");
    templates.push('\n');
    let meta = meta_tar(
        &[
            ("config", config),
            ("config-user", config_user),
            ("excludes-user", excludes),
            ("create-message", message),
            ("expiry", format!("{expiry}\n")),
            ("templates", templates),
        ],
        now.unix_timestamp() as u64,
    )?;
    let meta_out = tmp.path().join("meta.tar.xz");
    fs::write(&meta_out, &meta).map_err(|e| Error::io("write", &meta_out, e))?;

    // SHA256SUMS and signatures.
    rep.step("signing");
    let mut files = Vec::new();
    let mut sums = String::new();
    for n in ["rootfs.tar.xz", "meta.tar.xz"] {
        let h = sha256(&tmp.path().join(n))?;
        sums.push_str(&format!("{h}  {n}\n"));
        files.push((n.to_string(), h));
    }
    fs::write(tmp.path().join("SHA256SUMS"), &sums)
        .map_err(|e| Error::io("write", tmp.path().join("SHA256SUMS"), e))?;
    for n in ["rootfs.tar.xz", "meta.tar.xz", "SHA256SUMS"] {
        let p = tmp.path().join(n);
        let data = fs::read(&p).map_err(|e| Error::io("read", &p, e))?;
        let sig = signer.sign(&data, n)?;
        fs::write(tmp.path().join(format!("{n}.asc")), sig)
            .map_err(|e| Error::io("write", &p, e))?;
    }
    for e in fs::read_dir(tmp.path())
        .map_err(|e| Error::io("read", tmp.path(), e))?
        .flatten()
    {
        File::open(e.path())
            .and_then(|f| f.sync_all())
            .map_err(|er| Error::io("fsync", e.path(), er))?;
    }
    let tmp_path = tmp.keep();
    if final_dir.exists() {
        fs::remove_dir_all(&final_dir).map_err(|e| Error::io("replace", &final_dir, e))?;
    }
    fs::rename(&tmp_path, &final_dir)
        .map_err(|e| Error::io("move the build into", &final_dir, e))?;
    fs::set_permissions(
        &final_dir,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .map_err(|e| Error::io("chmod", &final_dir, e))?;

    let mut builds = build_dirs(&img_dir)?;
    let newest = builds.last().cloned().unwrap_or_else(|| build.clone());
    let excess = builds.len().saturating_sub(o.keep.max(1));
    let mut pruned = Vec::new();
    for old in builds.drain(..excess) {
        fs::remove_dir_all(img_dir.join(&old))
            .map_err(|e| Error::io("prune", img_dir.join(&old), e))?;
        pruned.push(old);
    }

    // Indexes: the newest build of this tuple replaces its line.
    let image = Image {
        id: davit_types::ImageId {
            dist: o.dist.clone(),
            release: o.release.clone(),
            arch: o.arch.clone(),
            variant: o.variant.clone(),
            build: newest.clone(),
        },
        path: format!(
            "/images/{}/{}/{}/{}/{}/",
            o.dist, o.release, o.arch, o.variant, newest
        ),
    };
    let meta_dir = o.to.join("meta").join("1.0");
    fs::create_dir_all(&meta_dir).map_err(|e| Error::io("create", &meta_dir, e))?;
    for (name, listed) in [("index-system", true), ("index-user", o.user)] {
        let p = meta_dir.join(name);
        let old = fs::read_to_string(&p).unwrap_or_default();
        let mut idx = Index::parse(&old, &p.display().to_string())?;
        idx.images.retain(|i| i.tuple() != image.tuple());
        if listed {
            idx.images.push(image.clone());
        }
        idx.images.sort_by_key(|a| a.tuple());
        let text = idx.render();
        let sig = signer.sign(text.as_bytes(), name)?;
        write_atomic(&meta_dir.join(format!("{name}.asc")), &sig)?;
        write_atomic(&p, text.as_bytes())?;
    }
    Ok(Published {
        image,
        dir: final_dir,
        files,
        device_nodes: devices.len(),
        pruned,
        signer: signer.fingerprint.clone(),
    })
}
