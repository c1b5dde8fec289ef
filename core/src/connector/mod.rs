//! For backend authors: what a backend implements to get the whole manager (`Backend`, `BackendConnector`, `Connector`), the errors it reports (`DriverError`), and what it answers the health loop (`ReplicationStatus`).
//!
//! Application code never needs this module. A backend (sqlx, diesel) implements
//! [`BackendConnector`] once per database: the pool's [`Connector`] (open, ping, roll back,
//! read-only switch) plus the neutral SQL surface (run a statement, fetch rows,
//! `BEGIN`/`COMMIT`/`ROLLBACK`), each reporting the driver's errors as a [`DriverError`],
//! which [`DriverError::into_error`] reads into ucm's `Error` by [`Phase`]. A [`Backend`]
//! names its three connectors, [`Disabled`] for a database whose feature is off.
//! `Manager<B>` is then the complete `ConnectionManagerProtocol` for that backend: the
//! topology of pools, routing, retry, health, info and drain, error mapping and metrics
//! are the same code for every backend.

mod driver_error;
mod pooled;
mod replication;
mod session_settings;

use std::future::Future;

pub use driver_error::{Classified, DriverError, Phase};
pub use pooled::Connector;
pub use replication::{ReplicationStatus, replication_status};
pub use session_settings::apply_session_statements;

/// Driver options for one new connection to `url` made by `build` from the URL with its
/// credential source's user and password of now; `None` when the URL has no source (the
/// options made once from the URL serve). Each backend's `connect` calls it, so a rotated
/// password reaches the next connection on every backend alike.
///
/// # Errors
/// The credential source's error, or `build`'s.
pub async fn fresh_options<O>(
    url: &DatabaseUrl,
    build: impl FnOnce(&DatabaseUrl) -> Result<O>,
) -> Result<Option<O>> {
    url.with_current_credentials().await?.map(|fresh| build(&fresh)).transpose()
}

use crate::config::{DatabaseKind, DatabaseUrl, PoolConfiguration};
use crate::error::{Error, Result};
use crate::mode::ConnectionMode;
use crate::value::{Row, Value};

/// A backend: its name and its connector for each database.
pub trait Backend: Send + Sync + 'static {
    /// The backend's name (`sqlx`, `diesel`), reported in `ConnectionInfo` and errors.
    const NAME: &'static str;
    /// The PostgreSQL connector, or [`Disabled`].
    type Postgres: BackendConnector;
    /// The MySQL/MariaDB connector, or [`Disabled`].
    type MySql: BackendConnector;
    /// The SQLite connector, or [`Disabled`].
    type Sqlite: BackendConnector;

    /// [`BackendConnector::READS_DECLARED_TYPES`] of this backend's connector for `kind`.
    fn reads_declared_types(kind: DatabaseKind) -> bool {
        match kind {
            DatabaseKind::Postgres => Self::Postgres::READS_DECLARED_TYPES,
            DatabaseKind::MySql => Self::MySql::READS_DECLARED_TYPES,
            DatabaseKind::Sqlite => Self::Sqlite::READS_DECLARED_TYPES,
        }
    }
}

/// A backend's connector for one database: core's [`Connector`] plus the neutral SQL
/// surface on the driver connection. Errors are the driver's, read into a
/// [`DriverError`]; [`PooledSession`](crate::backend::PooledSession) maps them (with the endpoint, scrubbed), records metrics
/// and evicts broken connections.
pub trait BackendConnector: Connector + std::fmt::Debug + Sized {
    /// `false` only for [`Disabled`]: the database's feature is off.
    const ENABLED: bool = true;

    /// Whether a fetched value takes the column's declared type (a MySQL `BOOLEAN` reads as
    /// `Value::Bool`, a SQLite `DATETIME` as `Value::Timestamp`), or, when `false`, the type
    /// the driver reports for the value itself (a MySQL `BOOLEAN` is the `TINYINT` it is
    /// stored as; a SQLite value comes by its storage class: integer, real, text or blob).
    /// Typed reads (`Row::try_get::<bool>`) give the same answer either way.
    const READS_DECLARED_TYPES: bool = true;

    /// A connector for `url` with the preset's session settings (application name, time
    /// zone, read-only switch).
    ///
    /// # Errors
    /// `Configuration` when the URL is not usable by the driver.
    fn new(url: &DatabaseUrl, config: &PoolConfiguration) -> Result<Self>;

    /// The endpoint's URL, for error messages (redacted in every rendering).
    fn url(&self) -> &DatabaseUrl;

    /// Runs a statement with bound parameters; returns the rows affected.
    fn execute(
        connection: &mut Self::Connection,
        sql: &str,
        params: &[Value],
    ) -> impl Future<Output = Result<u64, DriverError>> + Send;

    /// Runs a query with bound parameters; returns every row as neutral values.
    fn fetch_all(
        connection: &mut Self::Connection,
        sql: &str,
        params: &[Value],
    ) -> impl Future<Output = Result<Vec<Row>, DriverError>> + Send;

    /// Opens a transaction for `mode` (the session's read-only setting already applies).
    fn begin(
        connection: &mut Self::Connection,
        mode: ConnectionMode,
    ) -> impl Future<Output = Result<(), DriverError>> + Send;

    /// Opens a transaction with `statement`, a script of the database's own (behind a
    /// transaction pooler: `BEGIN READ ONLY; SET LOCAL ...`), run in one simple-protocol
    /// round trip, and recorded as the driver's transaction like [`Self::begin`]'s.
    fn begin_with(
        connection: &mut Self::Connection,
        statement: &str,
    ) -> impl Future<Output = Result<(), DriverError>> + Send;

    /// Commits the open transaction.
    fn commit(
        connection: &mut Self::Connection,
    ) -> impl Future<Output = Result<(), DriverError>> + Send;

    /// Rolls back the open transaction; succeeds when none was open.
    fn rollback(
        connection: &mut Self::Connection,
    ) -> impl Future<Output = Result<(), DriverError>> + Send;

    /// The driver's connection as the pipelined lane shares it: statements from many tasks
    /// run on it at once, each sent without waiting for the replies before it.
    /// [`std::convert::Infallible`] for a driver that cannot pipeline.
    type Shared: Send + Sync + 'static;

    /// Takes the driver's connection out of `connection` for sharing, or `None` when the
    /// driver cannot pipeline; the pooled connection stays checked out (and counted) while
    /// it is shared, and gets it back with [`Self::unshare`] before it is returned.
    fn share(connection: &mut Self::Connection) -> Option<Self::Shared>;

    /// Puts back what [`Self::share`] took.
    fn unshare(connection: &mut Self::Connection, shared: Self::Shared);

    /// [`Self::execute`] on a shared connection, alongside other tasks' statements.
    fn execute_shared<'a>(
        shared: &'a Self::Shared,
        sql: &'a str,
        params: &'a [Value],
    ) -> impl Future<Output = Result<u64, DriverError>> + Send + 'a;

    /// [`Self::fetch_all`] on a shared connection, alongside other tasks' statements.
    fn fetch_all_shared<'a>(
        shared: &'a Self::Shared,
        sql: &'a str,
        params: &'a [Value],
    ) -> impl Future<Output = Result<Vec<Row>, DriverError>> + Send + 'a;
}

/// The connector of a database whose feature is off: it cannot be built, so no value of
/// it (or of its connection) ever exists. [`Manager::connect`](crate::Manager::connect) refuses such a URL with a
/// message naming the feature to enable.
#[derive(Debug, Clone, Copy)]
pub enum Disabled {}

impl Connector for Disabled {
    type Connection = Disabled;

    async fn connect(&self) -> Result<Disabled> {
        match *self {}
    }

    async fn validate(&self, _connection: &mut Disabled) -> Result<()> {
        match *self {}
    }

    async fn reset(&self, _connection: &mut Disabled) -> Result<()> {
        match *self {}
    }

    async fn set_read_only(&self, _connection: &mut Disabled, _read_only: bool) -> Result<()> {
        match *self {}
    }
}

impl BackendConnector for Disabled {
    const ENABLED: bool = false;

    fn new(url: &DatabaseUrl, _config: &PoolConfiguration) -> Result<Self> {
        Err(Error::config("DATABASE_URL", format!("{} support is not compiled in", url.kind())))
    }

    fn url(&self) -> &DatabaseUrl {
        match *self {}
    }

    async fn execute(connection: &mut Disabled, _: &str, _: &[Value]) -> Result<u64, DriverError> {
        match *connection {}
    }

    async fn fetch_all(
        connection: &mut Disabled,
        _: &str,
        _: &[Value],
    ) -> Result<Vec<Row>, DriverError> {
        match *connection {}
    }

    async fn begin(connection: &mut Disabled, _: ConnectionMode) -> Result<(), DriverError> {
        match *connection {}
    }

    async fn begin_with(connection: &mut Disabled, _: &str) -> Result<(), DriverError> {
        match *connection {}
    }

    async fn commit(connection: &mut Disabled) -> Result<(), DriverError> {
        match *connection {}
    }

    async fn rollback(connection: &mut Disabled) -> Result<(), DriverError> {
        match *connection {}
    }

    type Shared = std::convert::Infallible;

    fn share(connection: &mut Disabled) -> Option<Self::Shared> {
        match *connection {}
    }

    fn unshare(connection: &mut Disabled, _: Self::Shared) {
        match *connection {}
    }

    async fn execute_shared(
        shared: &Self::Shared,
        _: &str,
        _: &[Value],
    ) -> Result<u64, DriverError> {
        match *shared {}
    }

    async fn fetch_all_shared(
        shared: &Self::Shared,
        _: &str,
        _: &[Value],
    ) -> Result<Vec<Row>, DriverError> {
        match *shared {}
    }
}
