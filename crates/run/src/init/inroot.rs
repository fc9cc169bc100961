//! The in-root path handle: opening and creating paths inside the rootfs
//! relative to its descriptor, with `openat2(RESOLVE_IN_ROOT)`, so that no
//! symlink or `..` in the image can lead outside it.
#![forbid(unsafe_code)]

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::{fstat, mkdirat, Mode, SFlag};

use crate::error::{Error, Result};
use crate::sys;

const IN_ROOT: u64 = sys::RESOLVE_IN_ROOT | sys::RESOLVE_NO_MAGICLINKS;

pub(super) fn open_in(
    root: BorrowedFd<'_>,
    path: &str,
    flags: OFlag,
) -> std::result::Result<OwnedFd, Errno> {
    sys::openat2(root, Path::new(path), flags.bits(), 0, IN_ROOT)
}

pub(super) fn open_path(root: BorrowedFd<'_>, path: &str) -> Result<OwnedFd> {
    open_in(root, path, OFlag::O_PATH | OFlag::O_NOFOLLOW).map_err(|e| {
        Error::sys(
            format!("openat2(rootfs, {path:?}, O_PATH|O_NOFOLLOW, RESOLVE_IN_ROOT)"),
            e,
        )
    })
}

/// Open (creating if missing) a directory that must not be a symlink
/// anywhere on its path: `/proc`, `/sys`, `/dev` and friends
/// (CVE-2019-16884 family, CVE-2026-41579).
pub(super) fn plain_dir(root: BorrowedFd<'_>, path: &str) -> Result<OwnedFd> {
    let resolve = IN_ROOT | sys::RESOLVE_NO_SYMLINKS;
    let open = || {
        sys::openat2(
            root,
            Path::new(path),
            (OFlag::O_PATH | OFlag::O_NOFOLLOW).bits(),
            0,
            resolve,
        )
    };
    let fd = match open() {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => {
            let (parent, name) = match path.rsplit_once('/') {
                Some((p, n)) => (Some(p), n),
                None => (None, path),
            };
            let pfd = match parent {
                Some(p) => Some(plain_dir(root, p)?),
                None => None,
            };
            let dirfd = pfd
                .as_ref()
                .map(|f| f.as_raw_fd())
                .unwrap_or(root.as_raw_fd());
            match mkdirat(Some(dirfd), name, Mode::from_bits_truncate(0o755)) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(Error::sys(format!("mkdirat(rootfs, {path:?}, 0755)"), e)),
            }
            open().map_err(|e| Error::sys(format!("openat2(rootfs, {path:?}, O_PATH)"), e))?
        }
        Err(Errno::ELOOP) => {
            return Err(Error::Symlink {
                path: PathBuf::from("/").join(path),
            })
        }
        Err(e) => {
            return Err(Error::sys(
                format!(
                "openat2(rootfs, {path:?}, O_PATH|O_NOFOLLOW, RESOLVE_IN_ROOT|RESOLVE_NO_SYMLINKS)"
            ),
                e,
            ))
        }
    };
    let st = fstat(fd.as_raw_fd()).map_err(|e| Error::sys(format!("fstat({path:?})"), e))?;
    match SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) {
        SFlag::S_IFDIR => Ok(fd),
        SFlag::S_IFLNK => Err(Error::Symlink {
            path: PathBuf::from("/").join(path),
        }),
        _ => Err(Error::WrongType {
            path: PathBuf::from("/").join(path),
            want: "directory",
        }),
    }
}

/// Resolve (creating as needed, never outside the root) the target of a
/// config mount: a directory, or an empty file when `file` is set.
pub(super) fn mkdir_all_in_root(
    root: BorrowedFd<'_>,
    target: &Path,
    file: bool,
) -> Result<OwnedFd> {
    let parts: Vec<&std::ffi::OsStr> = target
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n),
            _ => None,
        })
        .collect();
    let mut cur = root.try_clone_to_owned().map_err(|e| {
        Error::sys(
            "dup(rootfs)",
            Errno::from_raw(e.raw_os_error().unwrap_or(0)),
        )
    })?;
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        let p = Path::new(part);
        let next = sys::openat2(cur.as_fd(), p, (OFlag::O_PATH).bits(), 0, IN_ROOT);
        // Re-resolve the whole prefix from the root each step so a symlink
        // can never lead out of it.
        let next = match next {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => {
                if last && file {
                    drop(
                        sys::openat2(
                            cur.as_fd(),
                            p,
                            (OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW)
                                .bits(),
                            0o644,
                            IN_ROOT,
                        )
                        .map_err(|e| {
                            Error::sys(format!("openat2({:?}, O_CREAT|O_EXCL)", target), e)
                        })?,
                    );
                } else {
                    match mkdirat(Some(cur.as_raw_fd()), p, Mode::from_bits_truncate(0o755)) {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(e) => {
                            return Err(Error::sys(format!("mkdirat({:?}, 0755)", target), e))
                        }
                    }
                }
                sys::openat2(cur.as_fd(), p, (OFlag::O_PATH).bits(), 0, IN_ROOT)
                    .map_err(|e| Error::sys(format!("openat2({:?}, O_PATH)", target), e))?
            }
            Err(e) => {
                return Err(Error::sys(
                    format!("openat2({:?}, O_PATH, RESOLVE_IN_ROOT)", target),
                    e,
                ))
            }
        };
        cur = next;
    }
    Ok(cur)
}

#[cfg(test)]
mod tests {
    //! Every test builds a small image under `outer/root` and checks on disk
    //! that nothing was resolved or created outside `root`: not in `outer`
    //! (a `..` too many) and not in the host's `/etc` (an absolute link).
    //! Plain files and directories only, so they run as root and as a
    //! plain user alike; as root an escape would really write to the host,
    //! as a plain user it would fail, and either way the test fails.
    use std::fs::File;
    use std::io::Read;
    use std::os::fd::{AsFd, AsRawFd, OwnedFd};
    use std::os::unix::fs::symlink;
    use std::path::{Path, PathBuf};

    use nix::fcntl::OFlag;
    use nix::sys::stat::{fstat, SFlag};

    use super::{mkdir_all_in_root, open_in, open_path, plain_dir};
    use crate::error::Error;

    /// `outer/root`, canonical (the temp dir may sit behind a symlink), and
    /// the root opened as a directory.
    struct Image {
        _tmp: tempfile::TempDir,
        outer: PathBuf,
        root: PathBuf,
        fd: File,
    }

    fn image() -> Image {
        let tmp = tempfile::tempdir().unwrap();
        let outer = tmp.path().canonicalize().unwrap();
        let root = outer.join("root");
        std::fs::create_dir(&root).unwrap();
        let fd = File::open(&root).unwrap();
        Image {
            _tmp: tmp,
            outer,
            root,
            fd,
        }
    }

    /// A name no host has in `/etc`, so finding it there means an escape.
    fn unique(what: &str) -> String {
        format!("davit-inroot-test-{what}-{}", std::process::id())
    }

    /// Where a descriptor really points, as the kernel says.
    fn where_is(fd: &OwnedFd) -> PathBuf {
        std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap()
    }

    /// Fails unless `fd` is inside `root`. What an escape made (it has one
    /// of our unique names) is removed first, so a broken resolver run as
    /// root does not leave litter on the host.
    fn assert_inside(fd: &OwnedFd, root: &Path) {
        let at = where_is(fd);
        if !at.starts_with(root) {
            remove(&at);
            panic!("resolved outside the root, to {at:?}");
        }
    }

    /// Fails if `path` exists, after removing it.
    fn assert_absent(path: &Path) {
        if std::fs::symlink_metadata(path).is_ok() {
            remove(path);
            panic!("{path:?} was created outside the root");
        }
    }

    fn remove(path: &Path) {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with("davit-inroot-test-") {
            let _ = std::fs::remove_dir(path).or_else(|_| std::fs::remove_file(path));
        }
    }

    fn file_type(fd: &OwnedFd) -> SFlag {
        let st = fstat(fd.as_raw_fd()).unwrap();
        SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits())
    }

    #[test]
    fn mkdir_all_creates_nested_dirs_then_a_file() {
        let img = image();
        let dir = mkdir_all_in_root(img.fd.as_fd(), Path::new("/a/b/c"), false).unwrap();
        assert!(img.root.join("a/b/c").is_dir());
        assert_eq!(where_is(&dir), img.root.join("a/b/c"));

        let file = mkdir_all_in_root(img.fd.as_fd(), Path::new("/a/b/c/f"), true).unwrap();
        let meta = std::fs::symlink_metadata(img.root.join("a/b/c/f")).unwrap();
        assert!(meta.is_file());
        assert_eq!(meta.len(), 0);
        assert_eq!(where_is(&file), img.root.join("a/b/c/f"));

        // Existing paths are opened, not refused or replaced.
        std::fs::write(img.root.join("a/b/c/f"), "kept").unwrap();
        let again = mkdir_all_in_root(img.fd.as_fd(), Path::new("/a/b/c/f"), true).unwrap();
        assert_eq!(where_is(&again), img.root.join("a/b/c/f"));
        assert_eq!(
            std::fs::read_to_string(img.root.join("a/b/c/f")).unwrap(),
            "kept"
        );
        mkdir_all_in_root(img.fd.as_fd(), Path::new("/a/b"), false).unwrap();
    }

    #[test]
    fn mkdir_all_follows_an_absolute_link_inside_the_root() {
        let img = image();
        std::fs::create_dir(img.root.join("etc")).unwrap();
        symlink("/etc", img.root.join("link")).unwrap();
        let dir = unique("dir");
        let file = unique("file");

        // Each checked as soon as it is made: a failure cleans up only that one.
        let d = mkdir_all_in_root(img.fd.as_fd(), &Path::new("/link").join(&dir), false).unwrap();
        assert_inside(&d, &img.root);
        let f = mkdir_all_in_root(img.fd.as_fd(), &Path::new("/link").join(&file), true).unwrap();
        assert_inside(&f, &img.root);
        assert_absent(&Path::new("/etc").join(&dir));
        assert_absent(&Path::new("/etc").join(&file));
        assert!(img.root.join("etc").join(&dir).is_dir());
        assert!(img.root.join("etc").join(&file).is_file());
        assert_eq!(where_is(&d), img.root.join("etc").join(&dir));
        assert_eq!(where_is(&f), img.root.join("etc").join(&file));
        // The link itself is left alone.
        assert_eq!(
            std::fs::read_link(img.root.join("link")).unwrap(),
            Path::new("/etc")
        );
    }

    #[test]
    fn mkdir_all_keeps_a_nested_absolute_link_inside_the_root() {
        let img = image();
        std::fs::create_dir_all(img.root.join("usr/etc")).unwrap();
        std::fs::create_dir(img.root.join("etc")).unwrap();
        symlink("/etc", img.root.join("usr/link")).unwrap();
        let name = unique("nested");

        let fd =
            mkdir_all_in_root(img.fd.as_fd(), &Path::new("/usr/link").join(&name), false).unwrap();

        assert_inside(&fd, &img.root);
        assert_absent(&Path::new("/etc").join(&name));
    }

    #[test]
    fn mkdir_all_clamps_a_link_that_climbs_out() {
        let img = image();
        symlink("../../..", img.root.join("up")).unwrap();
        std::fs::create_dir(img.root.join("sub")).unwrap();
        symlink("../../../../..", img.root.join("sub/up")).unwrap();
        let (escaped, deeper) = (unique("escaped"), unique("deeper"));

        let fd =
            mkdir_all_in_root(img.fd.as_fd(), &Path::new("/up").join(&escaped), false).unwrap();
        assert_inside(&fd, &img.root);
        assert_eq!(where_is(&fd), img.root.join(&escaped));
        assert!(img.root.join(&escaped).is_dir());
        assert_absent(&img.outer.join(&escaped));

        let fd =
            mkdir_all_in_root(img.fd.as_fd(), &Path::new("/sub/up").join(&deeper), true).unwrap();
        assert_inside(&fd, &img.root);
        assert_absent(&img.outer.join(&deeper));
    }

    #[test]
    fn mkdir_all_drops_dotdot_components() {
        let img = image();
        let (dir, file) = (unique("dotdot-dir"), unique("dotdot-file"));
        let fd = mkdir_all_in_root(img.fd.as_fd(), &Path::new("../..").join(&dir), false).unwrap();
        assert_inside(&fd, &img.root);
        assert_eq!(where_is(&fd), img.root.join(&dir));
        assert_absent(&img.outer.join(&dir));

        let fd =
            mkdir_all_in_root(img.fd.as_fd(), &Path::new("/../../..").join(&file), true).unwrap();
        assert_inside(&fd, &img.root);
        assert_eq!(where_is(&fd), img.root.join(&file));
        assert_absent(&img.outer.join(&file));
    }

    #[test]
    fn mkdir_all_never_creates_through_a_dangling_absolute_link() {
        let img = image();
        let gone = format!("/{}", unique("gone"));
        symlink(&gone, img.root.join("dangling")).unwrap();

        let got = mkdir_all_in_root(img.fd.as_fd(), Path::new("/dangling/x"), false);

        if let Ok(fd) = &got {
            assert_inside(fd, &img.root);
        }
        assert_absent(Path::new(&gone));
    }

    #[test]
    fn open_in_resolves_dotdot_and_absolute_links_inside_the_root() {
        let img = image();
        std::fs::create_dir(img.root.join("etc")).unwrap();
        let name = unique("marker");
        std::fs::write(img.root.join("etc").join(&name), "inside").unwrap();
        symlink(format!("/etc/{name}"), img.root.join("abs")).unwrap();
        symlink(format!("../../../../etc/{name}"), img.root.join("rel")).unwrap();

        for path in [
            format!("../../../etc/{name}"),
            format!("/etc/{name}"),
            "abs".to_owned(),
            "rel".to_owned(),
        ] {
            let fd = open_in(img.fd.as_fd(), &path, OFlag::O_RDONLY).unwrap();
            let mut got = String::new();
            File::from(fd).read_to_string(&mut got).unwrap();
            assert_eq!(got, "inside", "{path}");
        }
        // The host's own file is out of reach.
        assert_eq!(
            open_in(img.fd.as_fd(), "../../../etc/passwd", OFlag::O_RDONLY).unwrap_err(),
            nix::errno::Errno::ENOENT
        );
    }

    #[test]
    fn open_path_opens_a_link_itself_not_its_target() {
        // Why mask_paths checks what it opened: a `/dev/null` that is a link
        // must not pass for the device (CVE-2025-31133).
        let img = image();
        std::fs::create_dir(img.root.join("dev")).unwrap();
        symlink("/dev/null", img.root.join("dev/null")).unwrap();
        let fd = open_path(img.fd.as_fd(), "dev/null").unwrap();
        assert_eq!(file_type(&fd), SFlag::S_IFLNK);
        assert!(open_path(img.fd.as_fd(), "dev/zero").is_err());
    }

    #[test]
    fn plain_dir_creates_missing_dirs() {
        let img = image();
        let fd = plain_dir(img.fd.as_fd(), "proc").unwrap();
        assert_eq!(where_is(&fd), img.root.join("proc"));
        let fd = plain_dir(img.fd.as_fd(), "sys/fs/cgroup").unwrap();
        assert_eq!(where_is(&fd), img.root.join("sys/fs/cgroup"));
        assert_eq!(file_type(&fd), SFlag::S_IFDIR);
        // And opens existing ones.
        plain_dir(img.fd.as_fd(), "sys/fs").unwrap();
    }

    #[test]
    fn plain_dir_refuses_a_link_anywhere_on_the_path() {
        let img = image();
        std::fs::create_dir(img.root.join("real")).unwrap();
        symlink("/real", img.root.join("proc")).unwrap();
        symlink("real", img.root.join("sys")).unwrap();
        let host = unique("host");
        symlink(format!("/{host}"), img.root.join("dev")).unwrap();

        for (path, shown) in [
            ("proc", "/proc"),
            ("sys/fs", "/sys/fs"),
            ("dev", "/dev"),
            ("dev/pts", "/dev/pts"),
        ] {
            match plain_dir(img.fd.as_fd(), path) {
                Err(Error::Symlink { path: p }) => assert_eq!(p, Path::new(shown)),
                other => panic!("{path}: {other:?}"),
            }
        }
        // Nothing was made at the links' targets.
        assert_eq!(std::fs::read_dir(img.root.join("real")).unwrap().count(), 0);
        assert_absent(&Path::new("/").join(&host));
    }

    #[test]
    fn plain_dir_refuses_a_file() {
        let img = image();
        std::fs::write(img.root.join("dev"), "").unwrap();
        match plain_dir(img.fd.as_fd(), "dev") {
            Err(Error::WrongType { path, want }) => {
                assert_eq!(path, Path::new("/dev"));
                assert_eq!(want, "directory");
            }
            other => panic!("{other:?}"),
        }
    }
}
