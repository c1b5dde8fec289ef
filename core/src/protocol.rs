//! `ConnectionManagerProtocol`, the object-safe trait every backend implements, and the backend-neutral SQL surface.

use std::future::Future;

use async_trait::async_trait;

use crate::error::{Error, Result};
use crate::health::HealthReport;
use crate::info::ConnectionInfo;
use crate::mode::ConnectionMode;
use crate::retry::RetryPolicy;
use crate::value::{Row, Value};

pub use crate::future::BoxFuture;

/// Runs SQL with bound parameters and returns neutral values; implemented by every
/// backend's connection and transaction types.
///
/// Parameters are bound by the driver, never interpolated into the SQL text. Placeholders
/// follow the database (`$1` for PostgreSQL, `?` for MySQL and SQLite).
///
/// Cancellation: dropping a returned future may leave the statement running on the server
/// or a transaction open on the connection; the pool guard then rolls back or discards
/// the connection before anyone else uses it, so nothing leaks into the next user.
#[async_trait]
pub trait SqlExecutor: Send {
    /// Runs a statement and returns the number of rows it affected.
    ///
    /// # Errors
    /// A classified [`Error`]: `ReadOnlyViolation` for a write on a read-only connection,
    /// `Constraint`, `SerializationFailure`, `Deadlock`, `ConnectionLost`, `Query`...
    async fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64>;

    /// Runs a query and returns every row.
    ///
    /// # Errors
    /// As [`SqlExecutor::execute`].
    async fn fetch_all(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>>;

    /// Runs a query and returns its first row, if any.
    ///
    /// # Errors
    /// As [`SqlExecutor::execute`].
    async fn fetch_optional(&mut self, sql: &str, params: &[Value]) -> Result<Option<Row>> {
        Ok(self.fetch_all(sql, params).await?.into_iter().next())
    }
}

/// A pooled connection that can run explicit transactions; what
/// [`ConnectionManagerProtocol::get_connection`] hands out.
#[async_trait]
pub trait TransactionalConnection: SqlExecutor {
    /// Opens a transaction, read-only when `mode` is [`ConnectionMode::ReadOnly`]. The
    /// connection is marked as in a transaction before `BEGIN` is sent, so a dropped
    /// future or a panic leads to a rollback before reuse.
    ///
    /// # Errors
    /// `ConnectionLost` and other classified errors.
    async fn begin(&mut self, mode: ConnectionMode) -> Result<()>;

    /// Commits the open transaction.
    ///
    /// # Errors
    /// `SerializationFailure`/`Deadlock` when the server refuses the commit (safe to
    /// re-run); `AmbiguousCommit` when the connection broke while the commit was in flight.
    async fn commit(&mut self) -> Result<()>;

    /// Rolls back the open transaction.
    ///
    /// # Errors
    /// `ConnectionLost` when the connection broke (the server rolls back on its own).
    async fn rollback(&mut self) -> Result<()>;
}

/// A unit of work run inside a transaction, re-run from the start when the retry policy
/// decides to. Usually built from a closure by [`ProtocolExt::transaction`].
pub trait TransactionWork: Send {
    /// Runs the work once on `tx`; an `Err` rolls the transaction back.
    fn run<'a>(&'a mut self, tx: &'a mut dyn SqlExecutor) -> BoxFuture<'a, Result<()>>;
}

/// How [`ConnectionManagerProtocol::run_transaction`] treats one unit of work.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransactionOptions {
    /// The work may safely run twice, so it is re-run even when a commit's outcome is
    /// unknown (`AmbiguousCommit`). Default `false`: an ambiguous commit is returned to
    /// the caller, never silently repeated.
    pub idempotent: bool,
}

/// The retry rule of one statement outside a transaction, for any way of running it
/// (a pooled connection, the pipelined lane): in `ReadOnly` mode getting the connection and
/// running the statement are retried together under `policy` (a read-only session cannot
/// have applied anything); in every other mode only getting the connection is, and the
/// statement runs once.
///
/// # Errors
/// The last attempt's error.
pub(crate) async fn run_statement<L, T, A, AF, R, RF>(
    policy: &RetryPolicy,
    mode: ConnectionMode,
    acquire: A,
    run: R,
) -> Result<T>
where
    A: Fn() -> AF,
    AF: Future<Output = Result<L>>,
    R: Fn(L) -> RF,
    RF: Future<Output = Result<T>>,
{
    if mode.is_read_only() {
        return policy.run(false, |_| async { run(acquire().await?).await }).await;
    }
    let lease = policy.run(false, |_| acquire()).await?;
    run(lease).await
}

/// The connection manager every backend implements. Object-safe:
/// `Arc<dyn ConnectionManagerProtocol<Connection = C>>` works.
#[async_trait]
pub trait ConnectionManagerProtocol: Send + Sync {
    /// The pooled connection type handed out; goes back to its pool when dropped.
    type Connection: TransactionalConnection + Send + std::fmt::Debug;

    /// Checks out a connection for `mode`: `ReadOnly` goes to a healthy replica when one
    /// exists (else the primary) and is read-only at the database; every other mode goes
    /// to the primary. The connection returns to its pool on drop, rolled back first if a
    /// transaction is still open.
    ///
    /// Cancellation: dropping the future at any await point leaks nothing (no slot, no
    /// half-open breaker probe, no half-made connection).
    ///
    /// # Errors
    /// `CircuitOpen`, `PoolExhausted`, `ConnectFailed` or `Closed`, each explaining itself.
    async fn get_connection(&self, mode: ConnectionMode) -> Result<Self::Connection>;

    /// Actively probes every endpoint (primary and replicas) and aggregates the results.
    /// Never fails: failures are reported inside the report.
    async fn health_check(&self) -> HealthReport;

    /// The cached state of the manager; no I/O.
    fn connection_info(&self) -> ConnectionInfo;

    /// Cached: true when the last known health is healthy or degraded.
    fn is_healthy(&self) -> bool;

    /// Graceful drain: refuses new acquires, waits for checked-out connections up to the
    /// manager's deadline, closes everything and stops background tasks. Idempotent.
    ///
    /// Cancellation: dropping the future leaves the manager closed to new work; the
    /// connections still out are closed when they come back.
    ///
    /// # Errors
    /// `Timeout` naming what was still checked out at the deadline.
    async fn close(&self) -> Result<()>;

    /// The retry policy used by the operations below.
    fn retry_policy(&self) -> &RetryPolicy;

    /// Runs one statement outside an explicit transaction and returns the rows affected.
    ///
    /// Nothing is sent twice unless it is safe: getting the connection is retried under the
    /// retry policy, but the statement itself only in `ReadOnly` mode (a read-only session
    /// cannot have applied anything). In every other mode a statement whose connection was
    /// lost after it was sent fails with `AmbiguousCommit`: the server may have committed
    /// it, so it is neither re-sent nor reported as certainly failed.
    ///
    /// # Errors
    /// As [`Self::get_connection`] and [`SqlExecutor::execute`].
    async fn execute(&self, mode: ConnectionMode, sql: &str, params: &[Value]) -> Result<u64> {
        run_statement(
            self.retry_policy(),
            mode,
            || self.get_connection(mode),
            |mut connection| async move { connection.execute(sql, params).await },
        )
        .await
    }

    /// Runs one query outside an explicit transaction and returns every row, under the
    /// same rule as [`Self::execute`]: retried as a whole only in `ReadOnly` mode (ucm does
    /// not parse SQL, and `INSERT ... RETURNING` is a query that writes).
    ///
    /// # Errors
    /// As [`Self::get_connection`] and [`SqlExecutor::fetch_all`].
    async fn fetch_all(
        &self,
        mode: ConnectionMode,
        sql: &str,
        params: &[Value],
    ) -> Result<Vec<Row>> {
        run_statement(
            self.retry_policy(),
            mode,
            || self.get_connection(mode),
            |mut connection| async move { connection.fetch_all(sql, params).await },
        )
        .await
    }

    /// Runs `work` in a transaction: begin, run, commit on `Ok`, roll back on `Err`. When
    /// the failure is transient (serialization failure, deadlock, lost connection before
    /// the commit) the whole unit is re-run on a fresh connection, from the start, under
    /// the retry policy. An ambiguous commit is re-run only when `options.idempotent`.
    ///
    /// Cancellation and panics: the connection is marked in-transaction before `BEGIN`, so
    /// dropping this future or a panic inside `work` rolls back before the connection is
    /// reused.
    ///
    /// # Errors
    /// The last attempt's error when retries are exhausted or the error is not retryable.
    async fn run_transaction(
        &self,
        mode: ConnectionMode,
        options: TransactionOptions,
        work: &mut dyn TransactionWork,
    ) -> Result<()> {
        let policy = self.retry_policy();
        policy.budget.deposit();
        let mut attempt = 1;
        loop {
            let result = async {
                let mut connection = self.get_connection(mode).await?;
                connection.begin(mode).await?;
                match work.run(&mut connection).await {
                    Ok(()) => connection.commit().await,
                    Err(e) => {
                        if let Err(rollback) = connection.rollback().await {
                            tracing::debug!(
                                "rollback after a failed transaction also failed: {rollback}"
                            );
                        }
                        Err(e)
                    }
                }
            }
            .await;
            match result {
                Ok(()) => return Ok(()),
                Err(e) => match policy.retry_delay(&e, attempt, options.idempotent) {
                    Some(delay) => {
                        tracing::debug!(attempt, error.type = e.kind().as_str(), ?delay, "re-running transaction");
                        tokio::time::sleep(delay).await;
                    }
                    None => return Err(e),
                },
            }
            attempt += 1;
        }
    }
}

/// Generic conveniences over [`ConnectionManagerProtocol`], for every implementation.
pub trait ProtocolExt: ConnectionManagerProtocol {
    /// Runs `f` in a transaction and returns its value; see
    /// [`ConnectionManagerProtocol::run_transaction`]. `f` may run more than once.
    ///
    /// ```
    /// use ucm_kernel::{ConnectionManagerProtocol, ConnectionMode, Error, ProtocolExt, Result};
    ///
    /// async fn debit<M: ConnectionManagerProtocol>(manager: &M, id: i64) -> Result<i64> {
    ///     manager
    ///         .transaction(ConnectionMode::Transactional, |tx| {
    ///             Box::pin(async move {
    ///                 let params = [id.into()];
    ///                 tx.execute("UPDATE accounts SET balance = balance - 10 WHERE id = $1", &params)
    ///                     .await?;
    ///                 let row = tx.fetch_optional("SELECT balance FROM accounts WHERE id = $1", &params)
    ///                     .await?;
    ///                 row.ok_or_else(|| Error::other("no such account"))?.try_get("balance")
    ///             })
    ///         })
    ///         .await
    /// }
    /// ```
    ///
    /// # Errors
    /// As [`ConnectionManagerProtocol::run_transaction`].
    fn transaction<T, F>(
        &self,
        mode: ConnectionMode,
        f: F,
    ) -> impl Future<Output = Result<T>> + Send
    where
        T: Send,
        F: for<'c> FnMut(&'c mut dyn SqlExecutor) -> BoxFuture<'c, Result<T>> + Send,
    {
        self.transaction_with(mode, TransactionOptions::default(), f)
    }

    /// [`Self::transaction`] with explicit [`TransactionOptions`].
    ///
    /// # Errors
    /// As [`ConnectionManagerProtocol::run_transaction`].
    fn transaction_with<T, F>(
        &self,
        mode: ConnectionMode,
        options: TransactionOptions,
        f: F,
    ) -> impl Future<Output = Result<T>> + Send
    where
        T: Send,
        F: for<'c> FnMut(&'c mut dyn SqlExecutor) -> BoxFuture<'c, Result<T>> + Send,
    {
        async move {
            let mut work = ClosureWork { f, output: None };
            self.run_transaction(mode, options, &mut work).await?;
            work.output
                .ok_or_else(|| Error::other("transaction committed without recording a result"))
        }
    }
}

impl<P: ConnectionManagerProtocol + ?Sized> ProtocolExt for P {}

/// Adapts a closure returning a value to [`TransactionWork`], keeping the last value.
struct ClosureWork<F, T> {
    f: F,
    output: Option<T>,
}

impl<F, T> TransactionWork for ClosureWork<F, T>
where
    T: Send,
    F: for<'c> FnMut(&'c mut dyn SqlExecutor) -> BoxFuture<'c, Result<T>> + Send,
{
    fn run<'a>(&'a mut self, tx: &'a mut dyn SqlExecutor) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let value = (self.f)(tx).await?;
            self.output = Some(value);
            Ok(())
        })
    }
}

mod rerun;
#[cfg(test)]
mod tests;

pub use rerun::rerun_transaction;
