//! ucm's diesel backend: `ConnectionManagerProtocol` on diesel-async connections pooled by `ucm-core`'s pool.
//!
//! This crate holds only driver glue: connectors for `AsyncPgConnection`,
//! `AsyncMysqlConnection` and SQLite through `SyncConnectionWrapper`. The connectors land
//! with the diesel-backend issue; until then the crate re-exports the core it will build on.

pub use ucm_core as core;
