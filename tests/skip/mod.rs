//! Skipping a test that cannot run here, loudly, and never in CI.
//!
//! `skip(why)` writes a `SKIP` line straight to stderr (past the test harness's capture, so it
//! shows even for a passing test) and returns, so the test can return early. When the
//! environment sets `DOXM_GATE_REQUIRE_ALL=1` (`.ci/run` does), it panics instead: in CI a
//! missing tool is a failure, not a skip.

use std::io::Write;

/// Skips (or, under `DOXM_GATE_REQUIRE_ALL=1`, fails) the calling test.
pub fn skip(test: &str, why: &str) {
    if std::env::var("DOXM_GATE_REQUIRE_ALL").is_ok_and(|v| v == "1") {
        panic!("{test}: cannot run here and DOXM_GATE_REQUIRE_ALL=1: {why}");
    }
    let _ = writeln!(std::io::stderr(), "\n*** SKIP {test}: {why} ***\n");
}
