//! The last steps before the exec: the capabilities init keeps, and the
//! executable `argv[0]` names inside the container.
#![forbid(unsafe_code)]

use std::ffi::CString;
use std::path::Path;

use nix::errno::Errno;

use super::Plan;
use crate::error::{Error, Result};

/// The capabilities removed from the bounding set, as LXC's default config.
pub const DROPPED_CAPS: [caps::Capability; 5] = [
    caps::Capability::CAP_SYS_MODULE,
    caps::Capability::CAP_SYS_TIME,
    caps::Capability::CAP_MAC_ADMIN,
    caps::Capability::CAP_MAC_OVERRIDE,
    caps::Capability::CAP_SYS_RAWIO,
];

/// Drop the bounding-set capabilities LXC drops and clear inheritable and
/// ambient (CVE-2022-29162).
pub(crate) fn drop_caps() -> Result<()> {
    for c in DROPPED_CAPS {
        match caps::drop(None, caps::CapSet::Bounding, c) {
            Ok(()) => {}
            // An unknown capability on an old kernel is already "dropped".
            Err(_) if !caps::has_cap(None, caps::CapSet::Bounding, c).unwrap_or(true) => {}
            Err(_) => {
                return Err(Error::sys(
                    format!("prctl(PR_CAPBSET_DROP, {c})"),
                    Errno::last(),
                ))
            }
        }
    }
    caps::clear(None, caps::CapSet::Ambient)
        .map_err(|_| Error::sys("prctl(PR_CAP_AMBIENT_CLEAR_ALL)", Errno::last()))?;
    caps::clear(None, caps::CapSet::Inheritable)
        .map_err(|_| Error::sys("capset(inheritable = 0)", Errno::last()))?;
    Ok(())
}

/// Resolve `argv[0]` inside the (pivoted) container through `PATH`.
pub(crate) fn find_exe(plan: &Plan<'_>) -> Result<CString> {
    let arg0 = plan.argv[0].to_bytes();
    let as_path = |p: &Path| {
        CString::new(std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str())).unwrap_or_default()
    };
    if arg0.contains(&b'/') {
        return Ok(plan.argv[0].clone());
    }
    let name = <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(arg0);
    for d in &plan.path_dirs {
        let cand = d.join(name);
        if nix::unistd::access(&cand, nix::unistd::AccessFlags::X_OK).is_ok()
            && std::fs::metadata(&cand)
                .map(|m| m.is_file())
                .unwrap_or(false)
        {
            return Ok(as_path(&cand));
        }
    }
    Err(Error::sys(
        format!("execvp({:?})", String::from_utf8_lossy(arg0)),
        Errno::ENOENT,
    ))
}

#[cfg(test)]
mod tests {
    use std::ffi::CString;
    use std::os::unix::fs::PermissionsExt;
    use std::path::{Path, PathBuf};

    use super::find_exe;
    use crate::cgroup::Layout;
    use crate::config::ContainerConfig;
    use crate::init::Plan;

    fn find(arg0: &str, path_dirs: Vec<PathBuf>) -> crate::Result<CString> {
        let cfg = ContainerConfig::from_toml(
            "name = \"a\"\nrootfs = \"/r\"\nprivileged = true\n",
            Path::new("config"),
        )
        .unwrap();
        let layout = Layout::from_mountinfo("");
        let plan = Plan {
            cfg: &cfg,
            argv: vec![CString::new(arg0).unwrap()],
            envp: Vec::new(),
            path_dirs,
            userns: false,
            layout: &layout,
            cgroup2_rw: false,
            systemd_v1_rw: false,
            shim: false,
            console: false,
            ttys: 0,
            null: std::fs::File::open("/dev/null").unwrap().into(),
            own_cgroup: false,
            seccomp: None,
        };
        find_exe(&plan)
    }

    #[test]
    fn find_exe_takes_a_path_as_given() {
        // Not looked up or checked: execve reports what is wrong with it.
        let got = find("./missing/prog", vec![PathBuf::from("/bin")]).unwrap();
        assert_eq!(got.to_str().unwrap(), "./missing/prog");
    }

    #[test]
    fn find_exe_takes_the_first_executable_file_on_path() {
        let tmp = tempfile::tempdir().unwrap();
        let dirs: Vec<PathBuf> = ["noexec", "isdir", "good", "later"]
            .iter()
            .map(|d| tmp.path().join(d))
            .collect();
        for d in &dirs {
            std::fs::create_dir(d).unwrap();
        }
        // No execute bit for anyone: skipped, as root too.
        std::fs::write(dirs[0].join("prog"), "").unwrap();
        std::fs::set_permissions(dirs[0].join("prog"), PermissionsExt::from_mode(0o644)).unwrap();
        // A searchable directory of that name: skipped.
        std::fs::create_dir(dirs[1].join("prog")).unwrap();
        for d in &dirs[2..] {
            std::fs::write(d.join("prog"), "").unwrap();
            std::fs::set_permissions(d.join("prog"), PermissionsExt::from_mode(0o755)).unwrap();
        }

        let got = find("prog", dirs.clone()).unwrap();
        assert_eq!(Path::new(got.to_str().unwrap()), dirs[2].join("prog"));
    }

    #[test]
    fn find_exe_reports_a_missing_command_as_enoent() {
        let tmp = tempfile::tempdir().unwrap();
        let e = find("davit-no-such-command", vec![tmp.path().to_owned()]).unwrap_err();
        assert_eq!(e.errno(), Some(nix::errno::Errno::ENOENT));
        assert!(e.to_string().contains("execvp"), "{e}");
    }
}
