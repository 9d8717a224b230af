//! The reference host (placeholder until it is written).
fn main() {}
