//! Test support shared by `tests/`, `benches/` and the fuzz crate, behind the `testing` feature
//! (never part of the daemon; the crate's own dev-dependency on itself turns it on for tests and
//! benches, so nothing shares code through `#[path]` includes).
//!
//! - [`sim`]: the deterministic storm simulator (the sans-IO engine under N devices, K clients,
//!   copies and a jumping clock), whose summary table is `tests/storm.snapshot`.
//! - [`fuzz`]: the checks behind the cargo-fuzz targets, replayed on stable by
//!   `tests/fuzz_corpus.rs`.
//! - `lab` (with the `daemon` feature too): two network namespaces joined by a veth pair, the
//!   real gate in one and the OBT side in the other, for the netns tests and the load benches.

pub mod fuzz;
pub mod sim;

#[cfg(feature = "daemon")]
pub mod lab;
