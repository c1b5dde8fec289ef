//! `TrackedConnection<C>`: a diesel-async connection that remembers when one of ucm's operations on it was interrupted, so the pool never hands it out again, and names the statements diesel runs on it.

use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use diesel::QueryResult;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::AsyncConnection;

use crate::convert::KeptStatements;
use crate::driver::StatementText;

/// A diesel-async connection as pooled by ucm; derefs to the connection for the diesel DSL.
///
/// When a future running one of ucm's operations is dropped mid-flight, the driver may
/// still be using the connection (SQLite runs it on a blocking thread; a PostgreSQL
/// `BEGIN` may be half-sent). The connection is then marked interrupted and the pool
/// closes it instead of reusing it, without touching its inner state.
///
/// Every connection carries ucm's diesel `Instrumentation`, which keeps the text of the
/// statement diesel runs (never its bind values) for the statement's span and metrics.
#[derive(Debug)]
pub struct TrackedConnection<C> {
    /// `None` only while lent to the `DieselPoolConnection` that owns this connection's
    /// session, which gives it back before the session can be reached by anyone else.
    inner: Option<C>,
    interrupted: bool,
    statement_text: StatementText,
    /// The neutral statements kept prepared on this connection.
    kept: Arc<KeptStatements>,
}

impl<C: AsyncConnection> TrackedConnection<C> {
    /// Wraps a new connection and installs ucm's instrumentation on it, in front of
    /// diesel's default instrumentation if the application set one.
    pub(crate) fn new(mut inner: C) -> Self {
        let statement_text = StatementText::default();
        inner.set_instrumentation(
            statement_text.instrumentation(diesel::connection::get_default_instrumentation()),
        );
        Self { inner: Some(inner), interrupted: false, statement_text, kept: Arc::default() }
    }
}

impl<C> TrackedConnection<C> {
    /// Whether an operation on this connection was dropped before it finished.
    pub fn is_interrupted(&self) -> bool {
        self.interrupted
    }

    /// Whether the driver's connection is here (it is, unless lent; see [`Self::lend`]).
    pub(crate) fn is_present(&self) -> bool {
        self.inner.is_some()
    }

    /// The neutral statements kept prepared on this connection (shared with the pipelined
    /// lane while it holds the connection).
    pub(crate) fn kept_statements(&self) -> &Arc<KeptStatements> {
        &self.kept
    }

    /// Empties diesel's statement cache on this connection and forgets the kept statements,
    /// after a table changed under one of them ([`crate::convert::stale_plan`]). A
    /// connection behind a transaction pooler keeps nothing, so it is left as it is.
    pub(crate) fn forget_kept_statements(&mut self)
    where
        C: AsyncConnection,
    {
        if self.kept.is_disabled() {
            return;
        }
        if let Some(inner) = self.inner.as_mut() {
            // A new cache: the old one's statements are closed as they drop.
            inner.set_prepared_statement_cache_size(diesel::connection::CacheSize::Unbounded);
        }
        self.kept.forget();
    }

    /// Where ucm's instrumentation leaves the text of the statement diesel last started.
    pub(crate) fn statement_text(&self) -> &StatementText {
        &self.statement_text
    }

    /// Takes the driver's connection out, so a pool handle can run statements on it while
    /// it settles them on the session that holds this connection. The handle owns that
    /// session and gives the connection back with [`Self::restore`] before the session is
    /// returned or reachable.
    pub(crate) fn lend(&mut self) -> Option<C> {
        self.inner.take()
    }

    /// Puts back the connection [`Self::lend`] took.
    pub(crate) fn restore(&mut self, inner: C) {
        self.inner = Some(inner);
    }

    /// Runs `operation` on the inner connection, marking the connection interrupted for
    /// as long as it runs: a dropped future leaves the mark set.
    pub(crate) async fn guarded<'c, T, F>(
        &'c mut self,
        operation: impl FnOnce(&'c mut C) -> F,
    ) -> QueryResult<T>
    where
        F: Future<Output = QueryResult<T>> + 'c,
    {
        let Self { inner, interrupted, .. } = self;
        let Some(inner) = inner.as_mut() else { return Err(lent()) };
        *interrupted = true;
        let result = operation(inner).await;
        *interrupted = false;
        result
    }
}

/// The error for an operation on a connection that is lent out: read as a broken
/// connection, so the pool closes it.
fn lent() -> DieselError {
    DieselError::DatabaseError(
        DatabaseErrorKind::ClosedConnection,
        Box::new("the connection is lent to a pool handle".to_owned()),
    )
}

impl<C> Deref for TrackedConnection<C> {
    type Target = C;

    fn deref(&self) -> &C {
        match &self.inner {
            Some(inner) => inner,
            // Lent only to the pool handle that owns this connection's session: the
            // session cannot be reached (and so this cannot run) until it is given back.
            None => unreachable!("a lent diesel connection was reached through its session"),
        }
    }
}

impl<C> DerefMut for TrackedConnection<C> {
    fn deref_mut(&mut self) -> &mut C {
        match &mut self.inner {
            Some(inner) => inner,
            None => unreachable!("a lent diesel connection was reached through its session"),
        }
    }
}
