//! `SqlxConnector<D>`: core's `BackendConnector` for any sqlx dialect (connect, ping, rollback, read-only switch, neutral SQL), written once.

use std::marker::PhantomData;

use sqlx::{Connection, Database, SqlSafeStr};
use sqlx_core::transaction::TransactionManager;
use ucm_kernel::backend::Connector;
use ucm_kernel::backend::{BackendConnector, DriverError, Phase, ReplicationStatus};
use ucm_kernel::{ConnectionMode, DatabaseUrl, PoolConfiguration, Result, Row, Value};

use crate::convert::NeutralValues;
use crate::dialect::Dialect;
use crate::error::{map_error, read};

/// Connect options for the connection type of dialect `D`.
pub(crate) type Options<D> = <<<D as Dialect>::Db as Database>::Connection as Connection>::Options;

/// The sqlx connection type of dialect `D`.
type DriverConnection<D> = <<D as Dialect>::Db as Database>::Connection;

/// sqlx's transaction manager for dialect `D`.
type Tm<D> = <<D as Dialect>::Db as Database>::TransactionManager;

/// The statement to hand sqlx's transaction manager for a transaction in `mode`: `None`
/// (sqlx's own `BEGIN`, or a savepoint when nested) except for SQLite's writers, which take
/// the write lock up front (`BEGIN IMMEDIATE`; see `DatabaseKind::begin_statement`). sqlx
/// refuses a custom statement for a nested transaction, which only the default avoids.
pub(crate) fn begin_statement<D: Dialect>(mode: ConnectionMode) -> Option<sqlx::SqlStr> {
    let statement = D::KIND.begin_statement(mode);
    (!matches!(statement, "BEGIN" | "START TRANSACTION")).then(|| statement.into_sql_str())
}

/// Opens and maintains sqlx connections of one dialect to one endpoint.
pub struct SqlxConnector<D: Dialect> {
    url: DatabaseUrl,
    options: Options<D>,
    /// To rebuild `options` with fresh credentials (see `fresh_options`).
    config: PoolConfiguration,
    /// Run on every new connection (MySQL's deadlines).
    session_statements: Vec<Vec<String>>,
    /// Behind a transaction pooler (see `ucm_kernel::Pooler`).
    pooled: bool,
    dialect: PhantomData<D>,
}

impl<D: Dialect> std::fmt::Debug for SqlxConnector<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlxConnector")
            .field("url", &self.url)
            .field("system", &D::KIND.as_str())
            .finish()
    }
}

impl<D: NeutralValues> Connector for SqlxConnector<D> {
    type Connection = DriverConnection<D>;

    async fn connect(&self) -> Result<Self::Connection> {
        let fresh =
            ucm_kernel::backend::fresh_options(&self.url, |url| D::options(url, &self.config))
                .await?;
        let options = fresh.as_ref().unwrap_or(&self.options);
        let mut connection = <Self::Connection as Connection>::connect_with(options)
            .await
            .map_err(|e| map_error(e, &self.url, Phase::Connect, D::classify))?;
        ucm_kernel::backend::apply_session_statements(
            self,
            &mut connection,
            &self.session_statements,
        )
        .await?;
        Ok(connection)
    }

    async fn validate(&self, connection: &mut Self::Connection) -> Result<()> {
        connection.ping().await.map_err(|e| map_error(e, &self.url, Phase::Statement, D::classify))
    }

    async fn reset(&self, connection: &mut Self::Connection) -> Result<()> {
        Self::rollback(connection).await.map_err(|e| e.into_error(&self.url, Phase::Statement))
    }

    async fn set_read_only(
        &self,
        connection: &mut Self::Connection,
        read_only: bool,
    ) -> Result<()> {
        D::raw(connection, D::KIND.read_only_statement(read_only))
            .await
            .map_err(|e| map_error(e, &self.url, Phase::Statement, D::classify))
    }

    async fn replication_status(
        &self,
        connection: &mut Self::Connection,
    ) -> Result<Option<ReplicationStatus>> {
        ucm_kernel::backend::replication_status(self, connection).await
    }

    fn transaction_pooled(&self) -> bool {
        self.pooled
    }

    fn rotates_credentials(&self) -> bool {
        self.url.credential_source().is_some()
    }
}

impl<D: NeutralValues> BackendConnector for SqlxConnector<D> {
    fn new(url: &DatabaseUrl, config: &PoolConfiguration) -> Result<Self> {
        Ok(Self {
            url: url.clone(),
            options: D::options(url, config)?,
            config: config.clone(),
            session_statements: config.session_statements(url),
            pooled: config.pooler().is_transaction_pooled(url),
            dialect: PhantomData,
        })
    }

    fn url(&self) -> &DatabaseUrl {
        &self.url
    }

    async fn execute(
        connection: &mut DriverConnection<D>,
        sql: &str,
        params: &[Value],
    ) -> Result<u64, DriverError> {
        D::execute(connection, sql, params).await.map_err(|e| read(e, D::classify))
    }

    async fn fetch_all(
        connection: &mut DriverConnection<D>,
        sql: &str,
        params: &[Value],
    ) -> Result<Vec<Row>, DriverError> {
        D::fetch_all(connection, sql, params).await.map_err(|e| read(e, D::classify))
    }

    // Transactions go through sqlx's own transaction manager, so that sqlx and ucm agree on
    // a connection's transaction depth: a sqlx `begin()` inside ucm's transaction is a
    // savepoint, and sqlx's `commit()` there releases it rather than ending ucm's.
    async fn begin(
        connection: &mut DriverConnection<D>,
        mode: ConnectionMode,
    ) -> Result<(), DriverError> {
        Tm::<D>::begin(connection, begin_statement::<D>(mode))
            .await
            .map_err(|e| read(e, D::classify))
    }

    async fn begin_with(
        connection: &mut DriverConnection<D>,
        statement: &str,
    ) -> Result<(), DriverError> {
        // Built by ucm from its own configuration (values quoted), not from user input.
        let statement = sqlx::AssertSqlSafe(statement.to_owned()).into_sql_str();
        Tm::<D>::begin(connection, Some(statement)).await.map_err(|e| read(e, D::classify))
    }

    async fn commit(connection: &mut DriverConnection<D>) -> Result<(), DriverError> {
        Tm::<D>::commit(connection).await.map_err(|e| read(e, D::classify))
    }

    async fn rollback(connection: &mut DriverConnection<D>) -> Result<(), DriverError> {
        let result = if Tm::<D>::get_transaction_depth(connection) > 0 {
            Tm::<D>::rollback(connection).await
        } else {
            // sqlx saw no transaction, yet one may be open: a `BEGIN` whose future was
            // dropped after it reached the server. A plain `ROLLBACK` is harmless either way.
            D::raw(connection, "ROLLBACK").await
        };
        match result {
            Ok(()) => Ok(()),
            Err(e) if D::rollback_error_is_benign(&e) => Ok(()),
            Err(e) => Err(read(e, D::classify)),
        }
    }

    // sqlx has no pipelining: a connection is driven by one `&mut` borrow at a time, each
    // statement waiting for its reply (its `Pool` runs one statement per connection). The
    // pipelined lane therefore falls back to the pooled path on this backend.
    type Shared = std::convert::Infallible;

    fn share(_connection: &mut DriverConnection<D>) -> Option<Self::Shared> {
        None
    }

    fn unshare(_connection: &mut DriverConnection<D>, shared: Self::Shared) {
        match shared {}
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
