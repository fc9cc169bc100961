//! Default locations, as root and as a plain user (ARCHITECTURE.md).

use std::path::PathBuf;

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
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
