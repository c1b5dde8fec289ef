//! The pipelined lane: autocommit statements from many tasks share a few connections per mode, each sent without waiting for the replies before it, with the pooled path's routing, breaker, deadlines, metrics and errors.
//!
//! A lane holds, per [`ConnectionMode`], up to `width` connections checked out of the
//! topology exactly as a caller's would be (routed for the mode, read-only at the database
//! for `ReadOnly`, behind the endpoint's breaker), with the driver's connection taken out
//! for sharing ([`BackendConnector::share`]). A statement goes to the connection with the
//! fewest statements in flight; another connection is opened only when every one is busy
//! and the lane is not full. Each shared connection is routed again after
//! `REROUTE_INTERVAL` (1 s) (given back to its pool and checked out anew), so bans,
//! recoveries and failovers reach the lane within that time; a lost connection, a passed
//! client deadline or an endpoint the health loop abandoned retires it at once, and the
//! statements in flight on it fail as the pooled path's would (a read as a lost
//! connection, a statement that may have written as an ambiguous commit).
//!
//! Never inside a transaction: the lane only runs single statements. Where the driver
//! cannot pipeline (sqlx, diesel's MySQL and SQLite) or a transaction pooler is in between
//! (its statements need their own transaction), the lane runs each statement on a pooled
//! connection instead, as the manager's ordinary path does.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tracing::Instrument;

use super::PooledSession;
use super::session::{Settled, read_outcome, statement_phase};
use crate::connector::BackendConnector;
use crate::error::{Error, Result};
use crate::mode::ConnectionMode;
use crate::pool::PooledConnection;
use crate::protocol::SqlExecutor;
use crate::telemetry;
use crate::topology::Topology;
use crate::value::{Row, Value};

/// How long a shared connection serves before it is routed again.
pub(crate) const REROUTE_INTERVAL: Duration = Duration::from_secs(1);

/// Shared connections per mode when a call asks for the lane on a manager that was not
/// given a width ([`Manager::with_pipelining`](super::Manager::with_pipelining)).
pub(crate) const DEFAULT_PIPELINE_WIDTH: usize = 2;

/// The lanes of one database's topology, one per connection mode.
pub(crate) struct Pipeline<C: BackendConnector> {
    lanes: [Lane<C>; 4],
    /// Set once a checkout could not be shared (the driver cannot pipeline, or a
    /// transaction pooler is in between): later statements go straight to the pool.
    unshareable: AtomicBool,
}

/// The shared connections of one mode.
struct Lane<C: BackendConnector> {
    slots: Mutex<Vec<Arc<Slot<C>>>>,
    /// One connection opened at a time.
    opening: tokio::sync::Mutex<()>,
}

/// One shared connection: the pooled connection (checked out while shared, for its
/// bookkeeping) and the driver's connection taken out of it.
pub(crate) struct Slot<C: BackendConnector> {
    connection: Mutex<PooledConnection<C>>,
    shared: Option<C::Shared>,
    in_flight: AtomicUsize,
    opened: Instant,
    /// The topology's failover count when the connection was checked out.
    failovers: u64,
    retired: AtomicBool,
}

/// Where one statement of the lane runs.
pub(crate) enum Lease<C: BackendConnector> {
    /// On a shared connection, pipelined with other tasks' statements.
    Shared(Arc<Slot<C>>),
    /// On a connection of its own (the driver cannot pipeline).
    Pooled(PooledSession<C>),
}

impl<C: BackendConnector> Pipeline<C> {
    pub(crate) fn new() -> Self {
        Self { lanes: std::array::from_fn(|_| Lane::new()), unshareable: AtomicBool::new(false) }
    }

    /// Where the next statement for `mode` runs: a shared connection of the mode's lane
    /// (opening one when all are busy and there are fewer than `width`), or, where sharing
    /// is impossible, a pooled connection.
    ///
    /// # Errors
    /// The checkout's error (`CircuitOpen`, `PoolExhausted`, `ConnectFailed`, `Closed`).
    pub(crate) async fn lease(
        &self,
        topology: &Topology<C>,
        mode: ConnectionMode,
        width: usize,
    ) -> Result<Lease<C>> {
        if self.unshareable.load(Ordering::Relaxed) {
            return Ok(Lease::Pooled(PooledSession::new(topology.acquire(mode).await?)));
        }
        let lane = &self.lanes[mode_index(mode)];
        let failovers = topology.failovers();
        let guard = match lane.pick(width.max(1), failovers) {
            Pick::Use(slot) => return Ok(Lease::Shared(slot)),
            Pick::MayOpen(slot) => match lane.opening.try_lock() {
                Ok(guard) => guard,
                // Another task is opening one: share a busy connection meanwhile.
                Err(_) => return Ok(Lease::Shared(slot)),
            },
            Pick::None => {
                let guard = lane.opening.lock().await;
                if let Pick::Use(slot) | Pick::MayOpen(slot) = lane.pick(width.max(1), failovers) {
                    return Ok(Lease::Shared(slot));
                }
                guard
            }
        };
        let mut connection = topology.acquire(mode).await?;
        let shared = match connection.pooled_begin() {
            Some(_) => None,
            None => C::share(&mut connection),
        };
        let Some(shared) = shared else {
            self.unshareable.store(true, Ordering::Relaxed);
            return Ok(Lease::Pooled(PooledSession::new(connection)));
        };
        let slot = Arc::new(Slot {
            connection: Mutex::new(connection),
            shared: Some(shared),
            in_flight: AtomicUsize::new(0),
            opened: Instant::now(),
            failovers,
            retired: AtomicBool::new(false),
        });
        lock(&lane.slots).push(Arc::clone(&slot));
        drop(guard);
        Ok(Lease::Shared(slot))
    }

    /// Gives every shared connection back to its pool once its statements in flight end
    /// (before a drain, which waits for checked-out connections).
    pub(crate) fn clear(&self) {
        for lane in &self.lanes {
            for slot in lock(&lane.slots).drain(..) {
                slot.retired.store(true, Ordering::Relaxed);
            }
        }
    }

    /// Shared connections open now, over every mode.
    pub(crate) fn shared_connections(&self) -> usize {
        self.lanes.iter().map(|lane| lock(&lane.slots).len()).sum()
    }

    /// Retires `slot` from its lane: no new statement goes to it, and its connection goes
    /// back to its pool (closed, when lost) once the statements in flight end.
    fn retire(&self, slot: &Arc<Slot<C>>) {
        slot.retired.store(true, Ordering::Relaxed);
        for lane in &self.lanes {
            lock(&lane.slots).retain(|s| !Arc::ptr_eq(s, slot));
        }
    }
}

/// What a lane offers the next statement.
enum Pick<C: BackendConnector> {
    /// This connection: idle, or the lane is full.
    Use(Arc<Slot<C>>),
    /// The least busy connection, all busy, and the lane has room for another.
    MayOpen(Arc<Slot<C>>),
    /// No connection yet.
    None,
}

impl<C: BackendConnector> Lane<C> {
    fn new() -> Self {
        Self { slots: Mutex::new(Vec::new()), opening: tokio::sync::Mutex::new(()) }
    }

    /// Drops the connections that are due for routing again, then offers the least busy.
    fn pick(&self, width: usize, failovers: u64) -> Pick<C> {
        let mut slots = lock(&self.slots);
        slots.retain(|slot| {
            let current = !slot.retired.load(Ordering::Relaxed)
                && slot.failovers == failovers
                && slot.opened.elapsed() < REROUTE_INTERVAL;
            if !current {
                slot.retired.store(true, Ordering::Relaxed);
            }
            current
        });
        let Some(best) = slots.iter().min_by_key(|slot| slot.in_flight.load(Ordering::Relaxed))
        else {
            return Pick::None;
        };
        if slots.len() >= width || best.in_flight.load(Ordering::Relaxed) == 0 {
            Pick::Use(Arc::clone(best))
        } else {
            Pick::MayOpen(Arc::clone(best))
        }
    }
}

impl<C: BackendConnector> Drop for Slot<C> {
    fn drop(&mut self) {
        // The driver's connection goes back into the pooled one, which then returns to its
        // pool (or is closed, when it was lost) as the slot's fields drop.
        if let Some(shared) = self.shared.take() {
            let connection = self.connection.get_mut().unwrap_or_else(PoisonError::into_inner);
            C::unshare(connection, shared);
        }
    }
}

/// Runs one driver call (`$call`, with `$shared` bound to the shared connection) on
/// `$slot` of `$pipeline`: bounded by the mode's client deadline and the endpoint's
/// abandonment, instrumented with its span, settled as a session settles its statements.
/// A macro so that the driver's future is awaited in place, unboxed.
macro_rules! shared_statement {
    ($pipeline:expr, $slot:expr, $sql:expr, |$shared:ident| $call:expr) => {{
        let slot: &Arc<Slot<C>> = $slot;
        let (expiry, generation, phase, limit, span) = {
            let connection = lock(&slot.connection);
            let (expiry, generation) = connection.shared_statement_expiry();
            let span = connection.endpoint().and_then(|e| telemetry::statement_span(e, $sql));
            (expiry, generation, statement_phase(&connection), connection.statement_timeout(), span)
        };
        let Some($shared) = slot.shared.as_ref() else {
            return Err(Error::other("the pipelined connection was already given back"));
        };
        let in_flight = crate::counted::Counted::enter(&slot.in_flight);
        let started = Instant::now();
        let call = $call;
        let outcome = match &span {
            Some(span) => expiry.bound(call.instrument(span.clone())).await,
            None => expiry.bound(call).await,
        };
        drop(in_flight);
        let mut connection = lock(&slot.connection);
        let answered = outcome.is_some();
        let abandoned = !answered && connection.abandoned_since(generation);
        let Settled { result, lost } = read_outcome(&connection, outcome, phase, limit, abandoned);
        let error = result.as_ref().err();
        connection.record_shared_statement(answered && !lost, started.elapsed(), $sql, error);
        if let Some(error) = error {
            telemetry::record_failure(span.as_ref(), error);
        }
        if lost {
            connection.mark_lost();
            drop(connection);
            $pipeline.retire(slot);
        }
        result
    }};
}

impl<C: BackendConnector> Lease<C> {
    /// Runs a statement; returns the rows affected.
    pub(crate) async fn execute(
        self,
        pipeline: &Pipeline<C>,
        sql: &str,
        params: &[Value],
    ) -> Result<u64> {
        match self {
            Self::Shared(slot) => {
                shared_statement!(pipeline, &slot, sql, |shared| C::execute_shared(
                    shared, sql, params
                ))
            }
            Self::Pooled(mut session) => session.execute(sql, params).await,
        }
    }

    /// Runs a query; returns every row.
    pub(crate) async fn fetch_all(
        self,
        pipeline: &Pipeline<C>,
        sql: &str,
        params: &[Value],
    ) -> Result<Vec<Row>> {
        match self {
            Self::Shared(slot) => {
                shared_statement!(pipeline, &slot, sql, |shared| C::fetch_all_shared(
                    shared, sql, params
                ))
            }
            Self::Pooled(mut session) => session.fetch_all(sql, params).await,
        }
    }
}

impl<C: BackendConnector> std::fmt::Debug for Pipeline<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("shared_connections", &self.shared_connections())
            .field("unshareable", &self.unshareable.load(Ordering::Relaxed))
            .finish()
    }
}

fn mode_index(mode: ConnectionMode) -> usize {
    match mode {
        ConnectionMode::ReadOnly => 0,
        ConnectionMode::ReadWrite => 1,
        ConnectionMode::Batch => 2,
        ConnectionMode::Transactional => 3,
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
