//! The CoAP message encoder: header, token, options, payload, into a caller-provided buffer.
//!
//! The writer never allocates and never panics. It also never produces a malformed message:
//! options must come in ascending order (equal numbers repeat an option), an Empty message (code
//! 0.00) can carry nothing, the token is at most 8 bytes, and an empty payload writes no marker.
//! So everything it produces parses back with [`Message::parse`] to the same fields.
//!
//! ```
//! use doxm_gate::wire::{option, Code, Message, MessageType, Writer};
//!
//! let mut buf = [0u8; 64];
//! let mut w = Writer::new(&mut buf, MessageType::NonConfirmable, Code::GET, 0x1234, b"tk")?;
//! w.option(option::URI_PATH, b"oic")?;
//! w.option(option::URI_PATH, b"res")?;
//! w.uint_option(option::ACCEPT, 10_000)?;
//! let len = w.finish();
//!
//! let msg = Message::parse(&buf[..len]).unwrap();
//! assert!(msg.path_is(&[b"oic", b"res"]));
//! assert_eq!(msg.accept(), Some(10_000));
//! # Ok::<(), doxm_gate::wire::WriteError>(())
//! ```
//!
//! [`Message::parse`]: super::coap::Message::parse

use super::coap::{field, Code, MessageType, MAX_TOKEN_LEN};
use super::option;
use super::BufferTooSmall;

/// Why a message could not be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum WriteError {
    /// The buffer cannot hold the message.
    #[error("the output buffer is too small for the message")]
    BufferTooSmall,
    /// A token longer than 8 bytes.
    #[error("a token is at most 8 bytes")]
    TokenTooLong,
    /// An option number lower than the previous one.
    #[error("option {number} written after option {previous}: options must be in ascending order")]
    OptionOutOfOrder {
        /// The previous option number.
        previous: u16,
        /// The offending option number.
        number: u16,
    },
    /// An option value longer than the header can express.
    #[error("an option value is at most 65804 bytes")]
    OptionTooLong,
    /// A token, option or payload on an Empty message (code 0.00).
    #[error("an Empty message (code 0.00) carries no token, options or payload")]
    EmptyMessageNotEmpty,
}

impl From<BufferTooSmall> for WriteError {
    fn from(_: BufferTooSmall) -> WriteError {
        WriteError::BufferTooSmall
    }
}

/// Writes one CoAP message into a borrowed buffer; see the [module docs](self).
#[derive(Debug)]
pub struct Writer<'b> {
    buf: &'b mut [u8],
    len: usize,
    last_option: u16,
    empty: bool,
}

impl<'b> Writer<'b> {
    /// Starts a message: writes the 4-byte header and the token.
    ///
    /// # Errors
    /// [`WriteError::TokenTooLong`], [`WriteError::EmptyMessageNotEmpty`] or
    /// [`WriteError::BufferTooSmall`].
    pub fn new(
        buf: &'b mut [u8],
        ty: MessageType,
        code: Code,
        message_id: u16,
        token: &[u8],
    ) -> Result<Writer<'b>, WriteError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(WriteError::TokenTooLong);
        }
        let empty = code == Code::EMPTY;
        if empty && !token.is_empty() {
            return Err(WriteError::EmptyMessageNotEmpty);
        }
        let mut w = Writer { buf, len: 0, last_option: 0, empty };
        let mut header = [0; field::HEADER_LEN];
        header[field::FIRST] = field::first(ty as u8, token.len() as u8);
        header[field::CODE] = code.byte();
        header[field::MESSAGE_ID].copy_from_slice(&message_id.to_be_bytes());
        w.put(&header)?;
        w.put(token)?;
        Ok(w)
    }

    /// Appends option `number` with `value`; `number` must not be below the previous one.
    ///
    /// # Errors
    /// [`WriteError::OptionOutOfOrder`], [`WriteError::OptionTooLong`],
    /// [`WriteError::EmptyMessageNotEmpty`] or [`WriteError::BufferTooSmall`]. On error nothing
    /// is written.
    pub fn option(&mut self, number: u16, value: &[u8]) -> Result<&mut Self, WriteError> {
        if self.empty {
            return Err(WriteError::EmptyMessageNotEmpty);
        }
        if number < self.last_option {
            return Err(WriteError::OptionOutOfOrder { previous: self.last_option, number });
        }
        if value.len() > option::MAX_VALUE_LEN {
            return Err(WriteError::OptionTooLong);
        }
        let (delta_nibble, delta_ext, delta_ext_len) =
            option::encode_nibble(u32::from(number - self.last_option));
        let (len_nibble, len_ext, len_ext_len) = option::encode_nibble(value.len() as u32);
        let needed = 1 + delta_ext_len + len_ext_len + value.len();
        if self.remaining() < needed {
            return Err(WriteError::BufferTooSmall);
        }
        self.put(&[delta_nibble << 4 | len_nibble])?;
        self.put(&delta_ext[..delta_ext_len])?;
        self.put(&len_ext[..len_ext_len])?;
        self.put(value)?;
        self.last_option = number;
        Ok(self)
    }

    /// Appends a uint option in its shortest form (RFC 7252 section 3.2: 0 is the empty value).
    ///
    /// # Errors
    /// As [`Writer::option`].
    pub fn uint_option(&mut self, number: u16, value: u32) -> Result<&mut Self, WriteError> {
        let bytes = value.to_be_bytes();
        let skip = (value.leading_zeros() / 8) as usize;
        self.option(number, &bytes[skip..])
    }

    /// Finishes the message with `payload` (no marker when it is empty); returns its length.
    ///
    /// # Errors
    /// [`WriteError::EmptyMessageNotEmpty`] or [`WriteError::BufferTooSmall`].
    pub fn payload(self, payload: &[u8]) -> Result<usize, WriteError> {
        if payload.is_empty() {
            return Ok(self.finish());
        }
        self.payload_with(|out| {
            let dst = out.get_mut(..payload.len()).ok_or(WriteError::BufferTooSmall)?;
            dst.copy_from_slice(payload);
            Ok(payload.len())
        })
    }

    /// Finishes the message with a payload encoded in place by `encode`, which gets the rest of
    /// the buffer and returns how many bytes it wrote. Returns the message length.
    ///
    /// # Errors
    /// Whatever `encode` returns, or [`WriteError::BufferTooSmall`] when not even the marker fits.
    pub fn payload_with<E: From<WriteError>>(
        mut self,
        encode: impl FnOnce(&mut [u8]) -> Result<usize, E>,
    ) -> Result<usize, E> {
        let marker_at = self.len;
        self.put(&[0xff])?;
        let rest = self.buf.get_mut(self.len..).ok_or(WriteError::BufferTooSmall)?;
        let written = encode(rest)?;
        if written == 0 {
            return Ok(marker_at);
        }
        if self.empty {
            return Err(WriteError::EmptyMessageNotEmpty.into());
        }
        Ok(self.len + written)
    }

    /// Finishes the message without a payload; returns its length.
    pub fn finish(self) -> usize {
        self.len
    }

    /// The number of bytes written so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing has been written (never true after [`Writer::new`]).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.len
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), WriteError> {
        let end = self.len + bytes.len();
        let dst = self.buf.get_mut(self.len..end).ok_or(WriteError::BufferTooSmall)?;
        dst.copy_from_slice(bytes);
        self.len = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::coap::Message;
    use crate::wire::fixtures::{OBT_REQUEST, OBT_TOKEN};

    #[test]
    fn test_emit_obt_request() {
        // SPEC section 4: the real 45-byte OBT request, rebuilt field by field.
        let mut buf = [0u8; 64];
        let mut w =
            Writer::new(&mut buf, MessageType::NonConfirmable, Code::GET, 0xf1cd, &OBT_TOKEN)
                .unwrap();
        w.option(option::URI_PATH, b"oic").unwrap();
        w.option(option::URI_PATH, b"sec").unwrap();
        w.option(option::URI_PATH, b"doxm").unwrap();
        w.option(option::URI_QUERY, b"owned=FALSE").unwrap();
        w.uint_option(option::ACCEPT, 10_000).unwrap();
        w.uint_option(option::OCF_ACCEPT_CONTENT_FORMAT_VERSION, 2048).unwrap();
        let len = w.finish();
        assert_eq!(buf[..len], OBT_REQUEST);
    }

    #[test]
    fn test_option_order_enforced() {
        let mut buf = [0u8; 32];
        let mut w = Writer::new(&mut buf, MessageType::Confirmable, Code::GET, 1, &[]).unwrap();
        w.option(15, b"a").unwrap();
        assert_eq!(
            w.option(11, b"b").unwrap_err(),
            WriteError::OptionOutOfOrder { previous: 15, number: 11 }
        );
        w.option(15, b"c").unwrap();
    }

    #[test]
    fn test_buffer_too_small_everywhere() {
        for size in 0..20 {
            let mut buf = vec![0u8; size];
            let result = Writer::new(&mut buf, MessageType::Confirmable, Code::GET, 7, b"tok")
                .and_then(|mut w| {
                    w.option(11, b"oic")?;
                    w.payload(b"payload")
                });
            if size < 19 {
                assert_eq!(result, Err(WriteError::BufferTooSmall), "size {size}");
            } else {
                let len = result.unwrap();
                assert_eq!(Message::parse(&buf[..len]).unwrap().payload(), b"payload");
            }
        }
    }

    #[test]
    fn test_empty_message_rules() {
        let mut buf = [0u8; 8];
        assert_eq!(
            Writer::new(&mut buf, MessageType::Reset, Code::EMPTY, 9, b"t").unwrap_err(),
            WriteError::EmptyMessageNotEmpty
        );
        let mut w = Writer::new(&mut buf, MessageType::Reset, Code::EMPTY, 9, &[]).unwrap();
        assert_eq!(w.option(12, &[]).unwrap_err(), WriteError::EmptyMessageNotEmpty);
        assert_eq!(w.payload(&[]), Ok(4));
        let w = Writer::new(&mut buf, MessageType::Reset, Code::EMPTY, 9, &[]).unwrap();
        assert_eq!(w.payload(b"x"), Err(WriteError::EmptyMessageNotEmpty));
    }

    #[test]
    fn test_uint_shortest_form() {
        let mut buf = [0u8; 32];
        let mut w = Writer::new(&mut buf, MessageType::Confirmable, Code::GET, 1, &[]).unwrap();
        w.uint_option(12, 0).unwrap();
        w.uint_option(17, 255).unwrap();
        w.uint_option(258, 256).unwrap();
        let len = w.finish();
        let msg = Message::parse(&buf[..len]).unwrap();
        let lens: Vec<usize> = msg.options().map(|o| o.value.len()).collect();
        assert_eq!(lens, [0, 1, 2]);
    }
}
