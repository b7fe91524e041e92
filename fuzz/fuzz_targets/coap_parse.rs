//! `Message::parse` on arbitrary bytes (and the one-pass `parse_with` and `RequestFacts::parse`,
//! which must agree with it); when it accepts them, every accessor agrees with a reference and
//! writing the fields back gives the same bytes. See `src/testing/fuzz/coap_parse.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

use doxm_gate::testing::fuzz::coap_parse as check;

fuzz_target!(|data: &[u8]| check::check(data));
