//! The record of what network setup did for a container
//! (`RUNTIME/NAME/net.json`).
#![forbid(unsafe_code)]

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::NetworkMode;
use crate::error::{Error, Result};
use crate::state::ProcessRef;

/// The file name of the recorded attachment in `RUNTIME/NAME/`.
pub const ATTACHMENT_FILE: &str = "net.json";

/// What [`setup`](super::setup) did, recorded as `RUNTIME/NAME/net.json` so
/// `info`, `stop` and crash recovery can find it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// The mode actually in effect (a plain user without any way to get a
    /// network falls back to `none`).
    pub mode: NetworkMode,
    /// The bridge (`bridge` mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<String>,
    /// The host-side veth (`Link` in `info`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// Its interface index.
    #[serde(default)]
    pub ifindex: u32,
    /// The container's IPv4 address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Ipv4Addr>,
    /// Its prefix length.
    #[serde(default)]
    pub prefix: u8,
    /// The default gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Ipv4Addr>,
    /// The lease directory the address came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_dir: Option<PathBuf>,
    /// The setuid helper that made it, when a plain user's monitor did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub helper: Option<PathBuf>,
    /// The user-mode process (slirp4netns or pasta) and its tool name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_process: Option<(String, ProcessRef)>,
    /// The container's init.
    pub init: ProcessRef,
    /// Whether the bridge's egress NAT (table `inet davit`) was set up.
    #[serde(default)]
    pub nat: bool,
    /// The host ports forwarded to the container (its DNAT chains in
    /// `inet davit`, removed at teardown).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publish: Vec<crate::config::Publish>,
    /// Whether davit wrote the container's `/etc/resolv.conf`.
    #[serde(default)]
    pub resolv_conf: bool,
    /// One line for the user, e.g. how to get a network when there is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Attachment {
    pub(super) fn none(init: ProcessRef, note: Option<String>) -> Attachment {
        Attachment {
            mode: NetworkMode::None,
            bridge: None,
            link: None,
            ifindex: 0,
            address: None,
            prefix: 0,
            gateway: None,
            lease_dir: None,
            helper: None,
            user_process: None,
            init,
            nat: false,
            publish: Vec::new(),
            resolv_conf: false,
            note,
        }
    }

    /// Write to `STATE_DIR/net.json` (temp file + rename).
    ///
    /// # Errors
    /// [`Error::Write`].
    pub fn save(&self, state_dir: &Path) -> Result<()> {
        let path = state_dir.join(ATTACHMENT_FILE);
        let tmp = state_dir.join(".net.json.tmp");
        let body = serde_json::to_vec_pretty(self).map_err(|e| Error::Write {
            path: path.clone(),
            source: std::io::Error::other(e),
        })?;
        std::fs::write(&tmp, body).map_err(|source| Error::Write {
            path: tmp.clone(),
            source,
        })?;
        std::fs::rename(&tmp, &path).map_err(|source| Error::Write { path, source })
    }

    /// Read `STATE_DIR/net.json`; `None` when there is none.
    ///
    /// # Errors
    /// [`Error::Read`] or [`Error::StateParse`].
    pub fn load(state_dir: &Path) -> Result<Option<Attachment>> {
        let path = state_dir.join(ATTACHMENT_FILE);
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|source| Error::StateParse { path, source }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(Error::Read { path, source }),
        }
    }
}
