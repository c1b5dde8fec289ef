//! `PooledSession<C>`: a pooled connection of any backend running the neutral SQL surface and explicit transactions, with metrics and eviction written once.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tracing::{Instrument, Span};

use super::BackendConnector;
use crate::connector::{DriverError, Phase};
use crate::error::{Error, Result};
use crate::mode::ConnectionMode;
use crate::pool::{PooledConnection, StatementExpiry};
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
pub struct PooledSession<C: BackendConnector> {
    connection: PooledConnection<C>,
}

impl<C: BackendConnector> PooledSession<C> {
    /// Wraps a pooled connection.
    pub fn new(connection: PooledConnection<C>) -> Self {
        Self { connection }
    }

    /// The pooled connection, for its state (`in_transaction`, `held_for`...).
    pub fn pooled(&self) -> &PooledConnection<C> {
        &self.connection
    }

    /// Runs `hook` when the connection is released (see [`PooledConnection::on_release`]).
    pub fn on_release(&mut self, hook: impl FnOnce() + Send + Sync + 'static) {
        self.connection.on_release(hook);
    }

    /// Records that a transaction opened through the driver's own API is (or may be) open:
    /// if the session is dropped before [`Self::mark_transaction_closed`], the pool rolls it
    /// back before reuse, and a connection lost under its statements is `ConnectionLost`
    /// (the server rolled it back), not `AmbiguousCommit`. Call it before sending `BEGIN`.
    pub fn mark_transaction_open(&mut self) {
        self.connection.mark_transaction_open();
    }

    /// Records that the transaction opened through the driver's own API ended.
    pub fn mark_transaction_closed(&mut self) {
        self.connection.mark_transaction_closed();
    }

    /// The driver's connection. A transaction opened on it with raw SQL is not tracked:
    /// prefer [`TransactionalConnection::begin`], which makes the pool roll it back if the
    /// session is dropped mid-transaction.
    pub fn driver(&mut self) -> &mut C::Connection {
        &mut self.connection
    }

    /// The span of one statement, when a subscriber wants it.
    fn span(&self, sql: &str) -> Option<Span> {
        telemetry::statement_span(self.connection.endpoint()?, sql)
    }

    /// How a lost connection under the next statement is to be read (see [`statement_phase`]).
    fn statement_phase(&self) -> Phase {
        statement_phase(&self.connection)
    }

    /// Settles one statement run by [`statement!`]: reads its outcome ([`read_outcome`]),
    /// feeds the breaker, evicts a lost connection, times the statement into the metrics
    /// when `measured` and records a failure on its span.
    #[allow(clippy::too_many_arguments)]
    fn settle<T>(
        &mut self,
        outcome: Option<Result<T, DriverError>>,
        sql: &str,
        phase: Phase,
        measured: bool,
        limit: Option<Duration>,
        started: Instant,
        span: Option<&Span>,
    ) -> Result<T> {
        let answered = outcome.is_some();
        let abandoned = !answered && self.connection.statement_abandoned();
        let Settled { result, lost } =
            read_outcome(&self.connection, outcome, phase, limit, abandoned);
        if lost {
            // The connection was lost: its siblings are checked before their next use, and
            // the endpoint's breaker counts the failure.
            self.connection.mark_lost();
        }
        if answered {
            self.connection.statement_finished(!lost);
        }
        self.connection.tell_writes(sql, phase == Phase::Commit);
        let error = result.as_ref().err();
        if measured {
            self.connection.record_statement(started.elapsed(), sql, error);
        }
        if let Some(error) = error {
            telemetry::record_failure(span, error);
        }
        result
    }

    /// Starts observing a statement the caller runs with the driver's own API (a sqlx
    /// executor, the diesel DSL) on this session's connection, so that it gets what ucm's
    /// own statements get: it is marked in flight (a dropped future then closes the
    /// connection), timed, given a span, and, once finished with
    /// [`Self::observe_finish`], fed to the breaker and the metrics, and read by its phase.
    /// `sql` may be unknown at the start (a driver that takes the text only when it runs);
    /// pass it to [`ObservedStatement::set_sql`] when it is known.
    ///
    /// Returns the statement and when the wait for its answer ends without one (the
    /// caller bounds the driver's call with [`StatementExpiry::bound`] and reports `None`
    /// to `observe_finish` when it ended).
    pub fn observe_start(&mut self) -> (ObservedStatement, StatementExpiry) {
        let phase = self.statement_phase();
        self.observe_start_in(phase)
    }

    /// [`Self::observe_start`] for the driver's `COMMIT`: a connection lost under it leaves
    /// the outcome unknown (`AmbiguousCommit`).
    pub fn observe_commit_start(&mut self) -> (ObservedStatement, StatementExpiry) {
        self.observe_start_in(Phase::Commit)
    }

    fn observe_start_in(&mut self, phase: Phase) -> (ObservedStatement, StatementExpiry) {
        let span = self.connection.endpoint().and_then(telemetry::driver_statement_span);
        let expiry = self.connection.statement_started();
        (ObservedStatement { span, started: Instant::now(), phase, sql: String::new() }, expiry)
    }

    /// Finishes a statement begun with [`Self::observe_start`]: `None` when the wait for
    /// its answer ended without one (its [`StatementExpiry`]), else the driver's outcome,
    /// its error read as a [`DriverError`]. Returns ucm's classification of the failure, if any (the caller keeps returning
    /// the driver's own error to its caller).
    pub fn observe_finish(
        &mut self,
        statement: ObservedStatement,
        outcome: Option<Result<(), DriverError>>,
    ) -> Option<Error> {
        let limit = self.connection.statement_timeout();
        let ObservedStatement { span, started, phase, sql } = statement;
        self.settle(outcome, &sql, phase, true, limit, started, span.as_ref()).err()
    }
}

/// How a lost connection under the next statement on `connection` is to be read: outside
/// a transaction on a session that may write, the statement is its own commit, and its
/// outcome is unknown (`AmbiguousCommit`); ucm does not parse SQL to tell a read from a
/// write, so only a read-only session's statements are known not to have applied anything.
pub(crate) fn statement_phase<C: BackendConnector>(connection: &PooledConnection<C>) -> Phase {
    if connection.in_transaction() || connection.read_only() == Some(true) {
        Phase::Statement
    } else {
        Phase::Autocommit
    }
}

/// One statement's outcome as ucm reports it, and whether its connection was lost.
pub(crate) struct Settled<T> {
    pub(crate) result: Result<T>,
    pub(crate) lost: bool,
}

/// Reads one statement's outcome on `connection`, the same way for a session and for the
/// pipelined lane: a driver error mapped with the endpoint (scrubbed), a server-side
/// cancellation or a passed client deadline (`None`) into `StatementTimeout`, and a wait
/// ended by the health loop (`abandoned`: the endpoint stopped answering) into a lost
/// connection, ambiguous when the statement may have committed.
pub(crate) fn read_outcome<C: BackendConnector, T>(
    connection: &PooledConnection<C>,
    outcome: Option<Result<T, DriverError>>,
    phase: Phase,
    limit: Option<Duration>,
    abandoned: bool,
) -> Settled<T> {
    let endpoint = || connection.endpoint().map_or_else(String::new, |e| e.pool.clone());
    match outcome {
        Some(Ok(value)) => Settled { result: Ok(value), lost: false },
        Some(Err(error)) => {
            let error = match connection.with_connector(|c| c.url().clone()) {
                Some(url) => error.into_error(&url, phase),
                // The pool is gone (the manager was dropped): no URL to scrub with, so the
                // driver's text is not repeated.
                None => Error::other("database error after the connection's pool was dropped"),
            };
            let lost = error.kind().evicts_connection();
            let error = match limit {
                Some(limit) if error.kind() == crate::ErrorKind::Timeout => {
                    Error::StatementTimeout {
                        endpoint: endpoint(),
                        limit,
                        server_cancelled: true,
                        outcome_unknown: false,
                    }
                }
                _ => error,
            };
            Settled { result: Err(error), lost }
        }
        None if abandoned => {
            // The health loop found the endpoint gone (two probes unanswered) while the
            // statement waited: nothing is coming back on this connection. A read is safe
            // to run again elsewhere; a write's outcome is unknown.
            let kind = if phase.commits() {
                crate::ErrorKind::AmbiguousCommit
            } else {
                crate::ErrorKind::ConnectionLost
            };
            let error = Error::database(
                kind,
                endpoint(),
                None,
                "the endpoint stopped answering (two health probes in a row got no answer), \
                 so the statement was abandoned without waiting out its deadline",
            );
            Settled { result: Err(error), lost: true }
        }
        // The server did not answer within the client's deadline, although it was told to
        // cancel the statement sooner: it is frozen or unreachable. The connection is lost.
        None => Settled {
            result: Err(Error::StatementTimeout {
                endpoint: endpoint(),
                limit: limit.unwrap_or_default(),
                server_cancelled: false,
                outcome_unknown: phase.commits(),
            }),
            lost: true,
        },
    }
}

/// A statement run through the driver's own API, observed by its [`PooledSession`].
#[derive(Debug)]
#[must_use = "finish it with PooledSession::observe_finish, or the connection is closed on return"]
pub struct ObservedStatement {
    span: Option<Span>,
    started: Instant,
    phase: Phase,
    sql: String,
}

impl ObservedStatement {
    /// Records the statement's text once the driver has taken it: names the span after
    /// it and files the metrics under its operation.
    pub fn set_sql(&mut self, sql: &str) {
        if let Some(span) = &self.span {
            telemetry::name_statement_span(span, sql);
        }
        sql.clone_into(&mut self.sql);
    }

    /// The statement's span, to instrument the driver's future or stream with; `None` when
    /// no subscriber wants it.
    pub fn span(&self) -> Option<&Span> {
        self.span.as_ref()
    }
}

/// Runs one driver call on `$session`'s connection (bound to `$c` in `$call`) as a
/// statement of `$phase`: marks it in flight (a dropped future then closes the connection),
/// bounds it by the client's statement deadline, instruments it with its span, and settles
/// it. A macro rather than a method so that the driver's future is awaited in place, with
/// no boxing per statement.
macro_rules! statement {
    ($session:ident, $sql:expr, $phase:expr, $measured:expr, |$c:ident| $call:expr) => {{
        let span = $session.span($sql);
        let limit = $session.connection.statement_timeout();
        let expiry = $session.connection.statement_started();
        let started = Instant::now();
        let outcome = {
            let $c: &mut C::Connection = &mut $session.connection;
            let call = $call;
            match &span {
                Some(span) => expiry.bound(call.instrument(span.clone())).await,
                None => expiry.bound(call).await,
            }
        };
        $session.settle(outcome, $sql, $phase, $measured, limit, started, span.as_ref())
    }};
}

impl<C: BackendConnector> Deref for PooledSession<C> {
    type Target = C::Connection;

    fn deref(&self) -> &C::Connection {
        &self.connection
    }
}

impl<C: BackendConnector> DerefMut for PooledSession<C> {
    fn deref_mut(&mut self) -> &mut C::Connection {
        &mut self.connection
    }
}

impl<C: BackendConnector> fmt::Debug for PooledSession<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PooledSession").field("connection", &self.connection).finish()
    }
}

impl<C: BackendConnector> PooledSession<C> {
    /// Behind a transaction pooler, opens the short transaction a statement run outside
    /// any transaction needs there (the driver's parse and bind round trips must reach the
    /// same server connection, and the mode and deadlines travel in its `BEGIN`); returns
    /// whether it opened one, to hand to [`Self::close_pooled_autocommit`]. Does nothing
    /// on a direct connection or inside a transaction.
    ///
    /// # Errors
    /// The `BEGIN`'s error.
    pub async fn open_pooled_autocommit(&mut self) -> Result<bool> {
        if self.connection.in_transaction() {
            return Ok(false);
        }
        let Some(begin) = self.connection.pooled_begin() else { return Ok(false) };
        self.connection.mark_transaction_open();
        statement!(self, "BEGIN", Phase::Statement, false, |c| C::begin_with(c, &begin))?;
        Ok(true)
    }

    /// Ends the transaction [`Self::open_pooled_autocommit`] opened (when `opened`):
    /// commits when the statement succeeded (`ok`), else rolls back. A connection lost
    /// under the statement is left to its pool, which closes it.
    ///
    /// # Errors
    /// The `COMMIT`'s error (an ambiguous commit when the connection is lost under it).
    pub async fn close_pooled_autocommit(&mut self, opened: bool, ok: bool) -> Result<()> {
        if !opened || self.connection.is_broken() {
            return Ok(());
        }
        if ok {
            statement!(self, "COMMIT", Phase::Commit, false, |c| C::commit(c))?;
        } else {
            statement!(self, "ROLLBACK", Phase::Statement, false, |c| C::rollback(c))?;
        }
        self.connection.mark_transaction_closed();
        Ok(())
    }

    /// Settles a statement run in [`Self::open_pooled_autocommit`]'s transaction.
    async fn pooled_outcome<T>(&mut self, opened: bool, result: Result<T>) -> Result<T> {
        let closed = self.close_pooled_autocommit(opened, result.is_ok()).await;
        let value = result?;
        closed.map(|()| value)
    }
}

#[async_trait]
impl<C: BackendConnector> SqlExecutor for PooledSession<C> {
    async fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64> {
        let opened = self.open_pooled_autocommit().await?;
        let phase = self.statement_phase();
        let result = statement!(self, sql, phase, true, |c| C::execute(c, sql, params));
        self.pooled_outcome(opened, result).await
    }

    async fn fetch_all(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>> {
        let opened = self.open_pooled_autocommit().await?;
        let phase = self.statement_phase();
        let result = statement!(self, sql, phase, true, |c| C::fetch_all(c, sql, params));
        self.pooled_outcome(opened, result).await
    }
}

#[async_trait]
impl<C: BackendConnector> TransactionalConnection for PooledSession<C> {
    async fn begin(&mut self, mode: ConnectionMode) -> Result<()> {
        // Marked first: if this future is dropped mid-BEGIN, the pool still rolls back.
        // The read-only setting was made for the session at checkout, so BEGIN inherits it;
        // behind a transaction pooler, the BEGIN carries it (and the deadlines).
        self.connection.mark_transaction_open();
        if let Some(begin) = self.connection.pooled_begin() {
            return statement!(self, "BEGIN", Phase::Statement, false, |c| C::begin_with(
                c, &begin
            ));
        }
        statement!(self, "BEGIN", Phase::Statement, false, |c| C::begin(c, mode))
    }

    async fn commit(&mut self) -> Result<()> {
        statement!(self, "COMMIT", Phase::Commit, false, |c| C::commit(c))?;
        self.connection.mark_transaction_closed();
        Ok(())
    }

    async fn rollback(&mut self) -> Result<()> {
        statement!(self, "ROLLBACK", Phase::Statement, false, |c| C::rollback(c))?;
        self.connection.mark_transaction_closed();
        Ok(())
    }
}
