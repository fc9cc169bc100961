//! How to unpack: [`UnpackOptions`] and its defaults.

use davit_types::IdMap;

/// How to unpack.
#[derive(Debug, Clone, Default)]
pub struct UnpackOptions {
    /// Container → host id map. `None` writes ids as stored (a privileged
    /// container). With [`unpack_in_userns`] it is required.
    ///
    /// [`unpack_in_userns`]: crate::unpack_in_userns
    pub maps: Option<IdMap>,
    /// LXC exclude patterns (`./dev/null`), matched like GNU tar
    /// `--anchored --exclude`, with or without the leading `./`.
    pub excludes: Vec<String>,
    /// Skip character and block devices (always on in a user namespace).
    pub skip_devices: bool,
    /// Decompression threads; 0 means one per CPU.
    pub threads: usize,
    /// Files inside the rootfs whose placeholders are substituted after the
    /// unpack (the meta `templates` list, e.g. `/etc/hostname`).
    pub templates: Vec<String>,
    /// Placeholder -> value (`LXC_NAME` -> the container name, ...).
    pub template_vars: Vec<(String, String)>,
    /// The most bytes one member may claim, its apparent size for a sparse
    /// file; a larger one is refused. `None`: [`DEFAULT_MAX_FILE_SIZE`].
    pub max_file_size: Option<u64>,
}

/// The default cap on one member's size: 64 GiB. Holes in a sparse member
/// cost nothing to write, but a tree with a terabyte file is a trap for
/// whatever copies or backs it up later.
pub const DEFAULT_MAX_FILE_SIZE: u64 = 64 << 30;
