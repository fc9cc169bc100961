//! One mount as a container's config holds it, like an fstab line: the
//! admin's `[[mounts]]`, `--mount`, and the image's `lxc.mount.entry`
//! lines (which davit accepts for pseudo-filesystems only).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// An extra mount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MountEntry {
    /// The source: a host path for `bind`, otherwise the filesystem's source
    /// string (e.g. `tmpfs`).
    pub source: String,
    /// Absolute target inside the container, resolved inside the rootfs; it
    /// is created (as a directory, or an empty file for a file bind) if missing.
    pub target: PathBuf,
    /// The filesystem type; `bind` (or `rbind`) for a bind mount.
    #[serde(default = "default_fstype")]
    pub fstype: String,
    /// Comma-separated options: the flags `ro`, `nosuid`, `nodev`, `noexec`,
    /// `relatime`, `noatime`, `rbind`, `optional` (ignore a missing bind
    /// source); anything else is passed to the filesystem as data.
    #[serde(default)]
    pub options: String,
}

impl MountEntry {
    /// A bind mount of a host path.
    pub fn is_bind(&self) -> bool {
        matches!(self.fstype.as_str(), "bind" | "rbind" | "none")
            || self.options().any(|o| o == "bind" || o == "rbind")
    }

    /// The comma-separated options, one by one.
    pub fn options(&self) -> impl Iterator<Item = &str> {
        self.options.split(',').filter(|o| !o.is_empty())
    }

    /// A bind marked `idmap`.
    pub fn wants_idmap(&self) -> bool {
        self.is_bind() && self.options().any(|o| o == "idmap")
    }

    /// What a container whose root is host uid `root_host` sees of this
    /// bind when it cannot be idmapped, for `why`.
    pub fn plain_bind_note(&self, why: &str, root_host: u32) -> String {
        format!(
            "--mount {}:{} is a plain bind, {why}; inside, its files show their owners only where they are host ids of the container's map (else as nobody, 65534), and what container root writes there is owned by host uid {root_host}",
            self.source,
            self.target.display()
        )
    }
}

fn default_fstype() -> String {
    "bind".to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(fstype: &str, options: &str) -> MountEntry {
        MountEntry {
            source: "/srv".into(),
            target: "/mnt".into(),
            fstype: fstype.into(),
            options: options.into(),
        }
    }

    #[test]
    fn binds_are_known_by_type_or_option() {
        assert!(m("bind", "").is_bind());
        assert!(m("none", "").is_bind(), "LXC writes binds as type none");
        assert!(m("tmpfs", "rbind").is_bind());
        assert!(!m("tmpfs", "size=1m").is_bind());
        assert!(m("bind", "idmap,ro").wants_idmap());
        assert!(!m("tmpfs", "idmap").wants_idmap());
    }

    #[test]
    fn a_config_line_without_fstype_is_a_bind() {
        #[derive(Deserialize)]
        struct C {
            mounts: Vec<MountEntry>,
        }
        let c: C = serde_json::from_str(r#"{"mounts":[{"source":"/a","target":"/b"}]}"#).unwrap();
        assert_eq!(c.mounts[0].fstype, "bind");
        assert!(c.mounts[0].options.is_empty());
    }
}
