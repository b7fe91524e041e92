//! What the data path publishes for the control plane to report: counters and histograms.
//!
//! It lives with the driver that writes it, so that `control` reads `io` and `io` knows nothing
//! of `control`.
//!
//! The driver thread owns the engine and updates its histograms without locks; twice a second
//! it copies them here under a mutex that only the control plane's readers share. The data
//! path never waits for the control plane.

use std::time::Duration;

use hdrhistogram::Histogram;
use parking_lot::Mutex;

use super::DriverStats;
use crate::engine::Stats;

/// The published figures.
#[derive(Debug, Clone)]
pub struct Published {
    /// The engine's counters.
    pub engine: Stats,
    /// The driver's counters.
    pub driver: DriverStats,
    /// Multicast answers waiting for their time.
    pub pending_answers: usize,
    /// Sources with answers pending: what the answer budget is shared among (SPEC 7).
    pub pending_sources: usize,
    /// Nanoseconds per `Engine::handle` call.
    pub decision_ns: Histogram<u64>,
    /// Answers scheduled per answering request.
    pub answers_per_request: Histogram<u64>,
    /// Microseconds an answer left after its scheduled time.
    pub lateness_us: Histogram<u64>,
}

/// A histogram with the given range at 3 significant digits.
pub fn histogram(max: u64) -> Histogram<u64> {
    // The bounds are constants well inside hdrhistogram's limits.
    Histogram::new_with_bounds(1, max.max(2), 3)
        .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!()))
}

impl Default for Published {
    fn default() -> Published {
        Published {
            engine: Stats::default(),
            driver: DriverStats::default(),
            pending_answers: 0,
            pending_sources: 0,
            decision_ns: histogram(Duration::from_secs(10).as_nanos() as u64),
            answers_per_request: histogram(10_000_000),
            lateness_us: histogram(Duration::from_secs(3_600).as_micros() as u64),
        }
    }
}

/// The shared board; see the [module docs](self).
#[derive(Debug, Default)]
pub struct Board {
    inner: Mutex<Published>,
}

impl Board {
    /// Replaces the published figures.
    pub fn publish(&self, figures: &Published) {
        self.inner.lock().clone_from(figures);
    }

    /// A copy of the published figures.
    pub fn read(&self) -> Published {
        self.inner.lock().clone()
    }
}
