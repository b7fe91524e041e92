//! The control plane: how the bridge tells the gate about its devices, durably, and how the
//! gate reports what it does.
//!
//! - [`mutation`]: the changes (upsert, patch, delete), checked then applied, batches all or nothing.
//! - [`journal`]: the append-only, checksummed, group-committed journal and its snapshots.
//! - [`store`]: the fleet plus its journal: acknowledged means on disk.
//! - [`api`]: the HTTP/JSON API on its own threads.
//! - [`board`], [`metrics`]: figures published by the data path, rendered for `/metrics`.

pub mod board;
pub mod journal;
pub mod mutation;
