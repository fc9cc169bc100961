//! Container ↔ host id maps (`u:CONT:HOST:LEN`, like `lxc.idmap`): the
//! parser, the safety rules, the `/etc/subuid` lookup ([`subid`]), and the
//! one writer of a child's `/proc/PID/{uid,gid}_map` ([`write_maps`]),
//! which always reads the map back.
#![forbid(unsafe_code)]

use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// One contiguous range: container ids `container..container+len` are host
/// ids `host..host+len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdRange {
    /// First id inside the container.
    pub container: u32,
    /// First id on the host.
    pub host: u32,
    /// Number of ids.
    pub len: u32,
}

impl IdRange {
    fn host_of(self, id: u32) -> Option<u32> {
        let off = id.checked_sub(self.container)?;
        (off < self.len).then(|| self.host + off)
    }
    fn end_container(self) -> u64 {
        self.container as u64 + self.len as u64
    }
}

/// The uid and gid maps of a container's user namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdMap {
    /// uid ranges, written to `/proc/PID/uid_map` in this order.
    #[serde(default)]
    pub uid: Vec<IdRange>,
    /// gid ranges, written to `/proc/PID/gid_map` in this order.
    #[serde(default)]
    pub gid: Vec<IdRange>,
}

fn lookup(map: &[IdRange], id: u32) -> Option<u32> {
    map.iter().find_map(|m| m.host_of(id))
}

impl IdMap {
    /// Parses `--map` specs: `u:CONT:HOST:LEN` (uids), `g:CONT:HOST:LEN`
    /// (gids) or `b:CONT:HOST:LEN` (both).
    ///
    /// # Errors
    /// [`Error::MapSpec`] for a malformed spec or a range that overflows
    /// 32 bits. Size and host-root checks are in [`IdMap::validate`].
    pub fn parse_spec(specs: &[String]) -> Result<IdMap> {
        let mut maps = IdMap::default();
        for spec in specs {
            let bad = |why| Error::MapSpec {
                spec: spec.clone(),
                why,
            };
            let parts: Vec<&str> = spec.split(':').collect();
            if parts.len() != 4 {
                return Err(bad("expected KIND:CONTAINER:HOST:LEN"));
            }
            let num = |s: &str| s.parse::<u32>().map_err(|_| bad("ids must be decimal u32"));
            let m = IdRange {
                container: num(parts[1])?,
                host: num(parts[2])?,
                len: num(parts[3])?,
            };
            if m.len == 0 {
                return Err(bad("length must be positive"));
            }
            if m.container.checked_add(m.len - 1).is_none()
                || m.host.checked_add(m.len - 1).is_none()
            {
                return Err(bad("range overflows 32 bits"));
            }
            match parts[0] {
                "u" => maps.uid.push(m),
                "g" => maps.gid.push(m),
                "b" => {
                    maps.uid.push(m);
                    maps.gid.push(m);
                }
                _ => return Err(bad("kind must be u, g or b")),
            }
        }
        Ok(maps)
    }

    /// One `b:0:HOST:LEN` map.
    pub fn single(host: u32, len: u32) -> IdMap {
        let m = IdRange {
            container: 0,
            host,
            len,
        };
        IdMap {
            uid: vec![m],
            gid: vec![m],
        }
    }

    /// Host uid of container uid `id`, if mapped.
    pub fn host_uid(&self, id: u32) -> Option<u32> {
        lookup(&self.uid, id)
    }

    /// Host gid of container gid `id`, if mapped.
    pub fn host_gid(&self, id: u32) -> Option<u32> {
        lookup(&self.gid, id)
    }

    /// The same container ranges mapped to themselves. Used inside a user
    /// namespace, where the kernel does the shifting but ids outside the
    /// map must still be refused.
    pub fn identity(&self) -> IdMap {
        let id = |v: &[IdRange]| {
            v.iter()
                .map(|m| IdRange {
                    container: m.container,
                    host: m.container,
                    len: m.len,
                })
                .collect()
        };
        IdMap {
            uid: id(&self.uid),
            gid: id(&self.gid),
        }
    }

    /// First container id above every uid range (for extra mappings).
    pub fn uid_end(&self) -> u64 {
        self.uid
            .iter()
            .map(|m| m.end_container())
            .max()
            .unwrap_or(0)
    }

    /// First container id above every gid range.
    pub fn gid_end(&self) -> u64 {
        self.gid
            .iter()
            .map(|m| m.end_container())
            .max()
            .unwrap_or(0)
    }

    /// The map in `/proc/PID/uid_map` syntax: one `container host len` line each.
    pub fn uid_map_text(&self) -> String {
        map_text(&self.uid)
    }

    /// The map in `/proc/PID/gid_map` syntax.
    pub fn gid_map_text(&self) -> String {
        map_text(&self.gid)
    }

    /// Check the rules from security.md (a) 3 and 7: container root mapped,
    /// host uid/gid 0 never mapped, at least 65536 ids, at most 340 lines, no
    /// overlapping ranges.
    ///
    /// # Errors
    /// [`Error::MapRefused`] naming the first broken rule.
    pub fn validate(&self) -> Result<()> {
        for (what, ranges) in [("uid", &self.uid), ("gid", &self.gid)] {
            let bad = |why: String| Err(Error::MapRefused { why });
            if ranges.is_empty() {
                return bad(format!("no {what} ranges"));
            }
            if ranges.len() > 340 {
                return bad(format!(
                    "{} {what} ranges, the kernel takes 340",
                    ranges.len()
                ));
            }
            if lookup(ranges, 0).is_none() {
                return bad(format!("container {what} 0 is not mapped"));
            }
            let total: u64 = ranges.iter().map(|r| u64::from(r.len)).sum();
            if total < 65536 {
                return bad(format!("only {total} {what}s mapped, need at least 65536"));
            }
            for (i, r) in ranges.iter().enumerate() {
                if r.len == 0 {
                    return bad(format!("empty {what} range"));
                }
                if u64::from(r.host) + u64::from(r.len) > u64::from(u32::MAX)
                    || u64::from(r.container) + u64::from(r.len) > u64::from(u32::MAX)
                {
                    return bad(format!(
                        "{what} range {} {} {} overflows",
                        r.container, r.host, r.len
                    ));
                }
                if r.host == 0 {
                    return bad(format!("host {what} 0 must not be mapped"));
                }
                for o in &ranges[i + 1..] {
                    let overlap = |a: u32, b: u32, al: u32, bl: u32| {
                        u64::from(a) < u64::from(b) + u64::from(bl)
                            && u64::from(b) < u64::from(a) + u64::from(al)
                    };
                    if overlap(r.container, o.container, r.len, o.len)
                        || overlap(r.host, o.host, r.len, o.len)
                    {
                        return bad(format!("overlapping {what} ranges"));
                    }
                }
            }
        }
        Ok(())
    }
}

fn map_text(ranges: &[IdRange]) -> String {
    ranges
        .iter()
        .map(|r| format!("{} {} {}\n", r.container, r.host, r.len))
        .collect()
}

/// Writes `map` for child `pid`. With `direct` (the writer is root) each
/// file gets all its lines in one `write()`; otherwise `newuidmap` and
/// `newgidmap` run with every range in one call (stdin closed) and their
/// exit status is checked. Either way the maps are read back from
/// `/proc/PID/{uid,gid}_map` and compared. This is davit's one map writer.
///
/// setgroups is left allowed: with newgidmap that is safe, and `su` and
/// `sshd` need it inside (security.md (a) 7).
///
/// # Errors
/// [`Error::MapWrite`], [`Error::MapSpawn`], [`Error::MapHelper`],
/// [`Error::MapRead`] or [`Error::MapReadBack`].
pub fn write_maps(pid: u32, map: &IdMap, direct: bool) -> Result<()> {
    write_maps_with(pid, map, direct, &|_| {})
}

/// [`write_maps`], with `prepare` applied to each helper's command before
/// it runs (for example to make it die with its parent).
///
/// # Errors
/// As [`write_maps`].
pub fn write_maps_with(
    pid: u32,
    map: &IdMap,
    direct: bool,
    prepare: &dyn Fn(&mut Command),
) -> Result<()> {
    for (file, helper, ranges) in [
        ("uid_map", "newuidmap", &map.uid),
        ("gid_map", "newgidmap", &map.gid),
    ] {
        let path = PathBuf::from(format!("/proc/{pid}/{file}"));
        if direct {
            let text = map_text(ranges);
            let mut f = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|source| Error::MapWrite {
                    path: path.clone(),
                    source,
                })?;
            // The kernel takes the whole map in a single write only.
            let n = f.write(text.as_bytes()).map_err(|source| Error::MapWrite {
                path: path.clone(),
                source,
            })?;
            if n != text.len() {
                return Err(Error::MapWrite {
                    path,
                    source: std::io::Error::other("short write"),
                });
            }
        } else {
            let mut args = vec![pid.to_string()];
            for r in ranges {
                args.extend([
                    r.container.to_string(),
                    r.host.to_string(),
                    r.len.to_string(),
                ]);
            }
            let mut cmd = Command::new(helper);
            cmd.args(&args).stdin(std::process::Stdio::null());
            prepare(&mut cmd);
            let out = cmd.output().map_err(|source| Error::MapSpawn {
                program: helper.to_owned(),
                args: args.join(" "),
                source,
            })?;
            if !out.status.success() {
                return Err(Error::MapHelper {
                    program: helper.to_owned(),
                    args: args.join(" "),
                    status: out.status.to_string(),
                    stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
                });
            }
        }
        read_back(pid, file, &path, ranges)?;
    }
    Ok(())
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

fn read_back(pid: u32, file: &'static str, path: &PathBuf, ranges: &[IdRange]) -> Result<()> {
    let got = std::fs::read_to_string(path).map_err(|source| Error::MapRead {
        path: path.clone(),
        source,
    })?;
    let want = map_text(ranges);
    if normalise(&got) != normalise(&want) {
        return Err(Error::MapReadBack {
            pid,
            file,
            path: path.clone(),
            want,
            got,
        });
    }
    Ok(())
}

/// Subordinate id ranges from `/etc/subuid` and `/etc/subgid`.
pub mod subid {
    use super::{IdMap, IdRange};
    use crate::error::{Error, Result};
    use std::path::Path;

    fn first_range(path: &Path, user: &str, id: u32) -> Result<Option<(u32, u32)>> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(source) => {
                return Err(Error::ReadSubid {
                    path: path.to_owned(),
                    source,
                })
            }
        };
        let ids = id.to_string();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let f: Vec<&str> = line.split(':').collect();
            if f.len() != 3 || (f[0] != user && f[0] != ids) {
                continue;
            }
            let (Ok(start), Ok(len)) = (f[1].parse::<u32>(), f[2].parse::<u32>()) else {
                continue;
            };
            if len >= 65536 && start != 0 && start.checked_add(len - 1).is_some() {
                return Ok(Some((start, len)));
            }
        }
        Ok(None)
    }

    /// The default map of `user_name` (uid `uid`): the first range of at
    /// least 65536 ids in each file, matched by name or numeric uid, mapped
    /// at container id 0 (`b:0:START:LEN`).
    ///
    /// # Errors
    /// [`Error::NoSubid`] with the exact line to add when a file has no
    /// usable range; [`Error::ReadSubid`] when a file cannot be read.
    pub fn default_maps(
        user_name: &str,
        uid: u32,
        subuid_path: &Path,
        subgid_path: &Path,
    ) -> Result<IdMap> {
        let mut maps = IdMap::default();
        for (path, out) in [(subuid_path, &mut maps.uid), (subgid_path, &mut maps.gid)] {
            match first_range(path, user_name, uid)? {
                Some((host, len)) => out.push(IdRange {
                    container: 0,
                    host,
                    len,
                }),
                None => {
                    return Err(Error::NoSubid {
                        user: user_name.to_owned(),
                        file: path.to_owned(),
                        line: format!("{user_name}:{}:65536", suggest_start(uid)),
                    })
                }
            }
        }
        maps.validate()?;
        Ok(maps)
    }

    /// Who else can act as ids of `maps` (the map of `user_name`, uid
    /// `uid`): another entry of a subid file whose range overlaps it, or a
    /// host account whose own uid or gid lies inside it. Either can write
    /// files of a container that uses the map. One line per conflict,
    /// naming the file, the other party and the ids.
    ///
    /// # Errors
    /// [`Error::ReadSubid`] when a file cannot be read.
    pub fn conflicts(
        user_name: &str,
        uid: u32,
        maps: &IdMap,
        subuid_path: &Path,
        subgid_path: &Path,
        passwd_path: &Path,
    ) -> Result<Vec<String>> {
        let read = |p: &Path| match std::fs::read_to_string(p) {
            Ok(t) => Ok(t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
            Err(source) => Err(Error::ReadSubid {
                path: p.to_owned(),
                source,
            }),
        };
        let ids = uid.to_string();
        let within = |m: &[IdRange], s: u64, n: u64| {
            m.iter()
                .any(|r| s < r.host as u64 + r.len as u64 && (r.host as u64) < s + n)
        };
        let mut out = Vec::new();
        for (path, mine) in [(subuid_path, &maps.uid), (subgid_path, &maps.gid)] {
            for (no, line) in read(path)?.lines().enumerate() {
                let f: Vec<&str> = line.trim().split(':').collect();
                let [who, s, n] = f[..] else { continue };
                if who == user_name || who == ids || who.starts_with('#') {
                    continue;
                }
                let (Ok(s), Ok(n)) = (s.parse::<u64>(), n.parse::<u64>()) else {
                    continue;
                };
                if n > 0 && within(mine, s, n) {
                    out.push(format!(
                        "{} line {} gives {who} ids {s}-{} too",
                        path.display(),
                        no + 1,
                        s + n - 1
                    ));
                }
            }
        }
        for line in read(passwd_path)?.lines() {
            let f: Vec<&str> = line.split(':').collect();
            let (Some(who), Some(u), Some(g)) = (f.first(), f.get(2), f.get(3)) else {
                continue;
            };
            if *who == user_name {
                continue;
            }
            let (Ok(u), Ok(g)) = (u.parse::<u64>(), g.parse::<u64>()) else {
                continue;
            };
            if within(&maps.uid, u, 1) || within(&maps.gid, g, 1) {
                out.push(format!(
                    "the host account {who} (uid {u}, gid {g}) lies inside the range"
                ));
            }
        }
        Ok(out)
    }

    /// A conventional start for a new range: 100000 + 65536 × uid for users
    /// (what useradd does for the first users), 1000000 for root.
    fn suggest_start(uid: u32) -> u64 {
        if uid == 0 {
            1_000_000
        } else {
            100_000 + 65_536 * (uid as u64 % 1000)
        }
    }
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

    #[test]
    fn parse_and_lookup() {
        let m =
            IdMap::parse_spec(&["b:0:100000:65536".into(), "u:70000:300000:10".into()]).unwrap();
        assert_eq!(m.host_uid(0), Some(100000));
        assert_eq!(m.host_uid(65535), Some(165535));
        assert_eq!(m.host_uid(65536), None);
        assert_eq!(m.host_uid(70009), Some(300009));
        assert_eq!(m.host_gid(70009), None);
        m.validate().unwrap();
        assert!(IdMap::parse_spec(&["x:0:1:1".into()]).is_err());
        assert!(IdMap::parse_spec(&["u:0:1".into()]).is_err());
        assert!(IdMap::parse_spec(&["u:4294967295:1:2".into()]).is_err());
    }

    #[test]
    fn validate_refuses_small_and_host_root() {
        assert!(IdMap::single(100000, 1000).validate().is_err());
        assert!(IdMap::single(0, 65536).validate().is_err());
        let m = IdMap::parse_spec(&["b:0:100000:65536".into(), "b:1:200000:5".into()]).unwrap();
        assert!(m.validate().is_err(), "overlapping container ranges");
    }

    #[test]
    fn subid_conflicts_name_overlapping_ranges_and_accounts_inside() {
        let d = tempfile::tempdir().unwrap();
        let (su, sg, pw) = (
            d.path().join("subuid"),
            d.path().join("subgid"),
            d.path().join("passwd"),
        );
        std::fs::write(
            &su,
            "root:1000000:65536\nbob:1000000:65536\ncarol:2000000:65536\n",
        )
        .unwrap();
        std::fs::write(&sg, "root:1000000:65536\ncarol:1065535:10\n").unwrap();
        std::fs::write(&pw, "root:x:0:0::/root:/bin/sh\ndave:x:1000100:1000100::/h:/bin/sh\nerin:x:1000:1000::/h:/bin/sh\n").unwrap();
        let m = subid::default_maps("root", 0, &su, &sg).unwrap();
        let c = subid::conflicts("root", 0, &m, &su, &sg, &pw).unwrap();
        assert_eq!(c.len(), 3, "{c:?}");
        assert!(
            c[0].ends_with("subuid line 2 gives bob ids 1000000-1065535 too"),
            "{c:?}"
        );
        assert!(
            c[1].ends_with("subgid line 2 gives carol ids 1065535-1065544 too"),
            "{c:?}"
        );
        assert!(c[2].contains("dave (uid 1000100"), "{c:?}");
        // A range of its own: nothing.
        std::fs::write(&su, "root:1000000:65536\ncarol:2000000:65536\n").unwrap();
        std::fs::write(&sg, "root:1000000:65536\n").unwrap();
        std::fs::write(&pw, "erin:x:1000:1000::/h:/bin/sh\n").unwrap();
        assert!(subid::conflicts("root", 0, &m, &su, &sg, &pw)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn subid_default_and_missing() {
        let d = tempfile::tempdir().unwrap();
        let su = d.path().join("subuid");
        let sg = d.path().join("subgid");
        std::fs::write(
            &su,
            "alice:100000:1000\nalice:200000:65536\n1001:300000:65536\n",
        )
        .unwrap();
        std::fs::write(&sg, "1001:400000:70000\n").unwrap();
        let m = subid::default_maps("bob", 1001, &su, &sg).unwrap();
        assert_eq!(
            m.uid,
            vec![IdRange {
                container: 0,
                host: 300000,
                len: 65536
            }]
        );
        assert_eq!(
            m.gid,
            vec![IdRange {
                container: 0,
                host: 400000,
                len: 70000
            }]
        );
        let e = subid::default_maps("alice", 1000, &su, &sg).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("alice:") && msg.contains("subgid"), "{msg}");
        let e = subid::default_maps("root", 0, &su, &sg).unwrap_err();
        assert!(e.to_string().contains("`root:1000000:65536`"), "{e}");
        assert!(matches!(e, Error::NoSubid { .. }), "{e:?}");
    }
}
