//! Uri-Query values (the input split at 0x00) through `query::args` and `Filters::parse`,
//! against a naive reference of SPEC section 2. See `src/testing/fuzz/query.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

use doxm_gate::testing::fuzz::query as check;

fuzz_target!(|data: &[u8]| check::check(data));
