//! The OCF encoders (doxm, `/oic/res`, `/oic/d`) on field values read from the input, into
//! buffers of every size; the output must decode to the inputs. See `src/testing/fuzz/ocf_encode.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

use doxm_gate::testing::fuzz::ocf_encode as check;

fuzz_target!(|data: &[u8]| check::check(&check::OcfCase::from_bytes(data)));
