//! Container ↔ host id maps (`u:CONT:HOST:LEN`, like `lxc.idmap`).
#![forbid(unsafe_code)]

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// One contiguous range: container ids `container..container+len` are host
/// ids `host..host+len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdMapping {
    /// First id inside the container.
    pub container: u32,
    /// First id on the host.
    pub host: u32,
    /// Number of ids.
    pub len: u32,
}

impl IdMapping {
    fn host_of(self, id: u32) -> Option<u32> {
        let off = id.checked_sub(self.container)?;
        (off < self.len).then(|| self.host + off)
    }
    fn end_container(self) -> u64 {
        self.container as u64 + self.len as u64
    }
}

/// The uid and gid maps of a container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdMaps {
    /// uid ranges.
    pub uid: Vec<IdMapping>,
    /// gid ranges.
    pub gid: Vec<IdMapping>,
}

fn lookup(map: &[IdMapping], id: u32) -> Option<u32> {
    map.iter().find_map(|m| m.host_of(id))
}

impl IdMaps {
    /// Parses `--map` specs: `u:CONT:HOST:LEN` (uids), `g:CONT:HOST:LEN`
    /// (gids) or `b:CONT:HOST:LEN` (both).
    ///
    /// # Errors
    /// [`Error::MapSpec`] for a malformed spec or a range that overflows
    /// 32 bits. Size and host-root checks are in [`IdMaps::validate`].
    pub fn parse_spec(specs: &[String]) -> Result<IdMaps> {
        let mut maps = IdMaps::default();
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
            let m = IdMapping {
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
    pub fn single(host: u32, len: u32) -> IdMaps {
        let m = IdMapping {
            container: 0,
            host,
            len,
        };
        IdMaps {
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
    pub fn identity(&self) -> IdMaps {
        let id = |v: &[IdMapping]| {
            v.iter()
                .map(|m| IdMapping {
                    container: m.container,
                    host: m.container,
                    len: m.len,
                })
                .collect()
        };
        IdMaps {
            uid: id(&self.uid),
            gid: id(&self.gid),
        }
    }

    /// First container id above every uid range (for extra mappings).
    pub(crate) fn uid_end(&self) -> u64 {
        self.uid
            .iter()
            .map(|m| m.end_container())
            .max()
            .unwrap_or(0)
    }

    /// First container id above every gid range.
    pub(crate) fn gid_end(&self) -> u64 {
        self.gid
            .iter()
            .map(|m| m.end_container())
            .max()
            .unwrap_or(0)
    }

    /// Refuses maps that are unsafe or unusable for a system container:
    /// fewer than 65536 uids or gids, container root unmapped, host id 0
    /// inside a range (mapping host root needs `CAP_SETFCAP` since 5.12 and
    /// defeats the point), or overlapping ranges.
    ///
    /// # Errors
    /// [`Error::MapRefused`] saying which rule failed.
    pub fn validate(&self) -> Result<()> {
        for (what, v) in [("uid", &self.uid), ("gid", &self.gid)] {
            let total: u64 = v.iter().map(|m| m.len as u64).sum();
            if total < 65536 {
                return Err(Error::MapRefused {
                    why: format!("the {what} map has {total} ids, at least 65536 are needed"),
                });
            }
            if lookup(v, 0).is_none() {
                return Err(Error::MapRefused {
                    why: format!("container {what} 0 is not mapped"),
                });
            }
            if v.iter().any(|m| m.host == 0) {
                return Err(Error::MapRefused {
                    why: format!("the {what} map contains host {what} 0"),
                });
            }
            for (i, a) in v.iter().enumerate() {
                for b in &v[i + 1..] {
                    let overlap = |x0: u32, y0: u32| {
                        (x0 as u64) < y0 as u64 + b.len as u64
                            && (y0 as u64) < x0 as u64 + a.len as u64
                    };
                    if overlap(a.container, b.container) || overlap(a.host, b.host) {
                        return Err(Error::MapRefused {
                            why: format!("{what} ranges overlap"),
                        });
                    }
                }
            }
        }
        Ok(())
    }
}

/// Subordinate id ranges from `/etc/subuid` and `/etc/subgid`.
pub mod subid {
    use super::{IdMapping, IdMaps};
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
    ) -> Result<IdMaps> {
        let mut maps = IdMaps::default();
        for (path, out) in [(subuid_path, &mut maps.uid), (subgid_path, &mut maps.gid)] {
            match first_range(path, user_name, uid)? {
                Some((host, len)) => out.push(IdMapping {
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
        maps: &IdMaps,
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
        let within = |m: &[IdMapping], s: u64, n: u64| {
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
    fn parse_and_lookup() {
        let m =
            IdMaps::parse_spec(&["b:0:100000:65536".into(), "u:70000:300000:10".into()]).unwrap();
        assert_eq!(m.host_uid(0), Some(100000));
        assert_eq!(m.host_uid(65535), Some(165535));
        assert_eq!(m.host_uid(65536), None);
        assert_eq!(m.host_uid(70009), Some(300009));
        assert_eq!(m.host_gid(70009), None);
        m.validate().unwrap();
        assert!(IdMaps::parse_spec(&["x:0:1:1".into()]).is_err());
        assert!(IdMaps::parse_spec(&["u:0:1".into()]).is_err());
        assert!(IdMaps::parse_spec(&["u:4294967295:1:2".into()]).is_err());
    }

    #[test]
    fn validate_refuses_small_and_host_root() {
        assert!(IdMaps::single(100000, 1000).validate().is_err());
        assert!(IdMaps::single(0, 65536).validate().is_err());
        let m = IdMaps::parse_spec(&["b:0:100000:65536".into(), "b:1:200000:5".into()]).unwrap();
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
            vec![IdMapping {
                container: 0,
                host: 300000,
                len: 65536
            }]
        );
        assert_eq!(
            m.gid,
            vec![IdMapping {
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
        assert_eq!(e.kind(), crate::ErrorKind::Map);
    }
}
