//! `SqlxPool<DB>`: a sqlx-shaped pool over ucm's manager, so code written for sqlx's `Pool` (`query!` on `&pool`, `acquire()`, `begin()`, transactions passed across functions) keeps its queries and gets ucm's routing, breaker, deadlines, classification and telemetry.
//!
//! The three handles mirror sqlx's:
//! - [`SqlxPool`] is cheap to clone; `&pool` is a [`sqlx::Executor`] (each statement checks
//!   a connection out for the pool's [`ConnectionMode`], so a `ReadOnly` pool reads from a
//!   replica, read-only at the database).
//! - [`SqlxPoolConnection`] (from [`SqlxPool::acquire`]) derefs to the driver's connection;
//!   `&mut conn` is an executor and an `Acquire`.
//! - [`SqlxTransaction`] (from [`SqlxPool::begin`]) is owned (`'static`), goes through sqlx's
//!   own transaction manager (so a nested `begin` is a savepoint and sqlx and ucm agree on
//!   the transaction's depth), and rolls back when dropped uncommitted.
//!
//! Errors stay `sqlx::Error`, so `?` and an application's `From<sqlx::Error>` keep working;
//! [`SqlxPool::classify`] turns one into ucm's classified [`ucm_core::Error`]. A failure to
//! get a connection carries ucm's error as its source (an I/O error of kind `Other`, or
//! `PoolTimedOut`/`PoolClosed` for exhaustion and a closed manager).

use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use futures_core::future::BoxFuture;
use futures_core::stream::BoxStream;
use futures_util::TryStreamExt;
use scoped_futures::ScopedBoxFuture;
use sqlx::{Database, Describe, Either, Execute, Executor, SqlStr};
use sqlx_core::transaction::TransactionManager;
use ucm_core::{
    ConnectionManagerProtocol, ConnectionMode, ErrorKind, ObservedStatement, Phase,
    TransactionOptions,
};

use crate::convert::NeutralValues;
use crate::dialect::Dialect;
use crate::error::read_ref;
use crate::manager::{SqlxConnection, SqlxManager, SqlxSession};

/// A database sqlx and ucm both support: which of a [`SqlxManager`]'s connections is its.
pub trait SqlxDatabase: Database {
    /// ucm's dialect for it.
    type Dialect: NeutralValues<Db = Self>;

    /// The session of this database inside a manager's connection; `None` when the manager
    /// serves another database.
    fn session(connection: SqlxConnection) -> Option<SqlxSession<Self::Dialect>>;
}

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
                    Err(e) => Err(ucm_core::Error::other(format!("the checkout task failed: {e}"))),
                }
            }
        }
        .map_err(to_sqlx)?;
        match DB::session(connection) {
            Some(session) => Ok(SqlxPoolConnection { session }),
            None => Err(sqlx::Error::Configuration(
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
        self.acquire().await?.into_transaction().await
    }

    /// ucm's classified reading of a sqlx error from this pool: its [`ErrorKind`] decides
    /// whether retrying can help, and its message never contains the password. A failure
    /// to get a connection gives back ucm's own error.
    pub fn classify(&self, error: sqlx::Error) -> ucm_core::Error {
        match error {
            sqlx::Error::Io(io) if io.get_ref().is_some_and(|e| e.is::<ucm_core::Error>()) => {
                match io.into_inner().map(|e| e.downcast::<ucm_core::Error>()) {
                    Some(Ok(ucm)) => *ucm,
                    _ => ucm_core::Error::other("a pool error could not be read"),
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
        decide: impl FnOnce(&ucm_core::Error) -> R,
    ) -> R {
        if let sqlx::Error::Io(io) = error
            && let Some(ucm) = io.get_ref().and_then(|e| e.downcast_ref::<ucm_core::Error>())
        {
            return decide(ucm);
        }
        decide(&self.read(error, phase))
    }

    fn read(&self, error: &sqlx::Error, phase: Phase) -> ucm_core::Error {
        match error {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => {
                // Produced by `to_sqlx` from ucm's own kinds.
                let kind = if matches!(error, sqlx::Error::PoolClosed) {
                    ErrorKind::Closed
                } else {
                    ErrorKind::PoolExhausted
                };
                ucm_core::Error::database(
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
    /// borrow the caller's data; it may run more than once.
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
    ///         Ok(())
    ///     }
    ///     .scope_boxed()
    /// })
    /// .await
    /// # }
    /// ```
    ///
    /// # Errors
    /// The last attempt's sqlx error, when it is not retried or the retries ran out.
    pub async fn transaction<'a, T, F>(&self, work: F) -> Result<T, sqlx::Error>
    where
        T: Send + 'a,
        F: for<'c> FnMut(
                &'c mut SqlxTransaction<DB>,
            ) -> ScopedBoxFuture<'a, 'c, Result<T, sqlx::Error>>
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
    pub async fn transaction_with<'a, T, F>(
        &self,
        options: TransactionOptions,
        mut work: F,
    ) -> Result<T, sqlx::Error>
    where
        T: Send + 'a,
        F: for<'c> FnMut(
                &'c mut SqlxTransaction<DB>,
            ) -> ScopedBoxFuture<'a, 'c, Result<T, sqlx::Error>>
            + Send
            + 'a,
    {
        let policy = self.manager.retry_policy();
        policy.budget.deposit();
        let mut attempt = 1;
        loop {
            let (error, phase) = match self.begin().await {
                Err(error) => (error, Phase::Statement),
                Ok(mut tx) => match work(&mut tx).await {
                    Err(error) => {
                        // Dropping the transaction rolls it back before the connection's reuse.
                        drop(tx);
                        (error, Phase::Statement)
                    }
                    Ok(value) => match tx.commit().await {
                        Ok(()) => return Ok(value),
                        Err(error) => (error, Phase::Commit),
                    },
                },
            };
            let delay = self.with_reading(&error, phase, |reading| {
                policy.retry_delay(reading, attempt, options.idempotent)
            });
            match delay {
                Some(delay) => {
                    tracing::debug!(attempt, ?delay, "re-running a sqlx transaction: {error}");
                    tokio::time::sleep(delay).await;
                }
                None => return Err(error),
            }
            attempt += 1;
        }
    }
}

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

/// ucm's acquire error as sqlx reports pool failures.
fn to_sqlx(error: ucm_core::Error) -> sqlx::Error {
    match error.kind() {
        ErrorKind::PoolExhausted => sqlx::Error::PoolTimedOut,
        ErrorKind::Closed => sqlx::Error::PoolClosed,
        _ => sqlx::Error::Io(std::io::Error::other(error)),
    }
}

/// A connection checked out of a [`SqlxPool`]; derefs to the sqlx connection, goes back to
/// ucm's pool when dropped. Statements run on `&mut conn` are observed by ucm; those run on
/// `&mut *conn` (the bare driver connection) are not.
pub struct SqlxPoolConnection<DB: SqlxDatabase> {
    session: SqlxSession<DB::Dialect>,
}

impl<DB: SqlxDatabase> SqlxPoolConnection<DB> {
    /// Begins a transaction through sqlx's transaction manager and hands the connection to
    /// it.
    async fn into_transaction(mut self) -> Result<SqlxTransaction<DB>, sqlx::Error> {
        // Marked first: a transaction dropped mid-`BEGIN` is rolled back before reuse.
        self.session.mark_transaction_open();
        DB::TransactionManager::begin(&mut self.session, None).await?;
        Ok(SqlxTransaction { connection: Some(self) })
    }

    /// The ucm session underneath (its pooled connection's state, the neutral SQL API).
    pub fn session(&mut self) -> &mut SqlxSession<DB::Dialect> {
        &mut self.session
    }
}

impl<DB: SqlxDatabase> Deref for SqlxPoolConnection<DB> {
    type Target = DB::Connection;

    fn deref(&self) -> &DB::Connection {
        &self.session
    }
}

impl<DB: SqlxDatabase> DerefMut for SqlxPoolConnection<DB> {
    fn deref_mut(&mut self) -> &mut DB::Connection {
        &mut self.session
    }
}

impl<DB: SqlxDatabase> fmt::Debug for SqlxPoolConnection<DB> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlxPoolConnection").field("session", &self.session).finish()
    }
}

/// A transaction on a connection of a [`SqlxPool`], owned (`'static`): pass it by value or
/// `&mut` across functions and tasks. Derefs to the sqlx connection; `&mut tx` is an
/// executor, and an `Acquire` whose `begin` opens a savepoint. Rolled back if dropped
/// before [`Self::commit`].
pub struct SqlxTransaction<DB: SqlxDatabase> {
    /// Taken by `commit` and `rollback`; `None` only after them.
    connection: Option<SqlxPoolConnection<DB>>,
}

impl<DB: SqlxDatabase> SqlxTransaction<DB> {
    /// Commits, and returns the connection to its pool.
    ///
    /// # Errors
    /// `COMMIT`'s error; ucm reads a connection lost during it as an ambiguous commit
    /// ([`SqlxPool::classify`]).
    pub async fn commit(mut self) -> Result<(), sqlx::Error> {
        let Some(mut connection) = self.connection.take() else { return Ok(()) };
        let session = &mut connection.session;
        let (statement, deadline) = session.observe_commit_start();
        let outcome = within(deadline, DB::TransactionManager::commit(session)).await;
        finish(session, statement, outcome)?;
        connection.session.mark_transaction_closed();
        Ok(())
    }

    /// Rolls back, and returns the connection to its pool.
    ///
    /// # Errors
    /// `ROLLBACK`'s error.
    pub async fn rollback(mut self) -> Result<(), sqlx::Error> {
        let Some(mut connection) = self.connection.take() else { return Ok(()) };
        DB::TransactionManager::rollback(&mut connection.session).await?;
        connection.session.mark_transaction_closed();
        Ok(())
    }

    fn connection(&mut self) -> &mut SqlxPoolConnection<DB> {
        match self.connection.as_mut() {
            Some(connection) => connection,
            None => unreachable_transaction(),
        }
    }
}

#[allow(clippy::panic)] // Unreachable: `commit` and `rollback` consume the transaction.
fn unreachable_transaction() -> ! {
    panic!("ucm: SqlxTransaction used after commit or rollback")
}

impl<DB: SqlxDatabase> Drop for SqlxTransaction<DB> {
    fn drop(&mut self) {
        if let Some(connection) = self.connection.as_mut() {
            // As sqlx's own `Transaction`: queue the rollback, which the driver sends before
            // anything else on this connection. The pooled connection stays marked
            // in-transaction, so the pool also resets it before anyone else gets it.
            DB::TransactionManager::start_rollback(&mut connection.session);
        }
    }
}

impl<DB: SqlxDatabase> Deref for SqlxTransaction<DB> {
    type Target = DB::Connection;

    fn deref(&self) -> &DB::Connection {
        match self.connection.as_ref() {
            Some(connection) => connection,
            None => unreachable_transaction(),
        }
    }
}

impl<DB: SqlxDatabase> DerefMut for SqlxTransaction<DB> {
    fn deref_mut(&mut self) -> &mut DB::Connection {
        self.connection()
    }
}

impl<DB: SqlxDatabase> fmt::Debug for SqlxTransaction<DB> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlxTransaction").field("connection", &self.connection).finish()
    }
}

/// Awaits `call`, for at most `deadline` when there is one; `None` when it passed.
async fn within<F: std::future::Future>(
    deadline: Option<std::time::Duration>,
    call: F,
) -> Option<F::Output> {
    match deadline {
        Some(deadline) => tokio::time::timeout(deadline, call).await.ok(),
        None => Some(call.await),
    }
}

/// Settles an observed statement and hands the driver's own result back.
fn finish<D: NeutralValues, T>(
    session: &mut SqlxSession<D>,
    statement: ObservedStatement,
    outcome: Option<Result<T, sqlx::Error>>,
) -> Result<T, sqlx::Error> {
    match outcome {
        Some(Ok(value)) => {
            let _ = session.observe_finish(statement, Some(Ok(())));
            Ok(value)
        }
        Some(Err(error)) => {
            let _ = session.observe_finish(statement, Some(Err(read_ref::<D>(&error))));
            Err(error)
        }
        None => {
            let ucm = session.observe_finish(statement, None);
            Err(sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                ucm.map_or_else(|| "statement deadline passed".to_owned(), |e| e.to_string()),
            )))
        }
    }
}

/// A query whose text is copied out when the driver takes it (sqlx hands the text over
/// only by consuming the query), for the statement's span and metrics.
struct Captured<E> {
    inner: E,
    sql: Arc<std::sync::Mutex<Option<SqlStr>>>,
}

impl<'q, DB: Database, E: Execute<'q, DB>> Execute<'q, DB> for Captured<E> {
    fn sql(self) -> SqlStr {
        let sql = self.inner.sql();
        if let Ok(mut slot) = self.sql.lock() {
            *slot = Some(sql.clone());
        }
        sql
    }

    fn statement(&self) -> Option<&DB::Statement> {
        self.inner.statement()
    }

    fn take_arguments(
        &mut self,
    ) -> Result<Option<<DB as Database>::Arguments>, sqlx::error::BoxDynError> {
        self.inner.take_arguments()
    }

    fn persistent(&self) -> bool {
        self.inner.persistent()
    }
}

/// Wraps `query` so its text lands in `statement` once the driver takes it.
fn capture<E>(query: E) -> (Captured<E>, Arc<std::sync::Mutex<Option<SqlStr>>>) {
    let sql = Arc::new(std::sync::Mutex::new(None));
    (Captured { inner: query, sql: Arc::clone(&sql) }, sql)
}

fn name(statement: &mut ObservedStatement, sql: &std::sync::Mutex<Option<SqlStr>>) {
    if let Ok(slot) = sql.lock()
        && let Some(sql) = slot.as_ref()
    {
        statement.set_sql(sql.as_str());
    }
}

/// What `fetch_many` yields: results and rows, as sqlx's executors do.
type Items<'e, DB> = BoxStream<
    'e,
    Result<Either<<DB as Database>::QueryResult, <DB as Database>::Row>, sqlx::Error>,
>;

/// `fetch_many` on a session, observed: the stream's items are the driver's; its deadline is
/// the client's statement deadline for the whole stream.
fn observed_stream<'e, 'q: 'e, D, E>(session: &'e mut SqlxSession<D>, query: E) -> Items<'e, D::Db>
where
    D: NeutralValues,
    E: 'q + Execute<'q, D::Db>,
    for<'c> &'c mut <D::Db as Database>::Connection: Executor<'c, Database = D::Db>,
{
    Box::pin(async_stream::try_stream! {
        let (mut statement, deadline) = session.observe_start();
        let (query, sql) = capture(query);
        let until = deadline.map(|d| tokio::time::Instant::now() + d);
        let mut failure = None;
        {
            let mut items = (&mut **session).fetch_many(query);
            loop {
                let next = match until {
                    Some(until) => tokio::time::timeout_at(until, items.try_next()).await.ok(),
                    None => Some(items.try_next().await),
                };
                match next {
                    Some(Ok(Some(item))) => yield item,
                    Some(Ok(None)) => break,
                    Some(Err(error)) => {
                        failure = Some(Some(error));
                        break;
                    }
                    None => {
                        failure = Some(None);
                        break;
                    }
                }
            }
        }
        name(&mut statement, &sql);
        match failure {
            None => finish::<D, ()>(session, statement, Some(Ok(())))?,
            Some(Some(error)) => finish::<D, ()>(session, statement, Some(Err(error)))?,
            Some(None) => finish::<D, ()>(session, statement, None)?,
        }
    })
}

/// `fetch_optional` on a session, observed.
async fn observed_optional<'q, D, E>(
    session: &mut SqlxSession<D>,
    query: E,
) -> Result<Option<<D::Db as Database>::Row>, sqlx::Error>
where
    D: NeutralValues,
    E: 'q + Execute<'q, D::Db>,
    for<'c> &'c mut <D::Db as Database>::Connection: Executor<'c, Database = D::Db>,
{
    let (mut statement, deadline) = session.observe_start();
    let (query, sql) = capture(query);
    let span = statement.span().cloned();
    let run = (&mut **session).fetch_optional(query);
    let run = async move {
        match span {
            Some(span) => tracing::Instrument::instrument(run, span).await,
            None => run.await,
        }
    };
    let outcome = within(deadline, run).await;
    name(&mut statement, &sql);
    finish(session, statement, outcome)
}

/// The executor methods every handle shares: `$this` turns `self` into the session to run on
/// (after a checkout, for the pool).
macro_rules! session_executor {
    ($handle:ty, |$self_:ident| $session:expr) => {
        impl<'c, DB: SqlxDatabase> Executor<'c> for &'c mut $handle
        where
            for<'e> &'e mut DB::Connection: Executor<'e, Database = DB>,
        {
            type Database = DB;

            fn fetch_many<'e, 'q: 'e, E>(self, query: E) -> Items<'e, DB>
            where
                'c: 'e,
                E: 'q + Execute<'q, DB>,
            {
                let $self_ = self;
                observed_stream::<DB::Dialect, E>($session, query)
            }

            fn fetch_optional<'e, 'q: 'e, E>(
                self,
                query: E,
            ) -> BoxFuture<'e, Result<Option<DB::Row>, sqlx::Error>>
            where
                'c: 'e,
                E: 'q + Execute<'q, DB>,
            {
                let $self_ = self;
                Box::pin(observed_optional::<DB::Dialect, E>($session, query))
            }

            fn prepare_with<'e>(
                self,
                sql: SqlStr,
                parameters: &'e [DB::TypeInfo],
            ) -> BoxFuture<'e, Result<DB::Statement, sqlx::Error>>
            where
                'c: 'e,
            {
                let $self_ = self;
                (&mut **$session).prepare_with(sql, parameters)
            }

            fn describe<'e>(self, sql: SqlStr) -> BoxFuture<'e, Result<Describe<DB>, sqlx::Error>>
            where
                'c: 'e,
            {
                let $self_ = self;
                (&mut **$session).describe(sql)
            }
        }
    };
}

session_executor!(SqlxPoolConnection<DB>, |this| &mut this.session);
session_executor!(SqlxTransaction<DB>, |this| &mut this.connection().session);

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

/// `Acquire` on a checked-out connection or a transaction: the connection itself, and
/// sqlx's `Transaction` on it (a savepoint inside a transaction).
macro_rules! session_acquire {
    ($handle:ty) => {
        impl<'c, DB: SqlxDatabase> sqlx::Acquire<'c> for &'c mut $handle {
            type Database = DB;
            type Connection = &'c mut DB::Connection;

            fn acquire(self) -> BoxFuture<'c, Result<Self::Connection, sqlx::Error>> {
                Box::pin(async move { Ok(&mut **self) })
            }

            fn begin(self) -> BoxFuture<'c, Result<sqlx::Transaction<'c, DB>, sqlx::Error>> {
                sqlx::Transaction::begin(&mut **self, None)
            }
        }
    };
}

session_acquire!(SqlxPoolConnection<DB>);
session_acquire!(SqlxTransaction<DB>);
