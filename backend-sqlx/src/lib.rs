//! ucm's sqlx backend: `ConnectionManagerProtocol` on sqlx connections pooled by `ucm-core`'s pool.
//!
//! This crate holds only driver glue: a connector per database (PostgreSQL, SQLite,
//! MySQL/MariaDB) that connects with the preset's options, validates, resets and maps
//! driver errors and SQLSTATEs into [`ucm_core::ErrorKind`]. The connector lands with the
//! sqlx-backend issue; until then the crate re-exports the core it will build on.

pub use ucm_core as core;
