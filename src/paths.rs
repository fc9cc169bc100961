//! Default locations, as root and as a plain user (ARCHITECTURE.md).

use std::path::PathBuf;

/// This davit binary, for the helpers it re-executes as.
pub fn davit_exe() -> Result<PathBuf, crate::ctx::Failure> {
    std::env::current_exe().map_err(|e| {
        crate::ctx::Failure::io(anyhow::anyhow!(e).context("cannot find the davit binary"))
    })
}

pub fn is_root() -> bool {
    davit_store::is_root()
}

fn home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"))
}

fn xdg(var: &str, fallback: &str) -> PathBuf {
    match std::env::var_os(var) {
        Some(v) if !v.is_empty() && PathBuf::from(&v).is_absolute() => PathBuf::from(v),
        _ => home().join(fallback),
    }
}

/// `/var/cache/davit` or `$XDG_CACHE_HOME/davit`.
pub fn cache_dir() -> PathBuf {
    if is_root() {
        PathBuf::from("/var/cache/davit")
    } else {
        xdg("XDG_CACHE_HOME", ".cache").join("davit")
    }
}

/// Trusted key directories: `/etc/davit/keys` or `$XDG_CONFIG_HOME/davit/keys`.
pub fn key_dirs() -> Vec<PathBuf> {
    if is_root() {
        vec![PathBuf::from("/etc/davit/keys")]
    } else {
        vec![xdg("XDG_CONFIG_HOME", ".config").join("davit").join("keys")]
    }
}

/// `/var/lib/davit/containers` or `$XDG_DATA_HOME/davit/containers`;
/// `DAVIT_CONTAINERS_DIR` overrides it.
pub fn containers_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("DAVIT_CONTAINERS_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    if is_root() {
        PathBuf::from("/var/lib/davit/containers")
    } else {
        xdg("XDG_DATA_HOME", ".local/share")
            .join("davit")
            .join("containers")
    }
}

/// Where bases (shared read-only rootfs trees) live: `bases` beside the
/// containers directory (`/var/lib/davit/bases`,
/// `$XDG_DATA_HOME/davit/bases`); `DAVIT_BASES_DIR` overrides it.
pub fn bases_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("DAVIT_BASES_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    let c = containers_dir();
    c.parent().unwrap_or(&c).join("bases")
}

/// `/run/davit` or `$XDG_RUNTIME_DIR/davit`; `DAVIT_RUNTIME_DIR` overrides it.
/// Without `XDG_RUNTIME_DIR`, `$TMPDIR/davit-UID`, made 0700 here; one
/// that someone else made is refused when its state is read
/// (`StateStore::check_trusted`).
pub fn runtime_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("DAVIT_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    if is_root() {
        return PathBuf::from("/run/davit");
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(v) if PathBuf::from(&v).is_absolute() => PathBuf::from(v).join("davit"),
        _ => {
            let d = std::env::temp_dir().join(format!("davit-{}", davit_store::uid()));
            // Private from the first mkdir; an existing one is checked, not
            // changed.
            let _ = std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700)
                .create(&d);
            d
        }
    }
}

/// LXC's cache root: `$LXC_CACHE_PATH`, `/var/cache/lxc` as root, `~/.cache/lxc` as a user.
pub fn lxc_cache_dir() -> PathBuf {
    match std::env::var_os("LXC_CACHE_PATH") {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ if is_root() => PathBuf::from("/var/cache/lxc"),
        _ => home().join(".cache").join("lxc"),
    }
}

/// The host network config (`/etc/davit/config.toml`; `DAVIT_NET_CONFIG` overrides it).
pub fn net_config_path() -> PathBuf {
    std::env::var_os("DAVIT_NET_CONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| davit_run::net::HOST_CONFIG.into())
}

/// Where the store finds everything: the directories above, and
/// `/etc/subuid` and `/etc/subgid` (`DAVIT_SUBUID`, `DAVIT_SUBGID`
/// override them).
pub fn layout() -> Result<davit_store::Layout, crate::ctx::Failure> {
    let env = |var: &str, default: &str| {
        std::env::var_os(var)
            .map(PathBuf::from)
            .unwrap_or_else(|| default.into())
    };
    let mut l = davit_store::Layout::new(containers_dir(), runtime_dir(), davit_exe()?);
    l.bases = bases_dir();
    l.subuid = env("DAVIT_SUBUID", "/etc/subuid");
    l.subgid = env("DAVIT_SUBGID", "/etc/subgid");
    l.net_config = net_config_path();
    Ok(l)
}

/// The container store at [`layout`].
pub fn store() -> Result<davit_store::Store, crate::ctx::Failure> {
    Ok(davit_store::Store::new(layout()?))
}
