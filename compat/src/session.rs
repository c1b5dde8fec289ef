//! The legacy session: a pooled connection whose first statement opens a transaction (autobegin), ended by an explicit commit or rollback; `AsyncSession` and the blocking `Session` over the same logic.

use ucm::{
    BoxFuture, ConnectionMode, Error, Result, Row, SqlExecutor, TransactionalConnection,
    UnifiedConnection, Value,
};

use crate::bridge;

/// The session's state and logic, shared by both faces.
#[derive(Debug)]
pub(crate) struct Inner {
    connection: UnifiedConnection,
    in_transaction: bool,
    echo: bool,
}

impl Inner {
    pub(crate) fn new(connection: UnifiedConnection, echo: bool) -> Self {
        Self { connection, in_transaction: false, echo }
    }

    async fn begin_if_needed(&mut self, sql: &str) -> Result<()> {
        crate::echo(self.echo, sql);
        self.begin().await
    }

    /// Opens the session's transaction unless one is open.
    async fn begin(&mut self) -> Result<()> {
        if !self.in_transaction {
            self.connection.begin(ConnectionMode::Transactional).await?;
            self.in_transaction = true;
        }
        Ok(())
    }

    async fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64> {
        self.begin_if_needed(sql).await?;
        self.connection.execute(sql, params).await
    }

    async fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>> {
        self.begin_if_needed(sql).await?;
        self.connection.fetch_all(sql, params).await
    }

    async fn commit(&mut self) -> Result<()> {
        if self.in_transaction {
            self.in_transaction = false;
            self.connection.commit().await?;
        }
        Ok(())
    }

    async fn rollback(&mut self) -> Result<()> {
        if self.in_transaction {
            self.in_transaction = false;
            self.connection.rollback().await?;
        }
        Ok(())
    }
}

fn lost() -> Error {
    Error::other(
        "this session's connection is gone: an earlier call on it was cancelled or panicked; \
         open a new session",
    )
}

/// An async legacy session. The first statement opens a transaction; [`Self::commit`] or
/// [`Self::rollback`] ends it, and the next statement opens another. Dropped with a
/// transaction open, it is rolled back before its connection is reused.
///
/// Each call runs on ucm-compat's runtime (see the crate documentation), so a session works
/// from any runtime, including one that shuts down while the shared pool lives on.
#[derive(Debug)]
pub struct AsyncSession {
    inner: Option<Inner>,
}

impl AsyncSession {
    pub(crate) fn new(inner: Inner) -> Self {
        Self { inner: Some(inner) }
    }

    async fn run<T: Send + 'static>(
        &mut self,
        f: impl for<'s> FnOnce(&'s mut Inner) -> BoxFuture<'s, Result<T>> + Send + 'static,
    ) -> Result<T> {
        let mut inner = self.inner.take().ok_or_else(lost)?;
        let (inner, result) = bridge::spawn(async move {
            let result = f(&mut inner).await;
            Ok((inner, result))
        })
        .await?;
        self.inner = Some(inner);
        result
    }

    /// Runs a statement in the session's transaction; returns the rows affected.
    ///
    /// # Errors
    /// The statement's classified error; the transaction is then unusable until rolled back.
    pub async fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64> {
        let (sql, params) = (sql.to_owned(), params.to_vec());
        self.run(move |s| Box::pin(async move { s.execute(&sql, &params).await })).await
    }

    /// Runs a query in the session's transaction; returns its rows.
    ///
    /// # Errors
    /// As [`Self::execute`].
    pub async fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>> {
        let (sql, params) = (sql.to_owned(), params.to_vec());
        self.run(move |s| Box::pin(async move { s.query(&sql, &params).await })).await
    }

    /// Commits the open transaction, if any.
    ///
    /// # Errors
    /// `SerializationFailure`, `AmbiguousCommit`... as the protocol's commit.
    pub async fn commit(&mut self) -> Result<()> {
        self.run(|s| Box::pin(s.commit())).await
    }

    /// Rolls back the open transaction, if any.
    ///
    /// # Errors
    /// `ConnectionLost` when the connection broke (the server rolls back on its own).
    pub async fn rollback(&mut self) -> Result<()> {
        self.run(|s| Box::pin(s.rollback())).await
    }

    /// Whether a transaction is open.
    pub fn in_transaction(&self) -> bool {
        self.inner.as_ref().is_some_and(|s| s.in_transaction)
    }

    /// Runs sqlx code (`query!`, `query_as!`...) on the session's connection, inside its
    /// transaction (opened first if none is), so it commits or rolls back with the
    /// session's other statements. `work` gets the sqlx connection, observed as a
    /// `SqlxPool`'s are, and may borrow the caller's data; it runs on the caller's task.
    ///
    /// ```no_run
    /// # async fn example(
    /// #     session: &mut ucm_compat::AsyncSession,
    /// # ) -> Result<(), ucm::ucm_sqlx::sqlx::Error> {
    /// use ucm::ucm_sqlx::scoped_futures::ScopedFutureExt;
    /// use ucm::ucm_sqlx::sqlx;
    ///
    /// let id = 7_i64;
    /// session
    ///     .sqlx::<sqlx::Postgres, _, sqlx::Error, _>(|conn| {
    ///         async move {
    ///             sqlx::query("UPDATE jobs SET state = 'done' WHERE id = $1")
    ///                 .bind(id)
    ///                 .execute(&mut **conn)
    ///                 .await
    ///         }
    ///         .scope_boxed()
    ///     })
    ///     .await?;
    /// session.commit().await.map_err(ucm::ucm_sqlx::into_sqlx_error)?;
    /// # Ok(()) }
    /// ```
    ///
    /// If the returned future is dropped before it finishes, the connection goes back to
    /// its pool, rolled back, and the session's later calls say it is gone.
    ///
    /// # Errors
    /// `work`'s error; a session whose connection is gone, a failed `BEGIN`, or a session
    /// on another database than `DB`, as a `sqlx::Error` converted into `E`.
    #[cfg(feature = "sqlx")]
    pub async fn sqlx<'a, DB, T, E, F>(&'a mut self, work: F) -> std::result::Result<T, E>
    where
        DB: ucm::ucm_sqlx::SqlxDatabase,
        E: From<ucm::ucm_sqlx::sqlx::Error>,
        F: for<'c> FnOnce(
            &'c mut ucm::ucm_sqlx::ObservedConnection<DB>,
        ) -> ucm::ucm_sqlx::scoped_futures::ScopedBoxFuture<
            'a,
            'c,
            std::result::Result<T, E>,
        >,
    {
        use ucm::ucm_sqlx::{ObservedConnection, into_sqlx_error};

        let mut inner = self.inner.take().ok_or_else(lost).map_err(into_sqlx_error)?;
        if let Err(e) = inner.begin().await {
            self.inner = Some(inner);
            return Err(into_sqlx_error(e).into());
        }
        let Inner { connection, in_transaction, echo } = inner;
        let mut observed = match ObservedConnection::<DB>::from_connection(connection) {
            Ok(observed) => observed,
            Err(connection) => {
                self.inner = Some(Inner { connection, in_transaction, echo });
                return Err(into_sqlx_error(Error::config(
                    "DB",
                    "this session's database is not the one the sqlx code was written for; \
                     call `sqlx::<DB, ..>` with the session's database (e.g. sqlx::Postgres \
                     for a postgres:// URL)",
                ))
                .into());
            }
        };
        let result = work(&mut observed).await;
        self.inner = Some(Inner { connection: observed.into_connection(), in_transaction, echo });
        result
    }
}

impl Drop for AsyncSession {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take() {
            bridge::drop_on_runtime(inner);
        }
    }
}

/// A blocking legacy session, usable from plain threads and from inside a tokio runtime
/// (see the crate documentation). Same semantics as [`AsyncSession`].
#[derive(Debug)]
pub struct Session {
    inner: Option<Inner>,
}

impl Session {
    pub(crate) fn new(inner: Inner) -> Self {
        Self { inner: Some(inner) }
    }

    fn inner(&mut self) -> Result<&mut Inner> {
        self.inner.as_mut().ok_or_else(lost)
    }

    /// Runs a statement in the session's transaction; returns the rows affected.
    ///
    /// # Errors
    /// As [`AsyncSession::execute`].
    pub fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64> {
        bridge::block_on(self.inner()?.execute(sql, params))
    }

    /// Runs a query in the session's transaction; returns its rows.
    ///
    /// # Errors
    /// As [`AsyncSession::execute`].
    pub fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>> {
        bridge::block_on(self.inner()?.query(sql, params))
    }

    /// Commits the open transaction, if any.
    ///
    /// # Errors
    /// As [`AsyncSession::commit`].
    pub fn commit(&mut self) -> Result<()> {
        bridge::block_on(self.inner()?.commit())
    }

    /// Rolls back the open transaction, if any.
    ///
    /// # Errors
    /// As [`AsyncSession::rollback`].
    pub fn rollback(&mut self) -> Result<()> {
        bridge::block_on(self.inner()?.rollback())
    }

    /// Whether a transaction is open.
    pub fn in_transaction(&self) -> bool {
        self.inner.as_ref().is_some_and(|s| s.in_transaction)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // The pooled connection's guard rolls back and returns it on a runtime task; from a
        // plain thread there is none, so the drop happens on ucm-compat's runtime.
        if let Some(inner) = self.inner.take() {
            bridge::drop_on_runtime(inner);
        }
    }
}
