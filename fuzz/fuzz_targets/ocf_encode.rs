//! The OCF encoders (doxm, `/oic/res`, `/oic/d`) on field values read from the input, into
//! buffers of every size; the output must decode to the inputs. See `checks/ocf_encode.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../checks/ocf_encode.rs"]
mod check;

fuzz_target!(|data: &[u8]| check::check(&check::OcfCase::from_bytes(data)));
