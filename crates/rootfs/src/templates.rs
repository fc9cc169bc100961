//! LXC's template files: after unpacking, every file listed in the meta
//! `templates` (e.g. `/etc/hostname`, `/etc/hosts`) gets its placeholders
//! (`LXC_NAME`, `LXC_PATH`, ...) replaced. Each path is resolved *inside*
//! the rootfs (`openat2` with `RESOLVE_IN_ROOT`), so a hostile image cannot
//! point a template at a host file.
#![forbid(unsafe_code)]

use std::ffi::CString;
use std::io::{Read, Seek, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::error::{Error, Result};
use crate::meta::substitute;
use crate::sys;

/// Templates larger than this are left alone (they are config files).
const MAX: u64 = 1 << 20;

/// Opens the template `rel` (a path inside the rootfs `root`, leading `/`
/// allowed) with `flags`, resolved inside the root and never through a
/// magic link. `Ok(None)` when there is nothing to substitute: missing, a
/// link loop, or anything but a regular file. It is looked at through an
/// `O_PATH` descriptor first and opened for reading or writing only when
/// it is a regular file: opening a device node or a FIFO of a hostile image
/// as host root could block, or act on a host device.
fn open_template(
    root: BorrowedFd<'_>,
    rel: &str,
    flags: libc::c_int,
) -> std::io::Result<Option<std::fs::File>> {
    let rel = rel.trim_start_matches('/');
    let Ok(c) = CString::new(rel) else {
        return Ok(None);
    };
    if rel.is_empty() {
        return Ok(None);
    }
    let path = match sys::openat2(
        root,
        &c,
        libc::O_PATH,
        0,
        libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS,
    ) {
        Ok(fd) => fd,
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ELOOP)) => {
            return Ok(None)
        }
        Err(e) => return Err(e),
    };
    let path = std::fs::File::from(path);
    if !path.metadata()?.is_file() {
        return Ok(None);
    }
    // The very inode looked at: reopened through its descriptor.
    let fdp = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&path));
    std::fs::OpenOptions::new()
        .read(true)
        .write(flags & libc::O_ACCMODE == libc::O_RDWR)
        .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
        .open(fdp)
        .map(Some)
}

/// The text of an opened template with its metadata; `None` when there is
/// nothing to substitute: not a regular file, over [`MAX`], or not text.
fn read_text(f: &mut std::fs::File) -> std::io::Result<Option<(std::fs::Metadata, String)>> {
    let md = f.metadata()?;
    if !md.is_file() || md.len() > MAX {
        return Ok(None);
    }
    let mut text = String::new();
    Ok(f.read_to_string(&mut text).ok().map(|_| (md, text)))
}

/// Replaces the whole content of `f` (owner and mode stay).
fn rewrite(f: &mut std::fs::File, text: &str) -> std::io::Result<()> {
    f.set_len(0)?;
    f.rewind()?;
    f.write_all(text.as_bytes())
}

/// Opens the directory `p` as an `O_PATH` root for [`open_template`].
fn open_root(p: &Path) -> std::io::Result<OwnedFd> {
    let c = CString::new(p.as_os_str().as_encoded_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    sys::open(&c, libc::O_DIRECTORY | libc::O_PATH)
}

/// Substitutes `vars` in each listed file that exists as a regular file
/// inside `rootfs`. Missing files and non-regular files are skipped, as
/// LXC's `sed` loop does. Returns the paths changed.
///
/// # Errors
/// [`Error::Template`] when a file cannot be opened, read or rewritten.
pub fn apply(
    rootfs: &Path,
    templates: &[String],
    vars: &[(String, String)],
) -> Result<Vec<String>> {
    let mut changed = Vec::new();
    if templates.is_empty() {
        return Ok(changed);
    }
    let fail = |path: &str, source: std::io::Error| Error::Template {
        path: path.to_string(),
        source,
    };
    let root = open_root(rootfs).map_err(|e| fail("/", e))?;
    for t in templates {
        let Some(mut f) = open_template(root.as_fd(), t, libc::O_RDWR).map_err(|e| fail(t, e))?
        else {
            continue;
        };
        let Some((_, text)) = read_text(&mut f).map_err(|e| fail(t, e))? else {
            continue;
        };
        let new = substitute(&text, vars);
        if new != text {
            rewrite(&mut f, &new).map_err(|e| fail(t, e))?;
            changed.push(t.clone());
        }
    }
    Ok(changed)
}

/// For a copied container: `/etc/hostname` holding just `old` becomes
/// `new`, and in `/etc/hosts` every host name equal to `old` becomes `new`
/// (comments and other names untouched). Both are resolved inside `root`
/// and rewritten in place, keeping owner and mode; missing or non-regular
/// files are left alone. Returns the paths changed.
///
/// # Errors
/// [`Error::Template`] when a file exists and cannot be read or rewritten.
pub fn rename_host(root: &Path, old: &str, new: &str) -> Result<Vec<String>> {
    let mut changed = Vec::new();
    let dir = match open_root(root) {
        Ok(d) => d,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(changed),
        Err(e) => {
            return Err(Error::Template {
                path: "/".into(),
                source: e,
            })
        }
    };
    let hosts = |text: &str| -> String {
        let mut out = String::with_capacity(text.len());
        for line in text.split_inclusive('\n') {
            let body = line.trim_end_matches('\n');
            let fields: Vec<&str> = body.split_whitespace().collect();
            if body.trim_start().starts_with('#') || fields.len() < 2 || !fields[1..].contains(&old)
            {
                out.push_str(line);
                continue;
            }
            let names: Vec<&str> = fields[1..]
                .iter()
                .map(|n| if *n == old { new } else { n })
                .collect();
            out.push_str(&format!("{}\t{}", fields[0], names.join(" ")));
            if line.ends_with('\n') {
                out.push('\n');
            }
        }
        out
    };
    let hostname = |text: &str| -> String {
        if text.trim() == old {
            format!("{new}\n")
        } else {
            text.to_owned()
        }
    };
    for (path, edit) in [
        ("/etc/hostname", &hostname as &dyn Fn(&str) -> String),
        ("/etc/hosts", &hosts),
    ] {
        let fail = |source: std::io::Error| Error::Template {
            path: path.into(),
            source,
        };
        let Some(mut f) = open_template(dir.as_fd(), path, libc::O_RDWR).map_err(fail)? else {
            continue;
        };
        let Some((_, text)) = read_text(&mut f).map_err(fail)? else {
            continue;
        };
        let new_text = edit(&text);
        if new_text != text {
            rewrite(&mut f, &new_text).map_err(fail)?;
            changed.push(path.to_owned());
        }
    }
    Ok(changed)
}

/// For an overlay container: substitutes `vars` in each listed file of the
/// read-only `base` and writes the result into `upper` at the same (fully
/// resolved) path, so the container sees its own copy and the base stays
/// untouched. Missing parent directories are created in `upper` with the
/// base's modes and owners. `shift` maps the base's ids to the upper's
/// (an unshifted base under a shifted upper); `None` keeps them. Returns the
/// paths written.
///
/// # Errors
/// [`Error::Template`] when a file cannot be read or written.
pub fn apply_to_upper(
    base: &Path,
    upper: &Path,
    templates: &[String],
    vars: &[(String, String)],
    shift: Option<&crate::IdMap>,
) -> Result<Vec<String>> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
    let mut changed = Vec::new();
    if templates.is_empty() {
        return Ok(changed);
    }
    let fail = |path: &str, source: std::io::Error| Error::Template {
        path: path.to_string(),
        source,
    };
    let ids = |uid: u32, gid: u32| -> std::io::Result<(u32, u32)> {
        match shift {
            None => Ok((uid, gid)),
            Some(m) => match (m.host_uid(uid), m.host_gid(gid)) {
                (Some(u), Some(g)) => Ok((u, g)),
                _ => Err(std::io::Error::other(format!(
                    "owner {uid}:{gid} is outside the container's id map"
                ))),
            },
        }
    };
    let real_base = std::fs::canonicalize(base).map_err(|e| fail("/", e))?;
    let root = open_root(&real_base).map_err(|e| fail("/", e))?;
    for t in templates {
        let Some(mut f) = open_template(root.as_fd(), t, libc::O_RDONLY).map_err(|e| fail(t, e))?
        else {
            continue;
        };
        // Where it really is, relative to the base.
        let at = std::fs::read_link(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&f)
        ))
        .map_err(|e| fail(t, e))?;
        let Ok(real_rel) = at.strip_prefix(&real_base).map(Path::to_path_buf) else {
            continue;
        };
        let Some((md, text)) = read_text(&mut f).map_err(|e| fail(t, e))? else {
            continue;
        };
        let new = substitute(&text, vars);
        if new == text {
            continue;
        }
        // Parent directories, top down, as in the base.
        let mut dir = upper.to_path_buf();
        let mut in_base = real_base.clone();
        if let Some(parent) = real_rel.parent() {
            for comp in parent.components() {
                dir.push(comp);
                in_base.push(comp);
                if std::fs::symlink_metadata(&dir).is_ok() {
                    continue;
                }
                let bm = std::fs::symlink_metadata(&in_base).map_err(|e| fail(t, e))?;
                std::fs::create_dir(&dir).map_err(|e| fail(t, e))?;
                let (u, g) = ids(bm.uid(), bm.gid()).map_err(|e| fail(t, e))?;
                std::os::unix::fs::lchown(&dir, Some(u), Some(g)).map_err(|e| fail(t, e))?;
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(bm.mode() & 0o7777))
                    .map_err(|e| fail(t, e))?;
            }
        }
        let dest = upper.join(&real_rel);
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(0o600)
            .open(&dest)
            .map_err(|e| fail(t, e))?;
        out.write_all(new.as_bytes()).map_err(|e| fail(t, e))?;
        let (u, g) = ids(md.uid(), md.gid()).map_err(|e| fail(t, e))?;
        std::os::unix::fs::fchown(&out, Some(u), Some(g)).map_err(|e| fail(t, e))?;
        out.set_permissions(std::fs::Permissions::from_mode(md.mode() & 0o7777))
            .map_err(|e| fail(t, e))?;
        changed.push(t.clone());
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vec<(String, String)> {
        vec![("LXC_NAME".to_string(), "web".to_string())]
    }

    #[test]
    fn substitutes_inside_and_never_follows_a_link_out() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("rootfs");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/hosts"), "127.0.1.1\tLXC_NAME\n").unwrap();
        // A hostile image points a template at a host file.
        let victim = t.path().join("victim");
        std::fs::write(&victim, "LXC_NAME stays\n").unwrap();
        std::os::unix::fs::symlink(&victim, root.join("etc/hostname")).unwrap();
        std::os::unix::fs::symlink("../../victim", root.join("etc/mailname")).unwrap();
        let changed = apply(
            &root,
            &[
                "/etc/hosts".into(),
                "/etc/hostname".into(),
                "/etc/mailname".into(),
                "/etc/missing".into(),
                "/etc".into(),
            ],
            &vars(),
        )
        .unwrap();
        assert_eq!(changed, vec!["/etc/hosts".to_string()]);
        assert_eq!(
            std::fs::read_to_string(root.join("etc/hosts")).unwrap(),
            "127.0.1.1\tweb\n"
        );
        assert_eq!(
            std::fs::read_to_string(&victim).unwrap(),
            "LXC_NAME stays\n",
            "a host file was rewritten"
        );
        // A link that stays inside the rootfs is followed there.
        std::fs::write(root.join("name"), "LXC_NAME\n").unwrap();
        std::os::unix::fs::symlink("/name", root.join("etc/alias")).unwrap();
        apply(&root, &["/etc/alias".into()], &vars()).unwrap();
        assert_eq!(std::fs::read_to_string(root.join("name")).unwrap(), "web\n");
    }

    #[test]
    fn a_copy_is_renamed_in_hostname_and_hosts_and_nothing_outside() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("rootfs");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/hostname"), "web\n").unwrap();
        std::fs::write(
            root.join("etc/hosts"),
            "127.0.0.1 localhost\n# web is old\n127.0.1.1\tweb web.lan webby\n::1 ip6-localhost",
        )
        .unwrap();
        let changed = rename_host(&root, "web", "api").unwrap();
        assert_eq!(
            changed,
            vec!["/etc/hostname".to_string(), "/etc/hosts".to_string()]
        );
        assert_eq!(
            std::fs::read_to_string(root.join("etc/hostname")).unwrap(),
            "api\n"
        );
        assert_eq!(
            std::fs::read_to_string(root.join("etc/hosts")).unwrap(),
            "127.0.0.1 localhost\n# web is old\n127.0.1.1\tapi web.lan webby\n::1 ip6-localhost"
        );
        // Another name is left alone, and a link out is never followed.
        std::fs::write(root.join("etc/hostname"), "other\n").unwrap();
        assert!(rename_host(&root, "api", "x")
            .unwrap()
            .contains(&"/etc/hosts".to_string()));
        assert_eq!(
            std::fs::read_to_string(root.join("etc/hostname")).unwrap(),
            "other\n"
        );
        let victim = t.path().join("victim");
        std::fs::write(&victim, "x\n").unwrap();
        std::fs::remove_file(root.join("etc/hostname")).unwrap();
        std::os::unix::fs::symlink(&victim, root.join("etc/hostname")).unwrap();
        rename_host(&root, "x", "y").unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "x\n");
        // No rootfs at all is not an error.
        assert!(rename_host(&t.path().join("none"), "a", "b")
            .unwrap()
            .is_empty());
    }

    #[test]
    fn overlay_templates_land_in_the_upper_and_the_base_is_untouched() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let base = t.path().join("base");
        let upper = t.path().join("upper");
        std::fs::create_dir_all(base.join("etc/sub")).unwrap();
        std::fs::create_dir(&upper).unwrap();
        std::fs::set_permissions(base.join("etc"), std::fs::Permissions::from_mode(0o751)).unwrap();
        std::fs::write(base.join("etc/sub/hostname"), "LXC_NAME\n").unwrap();
        std::fs::set_permissions(
            base.join("etc/sub/hostname"),
            std::fs::Permissions::from_mode(0o640),
        )
        .unwrap();
        std::fs::write(base.join("etc/plain"), "no placeholder\n").unwrap();
        // A template reached through a link is written at its real path.
        std::os::unix::fs::symlink("sub/hostname", base.join("etc/hostname")).unwrap();
        let victim = t.path().join("victim");
        std::fs::write(&victim, "LXC_NAME\n").unwrap();
        std::os::unix::fs::symlink(&victim, base.join("etc/out")).unwrap();
        let changed = apply_to_upper(
            &base,
            &upper,
            &[
                "/etc/hostname".into(),
                "/etc/plain".into(),
                "/etc/out".into(),
            ],
            &vars(),
            None,
        )
        .unwrap();
        assert_eq!(changed, vec!["/etc/hostname".to_string()]);
        assert_eq!(
            std::fs::read_to_string(upper.join("etc/sub/hostname")).unwrap(),
            "web\n"
        );
        assert_eq!(
            std::fs::read_to_string(base.join("etc/sub/hostname")).unwrap(),
            "LXC_NAME\n"
        );
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "LXC_NAME\n");
        assert!(!upper.join("etc/plain").exists() && !upper.join("etc/hostname").exists());
        let mode = |p: &Path| std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&upper.join("etc")), 0o751);
        assert_eq!(mode(&upper.join("etc/sub/hostname")), 0o640);
        // With a shift, owners are mapped; an owner outside the map is an
        // error, not a wrong owner.
        use std::os::unix::fs::MetadataExt;
        let me = std::fs::metadata(base.join("etc/sub/hostname")).unwrap();
        let up2 = t.path().join("upper2");
        std::fs::create_dir(&up2).unwrap();
        let narrow = crate::IdMap::single(100_000, 1);
        if me.uid() >= 1 {
            assert!(apply_to_upper(
                &base,
                &up2,
                &["/etc/hostname".into()],
                &vars(),
                Some(&narrow)
            )
            .is_err());
        }
        if me.uid() == 0 {
            let maps = crate::IdMap::single(100_000, 65536);
            apply_to_upper(&base, &up2, &["/etc/hostname".into()], &vars(), Some(&maps)).unwrap();
            let md = std::fs::metadata(up2.join("etc/sub/hostname")).unwrap();
            assert_eq!((md.uid(), md.gid()), (100_000, 100_000));
            assert_eq!(std::fs::metadata(up2.join("etc")).unwrap().uid(), 100_000);
        }
    }
}
