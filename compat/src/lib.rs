//! `ucm-compat`: legacy-style `DatabaseManager` (sync) and `DatabaseSessionManager` (async) adapters.
//!
//! They arrive with the compat issue; the `unified-v2` feature will switch them from
//! private per-instance pools to the unified manager. Until then the crate only names the
//! façade it will translate legacy calls into.

pub use ucm;
