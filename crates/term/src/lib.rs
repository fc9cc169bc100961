//! The caller's terminal side of a davit container: what `davit start` (in
//! the foreground), `davit attach` and `davit console` do with the terminal
//! they were run from. Nothing here prints; the container's own output is
//! relayed as it is.
//!
//! This crate owns:
//! - the relay modes ([`relay::Mode`]): a pseudo-terminal of the
//!   container's own relayed in raw mode ([`relay::pty`]), pipes in place
//!   of the caller's terminals ([`relay::pipes`]), or the descriptors as
//!   they are; the caller's terminal is never the container's
//!   (docs/SECURITY.md, "terminals"),
//! - raw mode, restored on drop ([`relay::RawMode`]), and window sizes
//!   passed on at the start and on each SIGWINCH,
//! - the terminal and termination signals, blocked before any thread and
//!   then forwarded to the container's init ([`signals`]),
//! - the `davit console` client: the `Ctrl-a q` detach keys and the
//!   session on a console socket, with the framing handed in
//!   ([`console::session`]).
//!
//! It depends on nothing of davit's: descriptors cross as `OwnedFd`, the
//! console as a `UnixStream`.
//!
//! ```no_run
//! use std::process::{Command, Stdio};
//! use std::time::Duration;
//!
//! use davit_term::{relay, signals};
//!
//! // Before any thread exists: from here on these signals are the child's.
//! let mode = relay::mode();
//! let forward = signals::block(mode);
//! // Pipes in place of our terminals, to relay once the child runs.
//! let ([i, o, e], pending) = relay::pipes()?;
//! let mut child = Command::new("cat")
//!     .stdin(Stdio::from(i))
//!     .stdout(Stdio::from(o))
//!     .stderr(Stdio::from(e))
//!     .spawn()?;
//! let running = pending.start();
//! forward.to(child.id() as i32);
//! child.wait()?;
//! running.finish(Duration::from_secs(1));
//! # Ok::<(), std::io::Error>(())
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod console;
pub mod relay;
pub mod signals;
