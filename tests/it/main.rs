//! End-to-end tests that drive the `davit` binary.

mod common;
mod fetch;
mod manage;
mod offline;
mod run;
mod storage;
mod terminal;
