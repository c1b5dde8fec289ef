//! `Dialect`: what differs between PostgreSQL, MySQL and SQLite under diesel-async, so everything else is written once.
//!
//! The trait is public because it appears in public types (`DieselConnector<PgDialect>`),
//! and sealed: only this crate's three dialects implement it.

use std::future::Future;

use diesel::QueryResult;
use diesel::result::DatabaseErrorKind;
use diesel_async::pooled_connection::PoolableConnection;
use diesel_async::{AsyncConnection, TransactionManager};
use ucm_kernel::backend::DriverError;
use ucm_kernel::{ConnectionMode, DatabaseKind, DatabaseUrl, ErrorKind, PoolConfiguration, Result};

pub use crate::convert::{BoxError, NeutralBackend, NeutralRow};

/// One database under diesel-async: how to connect, its read-only switch, its
/// statements with neutral values, and how to read its errors.
pub trait Dialect: sealed::Sealed + std::fmt::Debug + Send + Sync + 'static {
    /// The diesel backend.
    type Backend: NeutralBackend;
    /// The diesel-async connection (its transaction state is `Send`, as pool connections
    /// move between tasks).
    type Connection: AsyncConnection<
            Backend = Self::Backend,
            TransactionManager: TransactionManager<
                Self::Connection,
                TransactionStateData: Send + Default,
            >,
        > + PoolableConnection
        + 'static;
    /// Connect settings, built once per endpoint from the URL and the preset. Not `Debug`
    /// on purpose: they hold the password, and a driver's `Debug` may print it.
    type Options: Send + Sync + 'static;

    /// Which database: its read-only switch comes from core.
    const KIND: DatabaseKind;

    /// [`BackendConnector::READS_DECLARED_TYPES`](ucm_kernel::backend::BackendConnector::READS_DECLARED_TYPES):
    /// values are read by the type the driver reports for each (`NeutralRow`), which is the
    /// column's declared type on PostgreSQL only.
    const READS_DECLARED_TYPES: bool;

    /// Builds the connect settings: host, credentials, application name, time zone.
    ///
    /// # Errors
    /// `Configuration` when the URL asks for something this driver cannot do (TLS).
    fn options(url: &DatabaseUrl, config: &PoolConfiguration) -> Result<Self::Options>;

    /// Opens a connection.
    fn connect(
        options: &Self::Options,
    ) -> impl Future<Output = Result<Self::Connection, DriverError>> + Send;

    /// Runs a statement with neutral parameters; returns the rows affected. With `keep`,
    /// the statement stays prepared on the connection for its next run.
    fn execute(
        connection: &mut Self::Connection,
        sql: &str,
        params: &[ucm_kernel::Value],
        keep: bool,
    ) -> impl Future<Output = QueryResult<usize>> + Send;

    /// Runs a query with neutral parameters; returns every row, decoded. With `keep`, the
    /// statement stays prepared on the connection for its next run.
    fn load(
        connection: &mut Self::Connection,
        sql: &str,
        params: &[ucm_kernel::Value],
        keep: bool,
    ) -> impl Future<Output = QueryResult<Vec<NeutralRow>>> + Send;

    /// Opens a transaction through diesel's transaction manager, so the diesel DSL and
    /// ucm agree on the connection's state.
    fn begin(
        connection: &mut Self::Connection,
        mode: ConnectionMode,
    ) -> impl Future<Output = QueryResult<()>> + Send {
        let _ = mode;
        <Self::Connection as AsyncConnection>::TransactionManager::begin_transaction(connection)
    }

    /// Opens a transaction with `statement` (a script of the database's own, run in one
    /// round trip), through diesel's transaction manager like [`Self::begin`].
    fn begin_with<'a>(
        connection: &'a mut Self::Connection,
        statement: &'a str,
    ) -> impl Future<Output = QueryResult<()>> + Send + 'a;

    /// The connection as the pipelined lane shares it between tasks
    /// ([`std::convert::Infallible`] where the driver cannot pipeline).
    type Shared: Send + Sync + 'static;

    /// The connection made shareable, or given back when the driver cannot pipeline.
    ///
    /// # Errors
    /// The connection itself, unchanged, when it cannot be shared.
    fn into_shared(connection: Self::Connection) -> Result<Self::Shared, Self::Connection>;

    /// The connection [`Self::into_shared`] made shareable, back to its own type.
    fn from_shared(shared: Self::Shared) -> Self::Connection;

    /// [`Self::execute`] on a shared connection, alongside other tasks' statements; with
    /// `keep`, the statement stays prepared on the connection for its next run.
    fn execute_shared<'a>(
        shared: &'a Self::Shared,
        sql: &'a str,
        params: &'a [ucm_kernel::Value],
        keep: bool,
    ) -> impl Future<Output = QueryResult<usize>> + Send + 'a;

    /// [`Self::load`] on a shared connection, alongside other tasks' statements; with
    /// `keep`, the statement stays prepared on the connection for its next run.
    fn load_shared<'a>(
        shared: &'a Self::Shared,
        sql: &'a str,
        params: &'a [ucm_kernel::Value],
        keep: bool,
    ) -> impl Future<Output = QueryResult<Vec<NeutralRow>>> + Send + 'a;

    /// How to read a database error diesel left `Unknown`: the first entry whose fragment
    /// the message contains gives the kind (otherwise it is a plain query error).
    const UNKNOWN_ERRORS: &'static [(&'static str, ErrorKind)];

    /// The SQLSTATE diesel's error kind stands for, where the driver mapped it one to one.
    fn sqlstate(kind: DatabaseErrorKind) -> Option<&'static str> {
        let _ = kind;
        None
    }
}

pub(crate) mod sealed {
    /// Keeps [`Dialect`](super::Dialect) implementable only inside this crate; each
    /// dialect's file implements it.
    pub trait Sealed {}
}
