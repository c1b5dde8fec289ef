//! `DieselConnector<D>`: core's `BackendConnector` for any diesel-async dialect (connect, ping, rollback through diesel's transaction manager, read-only switch, neutral SQL), written once.

use diesel::result::Error as DieselError;
use diesel_async::pooled_connection::PoolableConnection;
use diesel_async::{AsyncConnection, SimpleAsyncConnection, TransactionManager};
use ucm_kernel::backend::Connector;
use ucm_kernel::backend::{BackendConnector, DriverError, Phase, ReplicationStatus};
use ucm_kernel::{ConnectionMode, DatabaseUrl, Error, PoolConfiguration, Result, Row, Value};

use std::sync::Arc;

use crate::connection::TrackedConnection;
use crate::convert::{KeptStatements, rows, stale_plan};
use crate::dialect::Dialect;
use crate::error::read;

/// The pooled connection type of dialect `D`.
type Conn<D> = TrackedConnection<<D as Dialect>::Connection>;

/// The transaction manager of dialect `D`'s connection.
type Tm<D> = <<D as Dialect>::Connection as AsyncConnection>::TransactionManager;

/// Whether `sql` runs kept prepared on `connection`; a connection whose kept statements
/// went stale on the lane has its statement cache emptied first.
fn admit_kept<D: Dialect>(connection: &mut Conn<D>, sql: &str) -> bool {
    if connection.kept_statements().is_stale() {
        connection.forget_kept_statements();
    }
    connection.kept_statements().admit(sql)
}

/// After a kept statement was refused because a table changed under it: empties the
/// connection's statement cache, and says whether the statement may be sent again, unkept
/// (outside a transaction: inside one, the refusal aborted it, so the error stands).
fn rerun_unkept<D: Dialect>(
    connection: &mut Conn<D>,
    error: DieselError,
) -> Result<(), DieselError> {
    connection.forget_kept_statements();
    let depth = Tm::<D>::transaction_manager_status_mut(&mut **connection).transaction_depth();
    match depth {
        Ok(None) => Ok(()),
        _ => Err(error),
    }
}

/// Runs one neutral statement on a pooled connection: `$call` (the driver call, with `$c`
/// the driver's connection and `$keep` whether to keep the statement prepared) is sent
/// kept where there is room, and sent again unkept when the kept statement was refused
/// because its table changed shape (outside a transaction; see [`rerun_unkept`]). A macro:
/// the call's future borrows the connection, twice in a row, which a closure parameter
/// cannot express without boxing each statement's future.
macro_rules! run_kept {
    ($d:ty, $connection:expr, $sql:expr, |$c:ident, $keep:ident| $call:expr) => {{
        let connection = $connection;
        let kept = admit_kept::<$d>(connection, $sql);
        let first = {
            let $keep = kept;
            connection.guarded(|$c| $call).await
        };
        match first {
            Err(e) if kept && stale_plan(&e) => match rerun_unkept::<$d>(connection, e) {
                Ok(()) => {
                    let $keep = false;
                    connection.guarded(|$c| $call).await
                }
                Err(e) => Err(e),
            },
            other => other,
        }
    }};
}

/// A connection of dialect `D` as the pipelined lane shares it, with the statements kept
/// prepared on it.
pub struct SharedConnection<D: Dialect> {
    shared: D::Shared,
    kept: Arc<KeptStatements>,
}

impl<D: Dialect> SharedConnection<D> {
    /// Runs `sql` with `call`, kept prepared where there is room; a kept statement refused
    /// because its table changed shape is sent again unkept (the lane runs no transactions,
    /// so the refused statement did not run) and the kept statements are marked stale.
    async fn run<T, F>(&self, sql: &str, call: impl Fn(bool) -> F) -> diesel::QueryResult<T>
    where
        F: Future<Output = diesel::QueryResult<T>>,
    {
        let keep = self.kept.admit(sql);
        match call(keep).await {
            Err(e) if keep && stale_plan(&e) => {
                self.kept.mark_stale();
                call(false).await
            }
            other => other,
        }
    }
}

/// Opens and maintains diesel-async connections of one dialect to one endpoint.
///
/// `Debug` shows the redacted URL and the database, never the driver's options: those
/// hold the password, and mysql_async's `Opts` prints it.
pub struct DieselConnector<D: Dialect> {
    url: DatabaseUrl,
    options: D::Options,
    /// To rebuild `options` with fresh credentials (see `fresh_options`).
    config: PoolConfiguration,
    /// Run on every new connection (MySQL's deadlines).
    session_statements: Vec<Vec<String>>,
    /// Behind a transaction pooler: no statement cache (its named statements would not
    /// outlive the transaction's server connection).
    pooled: bool,
}

impl<D: Dialect> std::fmt::Debug for DieselConnector<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DieselConnector")
            .field("url", &self.url)
            .field("system", &D::KIND.as_str())
            .finish_non_exhaustive()
    }
}

impl<D: Dialect> DieselConnector<D> {
    fn error(&self, error: DieselError, phase: Phase) -> Error {
        read::<D>(&error).into_error(&self.url, phase)
    }
}

impl<D: Dialect> Connector for DieselConnector<D> {
    type Connection = Conn<D>;

    async fn connect(&self) -> Result<Conn<D>> {
        let fresh =
            ucm_kernel::backend::fresh_options(&self.url, |url| D::options(url, &self.config))
                .await?;
        let options = fresh.as_ref().unwrap_or(&self.options);
        let mut connection = match D::connect(options).await {
            Ok(connection) => TrackedConnection::new(connection),
            Err(e) => return Err(e.into_error(&self.url, Phase::Connect)),
        };
        if self.pooled {
            connection.set_prepared_statement_cache_size(diesel::connection::CacheSize::Disabled);
            connection.kept_statements().disable();
        }
        ucm_kernel::backend::apply_session_statements(
            self,
            &mut connection,
            &self.session_statements,
        )
        .await?;
        Ok(connection)
    }

    async fn validate(&self, connection: &mut Conn<D>) -> Result<()> {
        connection
            .guarded(|c| c.batch_execute("SELECT 1"))
            .await
            .map_err(|e| self.error(e, Phase::Statement))
    }

    async fn reset(&self, connection: &mut Conn<D>) -> Result<()> {
        if connection.is_interrupted() {
            return Err(Error::other("an operation on the connection was interrupted"));
        }
        Self::rollback(connection).await.map_err(|e| e.into_error(&self.url, Phase::Statement))
    }

    async fn set_read_only(&self, connection: &mut Conn<D>, read_only: bool) -> Result<()> {
        connection
            .guarded(|c| c.batch_execute(D::KIND.read_only_statement(read_only)))
            .await
            .map_err(|e| self.error(e, Phase::Statement))
    }

    fn transaction_pooled(&self) -> bool {
        self.pooled
    }

    fn rotates_credentials(&self) -> bool {
        self.url.credential_source().is_some()
    }

    fn is_broken(&self, connection: &mut Conn<D>) -> bool {
        // An interrupted connection may still be in use by the driver: its inner state is
        // not touched (SQLite's wrapper would refuse), it is simply closed.
        !connection.is_present()
            || connection.is_interrupted()
            || PoolableConnection::is_broken(&mut **connection)
    }

    async fn replication_status(
        &self,
        connection: &mut Self::Connection,
    ) -> Result<Option<ReplicationStatus>> {
        ucm_kernel::backend::replication_status(self, connection).await
    }
}

impl<D: Dialect> BackendConnector for DieselConnector<D> {
    const READS_DECLARED_TYPES: bool = D::READS_DECLARED_TYPES;

    fn new(url: &DatabaseUrl, config: &PoolConfiguration) -> Result<Self> {
        Ok(Self {
            url: url.clone(),
            options: D::options(url, config)?,
            config: config.clone(),
            session_statements: config.session_statements(url),
            pooled: config.pooler().is_transaction_pooled(url),
        })
    }

    fn url(&self) -> &DatabaseUrl {
        &self.url
    }

    async fn execute(
        connection: &mut Conn<D>,
        sql: &str,
        params: &[Value],
    ) -> Result<u64, DriverError> {
        let result = run_kept!(D, connection, sql, |c, keep| D::execute(c, sql, params, keep));
        result.map(|count| count as u64).map_err(|e| read::<D>(&e))
    }

    async fn fetch_all(
        connection: &mut Conn<D>,
        sql: &str,
        params: &[Value],
    ) -> Result<Vec<Row>, DriverError> {
        let loaded = run_kept!(D, connection, sql, |c, keep| D::load(c, sql, params, keep));
        rows(loaded.map_err(|e| read::<D>(&e))?).map_err(|e| DriverError::Data(e.to_string()))
    }

    async fn begin(connection: &mut Conn<D>, mode: ConnectionMode) -> Result<(), DriverError> {
        connection.guarded(|c| D::begin(c, mode)).await.map_err(|e| read::<D>(&e))
    }

    async fn begin_with(connection: &mut Conn<D>, statement: &str) -> Result<(), DriverError> {
        connection.guarded(|c| D::begin_with(c, statement)).await.map_err(|e| read::<D>(&e))
    }

    async fn commit(connection: &mut Conn<D>) -> Result<(), DriverError> {
        connection.guarded(Tm::<D>::commit_transaction).await.map_err(|e| read::<D>(&e))
    }

    async fn rollback(connection: &mut Conn<D>) -> Result<(), DriverError> {
        match connection.guarded(Tm::<D>::rollback_transaction).await {
            // Nothing was open (BEGIN never reached the server): nothing to undo.
            Ok(()) | Err(DieselError::NotInTransaction) => Ok(()),
            Err(e) => Err(read::<D>(&e)),
        }
    }

    type Shared = SharedConnection<D>;

    fn share(connection: &mut Conn<D>) -> Option<SharedConnection<D>> {
        let kept = Arc::clone(connection.kept_statements());
        let inner = connection.lend()?;
        match D::into_shared(inner) {
            Ok(shared) => Some(SharedConnection { shared, kept }),
            Err(inner) => {
                connection.restore(inner);
                None
            }
        }
    }

    fn unshare(connection: &mut Conn<D>, shared: SharedConnection<D>) {
        connection.restore(D::from_shared(shared.shared));
    }

    async fn execute_shared(
        shared: &SharedConnection<D>,
        sql: &str,
        params: &[Value],
    ) -> Result<u64, DriverError> {
        let result = shared.run(sql, |keep| D::execute_shared(&shared.shared, sql, params, keep));
        match result.await {
            Ok(count) => Ok(count as u64),
            Err(e) => Err(read::<D>(&e)),
        }
    }

    async fn fetch_all_shared(
        shared: &SharedConnection<D>,
        sql: &str,
        params: &[Value],
    ) -> Result<Vec<Row>, DriverError> {
        let loaded = shared
            .run(sql, |keep| D::load_shared(&shared.shared, sql, params, keep))
            .await
            .map_err(|e| read::<D>(&e))?;
        rows(loaded).map_err(|e| DriverError::Data(e.to_string()))
    }
}
