//! Placeholder: the daemon-over-veth bench is being written.
fn main() {}
