//! ucm's sqlx backend: `ConnectionManagerProtocol` on sqlx connections pooled by `ucm-kernel`'s pool.
//!
//! The crate holds only driver glue. [`SqlxConnector`] is core's `Connector` for any sqlx
//! database (connect with the preset's session settings, ping, roll back on return,
//! switch the session's read-only setting); a `Dialect` per database says what differs
//! (connect options, type names, error codes). [`SqlxManager`] is core's `Manager` over
//! the [`Sqlx`] backend: pools, breaker, retry, routing, health, metrics and error mapping
//! all come from `ucm-kernel`.
//!
//! # Features
//! - `postgres` (default): PostgreSQL.
//! - `mysql` (default): MySQL and MariaDB.
//! - `sqlite` (default): SQLite, bundled.

mod connector;
mod convert;
pub mod dialect;
mod driver;
mod error;
mod manager;
#[cfg(feature = "mysql")]
mod mysql;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;

pub use connector::SqlxConnector;
pub use driver::{
    ObservedConnection, SqlxDatabase, SqlxPool, SqlxPoolConnection, SqlxTransaction,
    SqlxTransactionError, into_sqlx_error,
};
pub use manager::{Sqlx, SqlxConnection, SqlxManager, SqlxSession};
#[cfg(feature = "mysql")]
pub use mysql::MySqlDialect;
#[cfg(feature = "postgres")]
pub use postgres::PgDialect;
/// The sqlx this crate is built with: use it (`ucm_sqlx::sqlx::query!`...) so that your
/// queries and ucm's pool share one sqlx.
pub use scoped_futures;
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteDialect;
pub use sqlx;
pub use ucm_kernel as core;
