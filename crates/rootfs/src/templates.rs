//! LXC's template files: after unpacking, every file listed in the meta
//! `templates` (e.g. `/etc/hostname`, `/etc/hosts`) gets its placeholders
//! (`LXC_NAME`, `LXC_PATH`, ...) replaced. Each path is resolved *inside*
//! the rootfs (`openat2` with `RESOLVE_IN_ROOT`), so a hostile image cannot
//! point a template at a host file.
#![forbid(unsafe_code)]

use std::ffi::CString;
use std::io::{Read, Seek, Write};
use std::os::fd::AsFd;
use std::path::Path;

use crate::error::{Error, Result};
use crate::meta::substitute;
use crate::sys;

/// Templates larger than this are left alone (they are config files).
const MAX: u64 = 1 << 20;

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
    let root_c = CString::new(rootfs.as_os_str().as_encoded_bytes())
        .map_err(|_| fail("/", std::io::ErrorKind::InvalidInput.into()))?;
    let root = sys::open(&root_c, libc::O_DIRECTORY | libc::O_PATH).map_err(|e| fail("/", e))?;
    for t in templates {
        let rel = t.trim_start_matches('/');
        if rel.is_empty() {
            continue;
        }
        let Ok(c) = CString::new(rel) else { continue };
        let resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
        let fd = match sys::openat2(
            root.as_fd(),
            &c,
            libc::O_RDWR | libc::O_NOCTTY | libc::O_NONBLOCK,
            0,
            resolve,
        ) {
            Ok(fd) => fd,
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ENOENT) | Some(libc::EISDIR) | Some(libc::ENXIO) | Some(libc::ELOOP)
                ) =>
            {
                continue
            }
            Err(e) => return Err(fail(t, e)),
        };
        let mut f = std::fs::File::from(fd);
        let md = f.metadata().map_err(|e| fail(t, e))?;
        if !md.is_file() || md.len() > MAX {
            continue;
        }
        let mut text = String::new();
        if f.read_to_string(&mut text).is_err() {
            continue; // not text
        }
        let new = substitute(&text, vars);
        if new != text {
            f.set_len(0)
                .and_then(|_| f.rewind())
                .and_then(|_| f.write_all(new.as_bytes()))
                .map_err(|e| fail(t, e))?;
            changed.push(t.clone());
        }
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
}
