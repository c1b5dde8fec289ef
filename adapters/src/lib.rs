//! `ucm`, the unified connection manager: the crate to depend on.
//!
//! One protocol ([`ConnectionManagerProtocol`]) over one pool per endpoint, a circuit
//! breaker, retry with backoff, read/write routing, health checks and metrics, on the
//! backend chosen at compile time (sqlx or diesel), for PostgreSQL, MySQL/MariaDB and
//! SQLite. Everything is reachable as `ucm::...`.
//!
//! # Quick start: SQLite
//!
//! ```
//! use ucm::{ConnectionManagerProtocol, ConnectionMode, ManagerConfig, ManagerMode, ProtocolExt};
//!
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> ucm::Result<()> {
//! # let dir = std::env::temp_dir().join(format!("ucm-doc-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir).unwrap();
//! # let path = dir.join("quickstart.db");
//! let url = format!("sqlite://{}", path.display());
//! let config = ManagerConfig::builder(ManagerMode::AsyncModern).primary(&url).build()?;
//! let manager = ucm::unified_manager_for(config).await?; // the process-wide manager for this mode and database
//!
//! manager.execute(ConnectionMode::ReadWrite, "CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, body TEXT)", &[]).await?;
//! manager.execute(ConnectionMode::ReadWrite, "INSERT INTO notes (body) VALUES (?)", &["hello".into()]).await?;
//! let count: i64 = manager
//!     .transaction(ConnectionMode::Transactional, |tx| Box::pin(async move {
//!         tx.execute("INSERT INTO notes (body) VALUES (?)", &["world".into()]).await?;
//!         let row = tx.fetch_optional("SELECT count(*) AS n FROM notes", &[]).await?;
//!         row.ok_or_else(|| ucm::Error::other("no count"))?.try_get("n")
//!     }))
//!     .await?;
//! assert_eq!(count, 2);
//! println!("{count} notes; health {}", manager.health_check().await.status);
//! ucm::shutdown_all().await?; // at exit: drains and closes every manager
//! # std::fs::remove_dir_all(&dir).ok();
//! # Ok(()) }
//! ```
//!
//! # PostgreSQL with a replica
//!
//! Configure in the environment (`DATABASE_URL`, `DATABASE_REPLICA_URLS`, `UCM_*`
//! overrides) or in code; `ReadOnly` work goes to a replica, everything else to the
//! primary. Reads are read-only at the database.
//!
//! A background health loop (every `UCM_HEALTH_INTERVAL`, 10 s by default; every second
//! while an endpoint is out) probes each endpoint with `pg_is_in_recovery()` and its replay
//! lag. A replica that stops answering, or lags past `UCM_MAX_REPLICA_LAG` (30 s), is
//! banned from reads, which go to the other replicas or the primary, and is let back after
//! two good probes; a read that finds a replica dead moves on to the next endpoint within
//! the same call. In the modes with high availability (`HighAvailability`, `MlTraining`,
//! `Admin`) the manager follows a promotion: when the primary is gone and a standby reports
//! it was promoted, writes go there, without a restart. ucm never promotes a server
//! itself. `connection_info()` and `ucm health` show each endpoint's role, state, lag and
//! the failovers followed.
//!
//! Reads from a replica may trail your own writes. A [`Manager::session`] keeps one unit of
//! work's reads on the primary for `UCM_READ_YOUR_WRITES` after its writes:
//!
//! ```no_run
//! use std::time::Duration;
//! use ucm::{ConnectionManagerProtocol, ConnectionMode, ManagerConfig, ManagerMode, PoolConfiguration};
//!
//! # async fn example() -> ucm::Result<()> {
//! let pool = PoolConfiguration::builder(ManagerMode::HighAvailability)
//!     .read_your_writes(Some(Duration::from_secs(2)))
//!     .build()?;
//! ucm::install_config(
//!     ManagerConfig::builder(ManagerMode::HighAvailability)
//!         .primary("postgres://app:secret@db-primary:5432/app")
//!         .replica("postgres://app:secret@db-replica:5432/app")
//!         .pool(pool)
//!         .build()?,
//! )?;
//! let manager = ucm::get_unified_manager(ManagerMode::HighAvailability).await?;
//! let rows = manager.fetch_all(ConnectionMode::ReadOnly, "SELECT id, state FROM jobs WHERE id = $1", &[7.into()]).await?;
//!
//! let request = manager.session(); // one per request or job
//! request.execute(ConnectionMode::ReadWrite, "UPDATE jobs SET state = 'done' WHERE id = $1", &[7.into()]).await?;
//! // Within 2 s of its write, this session reads from the primary: it sees 'done'.
//! let job = request.fetch_all(ConnectionMode::ReadOnly, "SELECT state FROM jobs WHERE id = $1", &[7.into()]).await?;
//! # Ok(()) }
//! ```
//!
//! # Choosing a backend
//!
//! | `Cargo.toml` | `UnifiedManager` is |
//! |---|---|
//! | `ucm = "0.1"` | sqlx's, with PostgreSQL |
//! | `ucm = { version = "0.1", features = ["mysql", "sqlite"] }` | sqlx's, with PostgreSQL, MySQL and SQLite |
//! | `ucm = { version = "0.1", default-features = false, features = ["diesel", "postgres"] }` | diesel-async's, PostgreSQL only |
//!
//! Both backends pass the same conformance suite. The backend's own API stays available on
//! a checked-out connection: `session.driver()` is the sqlx connection, or the
//! diesel-async connection for the diesel DSL. With both backend features on (Cargo
//! features add up across a build), `UnifiedManager` is sqlx's, and `DieselManager` is
//! there by name. With no backend feature the crate refuses to compile, saying which to
//! enable.
//!
//! # Modes
//!
//! A [`ManagerMode`] is a preset: pool size and overflow, timeouts, breaker, validation,
//! application name (`McpServer` for fast-failing interactive tools, `MlTraining` for long
//! batch work, `Admin`, `SyncHeavy`, `AsyncModern`, `HighAvailability`). A
//! [`ConnectionMode`] says what one checkout is for: `ReadOnly` (routed to replicas,
//! enforced by the database), `ReadWrite`, `Batch`, `Transactional`.
//!
//! # Transactions and retry
//!
//! [`ProtocolExt::transaction`] runs a closure in a transaction, commits on `Ok`, rolls back
//! on `Err`, panic or a dropped future, and re-runs the whole closure on a serialization
//! failure, deadlock or lost connection, under the manager's [`RetryPolicy`] (full-jitter
//! backoff and a retry budget). A commit whose outcome is unknown is never re-run unless
//! the work is marked idempotent.
//!
//! Nothing is sent twice unless it is safe. The one-shot `execute` and `fetch_all` retry
//! only getting the connection, except in `ReadOnly` mode (a read-only session cannot
//! have applied anything, so the whole read is retried). A write outside a transaction
//! whose connection is lost after it was sent fails with
//! [`ErrorKind::AmbiguousCommit`]: the server may have committed it. `ConnectionLost`
//! means it certainly did not apply. Each mode also has a statement timeout (150 ms for
//! `McpServer`), enforced by the server and, a little later, by the client, which then
//! discards the connection: a frozen server costs one deadline.
//!
//! # Observability
//!
//! ucm emits; your application installs. Every statement gets a `tracing` span, exported by
//! `tracing-opentelemetry` as a CLIENT span named `SELECT items` (the operation and its
//! table) with `db.system.name`, `db.namespace`, `db.operation.name`, `db.query.summary`,
//! `server.address`, `server.port`, `db.client.connection.pool.name`, and on failure
//! `error.type` and `db.response.status_code` (the SQLSTATE); every checkout gets an
//! `acquire` span. Parameter values and passwords never appear. With the `otel` feature
//! (default), metrics go to the global meter provider: `db.client.operation.duration` (s,
//! the conventions' buckets), `db.client.connection.count` (state `idle`/`used`), `.max`,
//! `.idle.max`, `.idle.min`, `.pending_requests`, `.timeouts`, `.create_time`,
//! `.wait_time`, `.use_time`, and ucm's own `ucm.circuit_breaker.transitions`,
//! `ucm.retries`, `ucm.routing.read_fallbacks`. Install the provider before building the
//! first manager:
//!
//! ```no_run
//! # fn example(provider: opentelemetry_sdk::metrics::SdkMeterProvider) {
//! opentelemetry::global::set_meter_provider(provider); // then ucm::get_unified_manager(...)
//! # }
//! ```
//!
//! The same figures, without OpenTelemetry, come from
//! [`ConnectionManagerProtocol::connection_info`] (no I/O) and `health_check()`.
//!
//! # Testing
//!
//! With the `testing` feature, `ucm::testing::TestDatabase` gives each test a fresh
//! database (from nothing, or copied from a template prepared once with
//! `prepare_template`) and a lazy manager on it (it connects on first use and keeps no
//! idle connection, so a suite with a database per test holds few server connections),
//! dropped at the end even when the test panics; `TestDatabase::transaction` pins one
//! connection with a transaction rolled back when dropped. The feature also adds
//! `ucm::testing::MemoryConnector`, a scriptable in-memory connector for fault tests
//! without a database (slow or refused connects, broken connections, latency).
//! [`DatabaseTestAdapter`] hands out a production session (through the unified manager)
//! and a direct, unpooled connection to compare against.
//!
//! Managers outlive the runtime that built them: their health loop and reaper move to
//! ucm's own runtime when that runtime shuts down (each `#[tokio::test]` has its own), and
//! [`close_manager`] closes one registered manager, which the next lookup replaces.
//!
//! # Web services
//!
//! With the `axum` feature, `ucm::web` has the pieces every service writes by hand: the
//! `RequestSession` extractor (a per-request read-your-writes session on the manager in
//! the router's state), `HttpError` (`?` on ucm's results in a handler: 503 with
//! `Retry-After` while the database is unavailable, 409 for a constraint, 500 otherwise,
//! never SQL or a server message in the body), and `health_routes()` (`/health/ready` from
//! the cached health, `/health/live`).
//!
//! # What `ucm` exports
//!
//! Everything an application names is at the root, each under one path; what only a
//! backend author needs (the connector contract, `DriverError`) is in `ucm-kernel`'s
//! `backend` module instead.
//!
//! - The manager and the registry: [`UnifiedManager`], [`UnifiedConnection`],
//!   [`SelectedBackend`], [`Manager`], [`Connection`], [`DirectConnection`],
//!   [`RoutingSession`], [`Pipelined`], [`get_unified_manager`], [`unified_manager_for`],
//!   [`install_config`], [`install_manager`], [`close_manager`], [`shutdown_all`],
//!   [`DatabaseTestAdapter`].
//! - Modes: [`ManagerMode`], [`ConnectionMode`].
//! - Configuration: [`ManagerConfig`], [`ManagerConfigBuilder`], [`ConfigSources`],
//!   [`Origin`], [`CredentialSource`], [`CredentialProvider`], [`Credentials`],
//!   [`PoolConfiguration`],
//!   [`PoolConfigurationBuilder`], [`DatabaseUrl`], [`DatabaseKind`], [`SslMode`],
//!   [`Pooler`], [`Secret`], [`CircuitBreakerConfig`], [`RetryPolicy`], [`Backoff`],
//!   [`RetryBudget`].
//! - Errors: [`Error`], [`ErrorKind`], [`ConnectFailure`], [`Result`], [`BoxError`].
//! - Values and rows: [`Value`], [`Row`], [`FromValue`], [`ConversionError`], and the
//!   crates whose types they carry, [`chrono`], [`serde_json`], [`uuid`].
//! - The protocol: [`ConnectionManagerProtocol`], [`ProtocolExt`], [`SqlExecutor`],
//!   [`TransactionalConnection`], [`TransactionOptions`], [`TransactionWork`],
//!   [`BoxFuture`].
//! - Info and health: [`ConnectionInfo`], [`EndpointInfo`], [`HealthReport`],
//!   [`HealthStatus`], [`ComponentHealth`], [`EndpointRole`], [`EndpointState`],
//!   [`PoolStatus`], [`SlaSummary`], [`PoolMetricsSnapshot`], [`HistogramSnapshot`],
//!   [`BreakerState`], [`BreakerSnapshot`], [`LongHold`].
//! - Deep diagnostics of the database (what `ucm health --deep` prints): [`deep_health`],
//!   [`DeepOptions`], [`DeepReport`], [`Finding`], [`Severity`]; the permission self-test
//!   (what `ucm check --permissions` prints): [`check_permissions`], [`PermissionPolicy`],
//!   [`DdlRule`], [`PermissionReport`], [`PermissionCheck`].
//! - The sqlx handles (with the sqlx feature), for code written against sqlx's pool:
//!   `SqlxPool`, `SqlxPoolConnection`, `SqlxTransaction`, `SqlxTransactionError`,
//!   `SqlxManager`, `SqlxConnection`, `Sqlx`; and `ucm_sqlx`, the backend crate, for the
//!   rest (its dialects, the sqlx crate it was built with).
//! - The diesel handles (with the diesel feature), for code written against a diesel pool:
//!   `DieselPool`, `DieselPoolConnection`, `DieselBlockingPool`,
//!   `DieselBlockingConnection`, `DieselTransactionError`, `DieselManager`,
//!   `DieselConnection`, `Diesel`; and `ucm_diesel`, the backend crate.
//! - Redis (with the redis feature): `RedisManager`, `RedisUrl`, `QueryCache`,
//!   `CacheConfig`, `CacheStats`, `Lease`; the process-wide Redis and query cache of a
//!   mode, `get_redis_manager` and `get_query_cache`; and `ucm_redis`, the crate. Their
//!   settings and the write notifications a cache listens to, whatever the features:
//!   [`RedisSettings`], [`CacheSettings`], [`WriteListener`], [`written_tables`],
//!   [`read_tables`].
//! - Modules: `testing` (with the testing feature), `web` (with the axum feature).
//!
//! `cargo xtask tidy` checks that this list and the code's exports are the same.
//!
//! # Features
//! - `sqlx` (default), `diesel`: the backend.
//! - `postgres` (default), `mysql`, `sqlite`: the databases compiled in. One by default,
//!   as sqlx's and diesel's users pick theirs: PostgreSQL, where replica routing and
//!   failover apply; SQLite is a bundled C library, so it is never built unasked.
//! - `otel` (default): OpenTelemetry metrics through the global meter provider.
//! - `testing`: test fixtures (`ucm::testing`) and the in-memory connector.
//! - `axum`: web integration (`ucm::web`).
//! - `redis`: Redis on ucm's pool, Sentinel, the query cache and the lock (docs/redis.md).

#[cfg(not(any(feature = "sqlx", feature = "diesel")))]
compile_error!(
    "ucm needs a backend: enable its `sqlx` feature (the default) or `diesel`, e.g. \
     ucm = { version = \"0.1\", default-features = false, features = [\"diesel\", \"postgres\"] }"
);

#[cfg(not(any(feature = "postgres", feature = "mysql", feature = "sqlite")))]
compile_error!(
    "ucm needs at least one database: enable its `postgres`, `mysql` or `sqlite` feature"
);

#[cfg(feature = "redis")]
mod cache_registry;
mod registry;
mod test_adapter;
#[cfg(feature = "testing")]
pub mod testing;
#[cfg(feature = "axum")]
pub mod web;

// The manager and the process-wide registry.
pub use registry::{
    close_manager, get_unified_manager, install_config, install_manager, shutdown_all,
    unified_manager_for,
};
pub use test_adapter::DatabaseTestAdapter;
pub use ucm_kernel::{Connection, DirectConnection, Manager, Pipelined, RoutingSession};
// Modes.
pub use ucm_kernel::{ConnectionMode, ManagerMode};
// Configuration.
pub use ucm_kernel::{
    Backoff, CircuitBreakerConfig, ConfigSources, CredentialProvider, CredentialSource,
    Credentials, DatabaseKind, DatabaseUrl, ManagerConfig, ManagerConfigBuilder, Origin,
    PoolConfiguration, PoolConfigurationBuilder, Pooler, RetryBudget, RetryPolicy, Secret, SslMode,
};
// Errors.
pub use ucm_kernel::{BoxError, ConnectFailure, Error, ErrorKind, Result};
// Values and rows, and the crates whose types appear in them.
pub use ucm_kernel::{ConversionError, FromValue, Row, Value, chrono, serde_json, uuid};
// The protocol.
pub use ucm_kernel::{
    BoxFuture, ConnectionManagerProtocol, ProtocolExt, SqlExecutor, TransactionOptions,
    TransactionWork, TransactionalConnection,
};
// Info and health.
pub use ucm_kernel::{
    BreakerSnapshot, BreakerState, ComponentHealth, ConnectionInfo, EndpointInfo, EndpointRole,
    EndpointState, HealthReport, HealthStatus, HistogramSnapshot, LongHold, PoolMetricsSnapshot,
    PoolStatus, SlaSummary,
};
// Deep diagnostics of the database itself.
pub use ucm_kernel::{
    DdlRule, PermissionCheck, PermissionPolicy, PermissionReport, check_permissions,
};
pub use ucm_kernel::{DeepOptions, DeepReport, Finding, Severity, deep_health};
// The driver handles, and each backend crate for the rest of its API.
#[cfg(feature = "diesel")]
pub use ucm_diesel::{
    self, Diesel, DieselBlockingConnection, DieselBlockingPool, DieselConnection, DieselManager,
    DieselPool, DieselPoolConnection, DieselTransactionError,
};
#[cfg(feature = "sqlx")]
pub use ucm_sqlx::{
    self, Sqlx, SqlxConnection, SqlxManager, SqlxPool, SqlxPoolConnection, SqlxTransaction,
    SqlxTransactionError,
};
// Redis, the query cache and the lock.
#[cfg(feature = "redis")]
pub use cache_registry::{get_query_cache, get_redis_manager};
pub use ucm_kernel::{CacheSettings, RedisSettings, WriteListener, read_tables, written_tables};
#[cfg(feature = "redis")]
pub use ucm_redis::{self, CacheConfig, CacheStats, Lease, QueryCache, RedisManager, RedisUrl};

/// The backend `UnifiedManager` runs on: sqlx when its feature is on, else diesel.
#[cfg(feature = "sqlx")]
pub type SelectedBackend = ucm_sqlx::Sqlx;
/// The backend `UnifiedManager` runs on: sqlx when its feature is on, else diesel.
#[cfg(all(feature = "diesel", not(feature = "sqlx")))]
pub type SelectedBackend = ucm_diesel::Diesel;

/// The connection manager on the backend chosen by features.
pub type UnifiedManager = Manager<SelectedBackend>;

/// A connection from a [`UnifiedManager`].
pub type UnifiedConnection = Connection<SelectedBackend>;

/// The project README's examples, compiled and run as doctests so that they cannot drift.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;

/// The configuration guide's example, compiled as a doctest too.
#[cfg(doctest)]
#[doc = include_str!("../../docs/configuration.md")]
struct ConfigurationDoctests;

/// This crate's README (its crates.io page), compiled as a doctest too.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct CrateReadmeDoctests;
