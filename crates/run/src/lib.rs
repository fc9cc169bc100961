//! davit-run: namespaces, id maps, mounts, cgroups and the container
//! lifecycle for davit.
//!
//! The process model (ARCHITECTURE.md): the CLI re-executes itself as a
//! small single-threaded *monitor* ([`monitor::monitor_main`], selected by
//! the first argument [`monitor::MONITOR_ARG`]). The monitor creates the
//! container's cgroup and applies the limits ([`cgroup`]), clones init into
//! new user, mount, pid, uts, ipc and net namespaces
//! ([`spawn::spawn_init`]), writes the id maps, moves init into the cgroup
//! and releases it over a socketpair. Init makes its cgroup namespace,
//! builds `/proc`, `/sys`, `/dev` and `/sys/fs/cgroup` relative to the
//! rootfs descriptor, pivots, drops capabilities, closes stray descriptors
//! and execs. The monitor records the [`state`] (pid **and** start time),
//! reaps init, records the exit status and removes the cgroup.
//! [`attach::attach`] and [`stop::stop`] work from the state; [`check::check`]
//! reports host readiness.
//!
//! The library never prints. Every failure is an [`Error`] with a
//! [`kind()`](Error::kind); system-call failures read strace-style.
//!
//! # Example
//!
//! Parse a config and see where its cgroup would live on this host:
//!
//! ```
//! use std::path::Path;
//! use davit_run::{cgroup::Layout, ContainerConfig};
//!
//! let cfg = ContainerConfig::from_toml(
//!     r#"
//!     name = "web"
//!     rootfs = "/var/lib/davit/containers/web/rootfs"
//!     [[idmap.uid]]
//!     container = 0
//!     host = 100000
//!     len = 65536
//!     [[idmap.gid]]
//!     container = 0
//!     host = 100000
//!     len = 65536
//!     [limits]
//!     pids = 512
//!     "#,
//!     Path::new("config"),
//! )?;
//! assert_eq!(cfg.hostname(), "web");
//! assert_eq!(cfg.idmap.host_uid(0), Some(100000));
//!
//! let layout = Layout::detect()?;
//! let pids = layout.hierarchy_for("pids").map(|h| h.mountpoint.join("davit/web"));
//! println!("pids cgroup would be {pids:?}");
//! # Ok::<(), davit_run::Error>(())
//! ```
//!
//! A binary that hosts the monitor dispatches on its first argument:
//!
//! ```no_run
//! let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
//! if args.get(1).is_some_and(|a| a == davit_run::monitor::MONITOR_ARG) {
//!     davit_run::monitor::monitor_main(&args[2..]);
//! }
//! ```
#![deny(missing_docs)]
#![deny(unsafe_code)]

pub mod attach;
pub mod cgroup;
pub mod check;
pub mod config;
pub mod console;
pub mod devices;
mod error;
pub mod freeze;
pub mod info;
mod init;
pub mod live;
pub mod monitor;
mod msg;
mod ready;
mod reexec;
mod resident;
// net (issue 5): bridge + veth over netlink, quota helper, user mode.
pub mod net;
pub mod seccomp;
pub mod spawn;
pub mod state;
pub mod stop;
pub mod storage;
pub mod sys;
mod tty;
pub mod usercgroup;
pub mod userscope;
pub mod wait;

pub use config::ContainerConfig;
pub use error::{Error, ErrorKind, InitStep, Result};
pub use init::{DROPPED_CAPS, MASKED_PATHS, READONLY_PATHS};
