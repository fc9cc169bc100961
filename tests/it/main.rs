//! End-to-end tests that drive the `davit` binary.

mod cgroups;
mod common;
mod fetch;
mod manage;
mod net16;
mod netdns;
mod offline;
mod run;
mod storage;
mod terminal;
