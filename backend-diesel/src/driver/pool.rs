//! `DieselPool<D>`: the cloneable async handle (checkouts of `DieselPoolConnection`s on ucm's manager), the retried transaction with a typed closure, and the classification of diesel's errors.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use diesel::result::Error as DieselError;
use diesel_async::TransactionManager;
use scoped_futures::ScopedBoxFuture;
use ucm_kernel::backend::Phase;
use ucm_kernel::{ConnectionManagerProtocol, ConnectionMode, TransactionOptions};

use super::{DieselDialect, DieselPoolConnection, ObservedTransactionManager};
use crate::error::read;
use crate::manager::DieselManager;

/// A diesel pool over a [`DieselManager`], for diesel-async code: clone it into
/// application state and check connections out with [`Self::get`], as from a
/// `deadpool`/`bb8` pool of diesel-async connections. Clones share the manager.
pub struct DieselPool<D: DieselDialect> {
    manager: Arc<DieselManager>,
    mode: ConnectionMode,
    dialect: PhantomData<fn() -> D>,
}

impl<D: DieselDialect> DieselPool<D> {
    /// A pool handle whose checkouts are for `mode` on `manager`.
    pub fn new(manager: Arc<DieselManager>, mode: ConnectionMode) -> Self {
        Self { manager, mode, dialect: PhantomData }
    }

    /// The same manager, checking out for `mode` (e.g. a `ReadOnly` handle for reads that
    /// may go to a replica).
    #[must_use]
    pub fn with_mode(&self, mode: ConnectionMode) -> Self {
        Self { mode, ..self.clone() }
    }

    /// The connection mode its checkouts use.
    pub fn mode(&self) -> ConnectionMode {
        self.mode
    }

    /// The manager underneath.
    pub fn manager(&self) -> &Arc<DieselManager> {
        &self.manager
    }

    /// Checks out a connection for the diesel DSL.
    ///
    /// # Errors
    /// ucm's classified error when no connection could be had (pool exhausted, circuit
    /// open, connect failed, closed), or `Configuration` when the manager serves another
    /// database than `D`.
    pub async fn get(&self) -> ucm_kernel::Result<DieselPoolConnection<D>> {
        let connection = self.manager.get_connection(self.mode).await?;
        DieselPoolConnection::from_connection(connection).map_err(|_| {
            ucm_kernel::Error::config(
                "DATABASE_URL",
                format!(
                    "this diesel pool is for {}, but its manager serves {}; build the pool for \
                     the manager's database",
                    D::KIND,
                    self.manager.system()
                ),
            )
        })
    }

    /// ucm's classified reading of a diesel error from this pool's connections: its
    /// `ErrorKind` says whether retrying can help, and its message never contains the
    /// password. A failure to get a connection gives back ucm's own error.
    pub fn classify(&self, error: DieselError) -> ucm_kernel::Error {
        match error {
            DieselError::QueryBuilderError(inner) if inner.is::<ucm_kernel::Error>() => {
                match inner.downcast::<ucm_kernel::Error>() {
                    Ok(ucm) => *ucm,
                    Err(_) => ucm_kernel::Error::other("a pool error could not be read"),
                }
            }
            other => self.read(&other, Phase::Statement),
        }
    }

    /// ucm's reading of `error`, raised in `phase`, for the retry policy (by reference: the
    /// caller keeps the error to return it).
    pub(crate) fn with_reading<R>(
        &self,
        error: &DieselError,
        phase: Phase,
        decide: impl FnOnce(&ucm_kernel::Error) -> R,
    ) -> R {
        if let DieselError::QueryBuilderError(inner) = error
            && let Some(ucm) = inner.downcast_ref::<ucm_kernel::Error>()
        {
            return decide(ucm);
        }
        decide(&self.read(error, phase))
    }

    fn read(&self, error: &DieselError, phase: Phase) -> ucm_kernel::Error {
        read::<D>(error).into_error(self.manager.config().primary(), phase)
    }

    /// Runs `work` in a transaction and returns its value, re-running it from the start on
    /// a fresh connection when the failure says that is safe and may help: a serialization
    /// failure or deadlock, a connection lost before `COMMIT`, a failed checkout; never
    /// after a `COMMIT` whose outcome is unknown (see [`Self::transaction_with`]). The
    /// manager's retry policy bounds the attempts and spaces them.
    ///
    /// `work` gets the connection inside the transaction (nested `conn.transaction(..)`
    /// calls are savepoints) and may borrow the caller's data; it may run more than once.
    /// Its error type is the caller's, as with diesel's `transaction`: `diesel::result::Error`
    /// or an application error that implements [`DieselTransactionError`]. An application
    /// error that carries no database error ends the transaction (rolled back) and is
    /// returned at once.
    ///
    /// ```no_run
    /// # async fn example(pool: ucm_diesel::DieselPool<ucm_diesel::PgDialect>) -> Result<(), diesel::result::Error> {
    /// use diesel::sql_types::BigInt;
    /// use diesel_async::RunQueryDsl;
    /// use scoped_futures::ScopedFutureExt;
    ///
    /// let (from, to) = (1_i64, 2_i64);
    /// pool.transaction(|conn| {
    ///     async move {
    ///         diesel::sql_query("UPDATE accounts SET balance = balance - 10 WHERE id = $1")
    ///             .bind::<BigInt, _>(from)
    ///             .execute(conn)
    ///             .await?;
    ///         diesel::sql_query("UPDATE accounts SET balance = balance + 10 WHERE id = $1")
    ///             .bind::<BigInt, _>(to)
    ///             .execute(conn)
    ///             .await?;
    ///         Ok::<_, diesel::result::Error>(())
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
        E: DieselTransactionError + Send + 'a,
        F: for<'c> FnMut(&'c mut DieselPoolConnection<D>) -> ScopedBoxFuture<'a, 'c, Result<T, E>>
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
        E: DieselTransactionError + Send + 'a,
        F: for<'c> FnMut(&'c mut DieselPoolConnection<D>) -> ScopedBoxFuture<'a, 'c, Result<T, E>>
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
                    let statement = |e: DieselError| (E::from(e), Phase::Statement);
                    let mut conn = pool.get().await.map_err(|e| statement(into_diesel_error(e)))?;
                    ObservedTransactionManager::begin_transaction(&mut conn)
                        .await
                        .map_err(statement)?;
                    match work(&mut conn).await {
                        Err(error) => {
                            if let Err(rollback) =
                                ObservedTransactionManager::rollback_transaction(&mut conn).await
                            {
                                // The pool rolls back or closes the connection on return.
                                tracing::debug!("rollback after a failed transaction: {rollback}");
                            }
                            Err((error, Phase::Statement))
                        }
                        Ok(value) => {
                            match ObservedTransactionManager::commit_transaction(&mut conn).await {
                                Ok(()) => Ok(value),
                                Err(error) => Err((E::from(error), Phase::Commit)),
                            }
                        }
                    }
                })
            },
            |error, phase, decide| match error.as_diesel_error() {
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

/// The error of a retried transaction's work ([`DieselPool::transaction`],
/// [`DieselBlockingPool::transaction`](super::DieselBlockingPool::transaction)):
/// `diesel::result::Error`, or an application's error that can hold one. The retry policy
/// reads the database error inside; an error without one is the application's decision
/// and is never retried.
///
/// For an error whose `source()` chain reaches the diesel error (thiserror's `#[from]`
/// does), the default method finds it and the impl is one line:
///
/// ```
/// #[derive(Debug, thiserror::Error)]
/// enum AppError {
///     #[error("database: {0}")]
///     Database(#[from] diesel::result::Error),
///     #[error("{0} is not a valid amount")]
///     InvalidAmount(i64),
/// }
///
/// impl ucm_diesel::DieselTransactionError for AppError {}
/// ```
///
/// An error that hides its source (thiserror's `#[error(transparent)]`, `anyhow`) overrides
/// [`Self::as_diesel_error`] with a `match` or a `downcast_ref`.
pub trait DieselTransactionError: From<DieselError> + std::error::Error + 'static {
    /// The database error this error carries, if any.
    fn as_diesel_error(&self) -> Option<&DieselError> {
        let mut next: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(error) = next {
            if let Some(database) = error.downcast_ref::<DieselError>() {
                return Some(database);
            }
            next = error.source();
        }
        None
    }
}

impl DieselTransactionError for DieselError {}

/// ucm's error as a diesel error, for `?` in code whose error type converts from diesel's:
/// a `QueryBuilderError` whose source is ucm's error ([`DieselPool::classify`] gives it
/// back, and the retry policy reads it).
pub fn into_diesel_error(error: ucm_kernel::Error) -> DieselError {
    DieselError::QueryBuilderError(Box::new(error))
}

impl<D: DieselDialect> Clone for DieselPool<D> {
    fn clone(&self) -> Self {
        Self { manager: Arc::clone(&self.manager), mode: self.mode, dialect: PhantomData }
    }
}

impl<D: DieselDialect> fmt::Debug for DieselPool<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DieselPool")
            .field("mode", &self.mode)
            .field("manager", &self.manager)
            .finish()
    }
}
