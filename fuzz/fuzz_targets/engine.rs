//! Scripts of datagrams, fleet changes and clock jumps through the sans-IO engine, against an
//! independent model of SPEC 1.1: never an answer from a device that is not eligible, at most
//! one answer per device per exchange, nothing for what the rule ignores. See `src/testing/fuzz/engine.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

use doxm_gate::testing::fuzz::engine as check;

fuzz_target!(|data: &[u8]| check::check(data));
