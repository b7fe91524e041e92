//! The control plane: how the bridge tells the gate about its devices, durably, and how the
//! gate reports what it does.
//!
//! - [`fleet_file`]: the device schema shared by fleet files and the API, and the demo fleet.
//! - [`mutation`]: the changes (upsert, patch, delete), checked then applied, batches all or nothing.
//! - [`journal`]: the append-only, checksummed, group-committed journal and its snapshots.
//! - [`store`]: the fleet plus its journal: acknowledged means on disk.
//! - [`api`]: the HTTP/JSON API on its own threads.
//! - [`transport`]: the API's connections: cap, timeouts, accept back-off, bounded shutdown.
//! - [`metrics`]: the figures the data path publishes ([`crate::io::board`]), rendered for
//!   `/metrics`.

use serde::{Deserialize, Serialize};

pub mod api;
pub mod fleet_file;
pub mod journal;
pub mod metrics;
pub mod mutation;
pub mod store;
#[cfg(test)]
mod test_dir;
pub mod transport;

/// What the recovered states mean after a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Every device comes back with an unknown state until the bridge re-reports it.
    #[default]
    FailClosed,
    /// Devices come back in their last acknowledged state.
    Resume,
}
