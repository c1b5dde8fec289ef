//! ucm's diesel backend: `ConnectionManagerProtocol` on diesel-async connections pooled by `ucm-kernel`'s pool.
//!
//! The crate holds only driver glue. [`DieselConnector`] is core's `BackendConnector` for
//! any diesel-async connection (connect with the preset's session settings, ping, roll
//! back through diesel's transaction manager, switch the session's read-only setting,
//! run neutral SQL); a `Dialect` per database says what differs: `AsyncPgConnection`
//! (tokio-postgres), `AsyncMysqlConnection` (mysql_async) and SQLite through
//! `SyncConnectionWrapper`. [`DieselManager`] is core's `Manager` over the [`Diesel`]
//! backend: pools, breaker, retry, routing, health, metrics and error mapping all come
//! from `ucm-kernel`.
//!
//! The diesel DSL stays available: a [`DieselSession`] derefs to a [`TrackedConnection`],
//! which derefs to the diesel-async connection (`&mut **session`). For code written against
//! a pool of diesel connections, the diesel-shaped handles keep the queries as they are and
//! observe every statement (span and metrics named after its SQL, client deadline,
//! breaker, eviction):
//! - [`DieselPool`] (async): `pool.get().await?` is a [`DieselPoolConnection`], itself a
//!   diesel-async `AsyncConnection` (`diesel_async::RunQueryDsl` on `&mut conn`).
//! - [`DieselBlockingPool`] (sync, for r2d2-style code): `pool.get()?` derefs to a
//!   [`DieselSyncConnection`], a sync `diesel::Connection` (diesel-async's
//!   `AsyncConnectionWrapper` driven on ucm's runtime for blocking calls, from plain threads
//!   and from inside tokio runtimes), so `diesel::RunQueryDsl`, `Connection::transaction`
//!   and `diesel_migrations` work on `&mut *conn`.
//! - Both have `transaction`, a typed closure re-run under the manager's retry policy.
//!
//! ```no_run
//! use diesel::QueryableByName;
//! use diesel::sql_types::BigInt;
//! use ucm_diesel::DieselManager;
//! use ucm_diesel::core::{ConnectionManagerProtocol, ConnectionMode, Connection, ManagerMode};
//!
//! #[derive(QueryableByName)]
//! struct Pending {
//!     #[diesel(sql_type = BigInt)]
//!     n: i64,
//! }
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let manager = DieselManager::from_env(ManagerMode::AsyncModern).await?;
//! // The neutral API, as on every backend...
//! manager.execute(ConnectionMode::ReadWrite, "DELETE FROM jobs WHERE id = $1", &[7.into()]).await?;
//! // ...and the diesel DSL on a pooled connection (ReadOnly: enforced by the database).
//! let mut connection = manager.get_connection(ConnectionMode::ReadOnly).await?;
//! if let Connection::Postgres(session) = &mut connection {
//!     let query = diesel::sql_query("SELECT count(*) AS n FROM jobs");
//!     let pending: Pending = diesel_async::RunQueryDsl::get_result(query, session.driver()).await?;
//!     println!("{} jobs pending", pending.n);
//! }
//! # Ok(()) }
//! ```
//!
//! # Features
//! - `postgres` (default): PostgreSQL, pure Rust.
//! - `mysql` (default): MySQL and MariaDB, pure Rust.
//! - `sqlite` (default): SQLite, bundled.

mod connection;
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
#[cfg(feature = "postgres")]
mod tls;

pub use connection::TrackedConnection;
pub use connector::{DieselConnector, SharedConnection};
pub use convert::KEPT_STATEMENTS;
pub use driver::{
    BlockingRuntime, DieselBlockingConnection, DieselBlockingPool, DieselDialect, DieselPool,
    DieselPoolConnection, DieselSyncConnection, DieselTransactionError, Observed,
    ObservedTransactionManager, StatementNamer, TransactionState, into_diesel_error,
};
pub use manager::{Diesel, DieselConnection, DieselManager, DieselSession};
#[cfg(feature = "mysql")]
pub use mysql::MySqlDialect;
#[cfg(feature = "postgres")]
pub use postgres::PgDialect;
#[cfg(feature = "sqlite")]
pub use sqlite::{AsyncSqliteConnection, SqliteDialect, SqliteOptions};
#[cfg(feature = "postgres")]
pub use tls::postgres_tls_config;
pub use ucm_kernel as core;
