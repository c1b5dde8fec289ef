//! `DieselBlockingPool<D>`: the sync handle for r2d2-style diesel code; its connections are diesel-async's `AsyncConnectionWrapper` over a pool connection, driven on ucm's runtime for blocking calls from any thread.

use std::fmt;
use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use diesel::connection::{Connection, TransactionManager};
use diesel::result::Error as DieselError;
use diesel_async::async_connection_wrapper::{AsyncConnectionWrapper, BlockOn};
use tokio::runtime::Runtime;
use ucm_kernel::backend::Phase;
use ucm_kernel::{ConnectionManagerProtocol, ConnectionMode, ManagerConfig, ManagerMode};
use ucm_kernel::{TransactionOptions, blocking};

use super::into_diesel_error;
use super::{DieselDialect, DieselPool, DieselPoolConnection, DieselTransactionError};
use crate::manager::DieselManager;

/// A sync diesel connection over a ucm pool connection: diesel-async's
/// `AsyncConnectionWrapper`, its futures driven by [`BlockingRuntime`]. It is a
/// `diesel::Connection` (with `LoadConnection` and `MigrationConnection`), so
/// `diesel::RunQueryDsl`, `Connection::transaction` and `diesel_migrations` work on it;
/// it derefs to the [`DieselPoolConnection`].
pub type DieselSyncConnection<D> = AsyncConnectionWrapper<DieselPoolConnection<D>, BlockingRuntime>;

/// How a [`DieselSyncConnection`] waits for its futures: on ucm's runtime for blocking
/// calls (`ucm_kernel::blocking`), from a plain thread or from inside any tokio runtime
/// (there, through `block_in_place` on a multi-thread runtime), never starting a runtime
/// inside a runtime.
#[derive(Debug, Clone, Copy)]
pub struct BlockingRuntime {
    /// `None` only when ucm's runtime could not start; futures are then polled on the
    /// calling thread, and fail if they need a runtime (no pool connection exists then:
    /// checkouts need the runtime).
    runtime: Option<&'static Runtime>,
}

impl BlockOn for BlockingRuntime {
    fn block_on<F: Future>(&self, future: F) -> F::Output {
        match self.runtime {
            Some(runtime) => blocking::block_on_runtime(runtime, future),
            None => blocking::poll_on_this_thread(future),
        }
    }

    fn get_runtime() -> Self {
        Self { runtime: blocking::runtime().ok() }
    }
}

/// The sync transaction manager of dialect `D`'s connections.
type SyncTm<D> = <DieselSyncConnection<D> as Connection>::TransactionManager;

/// A sync diesel pool over a [`DieselManager`], for code written against an r2d2 pool of
/// diesel connections: `let mut conn = pool.get()?;` then the diesel DSL on `&mut *conn`
/// (or on `&mut conn` where a function takes `&mut DieselSyncConnection<D>`). Clones share
/// the manager. Usable from plain threads and from inside tokio runtimes.
pub struct DieselBlockingPool<D: DieselDialect> {
    pool: DieselPool<D>,
}

/// A connection checked out of a [`DieselBlockingPool`]: derefs to a
/// [`DieselSyncConnection`]. Returned to ucm's pool on drop, rolled back first if a
/// transaction was left open.
pub struct DieselBlockingConnection<D: DieselDialect> {
    connection: DieselSyncConnection<D>,
}

impl<D: DieselDialect> DieselBlockingPool<D> {
    /// A pool handle whose checkouts are for `mode` on `manager`. A manager built for a
    /// blocking pool is best built on ucm's runtime for blocking calls (as [`Self::connect`]
    /// does), so that its background tasks never depend on a runtime the application may
    /// shut down.
    pub fn new(manager: Arc<DieselManager>, mode: ConnectionMode) -> Self {
        Self { pool: DieselPool::new(manager, mode) }
    }

    /// Builds a manager for `config` on ucm's runtime for blocking calls and a pool handle
    /// checking out for `mode` on it.
    ///
    /// # Errors
    /// As `Manager::connect`, and when ucm's runtime cannot start.
    pub fn connect(config: ManagerConfig, mode: ConnectionMode) -> ucm_kernel::Result<Self> {
        let manager = blocking::block_on(DieselManager::connect(config))??;
        Ok(Self::new(Arc::new(manager), mode))
    }

    /// [`Self::connect`] with the configuration from the environment (`DATABASE_URL`...)
    /// for `manager_mode`.
    ///
    /// # Errors
    /// As `Manager::from_env`, and when ucm's runtime cannot start.
    pub fn from_env(manager_mode: ManagerMode, mode: ConnectionMode) -> ucm_kernel::Result<Self> {
        let manager = blocking::block_on(DieselManager::from_env(manager_mode))??;
        Ok(Self::new(Arc::new(manager), mode))
    }

    /// The same manager, checking out for `mode`.
    #[must_use]
    pub fn with_mode(&self, mode: ConnectionMode) -> Self {
        Self { pool: self.pool.with_mode(mode) }
    }

    /// The connection mode its checkouts use.
    pub fn mode(&self) -> ConnectionMode {
        self.pool.mode()
    }

    /// The manager underneath.
    pub fn manager(&self) -> &Arc<DieselManager> {
        self.pool.manager()
    }

    /// The async handle on the same manager and mode.
    pub fn async_pool(&self) -> &DieselPool<D> {
        &self.pool
    }

    /// Checks out a connection, as `r2d2::Pool::get`.
    ///
    /// # Errors
    /// As [`DieselPool::get`], and when ucm's runtime cannot start.
    pub fn get(&self) -> ucm_kernel::Result<DieselBlockingConnection<D>> {
        let connection = blocking::block_on(self.pool.get())??;
        Ok(DieselBlockingConnection { connection: AsyncConnectionWrapper::from(connection) })
    }

    /// ucm's classified reading of a diesel error from this pool (see
    /// [`DieselPool::classify`]).
    pub fn classify(&self, error: DieselError) -> ucm_kernel::Error {
        self.pool.classify(error)
    }

    /// Runs `work` in a transaction and returns its value, re-running it from the start on
    /// a fresh connection when the failure says that is safe and may help, exactly as
    /// [`DieselPool::transaction`] does for async code: a serialization failure or
    /// deadlock, a connection lost before `COMMIT`, a failed checkout; never after a
    /// `COMMIT` whose outcome is unknown (see [`Self::transaction_with`]).
    ///
    /// `work` gets the sync connection inside the transaction and may borrow the caller's
    /// data; it may run more than once. Its error type is the caller's:
    /// `diesel::result::Error` or one implementing [`DieselTransactionError`].
    ///
    /// ```no_run
    /// # fn example(pool: ucm_diesel::DieselBlockingPool<ucm_diesel::PgDialect>) -> Result<(), diesel::result::Error> {
    /// use diesel::RunQueryDsl;
    /// use diesel::sql_types::BigInt;
    ///
    /// let (from, to) = (1_i64, 2_i64);
    /// pool.transaction(|conn| {
    ///     diesel::sql_query("UPDATE accounts SET balance = balance - 10 WHERE id = $1")
    ///         .bind::<BigInt, _>(from)
    ///         .execute(conn)?;
    ///     diesel::sql_query("UPDATE accounts SET balance = balance + 10 WHERE id = $1")
    ///         .bind::<BigInt, _>(to)
    ///         .execute(conn)?;
    ///     Ok::<_, diesel::result::Error>(())
    /// })
    /// # }
    /// ```
    ///
    /// # Errors
    /// The last attempt's error, when it is not retried or the retries ran out.
    pub fn transaction<T, E, F>(&self, work: F) -> Result<T, E>
    where
        T: Send,
        E: DieselTransactionError + Send,
        F: FnMut(&mut DieselSyncConnection<D>) -> Result<T, E> + Send,
    {
        self.transaction_with(TransactionOptions::default(), work)
    }

    /// [`Self::transaction`] with options: `idempotent` work is re-run even after a
    /// `COMMIT` whose outcome is unknown.
    ///
    /// # Errors
    /// As [`Self::transaction`].
    pub fn transaction_with<T, E, F>(&self, options: TransactionOptions, work: F) -> Result<T, E>
    where
        T: Send,
        E: DieselTransactionError + Send,
        F: FnMut(&mut DieselSyncConnection<D>) -> Result<T, E> + Send,
    {
        let pool = &self.pool;
        let policy = pool.manager().retry_policy();
        let mut state = (pool, work);
        let rerun = ucm_kernel::backend::rerun_transaction(
            policy,
            options,
            &mut state,
            |(pool, work)| {
                Box::pin(async move {
                    let connection = pool
                        .get()
                        .await
                        .map_err(|e| (E::from(into_diesel_error(e)), Phase::Statement))?;
                    // Sync from here on: the blocking calls nested in this one poll in place.
                    attempt(&mut AsyncConnectionWrapper::from(connection), work)
                })
            },
            |error, phase, decide| match error.as_diesel_error() {
                Some(database_error) => {
                    pool.with_reading(database_error, phase, decide);
                    true
                }
                None => false,
            },
        );
        match blocking::block_on(rerun) {
            Ok(result) => result,
            Err(e) => Err(E::from(into_diesel_error(e))),
        }
    }
}

/// One attempt of a blocking retried transaction: begin, `work`, commit (or roll back),
/// through diesel's sync transaction manager so nested `transaction` calls are savepoints.
fn attempt<D: DieselDialect, T, E: From<DieselError>>(
    connection: &mut DieselSyncConnection<D>,
    work: &mut impl FnMut(&mut DieselSyncConnection<D>) -> Result<T, E>,
) -> Result<T, (E, Phase)> {
    SyncTm::<D>::begin_transaction(connection).map_err(|e| (E::from(e), Phase::Statement))?;
    match work(connection) {
        Err(error) => {
            if let Err(rollback) = SyncTm::<D>::rollback_transaction(connection) {
                // The pool rolls back or closes the connection on return.
                tracing::debug!("rollback after a failed transaction: {rollback}");
            }
            Err((error, Phase::Statement))
        }
        Ok(value) => match SyncTm::<D>::commit_transaction(connection) {
            Ok(()) => Ok(value),
            Err(error) => Err((E::from(error), Phase::Commit)),
        },
    }
}

impl<D: DieselDialect> Clone for DieselBlockingPool<D> {
    fn clone(&self) -> Self {
        Self { pool: self.pool.clone() }
    }
}

impl<D: DieselDialect> fmt::Debug for DieselBlockingPool<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DieselBlockingPool").field("pool", &self.pool).finish()
    }
}

impl<D: DieselDialect> Deref for DieselBlockingConnection<D> {
    type Target = DieselSyncConnection<D>;

    fn deref(&self) -> &DieselSyncConnection<D> {
        &self.connection
    }
}

impl<D: DieselDialect> DerefMut for DieselBlockingConnection<D> {
    fn deref_mut(&mut self) -> &mut DieselSyncConnection<D> {
        &mut self.connection
    }
}

impl<D: DieselDialect> fmt::Debug for DieselBlockingConnection<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DieselBlockingConnection").field("connection", &*self.connection).finish()
    }
}
