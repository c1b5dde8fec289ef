//! `Session<C>`: a pooled connection of any backend running the neutral SQL surface and explicit transactions, with metrics and eviction written once.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::time::Instant;

use async_trait::async_trait;
use tracing::{Instrument, Span};

use super::BackendConnector;
use crate::error::{DriverError, Error, Phase, Result};
use crate::mode::ConnectionMode;
use crate::pool::PooledConnection;
use crate::protocol::{SqlExecutor, TransactionalConnection};
use crate::telemetry;
use crate::value::{Row, Value};

/// A checked-out connection. Runs neutral SQL through [`SqlExecutor`] and explicit
/// transactions through [`TransactionalConnection`]; derefs to the driver's connection
/// for the driver's own API (sqlx executors, the diesel DSL). Returns to its pool on drop,
/// rolled back first if a transaction is open.
///
/// Every statement is timed into the pool's `db.client.operation.duration`; a driver
/// error is mapped into ucm's [`Error`] (scrubbed, with the endpoint) and, when it says
/// the connection is broken, the connection is closed instead of pooled.
pub struct Session<C: BackendConnector> {
    connection: PooledConnection<C>,
}

impl<C: BackendConnector> Session<C> {
    /// Wraps a pooled connection.
    pub fn new(connection: PooledConnection<C>) -> Self {
        Self { connection }
    }

    /// The pooled connection, for its state (`in_transaction`, `held_for`...).
    pub fn pooled(&self) -> &PooledConnection<C> {
        &self.connection
    }

    /// The driver's connection. A transaction opened on it with raw SQL is not tracked:
    /// prefer [`TransactionalConnection::begin`], which makes the pool roll it back if the
    /// session is dropped mid-transaction.
    pub fn driver(&mut self) -> &mut C::Connection {
        &mut self.connection
    }

    /// Maps a driver error, and marks the connection broken when the error says it is.
    fn fail(&mut self, error: DriverError, phase: Phase) -> Error {
        let error = match self.connection.with_connector(|c| c.url().clone()) {
            Some(url) => error.into_error(&url, phase),
            // The pool is gone (the manager was dropped): no URL to scrub with, so the
            // driver's text is not repeated.
            None => Error::other("database error after the connection's pool was dropped"),
        };
        if error.kind().evicts_connection() {
            // The connection was lost: its siblings are checked before their next use.
            self.connection.mark_lost();
        }
        error
    }

    /// The span of one statement, when a subscriber wants it.
    fn span(&self, sql: &str) -> Option<Span> {
        telemetry::statement_span(self.connection.endpoint()?, sql)
    }

    /// Records a statement in the pool's metrics and its span, and maps its error.
    fn finish<T>(
        &mut self,
        started: Instant,
        sql: &str,
        span: Option<&Span>,
        result: Result<T, DriverError>,
    ) -> Result<T> {
        let result = result.map_err(|e| self.fail(e, Phase::Statement));
        let error = result.as_ref().err();
        self.connection.record_statement(started.elapsed(), sql, error);
        if let Some(error) = error {
            telemetry::record_failure(span, error);
        }
        result
    }
}

impl<C: BackendConnector> Deref for Session<C> {
    type Target = C::Connection;

    fn deref(&self) -> &C::Connection {
        &self.connection
    }
}

impl<C: BackendConnector> DerefMut for Session<C> {
    fn deref_mut(&mut self) -> &mut C::Connection {
        &mut self.connection
    }
}

impl<C: BackendConnector> fmt::Debug for Session<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session").field("connection", &self.connection).finish()
    }
}

#[async_trait]
impl<C: BackendConnector> SqlExecutor for Session<C> {
    async fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64> {
        let span = self.span(sql);
        let started = Instant::now();
        let result = match &span {
            Some(span) => {
                C::execute(&mut self.connection, sql, params).instrument(span.clone()).await
            }
            None => C::execute(&mut self.connection, sql, params).await,
        };
        self.finish(started, sql, span.as_ref(), result)
    }

    async fn fetch_all(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>> {
        let span = self.span(sql);
        let started = Instant::now();
        let result = match &span {
            Some(span) => {
                C::fetch_all(&mut self.connection, sql, params).instrument(span.clone()).await
            }
            None => C::fetch_all(&mut self.connection, sql, params).await,
        };
        self.finish(started, sql, span.as_ref(), result)
    }
}

#[async_trait]
impl<C: BackendConnector> TransactionalConnection for Session<C> {
    async fn begin(&mut self, mode: ConnectionMode) -> Result<()> {
        // Marked first: if this future is dropped mid-BEGIN, the pool still rolls back.
        // The read-only setting was made for the session at checkout, so BEGIN inherits it.
        self.connection.mark_transaction_open();
        let span = self.span("BEGIN");
        let result = match &span {
            Some(span) => C::begin(&mut self.connection, mode).instrument(span.clone()).await,
            None => C::begin(&mut self.connection, mode).await,
        };
        result
            .map_err(|e| self.fail(e, Phase::Statement))
            .inspect_err(|e| telemetry::record_failure(span.as_ref(), e))
    }

    async fn commit(&mut self) -> Result<()> {
        let span = self.span("COMMIT");
        let result = match &span {
            Some(span) => C::commit(&mut self.connection).instrument(span.clone()).await,
            None => C::commit(&mut self.connection).await,
        };
        result
            .map_err(|e| self.fail(e, Phase::Commit))
            .inspect_err(|e| telemetry::record_failure(span.as_ref(), e))?;
        self.connection.mark_transaction_closed();
        Ok(())
    }

    async fn rollback(&mut self) -> Result<()> {
        let span = self.span("ROLLBACK");
        let result = match &span {
            Some(span) => C::rollback(&mut self.connection).instrument(span.clone()).await,
            None => C::rollback(&mut self.connection).await,
        };
        result
            .map_err(|e| self.fail(e, Phase::Statement))
            .inspect_err(|e| telemetry::record_failure(span.as_ref(), e))?;
        self.connection.mark_transaction_closed();
        Ok(())
    }
}
