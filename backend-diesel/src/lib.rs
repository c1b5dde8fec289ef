//! ucm's diesel backend: `ConnectionManagerProtocol` on diesel-async connections pooled by `ucm-core`'s pool.
//!
//! The crate holds only driver glue. [`DieselConnector`] is core's `BackendConnector` for
//! any diesel-async connection (connect with the preset's session settings, ping, roll
//! back through diesel's transaction manager, switch the session's read-only setting,
//! run neutral SQL); a `Dialect` per database says what differs: `AsyncPgConnection`
//! (tokio-postgres), `AsyncMysqlConnection` (mysql_async) and SQLite through
//! `SyncConnectionWrapper`. [`DieselManager`] is core's `Manager` over the [`Diesel`]
//! backend: pools, breaker, retry, routing, health, metrics and error mapping all come
//! from `ucm-core`.
//!
//! The diesel DSL stays available: a [`DieselSession`] derefs to a [`TrackedConnection`],
//! which derefs to the diesel-async connection (`&mut **session`).
//!
//! # Features
//! - `postgres` (default): PostgreSQL, pure Rust.
//! - `mysql` (default): MySQL and MariaDB, pure Rust.
//! - `sqlite` (default): SQLite, bundled.

mod connection;
mod connector;
mod convert;
pub mod dialect;
mod error;
mod manager;
#[cfg(feature = "mysql")]
mod mysql;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;

pub use connection::TrackedConnection;
pub use connector::DieselConnector;
pub use manager::{Diesel, DieselConnection, DieselManager, DieselSession};
#[cfg(feature = "mysql")]
pub use mysql::MySqlDialect;
#[cfg(feature = "postgres")]
pub use postgres::PgDialect;
#[cfg(feature = "sqlite")]
pub use sqlite::{AsyncSqliteConnection, SqliteDialect, SqliteOptions};
pub use ucm_core as core;
