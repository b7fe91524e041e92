//! The wire layer: CoAP messages, URI queries and OCF CBOR representations.
//!
//! Every parser here takes `&'a [u8]` and returns a borrowed view that points into it; nothing
//! allocates. Every encoder writes into a buffer the caller owns and reports a typed error when
//! the buffer is too small; nothing allocates either.
//!
//! - [`coap`]: the validated view of one CoAP datagram (RFC 7252 section 3) and its options,
//!   walked lazily or, with [`coap::Message::parse_with`], in the validation pass itself.
//! - [`option`]: option numbers and the rules that decide whether an option is recognised.
//! - [`writer`]: the encoder for CoAP messages.
//! - [`query`]: `key[=value]` arguments of Uri-Query options and the filters a request carries.
//! - [`cbor`]: a minimal, allocation-free CBOR encoder (RFC 8949 preferred serialisation).
//! - [`ocf`]: the OCF representations the gate serves: doxm, `/oic/res` links and `/oic/d`.
//! - [`fixtures`]: the real datagrams of the specification, for tests, benches and tools.
//!
//! # Contract
//!
//! After [`coap::Message::parse`] returns `Ok`, no accessor of the message panics and iterating
//! its options cannot fail. No parser panics or reads out of bounds for any input. An encoder
//! never panics, whatever the buffer size; it returns an error instead.

pub mod cbor;
pub mod coap;
pub mod fixtures;
pub mod ocf;
pub mod option;
pub mod query;
pub mod writer;

pub use coap::{CoapOption, Code, Error, Message, MessageType};
pub use writer::{WriteError, Writer};

/// A caller-provided buffer was too small for what had to be written into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[error("the output buffer is too small")]
pub struct BufferTooSmall;
