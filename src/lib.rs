//! doxm-gate: the network face of a fleet of OCF devices hosted by a bridge.
//!
//! An Onboarding Tool (OBT) finds unowned devices with an unsecured multicast
//! `GET /oic/sec/doxm?owned=FALSE`. A bridge that hosts a million virtual devices must not run a
//! million handlers for that one datagram: doxm-gate parses it once, without allocating, answers
//! for exactly the devices the OCF Security rule allows (RFOTM, no open onboarding connection),
//! each from that device's own endpoint, and drops everything else, counted by reason.
//!
//! # Data flow
//!
//! ```text
//!   datagram + metadata + now
//!            |
//!            v
//!   +-----------------+    borrowed views, validated in one pass, no allocation
//!   | wire            |    coap::Message, query::Filters, cbor/ocf encoders
//!   +-----------------+
//!            |
//!            v
//!   +-----------------+    the rule as a pure function (SPEC section 1.1)
//!   | policy          |
//!   +-----------------+
//!            |
//!            v
//!   +-----------------+    dedup, leisure scheduling, budgets; actions out
//!   | engine          |    (reads the lock-free fleet table and eligibility index)
//!   +-----------------+
//!            |
//!            v
//!   +-----------------+    thin drivers: mio loop, multicast joins, pktinfo, batching
//!   | io, control     |
//!   +-----------------+
//! ```
//!
//! The core (`wire`, and the layers built on it) performs no I/O and reads no clock: bytes,
//! metadata and time go in, decisions and datagrams come out. That is what makes it testable
//! without sockets and fuzzable without a network.
//!
//! This release contains the [`wire`] layer and the [`policy`]; the engine and drivers follow.

// The core forbids unsafe code outright. With the daemon, unsafe code is denied everywhere but
// `io::sys`, which documents each use (recvmmsg, sendmmsg, packet info).
#![cfg_attr(not(feature = "daemon"), forbid(unsafe_code))]
#![cfg_attr(feature = "daemon", deny(unsafe_code))]
#![warn(missing_docs)]
// Every unsafe block (all in `io::sys`) says why it is sound.
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod engine;
pub mod fleet;
pub mod policy;
pub mod wire;

#[cfg(feature = "testing")]
pub mod testing;

#[cfg(feature = "daemon")]
pub mod config;
#[cfg(feature = "daemon")]
pub mod control;
#[cfg(feature = "daemon")]
pub mod io;
