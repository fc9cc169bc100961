//! The cgroup subtree a plain user may use: finding the base delegated to
//! them, and the files whoever is handed a cgroup must own.
#![forbid(unsafe_code)]

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::files::join_rel;
use super::layout::{hierarchy_name, own_path, Layout, Mode, Version};

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
/// A sentence saying why there can be no cgroup (a hierarchy not
/// delegated, the unified one holding processes, a controller missing),
/// for the CLI to print once.
pub fn delegation(
    layout: &Layout,
    proc_self_cgroup: &str,
    uid: u32,
    needed: &[&str],
) -> std::result::Result<PathBuf, String> {
    if layout.hierarchies.is_empty() {
        return Err("no cgroup filesystem is mounted".to_owned());
    }
    let mut base: Option<(PathBuf, String)> = None;
    let mut not = Vec::new();
    let mut own_v2 = None;
    for h in &layout.hierarchies {
        let Some(own) = own_path(proc_self_cgroup, h) else {
            not.push(format!(
                "{} (no line in /proc/self/cgroup)",
                hierarchy_name(h)
            ));
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
            (None, _) => not.push(format!("{} ({})", hierarchy_name(h), own.display())),
            (Some(b), None) => base = Some((b, hierarchy_name(h))),
            (Some(b), Some((x, first))) if b != *x => {
                return Err(format!(
                    "the cgroups delegated to uid {uid} differ between hierarchies ({} in {first}, {} in {})",
                    x.display(),
                    b.display(),
                    hierarchy_name(h)
                ))
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
            return Err(format!(
                "cgroup {} is not delegated to uid {uid}; run davit inside a delegated unit (systemd-run --user --scope -p Delegate=yes)",
                own.display()
            ));
        }
        return Err(format!(
            "no cgroup is delegated to uid {uid} in the {} hierarch{}: {}",
            if layout.mode() == Mode::Hybrid {
                "v1 and hybrid"
            } else {
                "v1"
            },
            if not.len() == 1 { "y" } else { "ies" },
            not.join(", ")
        ));
    }
    let Some((base, _)) = base else {
        return Err("no cgroup filesystem is mounted".to_owned());
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
        return Err(format!(
            "the delegated cgroup {} holds processes{}, and cgroup v2 enables no controllers below a cgroup with processes; run davit from a leaf cgroup below it (systemd-run --user --scope -p Delegate=yes)",
            base.display(),
            if own_v2.as_ref() == Some(&base) { ", this one among them" } else { "" }
        ));
    }
    let avail: Vec<String> =
        fs::read_to_string(join_rel(&h.mountpoint, &base).join("cgroup.controllers"))
            .map(|s| s.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default();
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
        return Err(format!(
            "the delegated cgroup {} lacks the {} controller(s)",
            base.display(),
            missing.join(", ")
        ));
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
        let why = delegation(&l, pc, 1001, &["pids"]).unwrap_err();
        assert!(why.contains("not delegated to uid 1001"), "{why}");
        let why = delegation(&l, pc, 1000, &["io"]).unwrap_err();
        assert!(why.contains("lacks the io"), "{why}");
        let why = delegation(&Layout::from_mountinfo(HYBRID), pc, 1000, &["pids"]).unwrap_err();
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
        let why = delegation(&l, pc, 1001, &[]).unwrap_err();
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
        let why = delegation(&l, pc, 1000, &[]).unwrap_err();
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
        let why = delegation(&l, "0::/user-1000\n", 1000, &["pids"]).unwrap_err();
        assert!(
            why.contains("user-1000 holds processes, this one among them"),
            "{why}"
        );
        // Another process in the base, the caller in the leaf: refused too.
        let why = delegation(&l, pc, 1000, &[]).unwrap_err();
        assert!(why.contains("user-1000 holds processes, and"), "{why}");
    }
}
