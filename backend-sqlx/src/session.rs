//! `SqlxSession<D>`: a pooled sqlx connection running the neutral SQL surface and explicit transactions, for any dialect.

use std::time::Instant;

use async_trait::async_trait;
use sqlx::Database;
use ucm_core::pool::PooledConnection;
use ucm_core::{ConnectionMode, Error, Result, Row, SqlExecutor, TransactionalConnection, Value};

use crate::connector::SqlxConnector;
use crate::convert::NeutralValues;
use crate::error::{Phase, map_error};

/// A checked-out sqlx connection. Runs neutral SQL through [`SqlExecutor`], explicit
/// transactions through [`TransactionalConnection`], and hands out the driver connection
/// for sqlx's own API with [`SqlxSession::as_sqlx`]. Returns to its pool on drop.
pub struct SqlxSession<D: NeutralValues> {
    connection: PooledConnection<SqlxConnector<D>>,
}

impl<D: NeutralValues> SqlxSession<D> {
    pub(crate) fn new(connection: PooledConnection<SqlxConnector<D>>) -> Self {
        Self { connection }
    }

    /// The sqlx connection, for sqlx's own executors and types. A transaction opened here
    /// with raw SQL is not tracked: prefer [`TransactionalConnection::begin`], which makes
    /// the pool roll it back if the session is dropped mid-transaction.
    pub fn as_sqlx(&mut self) -> &mut <D::Db as Database>::Connection {
        &mut self.connection
    }

    /// The pooled connection, for its state (`in_transaction`, `held_for`...).
    pub fn pooled(&self) -> &PooledConnection<SqlxConnector<D>> {
        &self.connection
    }

    /// Records the statement in the pool's metrics and maps its error.
    fn finish<T>(&mut self, started: Instant, result: Result<T, sqlx::Error>) -> Result<T> {
        let result = result.map_err(|e| self.fail(e, Phase::Statement));
        self.connection.record_operation(started.elapsed(), result.as_ref().err().map(Error::kind));
        result
    }

    /// Maps a driver error, and marks the connection broken when the error says it is, so
    /// the pool closes it instead of handing it to someone else.
    fn fail(&mut self, error: sqlx::Error, phase: Phase) -> Error {
        let error = match self.connection.with_connector(|c| std::sync::Arc::clone(c.url())) {
            Some(url) => map_error(error, &url, phase, D::classify),
            // The pool is gone (the manager was dropped): no URL to scrub with, so the
            // driver's text is not repeated.
            None => Error::other(format!("{} error after the pool was dropped", D::SYSTEM)),
        };
        if error.kind().evicts_connection() {
            self.connection.mark_broken();
        }
        error
    }
}

impl<D: NeutralValues> std::fmt::Debug for SqlxSession<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlxSession")
            .field("system", &D::SYSTEM)
            .field("connection", &self.connection)
            .finish()
    }
}

#[async_trait]
impl<D: NeutralValues> SqlExecutor for SqlxSession<D> {
    async fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64> {
        let started = Instant::now();
        let result = D::execute(&mut self.connection, sql, params).await;
        self.finish(started, result)
    }

    async fn fetch_all(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>> {
        let started = Instant::now();
        let result = D::fetch_all(&mut self.connection, sql, params).await;
        self.finish(started, result)
    }
}

#[async_trait]
impl<D: NeutralValues> TransactionalConnection for SqlxSession<D> {
    async fn begin(&mut self, mode: ConnectionMode) -> Result<()> {
        // Marked first: if this future is dropped mid-BEGIN, the pool still rolls back.
        // The read-only setting was made for the session at checkout, so BEGIN inherits it.
        self.connection.mark_transaction_open();
        match D::raw(&mut self.connection, D::begin_sql(mode)).await {
            Ok(_) => Ok(()),
            Err(e) => Err(self.fail(e, Phase::Statement)),
        }
    }

    async fn commit(&mut self) -> Result<()> {
        match D::raw(&mut self.connection, "COMMIT").await {
            Ok(_) => {
                self.connection.mark_transaction_closed();
                Ok(())
            }
            Err(e) => Err(self.fail(e, Phase::Commit)),
        }
    }

    async fn rollback(&mut self) -> Result<()> {
        match D::raw(&mut self.connection, "ROLLBACK").await {
            Ok(_) => {
                self.connection.mark_transaction_closed();
                Ok(())
            }
            Err(e) if D::rollback_error_is_benign(&e) => {
                self.connection.mark_transaction_closed();
                Ok(())
            }
            Err(e) => Err(self.fail(e, Phase::Statement)),
        }
    }
}
