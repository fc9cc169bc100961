//! Writing a child's uid and gid maps: directly as root, through
//! `newuidmap`/`newgidmap` otherwise, always read back.
#![forbid(unsafe_code)]

use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::process::Command;

use nix::unistd::Pid;

use crate::config::{IdMap, IdRange};
use crate::error::{Error, Result};

/// Write `map` for `pid`. With `direct` (the writer is root) each file gets
/// all its lines in one `write()`; otherwise `newuidmap`/`newgidmap` run
/// with every range in one call and their exit status is checked. Either
/// way the maps are read back from `/proc/PID/{uid,gid}_map` and compared.
///
/// setgroups is left allowed: with newgidmap that is safe, and `su` and
/// `sshd` need it inside (security.md (a) 7).
///
/// # Errors
/// [`Error::Write`], [`Error::Spawn`], [`Error::MapHelper`] or
/// [`Error::MapReadBack`].
pub fn write_maps(pid: Pid, map: &IdMap, direct: bool) -> Result<()> {
    for (file, helper, ranges) in [
        ("uid_map", "newuidmap", &map.uid),
        ("gid_map", "newgidmap", &map.gid),
    ] {
        let path = PathBuf::from(format!("/proc/{pid}/{file}"));
        if direct {
            let text = text(ranges);
            let mut f = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|source| Error::Write {
                    path: path.clone(),
                    source,
                })?;
            // The kernel takes the whole map in a single write only.
            let n = f.write(text.as_bytes()).map_err(|source| Error::Write {
                path: path.clone(),
                source,
            })?;
            if n != text.len() {
                return Err(Error::Write {
                    path,
                    source: std::io::Error::other("short write"),
                });
            }
        } else {
            let mut cmd = Command::new(helper);
            cmd.arg(pid.to_string());
            for r in ranges {
                cmd.args([
                    r.container.to_string(),
                    r.host.to_string(),
                    r.len.to_string(),
                ]);
            }
            let out = cmd.output().map_err(|source| Error::Spawn {
                program: helper.to_owned(),
                source,
            })?;
            if !out.status.success() {
                let msg = String::from_utf8_lossy(&out.stderr);
                return Err(Error::MapHelper {
                    program: helper.to_owned(),
                    status: format!("{} ({})", out.status, msg.trim()),
                });
            }
        }
        read_back(&path, ranges)?;
    }
    Ok(())
}

fn text(ranges: &[IdRange]) -> String {
    ranges
        .iter()
        .map(|r| format!("{} {} {}\n", r.container, r.host, r.len))
        .collect()
}

fn normalise(s: &str) -> Vec<Vec<u64>> {
    let mut v: Vec<Vec<u64>> = s
        .lines()
        .map(|l| {
            l.split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect()
        })
        .filter(|l: &Vec<u64>| l.len() == 3)
        .collect();
    v.sort();
    v
}

fn read_back(path: &PathBuf, ranges: &[IdRange]) -> Result<()> {
    let got = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.clone(),
        source,
    })?;
    let want = text(ranges);
    if normalise(&got) != normalise(&want) {
        return Err(Error::MapReadBack {
            path: path.clone(),
            want,
            got,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalise_ignores_spacing_and_order() {
        assert_eq!(
            normalise("         0     100000      65536\n  65536 1 2\n"),
            normalise("65536 1 2\n0 100000 65536\n")
        );
    }
}
