//! davit-rootfs: turns an image tarball into a container root filesystem.
#![deny(missing_docs)]
#![forbid(unsafe_code)]
