//! Fixture for `ucm audit`: not valid Rust, reported as not read (not compiled).

fn broken( {
