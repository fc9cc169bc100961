//! The address lease file of one bridge, `LEASE_DIR/BRIDGE.json`, read and
//! written atomically under an `flock` on `LEASE_DIR/BRIDGE.lock`.
//!
//! A lease names the container, its host veth, the user that asked for it
//! and the container's init (pid **and** start time). A lease whose init is
//! gone is dead: the network namespace died with init, and the veth with
//! it, so the next allocation reclaims it. That is how the lease of a
//! crashed monitor comes back.
#![forbid(unsafe_code)]

use std::fs::{self, File, OpenOptions};
use std::net::Ipv4Addr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::fcntl::Flock;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::net::subnet::Subnet;
use crate::state::ProcessRef;

/// One address handed out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The container's address.
    pub addr: Ipv4Addr,
    /// The container name.
    pub name: String,
    /// The host-side veth.
    pub veth: String,
    /// The host veth's interface index, so a release deletes only that link.
    #[serde(default)]
    pub ifindex: u32,
    /// The container side's MAC (`aa:bb:cc:dd:ee:ff`): the bridge's DHCP
    /// server answers this MAC, and only it, with `addr`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// The uid that asked for it (0 for root, the caller for the helper).
    pub uid: u32,
    /// The container's init; the lease lives as long as it does.
    pub owner: ProcessRef,
    /// The host ports forwarded to it (root, `--publish`), so a second
    /// container asking for one of them is refused while this one runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publish: Vec<crate::config::Publish>,
}

impl Lease {
    /// Whether the container holding the lease still runs.
    pub fn is_live(&self) -> bool {
        self.owner.is_alive()
    }
}

/// The whole lease file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseTable {
    /// The last address handed out, so a released one is not reused at once.
    #[serde(default)]
    pub last: Option<Ipv4Addr>,
    /// The leases.
    #[serde(default)]
    pub leases: Vec<Lease>,
}

impl LeaseTable {
    /// Drop the leases whose container is gone; returns them.
    pub fn reclaim(&mut self) -> Vec<Lease> {
        let (live, dead): (Vec<Lease>, Vec<Lease>) =
            self.leases.drain(..).partition(Lease::is_live);
        self.leases = live;
        dead
    }

    /// A free address of `subnet` (not the network, gateway or broadcast
    /// address), starting after the last one handed out.
    pub fn next_free(&self, subnet: &Subnet) -> Option<Ipv4Addr> {
        let first = u32::from(subnet.first_host()) + 1; // .1 is the gateway
        let last = u32::from(subnet.broadcast()).checked_sub(1)?;
        if first > last {
            return None;
        }
        let n = last - first + 1;
        let start = self
            .last
            .map(u32::from)
            .filter(|a| (first..=last).contains(a))
            .map(|a| a - first + 1)
            .unwrap_or(0);
        (0..n)
            .map(|i| Ipv4Addr::from(first + (start + i) % n))
            .find(|a| self.holder(*a).is_none())
    }

    /// The lease of `addr`, if any.
    pub fn holder(&self, addr: Ipv4Addr) -> Option<&Lease> {
        self.leases.iter().find(|l| l.addr == addr)
    }
}

/// The lease store of one bridge.
#[derive(Debug, Clone)]
pub struct LeaseStore {
    dir: PathBuf,
    bridge: String,
}

/// The lease table, locked; write it back with [`LockedLeases::save`].
#[derive(Debug)]
pub struct LockedLeases {
    _lock: Flock<File>,
    path: PathBuf,
    /// The table as read.
    pub table: LeaseTable,
}

impl LeaseStore {
    /// The store for `bridge` in `dir`.
    pub fn new(dir: &Path, bridge: &str) -> LeaseStore {
        LeaseStore {
            dir: dir.to_owned(),
            bridge: bridge.to_owned(),
        }
    }

    /// `DIR/BRIDGE.json`.
    pub fn path(&self) -> PathBuf {
        self.dir.join(format!("{}.json", self.bridge))
    }

    /// Lock and read the table (blocking), creating the directory (0755)
    /// and lock file (0600) when missing. Symlinks are never followed.
    ///
    /// # Errors
    /// [`Error::Write`], [`Error::Read`], [`Error::StateParse`] or an
    /// `flock` [`Error::Syscall`].
    pub fn lock(&self) -> Result<LockedLeases> {
        fs::create_dir_all(&self.dir).map_err(|source| Error::Write {
            path: self.dir.clone(),
            source,
        })?;
        let lock_path = self.dir.join(format!("{}.lock", self.bridge));
        let lock = super::lockfile::exclusive(&lock_path)?;
        let path = self.path();
        let table = match read_nofollow(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|source| Error::StateParse {
                path: path.clone(),
                source,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => LeaseTable::default(),
            Err(source) => return Err(Error::Read { path, source }),
        };
        Ok(LockedLeases {
            _lock: lock,
            path,
            table,
        })
    }

    /// Read the table without locking (for `info`); empty when missing.
    ///
    /// # Errors
    /// As [`LeaseStore::lock`].
    pub fn peek(&self) -> Result<LeaseTable> {
        let path = self.path();
        match read_nofollow(&path) {
            Ok(b) => {
                serde_json::from_slice(&b).map_err(|source| Error::StateParse { path, source })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(LeaseTable::default()),
            Err(source) => Err(Error::Read { path, source }),
        }
    }
}

fn read_nofollow(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    let mut v = Vec::new();
    std::io::Read::read_to_end(&mut f, &mut v)?;
    Ok(v)
}

impl LockedLeases {
    /// Write the table back: temp file, fsync, rename (0644).
    ///
    /// # Errors
    /// [`Error::Write`].
    pub fn save(&self) -> Result<()> {
        let body = serde_json::to_vec_pretty(&self.table).map_err(|e| Error::Write {
            path: self.path.clone(),
            source: std::io::Error::other(e),
        })?;
        super::lockfile::replace(
            &self.path,
            &self.path.with_extension("json.tmp"),
            &body,
            true,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> ProcessRef {
        ProcessRef::of(std::process::id() as i32).unwrap()
    }

    fn lease(addr: Ipv4Addr, owner: ProcessRef) -> Lease {
        Lease {
            addr,
            name: "c".into(),
            veth: "vethx".into(),
            ifindex: 0,
            mac: None,
            uid: 0,
            owner,
            publish: Vec::new(),
        }
    }

    #[test]
    fn allocation_skips_taken_and_wraps() {
        let sn: Subnet = "10.9.8.0/29".parse().unwrap();
        let mut t = LeaseTable::default();
        // hosts .2 .. .6 (.1 gateway, .7 broadcast)
        let mut got = Vec::new();
        while let Some(a) = t.next_free(&sn) {
            got.push(a);
            t.leases.push(lease(a, me()));
            t.last = Some(a);
        }
        assert_eq!(got.len(), 5);
        assert_eq!(got[0], Ipv4Addr::new(10, 9, 8, 2));
        assert_eq!(got[4], Ipv4Addr::new(10, 9, 8, 6));
        t.leases.retain(|l| l.addr != Ipv4Addr::new(10, 9, 8, 3));
        assert_eq!(t.next_free(&sn), Some(Ipv4Addr::new(10, 9, 8, 3)));
    }

    #[test]
    fn dead_owner_is_reclaimed() {
        let mut t = LeaseTable::default();
        let dead = ProcessRef {
            pid: i32::MAX,
            start_time: 1,
        };
        t.leases.push(lease(Ipv4Addr::new(10, 0, 0, 2), dead));
        t.leases.push(lease(Ipv4Addr::new(10, 0, 0, 3), me()));
        let gone = t.reclaim();
        assert_eq!(gone.len(), 1);
        assert_eq!(t.leases.len(), 1);
        assert_eq!(t.leases[0].addr, Ipv4Addr::new(10, 0, 0, 3));
    }

    #[test]
    fn store_round_trip_under_lock() {
        let tmp = tempfile::tempdir().unwrap();
        let s = LeaseStore::new(tmp.path(), "br");
        let mut l = s.lock().unwrap();
        assert!(l.table.leases.is_empty());
        l.table.leases.push(lease(Ipv4Addr::new(10, 0, 0, 2), me()));
        l.save().unwrap();
        drop(l);
        assert_eq!(s.peek().unwrap().leases.len(), 1);
        // A symlinked lease file is refused, not followed.
        std::fs::remove_file(s.path()).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", s.path()).unwrap();
        assert!(s.lock().is_err());
    }
}
