//! Reading and writing cgroup files, and placing a cgroup's relative path
//! below a mount point.
#![forbid(unsafe_code)]

use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};

pub(super) fn join_rel(base: &Path, rel: &Path) -> PathBuf {
    let mut p = base.to_path_buf();
    for c in rel.components() {
        if let Component::Normal(n) = c {
            p.push(n);
        }
    }
    p
}

pub(super) fn cg_err(op: impl Into<String>, path: &Path, source: io::Error) -> Error {
    Error::Cgroup {
        op: op.into(),
        path: path.to_owned(),
        source,
    }
}

pub(super) fn write_file(path: &Path, value: &str) -> Result<()> {
    fs::write(path, value).map_err(|e| cg_err(format!("write {value:?} to"), path, e))
}

pub(super) fn read_file(path: &Path) -> Result<String> {
    fs::read_to_string(path).map_err(|e| cg_err("read", path, e))
}

pub(super) fn read_u64(path: &Path) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

pub(super) fn keyed(text: &str, keys: &[&str]) -> Option<u64> {
    let mut sum = 0u64;
    let mut found = false;
    for line in text.lines() {
        let mut f = line.split_whitespace();
        if let (Some(k), Some(v)) = (f.next(), f.next()) {
            if keys.contains(&k) {
                sum += v.parse::<u64>().ok()?;
                found = true;
            }
        }
    }
    found.then_some(sum)
}
