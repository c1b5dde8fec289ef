//! The `ucm` command line.

fn main() {}
