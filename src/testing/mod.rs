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

/// The most bytes in any interval shorter than `width`, over `(time, bytes)` sorted by time
/// (time and `width` in one unit: the lab uses microseconds, the simulator nanoseconds). How
/// every test and report checks the pacer's strict bound (SPEC 7: no sliding second above the
/// budget plus one datagram).
pub fn sliding_max(events: &[(u64, u64)], width: u64) -> u64 {
    let (mut lo, mut sum, mut best) = (0usize, 0u64, 0u64);
    for hi in 0..events.len() {
        sum += events[hi].1;
        while events[hi].0 - events[lo].0 >= width {
            sum -= events[lo].1;
            lo += 1;
        }
        best = best.max(sum);
    }
    best
}
