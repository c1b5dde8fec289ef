//! `cargo xtask`: ucm's project automation.

fn main() {}
