//! Placeholder: the benchmark report generator is being written.
fn main() {}
