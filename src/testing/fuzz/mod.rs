//! The checks behind the fuzz targets (`fuzz/fuzz_targets/*.rs` are one line around each), so
//! that libFuzzer's campaigns and the stable corpus replay (`tests/fuzz_corpus.rs`) run the same
//! assertions. Each check panics on a violated invariant, which is what libFuzzer reports.

pub mod coap_parse;
pub mod engine;
pub mod ocf_encode;
pub mod query;
