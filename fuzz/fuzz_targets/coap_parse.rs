//! `Message::parse` on arbitrary bytes; when it accepts them, every accessor agrees with a
//! reference and writing the fields back gives the same bytes. See `checks/coap_parse.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../checks/coap_parse.rs"]
mod check;

fuzz_target!(|data: &[u8]| check::check(data));
