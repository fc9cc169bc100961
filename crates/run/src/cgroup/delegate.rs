//! The cgroup subtree a plain user may use: finding the base delegated to
//! them, and the files whoever is handed a cgroup must own.
#![forbid(unsafe_code)]

use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::files::join_rel;
use super::layout::{hierarchy_name, own_path, Layout, Mode, Version};

/// Why a plain user has no delegated cgroup (from [`delegation`]). The
/// messages are whole sentences with what to do, for the CLI to print
/// once or to store as the reason a container runs without limits.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DelegationError {
    /// The host mounts no cgroup hierarchy at all.
    #[error("no cgroup filesystem is mounted")]
    NotMounted,
    /// The walk up from the caller's cgroup found a different delegated
    /// base in two hierarchies; davit needs the same path in each.
    #[error(
        "the cgroups delegated to uid {uid} differ between hierarchies ({} in {first_hierarchy}, {} in {other_hierarchy})",
        first.display(),
        other.display()
    )]
    Differ {
        /// The caller's uid.
        uid: u32,
        /// The base found first, relative to its mount point.
        first: PathBuf,
        /// The hierarchy it was found in ([`hierarchy_name`]).
        first_hierarchy: String,
        /// The base found in another hierarchy.
        other: PathBuf,
        /// That hierarchy.
        other_hierarchy: String,
    },
    /// cgroup v2 alone: the caller's own cgroup is not owned by `uid`.
    #[error(
        "cgroup {} is not delegated to uid {uid}; run davit inside a delegated unit (systemd-run --user --scope -p Delegate=yes)",
        own.display()
    )]
    NotDelegated {
        /// The caller's uid.
        uid: u32,
        /// The caller's own v2 cgroup (`/` without a `0::` line).
        own: PathBuf,
    },
    /// A v1 or hybrid host: no subtree owned by `uid` in some hierarchies.
    #[error(
        "no cgroup is delegated to uid {uid} in the {} hierarch{}: {}",
        if *hybrid { "v1 and hybrid" } else { "v1" },
        if hierarchies.len() == 1 { "y" } else { "ies" },
        Undelegated::list(hierarchies)
    )]
    NotDelegatedV1 {
        /// The caller's uid.
        uid: u32,
        /// Whether the host mounts the unified hierarchy too.
        hybrid: bool,
        /// The hierarchies without a delegated subtree.
        hierarchies: Vec<Undelegated>,
    },
    /// The delegated v2 base holds processes, so no controller can be
    /// enabled below it (`EBUSY` on `cgroup.subtree_control`).
    #[error(
        "the delegated cgroup {} holds processes{}, and cgroup v2 enables no controllers below a cgroup with processes; run davit from a leaf cgroup below it (systemd-run --user --scope -p Delegate=yes)",
        base.display(),
        if *caller_inside { ", this one among them" } else { "" }
    )]
    HoldsProcesses {
        /// The base, relative to the mount point.
        base: PathBuf,
        /// Whether the caller itself sits in the base.
        caller_inside: bool,
    },
    /// The delegated v2 base lacks controllers the limits need (and no v1
    /// hierarchy provides them).
    #[error(
        "the delegated cgroup {} lacks the {} controller(s)",
        base.display(),
        missing.join(", ")
    )]
    MissingControllers {
        /// The base, relative to the mount point.
        base: PathBuf,
        /// The controllers missing, in the order asked for.
        missing: Vec<String>,
        /// Why the base's `cgroup.controllers` could not be read, if it
        /// could not (then none counts as available).
        #[source]
        source: Option<io::Error>,
    },
}

/// One hierarchy without a subtree delegated to the caller, as listed in
/// [`DelegationError::NotDelegatedV1`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Undelegated {
    /// The hierarchy ([`hierarchy_name`]).
    pub hierarchy: String,
    /// The caller's own cgroup there; `None` when `/proc/self/cgroup`
    /// has no line for it.
    pub own: Option<PathBuf>,
}

impl Undelegated {
    fn list(all: &[Undelegated]) -> String {
        all.iter()
            .map(Undelegated::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl fmt::Display for Undelegated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.own {
            Some(own) => write!(f, "{} ({})", self.hierarchy, own.display()),
            None => write!(f, "{} (no line in /proc/self/cgroup)", self.hierarchy),
        }
    }
}

/// The files of a cgroup directory that whoever is handed it must own: the
/// task files on v1, and on v2 those the kernel lists as delegatable
/// (`/sys/kernel/cgroup/delegate`), as LXC and systemd hand them over.
pub fn delegated_files(version: Version) -> Vec<String> {
    match version {
        Version::V1 => vec!["cgroup.procs".to_owned(), "tasks".to_owned()],
        Version::V2 => fs::read_to_string("/sys/kernel/cgroup/delegate")
            .unwrap_or_else(|_| "cgroup.procs\ncgroup.threads\ncgroup.subtree_control\n".into())
            .split_whitespace()
            .map(str::to_owned)
            .collect(),
    }
}

/// Whether `dir` and the files that move tasks (and for v2 enable
/// controllers) are owned by `uid`: a subtree delegated to that user.
fn owned_by(dir: &Path, version: Version, uid: u32) -> bool {
    let files: &[&str] = match version {
        Version::V1 => &["", "cgroup.procs", "tasks"],
        Version::V2 => &["", "cgroup.procs", "cgroup.subtree_control"],
    };
    files.iter().all(|f| {
        let p = if f.is_empty() {
            dir.to_path_buf()
        } else {
            dir.join(f)
        };
        fs::metadata(p).map(|m| m.uid() == uid).unwrap_or(false)
    })
}

/// Find the cgroup subtree delegated to an unprivileged `uid`, the same
/// path in every hierarchy.
///
/// For each hierarchy, walks from the caller's own cgroup (from
/// `proc_self_cgroup`) towards the root and takes the top-most directory
/// owned by `uid` (with its task files, and on v2 its
/// `cgroup.subtree_control`): a unit systemd made with `Delegate=yes`, or
/// the `/user/USER` that the setuid `davit-cgroup` makes on a v1 or hybrid
/// host. Returns it relative to the mount points. `needed` lists the
/// controllers the limits need; those on v2 must be available there.
///
/// # Errors
/// A [`DelegationError`] saying why there can be no cgroup (a hierarchy
/// not delegated, the unified one holding processes, a controller
/// missing), whose message the CLI prints once.
pub fn delegation(
    layout: &Layout,
    proc_self_cgroup: &str,
    uid: u32,
    needed: &[&str],
) -> Result<PathBuf, DelegationError> {
    if layout.hierarchies.is_empty() {
        return Err(DelegationError::NotMounted);
    }
    let mut base: Option<(PathBuf, String)> = None;
    let mut not = Vec::new();
    let mut own_v2 = None;
    for h in &layout.hierarchies {
        let Some(own) = own_path(proc_self_cgroup, h) else {
            not.push(Undelegated {
                hierarchy: hierarchy_name(h),
                own: None,
            });
            continue;
        };
        let rel = own.strip_prefix(&h.root).unwrap_or(&own).to_path_buf();
        if h.version == Version::V2 {
            own_v2 = Some(rel.clone());
        }
        let mut best: Option<PathBuf> = None;
        let mut cur = rel.clone();
        loop {
            if !owned_by(&join_rel(&h.mountpoint, &cur), h.version, uid) {
                break;
            }
            best = Some(cur.clone());
            if !cur.pop() || cur.as_os_str().is_empty() || cur == Path::new("/") {
                break;
            }
        }
        match (best, &base) {
            (None, _) => not.push(Undelegated {
                hierarchy: hierarchy_name(h),
                own: Some(own),
            }),
            (Some(b), None) => base = Some((b, hierarchy_name(h))),
            (Some(b), Some((x, first))) if b != *x => {
                return Err(DelegationError::Differ {
                    uid,
                    first: x.clone(),
                    first_hierarchy: first.clone(),
                    other: b,
                    other_hierarchy: hierarchy_name(h),
                })
            }
            _ => {}
        }
    }
    if !not.is_empty() {
        if layout.mode() == Mode::Unified {
            let own = layout
                .unified()
                .and_then(|h| own_path(proc_self_cgroup, h))
                .unwrap_or_else(|| PathBuf::from("/"));
            return Err(DelegationError::NotDelegated { uid, own });
        }
        return Err(DelegationError::NotDelegatedV1 {
            uid,
            hybrid: layout.mode() == Mode::Hybrid,
            hierarchies: not,
        });
    }
    let Some((base, _)) = base else {
        return Err(DelegationError::NotMounted);
    };
    let Some(h) = layout.unified() else {
        return Ok(base);
    };
    // cgroup v2 enables no controller below a non-root cgroup that holds
    // processes (EBUSY on cgroup.subtree_control): a caller sitting in the
    // delegated cgroup itself gets no limits, and is told why, instead of a
    // failed start.
    let procs =
        fs::read_to_string(join_rel(&h.mountpoint, &base).join("cgroup.procs")).unwrap_or_default();
    if procs.lines().any(|l| !l.trim().is_empty()) {
        return Err(DelegationError::HoldsProcesses {
            caller_inside: own_v2.as_ref() == Some(&base),
            base,
        });
    }
    let (avail, unread): (Vec<String>, Option<io::Error>) =
        match fs::read_to_string(join_rel(&h.mountpoint, &base).join("cgroup.controllers")) {
            Ok(s) => (s.split_whitespace().map(str::to_owned).collect(), None),
            Err(e) => (Vec::new(), Some(e)),
        };
    // Controllers a v1 hierarchy provides are used there (hybrid hosts).
    let missing: Vec<&str> = needed
        .iter()
        .copied()
        .filter(|c| {
            !layout
                .hierarchies
                .iter()
                .any(|x| x.version == Version::V1 && x.has(c))
        })
        .filter(|c| !avail.iter().any(|a| a == c))
        .collect();
    if !missing.is_empty() {
        return Err(DelegationError::MissingControllers {
            base,
            missing: missing.into_iter().map(str::to_owned).collect(),
            source: unread,
        });
    }
    Ok(base)
}

#[cfg(test)]
mod tests {
    use super::super::layout::fake::{fake_v2, populate, v2_layout, HYBRID};
    use super::*;

    #[test]
    fn delegation_found_and_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        fake_v2(root, "cpu memory pids");
        let svc = root.join("user.slice/user-1000.slice/user@1000.service");
        let scope = svc.join("app.slice/run-1.scope");
        fs::create_dir_all(&scope).unwrap();
        for d in [&svc, &svc.join("app.slice"), &scope] {
            populate(d, "cpu memory pids");
            for f in ["", "cgroup.procs", "cgroup.subtree_control"] {
                let p = if f.is_empty() {
                    d.to_path_buf()
                } else {
                    d.join(f)
                };
                nix::unistd::chown(&p, Some(nix::unistd::Uid::from_raw(1000)), None).unwrap();
            }
        }
        let l = v2_layout(root);
        let pc = "0::/user.slice/user-1000.slice/user@1000.service/app.slice/run-1.scope\n";
        let base = delegation(&l, pc, 1000, &["memory", "pids"]).unwrap();
        assert_eq!(
            base,
            Path::new("user.slice/user-1000.slice/user@1000.service")
        );
        let why = delegation(&l, pc, 1001, &["pids"]).unwrap_err().to_string();
        assert!(why.contains("not delegated to uid 1001"), "{why}");
        let why = delegation(&l, pc, 1000, &["io"]).unwrap_err().to_string();
        assert!(why.contains("lacks the io"), "{why}");
        let why = delegation(&Layout::from_mountinfo(HYBRID), pc, 1000, &["pids"])
            .unwrap_err()
            .to_string();
        assert!(
            why.contains("no cgroup is delegated to uid 1000 in the v1 and hybrid hierarchies"),
            "{why}"
        );
    }

    /// A v1 or hybrid host where `davit-cgroup` made `/user/u/0` in every
    /// hierarchy, owned by the user, and moved the caller there: the base
    /// is `user/u` everywhere. One hierarchy left out, or a different path
    /// in one, refuses with the hierarchy named.
    #[test]
    fn delegation_on_v1_takes_the_granted_user_tree_in_every_hierarchy() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let mut mi = String::new();
        for (i, (dir, opts)) in [
            ("memory", "memory"),
            ("pids", "pids"),
            ("systemd", "name=systemd"),
        ]
        .iter()
        .enumerate()
        {
            let m = root.join(dir);
            let leaf = m.join("user/u/0");
            fs::create_dir_all(&leaf).unwrap();
            for d in [m.clone(), m.join("user"), m.join("user/u"), leaf.clone()] {
                fs::write(d.join("cgroup.procs"), "").unwrap();
                fs::write(d.join("tasks"), "").unwrap();
            }
            for d in [m.join("user/u"), leaf] {
                for f in ["", "cgroup.procs", "tasks"] {
                    let p = if f.is_empty() { d.clone() } else { d.join(f) };
                    nix::unistd::chown(&p, Some(nix::unistd::Uid::from_raw(1000)), None).unwrap();
                }
            }
            mi += &format!(
                "{} 1 0:{} / {} rw - cgroup cgroup rw,{opts}\n",
                40 + i,
                50 + i,
                m.display()
            );
        }
        let l = Layout::from_mountinfo(&mi);
        let pc = "3:name=systemd:/user/u/0\n2:pids:/user/u/0\n1:memory:/user/u/0\n";
        assert_eq!(
            delegation(&l, pc, 1000, &["memory", "pids"]).unwrap(),
            Path::new("user/u")
        );
        let why = delegation(&l, pc, 1001, &[]).unwrap_err().to_string();
        assert!(why.contains("no cgroup is delegated to uid 1001 in the v1 hierarchies: memory (/user/u/0), pids"), "{why}");
        // Not granted in one hierarchy (root owns it there).
        nix::unistd::chown(
            &root.join("pids/user/u/0/tasks"),
            Some(nix::unistd::Uid::from_raw(0)),
            None,
        )
        .unwrap();
        nix::unistd::chown(
            &root.join("pids/user/u/tasks"),
            Some(nix::unistd::Uid::from_raw(0)),
            None,
        )
        .unwrap();
        let why = delegation(&l, pc, 1000, &[]).unwrap_err().to_string();
        assert!(why.contains("hierarchy: pids (/user/u/0)"), "{why}");
        // The caller elsewhere in one hierarchy.
        let pc2 = "3:name=systemd:/user/u\n2:pids:/user/u/0\n1:memory:/user/u/0\n";
        nix::unistd::chown(
            &root.join("pids/user/u/tasks"),
            Some(nix::unistd::Uid::from_raw(1000)),
            None,
        )
        .unwrap();
        nix::unistd::chown(
            &root.join("pids/user/u/0/tasks"),
            Some(nix::unistd::Uid::from_raw(1000)),
            None,
        )
        .unwrap();
        assert_eq!(delegation(&l, pc2, 1000, &[]).unwrap(), Path::new("user/u"));
    }

    /// Found in the VM lane (kernel 6.1, cgroup2 alone): a plain user whose
    /// shell sits in the delegated cgroup itself got EBUSY writing that
    /// cgroup's subtree_control, and the start failed. There can be no
    /// limits there; delegation must say so, and placing nothing lets the
    /// container start.
    #[test]
    fn delegation_refuses_a_base_that_holds_processes() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        fake_v2(root, "cpu memory pids");
        let u = root.join("user-1000");
        fs::create_dir_all(u.join("session")).unwrap();
        for d in [u.clone(), u.join("session")] {
            populate(&d, "cpu memory pids");
            for f in ["", "cgroup.procs", "cgroup.subtree_control"] {
                let p = if f.is_empty() { d.clone() } else { d.join(f) };
                nix::unistd::chown(&p, Some(nix::unistd::Uid::from_raw(1000)), None).unwrap();
            }
        }
        let l = v2_layout(root);
        // In the leaf below the base: the base is used.
        fs::write(u.join("session/cgroup.procs"), "42\n").unwrap();
        let pc = "0::/user-1000/session\n";
        assert_eq!(
            delegation(&l, pc, 1000, &["pids"]).unwrap(),
            Path::new("user-1000")
        );
        // In the base itself: refused, with the reason.
        fs::write(u.join("cgroup.procs"), "43\n").unwrap();
        let why = delegation(&l, "0::/user-1000\n", 1000, &["pids"])
            .unwrap_err()
            .to_string();
        assert!(
            why.contains("user-1000 holds processes, this one among them"),
            "{why}"
        );
        // Another process in the base, the caller in the leaf: refused too.
        let why = delegation(&l, pc, 1000, &[]).unwrap_err().to_string();
        assert!(why.contains("user-1000 holds processes, and"), "{why}");
    }

    /// The messages are what `delegation` printed when it returned a
    /// `String` (integration tests and docs quote them): word for word.
    #[test]
    fn delegation_error_messages_are_unchanged() {
        let cases = [
            (DelegationError::NotMounted, "no cgroup filesystem is mounted".to_owned()),
            (
                DelegationError::Differ {
                    uid: 1000,
                    first: PathBuf::from("user/u"),
                    first_hierarchy: "memory".into(),
                    other: PathBuf::from("user/v"),
                    other_hierarchy: "pids".into(),
                },
                "the cgroups delegated to uid 1000 differ between hierarchies (user/u in memory, user/v in pids)".to_owned(),
            ),
            (
                DelegationError::NotDelegated {
                    uid: 1001,
                    own: PathBuf::from("/user.slice/x.scope"),
                },
                "cgroup /user.slice/x.scope is not delegated to uid 1001; run davit inside a delegated unit (systemd-run --user --scope -p Delegate=yes)".to_owned(),
            ),
            (
                DelegationError::NotDelegatedV1 {
                    uid: 1001,
                    hybrid: false,
                    hierarchies: vec![Undelegated {
                        hierarchy: "pids".into(),
                        own: Some(PathBuf::from("/user/u/0")),
                    }],
                },
                "no cgroup is delegated to uid 1001 in the v1 hierarchy: pids (/user/u/0)".to_owned(),
            ),
            (
                DelegationError::NotDelegatedV1 {
                    uid: 1001,
                    hybrid: true,
                    hierarchies: vec![
                        Undelegated {
                            hierarchy: "cpu".into(),
                            own: Some(PathBuf::from("/")),
                        },
                        Undelegated {
                            hierarchy: "unified".into(),
                            own: None,
                        },
                    ],
                },
                "no cgroup is delegated to uid 1001 in the v1 and hybrid hierarchies: cpu (/), unified (no line in /proc/self/cgroup)".to_owned(),
            ),
            (
                DelegationError::HoldsProcesses {
                    base: PathBuf::from("user-1000"),
                    caller_inside: true,
                },
                "the delegated cgroup user-1000 holds processes, this one among them, and cgroup v2 enables no controllers below a cgroup with processes; run davit from a leaf cgroup below it (systemd-run --user --scope -p Delegate=yes)".to_owned(),
            ),
            (
                DelegationError::HoldsProcesses {
                    base: PathBuf::from("user-1000"),
                    caller_inside: false,
                },
                "the delegated cgroup user-1000 holds processes, and cgroup v2 enables no controllers below a cgroup with processes; run davit from a leaf cgroup below it (systemd-run --user --scope -p Delegate=yes)".to_owned(),
            ),
            (
                DelegationError::MissingControllers {
                    base: PathBuf::from("user-1000"),
                    missing: vec!["io".into(), "cpu".into()],
                    source: None,
                },
                "the delegated cgroup user-1000 lacks the io, cpu controller(s)".to_owned(),
            ),
        ];
        for (e, want) in cases {
            assert_eq!(e.to_string(), want);
        }
    }

    /// A v2 subtree `u/leaf` below a fake root, owned by whoever runs the
    /// test (so no root is needed), the caller in `u/leaf`.
    fn own_v2_tree(root: &Path) -> Layout {
        fake_v2(root, "cpu memory pids");
        for d in [root.join("u"), root.join("u/leaf")] {
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join("cgroup.procs"), "").unwrap();
            fs::write(d.join("cgroup.subtree_control"), "").unwrap();
        }
        v2_layout(root)
    }

    fn me() -> u32 {
        nix::unistd::geteuid().as_raw()
    }

    #[test]
    fn delegation_without_a_cgroup_filesystem_is_not_mounted() {
        let e = delegation(&Layout::default(), "0::/\n", me(), &[]).unwrap_err();
        assert!(matches!(e, DelegationError::NotMounted), "{e:?}");
    }

    #[test]
    fn delegation_of_someone_elses_cgroup_names_the_callers_own() {
        let tmp = tempfile::tempdir().unwrap();
        let l = own_v2_tree(tmp.path());
        let e = delegation(&l, "0::/u/leaf\n", me() + 1, &[]).unwrap_err();
        match e {
            DelegationError::NotDelegated { uid, own } => {
                assert_eq!(uid, me() + 1);
                assert_eq!(own, Path::new("/u/leaf"));
            }
            e => panic!("{e:?}"),
        }
    }

    /// An unreadable `cgroup.controllers` counts as no controller, as
    /// before; the read error is kept as the cause.
    #[test]
    fn delegation_missing_controllers_keeps_why_they_could_not_be_read() {
        let tmp = tempfile::tempdir().unwrap();
        let l = own_v2_tree(tmp.path());
        let pc = "0::/u/leaf\n";
        assert_eq!(delegation(&l, pc, me(), &[]).unwrap(), Path::new("u"));
        let e = delegation(&l, pc, me(), &["pids", "cpu"]).unwrap_err();
        let cause = std::error::Error::source(&e)
            .and_then(|s| s.downcast_ref::<io::Error>())
            .map(io::Error::kind);
        assert_eq!(cause, Some(io::ErrorKind::NotFound), "{e:?}");
        match e {
            DelegationError::MissingControllers { base, missing, .. } => {
                assert_eq!(base, Path::new("u"));
                assert_eq!(missing, ["pids", "cpu"]);
            }
            e => panic!("{e:?}"),
        }
        // Readable and listing them: no cause, only what is missing.
        fs::write(tmp.path().join("u/cgroup.controllers"), "memory pids").unwrap();
        let e = delegation(&l, pc, me(), &["pids", "cpu"]).unwrap_err();
        assert!(std::error::Error::source(&e).is_none(), "{e:?}");
        assert!(
            matches!(&e, DelegationError::MissingControllers { missing, .. } if missing == &["cpu"]),
            "{e:?}"
        );
    }

    #[test]
    fn delegation_base_with_processes_says_whether_the_caller_is_one() {
        let tmp = tempfile::tempdir().unwrap();
        let l = own_v2_tree(tmp.path());
        fs::write(tmp.path().join("u/cgroup.procs"), "42\n").unwrap();
        for (pc, inside) in [("0::/u/leaf\n", false), ("0::/u\n", true)] {
            match delegation(&l, pc, me(), &[]).unwrap_err() {
                DelegationError::HoldsProcesses {
                    base,
                    caller_inside,
                } => {
                    assert_eq!(base, Path::new("u"));
                    assert_eq!(caller_inside, inside, "{pc}");
                }
                e => panic!("{e:?}"),
            }
        }
    }

    /// Two v1 hierarchies whose owned subtrees are not the same path.
    #[test]
    fn delegation_with_different_bases_names_both_hierarchies() {
        let tmp = tempfile::tempdir().unwrap();
        let mut mi = String::new();
        for (i, (c, base)) in [("memory", "a"), ("pids", "b")].iter().enumerate() {
            let m = tmp.path().join(c);
            for d in [m.clone(), m.join(base), m.join(base).join("x")] {
                fs::create_dir_all(&d).unwrap();
                fs::write(d.join("cgroup.procs"), "").unwrap();
                fs::write(d.join("tasks"), "").unwrap();
            }
            mi += &format!(
                "{} 1 0:{} / {} rw - cgroup cgroup rw,{c}\n",
                40 + i,
                50 + i,
                m.display()
            );
        }
        let l = Layout::from_mountinfo(&mi);
        let e = delegation(&l, "2:pids:/b/x\n1:memory:/a/x\n", me(), &[]).unwrap_err();
        match &e {
            DelegationError::Differ {
                uid,
                first,
                first_hierarchy,
                other,
                other_hierarchy,
            } => {
                assert_eq!(*uid, me());
                assert_eq!(first, Path::new("a"));
                assert_eq!(first_hierarchy, "memory");
                assert_eq!(other, Path::new("b"));
                assert_eq!(other_hierarchy, "pids");
            }
            e => panic!("{e:?}"),
        }
        // Without a line for pids: that hierarchy is the one not delegated.
        let e = delegation(&l, "1:memory:/a/x\n", me(), &[]).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "no cgroup is delegated to uid {} in the v1 hierarchy: pids (no line in /proc/self/cgroup)",
                me()
            )
        );
    }
}
