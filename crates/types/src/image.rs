//! Which image build something came from, as the LXC image server names
//! it, and the key of the base unpacked from it.

use serde::{Deserialize, Serialize};

use crate::IdMap;

/// An image build: distribution, release, architecture, variant, build.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageId {
    /// Distribution, e.g. `debian`.
    #[serde(default)]
    pub dist: String,
    /// Release, e.g. `bookworm`.
    #[serde(default)]
    pub release: String,
    /// Debian-style architecture, e.g. `amd64`.
    #[serde(default)]
    pub arch: String,
    /// Variant, e.g. `default` or `cloud`.
    #[serde(default)]
    pub variant: String,
    /// The server's build id, e.g. `20250101_05:24`.
    #[serde(default)]
    pub build: String,
}

/// A name part safe as a directory name.
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

impl ImageId {
    /// `dist/release/arch/variant`.
    pub fn tuple(&self) -> String {
        format!(
            "{}/{}/{}/{}",
            self.dist, self.release, self.arch, self.variant
        )
    }

    /// The key of this build's base: the image, then `raw` for unshifted
    /// ids or the ranges it is shifted into.
    pub fn base_key(&self, shifted: Option<&IdMap>) -> String {
        let ids = match shifted {
            None => "raw".to_owned(),
            Some(m) => {
                let r = |v: &Vec<crate::IdRange>| {
                    v.iter()
                        .map(|r| format!("{}-{}-{}", r.container, r.host, r.len))
                        .collect::<Vec<_>>()
                        .join(".")
                };
                format!("u{}_g{}", r(&m.uid), r(&m.gid))
            }
        };
        format!(
            "{}_{}_{}_{}_{}_{}",
            clean(&self.dist),
            clean(&self.release),
            clean(&self.arch),
            clean(&self.variant),
            clean(&self.build),
            ids
        )
    }
}
