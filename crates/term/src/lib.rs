//! The caller's terminal side of a davit container: relays, raw mode,
//! window size and the console client's keys.

pub mod console;
pub mod relay;
pub mod signals;
