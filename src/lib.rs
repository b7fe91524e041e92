//! doxm-gate: the network face of a fleet of OCF devices hosted by a bridge.
//!
//! An Onboarding Tool (OBT) finds unowned devices with an unsecured multicast
//! `GET /oic/sec/doxm?owned=FALSE`. A bridge that hosts a million virtual devices must not run a
//! million handlers for that one datagram: doxm-gate parses it once, without allocating, answers
//! for exactly the devices the OCF Security rule allows (RFOTM, no open onboarding connection),
//! each from that device's own endpoint, and drops everything else, counted by reason.
//!
//! # Data flow, as the code runs
//!
//! ```text
//!                      kernel (UDP 5683 and the device endpoints)
//!                          |  recvmmsg + pktinfo            ^  sendmmsg + pktinfo
//!                          v                                |
//!   +------------------------------------------------------------------+
//!   | io: the mio loop (one thread), joins, claims   [daemon feature]  |
//!   +------------------------------------------------------------------+
//!        | handle(now, meta, bytes)          poll_transmit(now, buf) |
//!        v                                                          |
//!   +------------------------------------------------------------------+
//!   | engine: dedup, source checks, limits (rate, budget, pacer),      |
//!   |         the paced schedule, the unicast endpoint                 |
//!   |    wire:   CoAP view and writer, query, CBOR, OCF bodies         |
//!   |    policy: the rule of SPEC 1.1 as pure functions                |
//!   +------------------------------------------------------------------+
//!        | reads (lock-free: one atomic state word per device,
//!        v        the eligibility index, the UUID index)
//!   +------------------------------------------------------------------+
//!   | fleet: the device table                                           |
//!   +------------------------------------------------------------------+
//!        ^ writes from the side (one writer lock the data path never takes)
//!        |
//!   +------------------------------------------------------------------+
//!   | control: HTTP API, checked mutations, journal  [daemon feature]  |
//!   +------------------------------------------------------------------+
//!        ^ the bridge's calls; io publishes its figures on io::board for /metrics
//! ```
//!
//! The core (`wire`, `policy`, `fleet`, `engine`) performs no I/O and reads no clock: bytes,
//! metadata and time go in, decisions and datagrams come out. That is what makes it testable
//! without sockets and fuzzable without a network, and the compiler keeps it so: without the
//! default `daemon` feature the crate is just the core, under `forbid(unsafe_code)`, with no
//! socket, runtime, HTTP, CLI or logging dependency. Imports run one way: `wire` -> `policy` ->
//! `fleet` -> `engine`; `io` and `control` use the core and never each other's internals
//! (`control` reads `io::board`). `testing` (a feature of its own) is the test support shared
//! by the tests, benches and fuzz targets.

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
pub mod control;
#[cfg(feature = "daemon")]
pub mod io;
