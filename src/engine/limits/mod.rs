//! What bounds the answers the gate sends (SPEC section 7), one bound per file, each named after
//! what it bounds. An unsecured 45-byte multicast can trigger thousands of ~200-byte answers, so:
//!
//! - [`SourceLimiter`] (`source.rs`) bounds the **answer-producing requests of one source**: a
//!   token bucket per source address, in a bounded table, so that one client (a looping OBT, a
//!   script) cannot keep the fleet answering; it also records how much of the answer budget each
//!   source's admitted answers still hold;
//! - [`AnswerBudget`] (`budget.rs`) bounds the **answer bytes all requests together schedule
//!   per second**: it turns the number and size of a request's answers into its leisure window,
//!   stretching the window instead of bursting, holds a busy source to its share, and says how
//!   many answers fit at all, so that the engine sheds the rest;
//! - [`SendPacer`] (`pacer.rs`) bounds the **answer bytes that actually leave per second**,
//!   where overlapping windows would briefly exceed the budget.
//!
//! **Unicast replies** on device endpoints (`/oic/res`, `/oic/d`, unicast doxm, error codes and
//! empty ACKs) are under the same limits (SPEC 7; without them, `CON GET /oic/res` at 10k/s from
//! one spoofable source drew 1.95 MB/s of replies, 10x a 200,000 B/s budget): a reply is
//! admitted only while the [`SendPacer`] has room, exactly like a due answer, and its bytes are
//! charged to the pacer, to the [`AnswerBudget`] (later windows open after them) and to its
//! source's share in the [`SourceLimiter`] (not to its request bucket, which bounds multicast
//! requests only: an OBT follows every answer with a unicast request or two). A reply over
//! budget is dropped and counted (`engine/over-budget`); a CON client retransmits. So the bytes
//! that leave per second, answers and replies together, stay within the budget plus the pacer's
//! burst, however many unicast requests arrive.
//!
//! All are pure: time is passed in, nothing reads a clock, and nothing allocates after
//! construction. Which *addresses* may get answers at all is a different question, answered by
//! [`super::source_address`].

mod budget;
mod pacer;
mod source;

use std::time::Duration;

pub use budget::{plannable_bytes, AnswerBudget};
pub use pacer::SendPacer;
pub use source::SourceLimiter;

/// How long `bytes` take at `rate` bytes per second, rounded up to the nanosecond (saturating
/// far beyond any window): the one conversion the budget and the pacer both charge with.
fn time_at(bytes: u128, rate: u64) -> Duration {
    let nanos = bytes.saturating_mul(1_000_000_000).div_ceil(u128::from(rate));
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// Shorthands of the limits' unit tests.
#[cfg(test)]
mod test_util {
    use std::net::IpAddr;
    use std::time::Duration;

    pub fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    pub fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    pub fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }
}
