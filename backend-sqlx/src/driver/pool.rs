//! `SqlxPool<DB>`: the cloneable handle (`&pool` is a `sqlx::Executor`), checkouts and owned transactions on ucm's manager, the retried transaction, and the classification of sqlx's errors.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use futures_core::future::BoxFuture;
use futures_util::TryStreamExt;
use scoped_futures::ScopedBoxFuture;
use sqlx::{Describe, Execute, Executor, SqlStr};
use ucm_kernel::backend::Phase;
use ucm_kernel::{ConnectionManagerProtocol, ConnectionMode, ErrorKind, TransactionOptions};

use super::observe::Items;
use super::{ObservedConnection, SqlxDatabase, SqlxPoolConnection, SqlxTransaction};
use crate::dialect::Dialect;
use crate::error::read_ref;
use crate::manager::SqlxManager;

/// A sqlx-shaped pool over a [`SqlxManager`]: clone it into application state and run
/// sqlx's queries on `&pool` as on a `sqlx::Pool`. Clones share the manager.
pub struct SqlxPool<DB: SqlxDatabase> {
    manager: Arc<SqlxManager>,
    mode: ConnectionMode,
    /// Where checkouts (and so new connections) run, when not on the caller's runtime.
    runtime: Option<tokio::runtime::Handle>,
    database: PhantomData<fn() -> DB>,
}

impl<DB: SqlxDatabase> SqlxPool<DB> {
    /// A pool handle whose statements check out connections for `mode` from `manager`.
    pub fn new(manager: Arc<SqlxManager>, mode: ConnectionMode) -> Self {
        Self { manager, mode, runtime: None, database: PhantomData }
    }

    /// The same manager, checking out for `mode` (e.g. a `ReadOnly` handle for reads that
    /// may go to a replica).
    #[must_use]
    pub fn with_mode(&self, mode: ConnectionMode) -> Self {
        Self { mode, ..self.clone() }
    }

    /// Runs checkouts on `runtime` instead of the caller's: the connections the pool opens
    /// then belong to that runtime and outlive the caller's (each `#[tokio::test]` has its
    /// own runtime; a shared pool must not keep connections tied to one that is gone).
    #[must_use]
    pub fn on_runtime(mut self, runtime: tokio::runtime::Handle) -> Self {
        self.runtime = Some(runtime);
        self
    }

    /// The connection mode its checkouts use.
    pub fn mode(&self) -> ConnectionMode {
        self.mode
    }

    /// The manager underneath.
    pub fn manager(&self) -> &Arc<SqlxManager> {
        &self.manager
    }

    /// Checks out a connection, as `sqlx::Pool::acquire`.
    ///
    /// # Errors
    /// `PoolTimedOut` when the pool stayed exhausted, `PoolClosed` after `close()`, else an
    /// I/O error of kind `Other` whose source is ucm's classified error (circuit open,
    /// connect failed...).
    pub async fn acquire(&self) -> Result<SqlxPoolConnection<DB>, sqlx::Error> {
        let connection = match &self.runtime {
            None => self.manager.get_connection(self.mode).await,
            Some(runtime) => {
                let (manager, mode) = (Arc::clone(&self.manager), self.mode);
                // Dropping this future leaves the task to finish; its connection then goes
                // straight back to the pool.
                match runtime.spawn(async move { manager.get_connection(mode).await }).await {
                    Ok(result) => result,
                    Err(e) => {
                        Err(ucm_kernel::Error::other(format!("the checkout task failed: {e}")))
                    }
                }
            }
        }
        .map_err(into_sqlx_error)?;
        match ObservedConnection::from_connection(connection) {
            Ok(connection) => Ok(SqlxPoolConnection { connection }),
            Err(_) => Err(sqlx::Error::Configuration(
                format!(
                    "this SqlxPool is for {}, but its manager serves {}; build the pool for the \
                     manager's database",
                    <DB::Dialect as Dialect>::KIND,
                    self.manager.system()
                )
                .into(),
            )),
        }
    }

    /// Checks out a connection and begins a transaction on it, as `sqlx::Pool::begin`; the
    /// transaction is owned, so it can be passed across functions and tasks.
    ///
    /// # Errors
    /// As [`Self::acquire`], and `BEGIN`'s error.
    pub async fn begin(&self) -> Result<SqlxTransaction<DB>, sqlx::Error> {
        self.acquire().await?.into_transaction(self.mode).await
    }

    /// ucm's classified reading of a sqlx error from this pool: its [`ErrorKind`] decides
    /// whether retrying can help, and its message never contains the password. A failure
    /// to get a connection gives back ucm's own error.
    pub fn classify(&self, error: sqlx::Error) -> ucm_kernel::Error {
        match error {
            sqlx::Error::Io(io) if io.get_ref().is_some_and(|e| e.is::<ucm_kernel::Error>()) => {
                match io.into_inner().map(|e| e.downcast::<ucm_kernel::Error>()) {
                    Some(Ok(ucm)) => *ucm,
                    _ => ucm_kernel::Error::other("a pool error could not be read"),
                }
            }
            other => self.read(&other, Phase::Statement),
        }
    }

    /// ucm's reading of `error`, raised in `phase`, for the retry policy (by reference: the
    /// caller keeps the error to return it).
    fn with_reading<R>(
        &self,
        error: &sqlx::Error,
        phase: Phase,
        decide: impl FnOnce(&ucm_kernel::Error) -> R,
    ) -> R {
        if let sqlx::Error::Io(io) = error
            && let Some(ucm) = io.get_ref().and_then(|e| e.downcast_ref::<ucm_kernel::Error>())
        {
            return decide(ucm);
        }
        decide(&self.read(error, phase))
    }

    fn read(&self, error: &sqlx::Error, phase: Phase) -> ucm_kernel::Error {
        match error {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => {
                // Produced by `into_sqlx_error` from ucm's own kinds.
                let kind = if matches!(error, sqlx::Error::PoolClosed) {
                    ErrorKind::Closed
                } else {
                    ErrorKind::PoolExhausted
                };
                ucm_kernel::Error::database(
                    kind,
                    self.manager.config().primary().label(),
                    None,
                    error.to_string(),
                )
            }
            _ => read_ref::<DB::Dialect>(error).into_error(self.manager.config().primary(), phase),
        }
    }

    /// Runs `work` in a transaction and returns its value, re-running it from the start on a
    /// fresh connection when the failure says that is safe and may help: a serialization
    /// failure or deadlock, a connection lost before `COMMIT`, a failed checkout; never after
    /// a `COMMIT` whose outcome is unknown (see [`Self::transaction_with`]). The manager's
    /// retry policy bounds the attempts and spaces them.
    ///
    /// `work` gets the transaction (`&mut *tx` is the sqlx connection, for `query!`) and may
    /// borrow the caller's data; it may run more than once. Its error type is the caller's,
    /// as with sqlx's `Connection::transaction`: `sqlx::Error` or an application error that
    /// implements [`SqlxTransactionError`] (say which type where `?` leaves it open, e.g.
    /// `Ok::<_, AppError>(..)`). An application error that carries no database error ends
    /// the transaction (rolled back) and is returned at once.
    ///
    /// ```no_run
    /// # async fn example(pool: ucm_sqlx::SqlxPool<sqlx::Postgres>) -> Result<(), sqlx::Error> {
    /// use scoped_futures::ScopedFutureExt;
    ///
    /// let (from, to) = (1_i64, 2_i64);
    /// pool.transaction(|tx| {
    ///     async move {
    ///         sqlx::query("UPDATE accounts SET balance = balance - 10 WHERE id = $1")
    ///             .bind(from)
    ///             .execute(&mut *tx)
    ///             .await?;
    ///         sqlx::query("UPDATE accounts SET balance = balance + 10 WHERE id = $1")
    ///             .bind(to)
    ///             .execute(&mut *tx)
    ///             .await?;
    ///         Ok::<_, sqlx::Error>(())
    ///     }
    ///     .scope_boxed()
    /// })
    /// .await
    /// # }
    /// ```
    ///
    /// # Errors
    /// The last attempt's error, when it is not retried or the retries ran out.
    pub async fn transaction<'a, T, E, F>(&self, work: F) -> Result<T, E>
    where
        T: Send + 'a,
        E: SqlxTransactionError + Send + 'a,
        F: for<'c> FnMut(&'c mut SqlxTransaction<DB>) -> ScopedBoxFuture<'a, 'c, Result<T, E>>
            + Send
            + 'a,
    {
        self.transaction_with(TransactionOptions::default(), work).await
    }

    /// [`Self::transaction`] with options: `idempotent` work is re-run even after a
    /// `COMMIT` whose outcome is unknown.
    ///
    /// # Errors
    /// As [`Self::transaction`].
    pub async fn transaction_with<'a, T, E, F>(
        &self,
        options: TransactionOptions,
        work: F,
    ) -> Result<T, E>
    where
        T: Send + 'a,
        E: SqlxTransactionError + Send + 'a,
        F: for<'c> FnMut(&'c mut SqlxTransaction<DB>) -> ScopedBoxFuture<'a, 'c, Result<T, E>>
            + Send
            + 'a,
    {
        let policy = self.manager.retry_policy();
        let mut state = (self, work);
        ucm_kernel::backend::rerun_transaction(
            policy,
            options,
            &mut state,
            |(pool, work)| {
                Box::pin(async move {
                    let mut tx = pool.begin().await.map_err(|e| (E::from(e), Phase::Statement))?;
                    match work(&mut tx).await {
                        Err(error) => {
                            // Dropping the transaction rolls it back before the connection's
                            // reuse.
                            drop(tx);
                            Err((error, Phase::Statement))
                        }
                        Ok(value) => match tx.commit().await {
                            Ok(()) => Ok(value),
                            Err(error) => Err((E::from(error), Phase::Commit)),
                        },
                    }
                })
            },
            |error, phase, decide| match error.as_sqlx_error() {
                Some(database_error) => {
                    self.with_reading(database_error, phase, decide);
                    true
                }
                None => false,
            },
        )
        .await
    }
}

/// The error of a retried transaction's work ([`SqlxPool::transaction`]): `sqlx::Error`, or
/// an application's error that can hold one. The retry policy reads the database error
/// inside; an error without one is the application's decision and is never retried.
///
/// For an error whose `source()` chain reaches the `sqlx::Error` (thiserror's `#[from]`
/// does), the default method finds it and the impl is one line:
///
/// ```
/// #[derive(Debug, thiserror::Error)]
/// enum AppError {
///     #[error("database: {0}")]
///     Database(#[from] sqlx::Error),
///     #[error("{0} is not a valid amount")]
///     InvalidAmount(i64),
/// }
///
/// impl ucm_sqlx::SqlxTransactionError for AppError {}
/// ```
///
/// An error that hides its source (thiserror's `#[error(transparent)]`, `anyhow`) overrides
/// [`Self::as_sqlx_error`] with a `match` or a `downcast_ref`.
pub trait SqlxTransactionError: From<sqlx::Error> + std::error::Error + 'static {
    /// The database error this error carries, if any.
    fn as_sqlx_error(&self) -> Option<&sqlx::Error> {
        let mut next: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(error) = next {
            if let Some(database) = error.downcast_ref::<sqlx::Error>() {
                return Some(database);
            }
            next = error.source();
        }
        None
    }
}

impl SqlxTransactionError for sqlx::Error {}

impl<DB: SqlxDatabase> Clone for SqlxPool<DB> {
    fn clone(&self) -> Self {
        Self {
            manager: Arc::clone(&self.manager),
            mode: self.mode,
            runtime: self.runtime.clone(),
            database: PhantomData,
        }
    }
}

impl<DB: SqlxDatabase> fmt::Debug for SqlxPool<DB> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlxPool")
            .field("mode", &self.mode)
            .field("manager", &self.manager)
            .finish()
    }
}

/// ucm's error as sqlx reports a pool's failures: exhaustion is `PoolTimedOut`, a closed
/// manager `PoolClosed`, anything else an I/O error of kind `Other` whose source is ucm's
/// error ([`SqlxPool::classify`] gives it back).
pub fn into_sqlx_error(error: ucm_kernel::Error) -> sqlx::Error {
    match error.kind() {
        ErrorKind::PoolExhausted => sqlx::Error::PoolTimedOut,
        ErrorKind::Closed => sqlx::Error::PoolClosed,
        _ => sqlx::Error::Io(std::io::Error::other(error)),
    }
}

impl<'p, DB: SqlxDatabase> Executor<'p> for &'_ SqlxPool<DB>
where
    for<'e> &'e mut DB::Connection: Executor<'e, Database = DB>,
{
    type Database = DB;

    fn fetch_many<'e, 'q: 'e, E>(self, query: E) -> Items<'e, DB>
    where
        'p: 'e,
        E: 'q + Execute<'q, DB>,
    {
        let pool = self.clone();
        Box::pin(async_stream::try_stream! {
            let mut connection = pool.acquire().await?;
            let mut items = (&mut connection).fetch_many(query);
            while let Some(item) = items.try_next().await? {
                yield item;
            }
        })
    }

    fn fetch_optional<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxFuture<'e, Result<Option<DB::Row>, sqlx::Error>>
    where
        'p: 'e,
        E: 'q + Execute<'q, DB>,
    {
        let pool = self.clone();
        Box::pin(async move { (&mut pool.acquire().await?).fetch_optional(query).await })
    }

    fn prepare_with<'e>(
        self,
        sql: SqlStr,
        parameters: &'e [DB::TypeInfo],
    ) -> BoxFuture<'e, Result<DB::Statement, sqlx::Error>>
    where
        'p: 'e,
    {
        let pool = self.clone();
        Box::pin(async move { (&mut *pool.acquire().await?).prepare_with(sql, parameters).await })
    }

    fn describe<'e>(self, sql: SqlStr) -> BoxFuture<'e, Result<Describe<DB>, sqlx::Error>>
    where
        'p: 'e,
    {
        let pool = self.clone();
        Box::pin(async move { (&mut *pool.acquire().await?).describe(sql).await })
    }
}
