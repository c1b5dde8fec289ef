//! `PooledConnection`: a checked-out connection that goes back to its pool on drop, rolled back first if a transaction is open.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, timeout};

use super::abandon::StatementExpiry;
use super::queue::Lent;
use crate::connector::Connector;
use crate::telemetry::metrics::CloseReason;

/// A connection checked out of a [`Pool`](super::Pool); derefs to the driver connection.
///
/// Dropping it returns the connection to its pool. A connection marked broken is closed
/// instead; one whose transaction is still open is first rolled back on a spawned task
/// (so drop never blocks and never leaks an open transaction into the next user), and
/// closed if the rollback fails or no tokio runtime is available to run it.
pub struct PooledConnection<C: Connector> {
    // The rest of the checkout's state is in the slot's `Lease`: every layer of a checkout
    // returns this guard by value, and at two words and an instant it moves in registers
    // where a larger guard was copied with `memcpy` at each layer.
    object: Option<Lent<C>>,
    checked_out: Instant,
}

impl<C: Connector> PooledConnection<C> {
    pub(crate) fn new(
        mut object: Lent<C>,
        checked_out: Instant,
        waited: std::time::Duration,
    ) -> Self {
        object.lease.waited = waited;
        object.lease.hold = object.leaks.as_ref().map(|leaks| leaks.register(checked_out));
        Self { object: Some(object), checked_out }
    }

    /// Runs `hook` when this checkout ends (the connection is returned to its pool or
    /// closed): a routing session's read-your-writes window counts from then, after the
    /// write committed, not from the checkout. Replaces an earlier hook, which then runs
    /// at once.
    pub fn on_release(&mut self, hook: impl FnOnce() + Send + Sync + 'static) {
        let Some(object) = self.object.as_mut() else { return };
        if let Some(earlier) = object.lease.on_release.replace(Box::new(hook)) {
            earlier();
        }
    }

    /// Records that one of ucm's statements is being sent: if the guard is dropped before
    /// [`Self::statement_finished`] (the statement's future was dropped), the connection
    /// may still be running it and is closed rather than pooled. Returns when the wait for
    /// its answer ends without one: the client's deadline, or the endpoint abandoned by the
    /// health loop (it stopped answering).
    pub fn statement_started(&mut self) -> StatementExpiry {
        match self.object.as_mut() {
            Some(object) => {
                object.in_statement = true;
                object.statement_generation = object.abandon.generation();
                StatementExpiry::new(
                    object.client_deadline,
                    Some((object.abandon.clone(), object.statement_generation)),
                )
            }
            None => StatementExpiry::never(),
        }
    }

    /// Records that the statement's reply arrived; when `round_trip_ok` (the server
    /// answered, even with an SQL error), the endpoint's breaker counts a success.
    pub fn statement_finished(&mut self, round_trip_ok: bool) {
        if let Some(object) = self.object.as_mut() {
            object.in_statement = false;
            if round_trip_ok && let Some(breaker) = &object.breaker {
                breaker.record_success();
            }
        }
    }

    /// For a statement sharing this connection with others (the pipelined lane): when its
    /// wait ends without an answer, and the abandonment count to pass to
    /// [`Self::abandoned_since`]. Unlike [`Self::statement_started`], the connection is not
    /// marked in a statement: a dropped pipelined statement leaves the driver consistent
    /// (its reply is read and discarded).
    pub(crate) fn shared_statement_expiry(&self) -> (StatementExpiry, u64) {
        match self.object.as_ref() {
            Some(object) => {
                let generation = object.abandon.generation();
                (
                    StatementExpiry::new(
                        object.client_deadline,
                        Some((object.abandon.clone(), generation)),
                    ),
                    generation,
                )
            }
            None => (StatementExpiry::never(), 0),
        }
    }

    /// Whether the endpoint was abandoned since the count [`Self::shared_statement_expiry`]
    /// gave.
    pub(crate) fn abandoned_since(&self, generation: u64) -> bool {
        self.object.as_ref().is_some_and(|object| object.abandon.generation() != generation)
    }

    /// Settles a shared statement: a reply (`round_trip_ok`) counts as a success for the
    /// endpoint's breaker, and the statement goes into the pool's metrics.
    pub(crate) fn record_shared_statement(
        &self,
        round_trip_ok: bool,
        took: Duration,
        sql: &str,
        error: Option<&crate::Error>,
    ) {
        if let Some(object) = self.object.as_ref() {
            if round_trip_ok && let Some(breaker) = &object.breaker {
                breaker.record_success();
            }
            object.metrics.record_statement(took, Duration::ZERO, sql, error);
            if !object.writes.is_empty() {
                object.writes.notify(&crate::writes::written_tables(sql));
            }
        }
    }

    /// The mode's statement timeout, enforced by the server (the client's own deadline, a
    /// little longer, comes with [`Self::statement_started`]); `None` when the mode sets
    /// no limit.
    pub fn statement_timeout(&self) -> Option<Duration> {
        self.object.as_ref().and_then(|object| object.statement_timeout)
    }

    /// Behind a transaction pooler, the statement that opens a transaction on this
    /// connection in its current mode (`BEGIN [READ ONLY]; SET LOCAL ...`); `None` for a
    /// direct connection, whose session keeps its settings.
    pub fn pooled_begin(&self) -> Option<Arc<str>> {
        let object = self.object.as_ref()?;
        let begin = object.pooled_begin.as_ref()?;
        Some(if object.read_only == Some(true) {
            Arc::clone(&begin.read_only)
        } else {
            Arc::clone(&begin.read_write)
        })
    }

    /// Whether the endpoint was abandoned (it stopped answering the health loop's probes)
    /// since the last statement started: a statement whose wait ended without an answer
    /// was cut short by that, not by its deadline.
    pub fn statement_abandoned(&self) -> bool {
        self.object
            .as_ref()
            .is_some_and(|object| object.abandon.generation() != object.statement_generation)
    }

    /// Records that a transaction is (or may be) open on this connection: if the guard is
    /// dropped before [`Self::mark_transaction_closed`], the pool rolls it back before reuse.
    /// Call it *before* sending `BEGIN`, so that a future dropped mid-`BEGIN` is covered.
    pub fn mark_transaction_open(&mut self) {
        if let Some(object) = self.object.as_mut() {
            object.in_transaction = true;
        }
    }

    /// Records that the transaction ended (committed or rolled back).
    pub fn mark_transaction_closed(&mut self) {
        if let Some(object) = self.object.as_mut() {
            object.in_transaction = false;
            object.lease.written.clear();
        }
    }

    /// Tells the pool's write listeners what a finished statement wrote: the tables `sql`
    /// writes, at once (and, inside a transaction, kept for its `COMMIT`); for a `COMMIT`
    /// (`commit`), every table its transaction wrote. Whatever the outcome: a write whose
    /// reply was lost may have been applied, and telling too much costs a listener only a
    /// copy. One atomic load while nobody listens.
    pub(crate) fn tell_writes(&mut self, sql: &str, commit: bool) {
        let Some(object) = self.object.as_mut() else { return };
        if object.writes.is_empty() {
            return;
        }
        if commit {
            let written = std::mem::take(&mut object.lease.written);
            object.writes.notify(&written);
            return;
        }
        let tables = crate::writes::written_tables(sql);
        if tables.is_empty() {
            return;
        }
        object.writes.notify(&tables);
        if object.in_transaction {
            for table in tables {
                if !object.lease.written.contains(&table) {
                    object.lease.written.push(table);
                }
            }
        }
    }

    /// Whether a transaction is marked open.
    pub fn in_transaction(&self) -> bool {
        self.object.as_ref().is_some_and(|object| object.in_transaction)
    }

    /// Marks the connection unusable (a fatal error was seen on it): it is closed on drop
    /// instead of returning to the pool.
    pub fn mark_broken(&mut self) {
        if let Some(object) = self.object.as_mut() {
            object.broken = true;
        }
    }

    /// Marks the connection broken because it was lost (the server closed it, or stopped
    /// answering): the other idle connections of its pool were likely lost with it, so
    /// each is pinged before its next use, whatever its idle time.
    pub fn mark_lost(&mut self) {
        self.mark_broken();
        if let Some(object) = self.object.as_ref() {
            // A lost connection says the endpoint may be unwell, as a failed connect does.
            if let Some(breaker) = &object.breaker {
                breaker.record_connection_lost();
            }
            Lent::manager(object).suspect_idle_connections();
        }
    }

    /// The session's read-only setting as the pool last set it (`None`: unknown).
    pub(crate) fn read_only(&self) -> Option<bool> {
        self.object.as_ref().and_then(|object| object.read_only)
    }

    pub(crate) fn set_read_only_state(&mut self, state: Option<bool>) {
        if let Some(object) = self.object.as_mut() {
            object.read_only = state;
        }
    }

    /// Whether the connection is marked broken.
    pub fn is_broken(&self) -> bool {
        self.object.as_ref().is_none_or(|object| object.broken)
    }

    /// Runs `f` with the pool's connector (`None` only after drop).
    pub fn with_connector<R>(&self, f: impl FnOnce(&C) -> R) -> Option<R> {
        Some(f(&Lent::manager(self.object.as_ref()?).connector))
    }

    /// Records one statement run on this connection (its duration and error) in the pool's
    /// metrics (`db.client.operation.duration`, and the SLA count, which for the first
    /// statement of a checkout includes the wait for the connection).
    pub fn record_statement(
        &mut self,
        took: std::time::Duration,
        sql: &str,
        error: Option<&crate::Error>,
    ) {
        if let Some(object) = self.object.as_mut() {
            let waited = std::mem::take(&mut object.lease.waited);
            object.metrics.record_statement(took, waited, sql, error);
        }
    }

    /// Who the connection talks to, as telemetry names it (`None` only after drop).
    pub fn endpoint(&self) -> Option<&crate::telemetry::EndpointAttributes> {
        self.object.as_ref().map(|object| object.metrics.endpoint())
    }

    /// How long this connection has been checked out.
    pub fn held_for(&self) -> std::time::Duration {
        self.checked_out.elapsed()
    }
}

impl<C: Connector> Deref for PooledConnection<C> {
    type Target = C::Connection;

    fn deref(&self) -> &C::Connection {
        // The option is only emptied in `drop`, so it is always full here.
        match self.object.as_ref() {
            Some(object) => &object.connection,
            None => unreachable_connection(),
        }
    }
}

impl<C: Connector> DerefMut for PooledConnection<C> {
    fn deref_mut(&mut self) -> &mut C::Connection {
        match self.object.as_mut() {
            Some(object) => &mut object.connection,
            None => unreachable_connection(),
        }
    }
}

#[allow(clippy::panic)] // Unreachable: the guard empties its option only while being dropped.
fn unreachable_connection() -> ! {
    panic!("ucm: PooledConnection used after drop")
}

impl<C: Connector> fmt::Debug for PooledConnection<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PooledConnection")
            .field("in_transaction", &self.in_transaction())
            .field("broken", &self.is_broken())
            .field("held_for", &self.held_for())
            .finish_non_exhaustive()
    }
}

impl<C: Connector> Drop for PooledConnection<C> {
    fn drop(&mut self) {
        let Some(mut object) = self.object.take() else { return };
        if let Some(hook) = object.lease.on_release.take() {
            hook();
        }
        let now = Instant::now();
        object.metrics.record_use(now.duration_since(self.checked_out));
        object.returned = now;
        if let Some(hold) = object.lease.hold.take()
            && let Some(leaks) = &object.leaks
        {
            leaks.release(hold);
        }
        object.lease.written.clear();
        if object.in_statement {
            // A statement's future was dropped mid-flight: the server may still be running
            // it (and commit it), and the driver may still expect its reply. Nobody else may
            // wait on it or inherit its effects: close it (the server then ends the session).
            object.metrics.record_close(CloseReason::Broken);
            tracing::debug!("closing a connection whose statement was cancelled mid-flight");
            drop(Lent::take(object));
            return;
        }
        if object.broken {
            object.metrics.record_close(CloseReason::Broken);
            drop(Lent::take(object));
            return;
        }
        if !object.in_transaction {
            return; // Dropping the object returns it to the pool.
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(reset_then_return(object));
            }
            Err(_) => {
                object.metrics.record_close(CloseReason::ResetFailed);
                tracing::warn!(
                    "closing a connection returned mid-transaction outside a tokio runtime"
                );
                drop(Lent::take(object));
            }
        }
    }
}

/// Rolls back the transaction left open on `object`, then returns it to the pool; closes it
/// if the rollback fails or takes longer than the connect timeout.
async fn reset_then_return<C: Connector>(mut object: Lent<C>) {
    let queue = Lent::queue(&object);
    let manager = queue.manager();
    let slot = &mut *object;
    match timeout(manager.config.connect_timeout(), manager.connector.reset(&mut slot.connection))
        .await
    {
        Ok(Ok(())) => {
            slot.in_transaction = false;
            slot.returned = Instant::now();
            manager.metrics.record_reset();
        }
        Ok(Err(e)) => {
            manager.metrics.record_close(CloseReason::ResetFailed);
            tracing::warn!(pool = %manager.label, "closing a connection whose rollback failed: {e}");
            drop(Lent::take(object));
        }
        Err(_) => {
            manager.metrics.record_close(CloseReason::ResetFailed);
            tracing::warn!(pool = %manager.label, "closing a connection whose rollback timed out");
            drop(Lent::take(object));
        }
    }
}
