//! Rewriting `security.capability` and POSIX ACL xattrs through an id map.
#![forbid(unsafe_code)]

use davit_types::IdMap;

const VFS_CAP_REVISION_MASK: u32 = 0xFF00_0000;
const VFS_CAP_REVISION_1: u32 = 0x0100_0000;
const VFS_CAP_REVISION_2: u32 = 0x0200_0000;
const VFS_CAP_REVISION_3: u32 = 0x0300_0000;

/// What to do with one xattr in root mode.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Action {
    /// Write this value.
    Set(Vec<u8>),
    /// Do not write it (`trusted.*`, `security.selinux`, `system.nfs4_acl`).
    Drop,
}

/// A rewrite failed: which id was outside the map, or the value is malformed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Bad {
    Unmapped(&'static str, u64),
    Malformed(&'static str),
}

/// Whether an xattr is dropped on unpack in every mode. `trusted.*` is
/// host-privileged (EPERM in a userns anyway); an SELinux label or NFSv4 ACL
/// from an image must not be trusted (umoci `specialXattrs`).
pub(crate) fn dropped(name: &str) -> bool {
    name.starts_with("trusted.") || name == "security.selinux" || name == "system.nfs4_acl"
}

/// Rewrites one xattr for root mode with `maps`. With `kernel_shifts` (we
/// are inside a mapped user namespace) values pass through unchanged except
/// that their ids are checked against `maps`.
pub(crate) fn rewrite(
    name: &str,
    value: &[u8],
    maps: Option<&IdMap>,
    kernel_shifts: bool,
) -> Result<Action, Bad> {
    if dropped(name) {
        return Ok(Action::Drop);
    }
    let Some(maps) = maps else {
        return Ok(Action::Set(value.to_vec()));
    };
    match name {
        "security.capability" => {
            let v = cap_v3(value, maps)?;
            Ok(Action::Set(if kernel_shifts { value.to_vec() } else { v }))
        }
        "system.posix_acl_access" | "system.posix_acl_default" => {
            let v = shift_acl(value, maps)?;
            Ok(Action::Set(if kernel_shifts { value.to_vec() } else { v }))
        }
        _ => Ok(Action::Set(value.to_vec())),
    }
}

/// `vfs_cap_data` v1/v2 → v3 with `rootid` = host uid of container root; a
/// v3 `rootid` (container view) is mapped to the host.
pub(crate) fn cap_v3(value: &[u8], maps: &IdMap) -> Result<Vec<u8>, Bad> {
    if value.len() < 4 {
        return Err(Bad::Malformed("capability xattr too short"));
    }
    let magic = u32::from_le_bytes(value[0..4].try_into().unwrap());
    let flags = magic & !VFS_CAP_REVISION_MASK;
    let (caps, rootid): (&[u8], u32) = match magic & VFS_CAP_REVISION_MASK {
        VFS_CAP_REVISION_1 if value.len() == 12 => (&value[4..12], 0),
        VFS_CAP_REVISION_2 if value.len() == 20 => (&value[4..20], 0),
        VFS_CAP_REVISION_3 if value.len() == 24 => (
            &value[4..20],
            u32::from_le_bytes(value[20..24].try_into().unwrap()),
        ),
        _ => return Err(Bad::Malformed("unknown capability xattr revision or size")),
    };
    let host = maps
        .host_uid(rootid)
        .ok_or(Bad::Unmapped("capability rootid", rootid as u64))?;
    let mut out = Vec::with_capacity(24);
    out.extend_from_slice(&(VFS_CAP_REVISION_3 | flags).to_le_bytes());
    out.extend_from_slice(caps);
    out.resize(20, 0);
    out.extend_from_slice(&host.to_le_bytes());
    Ok(out)
}

const ACL_USER: u16 = 0x02;
const ACL_GROUP: u16 = 0x08;

/// Shifts the `e_id` of `ACL_USER` and `ACL_GROUP` entries of a
/// `posix_acl_xattr` blob (version 2, 8-byte entries).
pub(crate) fn shift_acl(value: &[u8], maps: &IdMap) -> Result<Vec<u8>, Bad> {
    if value.len() < 4 || (value.len() - 4) & 7 != 0 {
        return Err(Bad::Malformed("posix acl xattr has a bad size"));
    }
    if u32::from_le_bytes(value[0..4].try_into().unwrap()) != 2 {
        return Err(Bad::Malformed("posix acl xattr is not version 2"));
    }
    let mut out = value.to_vec();
    for e in out[4..].chunks_exact_mut(8) {
        let tag = u16::from_le_bytes([e[0], e[1]]);
        let id = u32::from_le_bytes(e[4..8].try_into().unwrap());
        let host = match tag {
            ACL_USER => maps
                .host_uid(id)
                .ok_or(Bad::Unmapped("acl uid", id as u64))?,
            ACL_GROUP => maps
                .host_gid(id)
                .ok_or(Bad::Unmapped("acl gid", id as u64))?,
            _ => continue,
        };
        e[4..8].copy_from_slice(&host.to_le_bytes());
    }
    Ok(out)
}

/// Converts GNU tar's `SCHILY.acl.access`/`.default` text (`user::rw-`,
/// `user:5:r--`, one entry per line or comma) to a `posix_acl_xattr`
/// blob with container ids. Entries are sorted as the kernel requires.
/// `Err(None)`: a qualifier is a user or group *name* (tar without
/// `--numeric-owner`), which cannot be resolved safely here.
pub(crate) fn acl_from_text(text: &[u8]) -> Result<Vec<u8>, Option<&'static str>> {
    let text = std::str::from_utf8(text).map_err(|_| Some("acl text is not utf-8"))?;
    let mut ents: Vec<(u16, u32, u16)> = Vec::new();
    for e in text
        .split(['\n', ','])
        .map(str::trim)
        .filter(|e| !e.is_empty())
    {
        let e = e.split('#').next().unwrap_or("").trim();
        let f: Vec<&str> = e.split(':').collect();
        if f.len() < 3 || f.len() > 4 {
            return Err(Some("bad acl entry"));
        }
        let perm = f[2].bytes().try_fold(0u16, |acc, c| match c {
            b'r' => Ok(acc | 4),
            b'w' => Ok(acc | 2),
            b'x' => Ok(acc | 1),
            b'-' => Ok(acc),
            _ => Err(Some("bad acl permissions")),
        })?;
        // A 4th field is GNU tar's numeric id after a name.
        let qual = if f.len() == 4 { f[3] } else { f[1] };
        let id = || -> Result<u32, Option<&'static str>> { qual.parse::<u32>().map_err(|_| None) };
        let (tag, id) = match (f[0], f[1].is_empty()) {
            ("user" | "u", true) => (0x01, u32::MAX),
            ("user" | "u", false) => (ACL_USER, id()?),
            ("group" | "g", true) => (0x04, u32::MAX),
            ("group" | "g", false) => (ACL_GROUP, id()?),
            ("mask" | "m", _) => (0x10, u32::MAX),
            ("other" | "o", _) => (0x20, u32::MAX),
            _ => return Err(Some("bad acl tag")),
        };
        ents.push((tag, id, perm));
    }
    ents.sort_by_key(|&(t, id, _)| (t, id));
    ents.dedup_by_key(|&mut (t, id, _)| (t, id));
    let mut out = 2u32.to_le_bytes().to_vec();
    for (tag, id, perm) in ents {
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&perm.to_le_bytes());
        out.extend_from_slice(&id.to_le_bytes());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_v2_becomes_v3() {
        let maps = IdMap::single(100000, 65536);
        let mut v2 = (VFS_CAP_REVISION_2 | 1).to_le_bytes().to_vec();
        v2.extend_from_slice(&[0x00, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        let v3 = cap_v3(&v2, &maps).unwrap();
        assert_eq!(v3.len(), 24);
        assert_eq!(&v3[0..4], &(VFS_CAP_REVISION_3 | 1).to_le_bytes());
        assert_eq!(&v3[4..20], &v2[4..20]);
        assert_eq!(&v3[20..24], &100000u32.to_le_bytes());
        // v3 with rootid 5 maps to 100005; rootid outside the map fails.
        let mut v3c = v3.clone();
        v3c[20..24].copy_from_slice(&5u32.to_le_bytes());
        assert_eq!(
            &cap_v3(&v3c, &maps).unwrap()[20..24],
            &100005u32.to_le_bytes()
        );
        v3c[20..24].copy_from_slice(&70000u32.to_le_bytes());
        assert!(matches!(cap_v3(&v3c, &maps), Err(Bad::Unmapped(..))));
        assert!(cap_v3(&[1, 2, 3], &maps).is_err());
    }

    #[test]
    fn acl_text() {
        let v = acl_from_text(
            b"user::rw-\nuser:5:r--\ngroup::r--\ngroup:7:rw-\nmask::rw-\nother::r--\n",
        )
        .unwrap();
        assert_eq!(v.len(), 4 + 6 * 8);
        assert_eq!(&v[4 + 8..4 + 16], &[2, 0, 4, 0, 5, 0, 0, 0]);
        assert_eq!(acl_from_text(b"user:games:r--"), Err(None));
        assert_eq!(
            &acl_from_text(b"user:games:r--:5").unwrap()[4..12],
            &[2, 0, 4, 0, 5, 0, 0, 0]
        );
        assert!(acl_from_text(b"user:5:rq-").is_err());
    }

    #[test]
    fn acl_ids_shift() {
        let maps = IdMap::single(100000, 65536);
        let mut acl = 2u32.to_le_bytes().to_vec();
        for (tag, id) in [
            (1u16, u32::MAX),
            (2, 5),
            (4, u32::MAX),
            (8, 7),
            (0x10, u32::MAX),
            (0x20, u32::MAX),
        ] {
            acl.extend_from_slice(&tag.to_le_bytes());
            acl.extend_from_slice(&7u16.to_le_bytes());
            acl.extend_from_slice(&id.to_le_bytes());
        }
        let out = shift_acl(&acl, &maps).unwrap();
        assert_eq!(&out[4 + 8 + 4..4 + 8 + 8], &100005u32.to_le_bytes());
        assert_eq!(&out[4 + 24 + 4..4 + 24 + 8], &100007u32.to_le_bytes());
        assert_eq!(&out[4 + 4..4 + 8], &u32::MAX.to_le_bytes());
        assert_eq!(
            rewrite("trusted.x", b"1", Some(&maps), false),
            Ok(Action::Drop)
        );
        assert_eq!(
            rewrite("security.selinux", b"1", None, false),
            Ok(Action::Drop)
        );
        assert_eq!(
            rewrite("user.x", b"1", Some(&maps), false),
            Ok(Action::Set(b"1".to_vec()))
        );
    }
}
