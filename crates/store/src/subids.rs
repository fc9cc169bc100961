//! The caller's subordinate ids: the default id map of a new container,
//! and who else can act as its ids.

use davit_rootfs::{subid, IdMap};

use crate::error::Result;
use crate::Store;

impl Store {
    /// The id map of a new container: the user's first subordinate ranges
    /// (`root`'s when run as root).
    ///
    /// # Errors
    /// When the user has no range in `/etc/subuid` or `/etc/subgid`.
    pub fn default_maps(&self) -> Result<IdMap> {
        Ok(subid::default_maps(
            &self.user,
            self.uid,
            &self.layout.subuid,
            &self.layout.subgid,
        )
        .map_err(davit_rootfs::Error::from)?)
    }

    /// Who else can act as the ids of `maps`: overlapping subid ranges of
    /// other users and host accounts inside the range (see
    /// `subid::conflicts`). Each can write the files of a container that
    /// uses the map.
    ///
    /// # Errors
    /// When the id files cannot be read.
    pub fn map_conflicts(&self, maps: &IdMap) -> Result<Vec<String>> {
        Ok(subid::conflicts(
            &self.user,
            self.uid,
            maps,
            &self.layout.subuid,
            &self.layout.subgid,
            &self.layout.passwd,
        )
        .map_err(davit_rootfs::Error::from)?)
    }
}
