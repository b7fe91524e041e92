//! The fleet: every device the gate answers for, and which of them are eligible right now.
//!
//! - [`table`]: the device table ([`Fleet`]), lock-free for readers, one writer at a time.
//! - [`state`]: the packed per-device hot state ([`StateWord`]), one atomic load per decision.
//! - [`record`]: the descriptive fields ([`DeviceRecord`]), swapped whole, RCU-style.
//! - [`index`]: the eligibility index, O(eligible) enumeration (SPEC section 6).
//! - [`uuid_index`]: UUID -> id lookups for the `di` and `deviceuuid` filters and the control
//!   plane.

pub mod index;
pub mod record;
pub mod state;
pub mod table;
pub mod uuid_index;

pub use record::{DeviceRecord, Endpoint, EndpointBuf, Endpoints, Lists, RecordError};
pub use state::{OnboardingState, StateWord};
pub use table::{check_consistent, patched_state, DeviceId, Fleet, FleetError, StatePatch};
