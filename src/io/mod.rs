//! The drivers' I/O: sockets, multicast groups, packet info, the event loop.
//!
//! Everything here is a thin layer around the sans-IO [`crate::engine::Engine`]: it moves bytes
//! and metadata between the kernel and the engine and decides nothing itself.
//!
//! - [`claim`]: one gate per device endpoint, and who holds one that is taken.
//! - [`net`]: interfaces, group sockets, device sockets, joins.
//! - [`sys`]: `recvmmsg`/`sendmmsg` with `IPV6_PKTINFO`/`IP_PKTINFO` (the crate's only unsafe).
//! - [`driver`]: the mio loop.
//! - [`board`]: the figures the driver publishes for the control plane to read.

pub mod board;
pub mod claim;
pub mod driver;
pub mod net;
pub mod sys;

pub use driver::{Driver, DriverConfig, DriverStats};
