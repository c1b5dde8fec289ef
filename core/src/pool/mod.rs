//! The one pool every backend uses: its slot queue (`queue.rs`) with prefill, overflow reaping, jittered lifetimes, idle validation, bounded waits and the breaker.
//!
//! A backend supplies a [`Connector`]; [`Pool`] does the rest:
//! - **Sizing**: `min_idle` connections (the pool size unless set lower; `0` for a lazy
//!   pool) are opened by [`Pool::prefill`] and kept; up to `pool_size + max_overflow` are
//!   opened under load, and those beyond `min_idle` are closed by a background reaper once
//!   idle for `overflow_idle_timeout` (SQLAlchemy's pool + overflow). Connections are
//!   reused last-in first-out, so the hot ones stay hot and the surplus goes idle.
//! - **Hygiene**: each connection lives at most `max_lifetime` minus a random jitter; one
//!   idle for longer than `validate_after_idle` is pinged before use, and a failed ping
//!   discards it and tries the next; one returned mid-transaction is rolled back before
//!   reuse; one marked broken is closed.
//! - **Bounded waits**: waiting for a slot is bounded by `acquire_timeout`, opening by
//!   `connect_timeout`, each ping by `validation_timeout`. Nothing waits forever.
//! - **Cancel safety**: dropping an [`Pool::acquire`] future at any point leaks nothing:
//!   the slot permit, a half-open breaker probe and a half-made connection are all released.
//! - **Circuit breaker** (optional, per pool = per endpoint): consulted before waiting,
//!   fed by the outcome; pool exhaustion never trips it.

mod abandon;
mod checkout;
mod guard;
mod leaks;
mod queue;
mod reaper;
mod sizing;
#[cfg(test)]
mod sizing_tests;
mod slots;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

pub use abandon::StatementExpiry;
pub use guard::PooledConnection;
pub use leaks::LongHold;

use crate::circuit_breaker::{CircuitBreaker, CircuitBreakerConfig};
use crate::config::PoolConfiguration;
use crate::connector::Connector;
use crate::error::{Error, Result};
use crate::mode::ConnectionMode;
use crate::telemetry::EndpointAttributes;
use crate::telemetry::metrics::{CloseReason, PoolMetrics, PoolStatus};
use slots::SlotManager;

/// A pool of connections to one endpoint. Cheap to clone; clones share the pool.
pub struct Pool<C: Connector> {
    inner: Arc<Inner<C>>,
}

pub(crate) struct Inner<C: Connector> {
    pool: queue::Queue<C>,
    label: Arc<str>,
    config: PoolConfiguration,
    metrics: Arc<PoolMetrics>,
    breaker: Option<Arc<CircuitBreaker>>,
    /// The sizes now, and whether the pool is suspended.
    sizes: sizing::Sizes,
    reaper: Mutex<Option<JoinHandle<()>>>,
    /// The `db.client.connection.*` instruments reading this pool's status.
    #[cfg(feature = "otel")]
    observed: std::sync::OnceLock<crate::telemetry::otel::Observed>,
}

impl<C: Connector> Inner<C> {
    fn status(&self) -> PoolStatus {
        let status = self.pool.status();
        PoolStatus {
            size: status.size,
            idle: status.idle,
            in_use: status.size.saturating_sub(status.idle),
            waiting: status.waiting,
            pool_size: self.sizes.pool_size(),
            max_size: self.sizes.max_size(),
        }
    }
}

impl<C: Connector> Pool<C> {
    /// Builds a pool for the endpoint labelled `label` (a redacted `host:port/db`, used in
    /// errors, logs and as the metrics pool name). Opens no connection: call
    /// [`Self::prefill`] to open the pool size up front. With `breaker` set, that circuit
    /// breaker guards every acquire.
    ///
    /// Must be called inside a tokio runtime: the reaper runs on it.
    ///
    /// # Errors
    /// `Configuration` when called outside a tokio runtime or when `breaker` is invalid.
    pub fn new(
        label: impl Into<String>,
        connector: C,
        config: PoolConfiguration,
        breaker: Option<CircuitBreakerConfig>,
    ) -> Result<Self> {
        Self::for_endpoint(EndpointAttributes::unnamed(&label.into()), connector, config, breaker)
    }

    /// [`Self::new`] for a pool whose telemetry names `endpoint` (database system, name,
    /// address, port); its label is `endpoint.pool`.
    ///
    /// # Errors
    /// As [`Self::new`].
    pub fn for_endpoint(
        endpoint: EndpointAttributes,
        connector: C,
        config: PoolConfiguration,
        breaker: Option<CircuitBreakerConfig>,
    ) -> Result<Self> {
        let label: Arc<str> = Arc::from(endpoint.pool.as_str());
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            Error::config(
                "runtime",
                "ucm pools run on tokio: create the pool inside a tokio runtime (#[tokio::main] or Runtime::block_on)",
            )
        })?;
        let breaker = match breaker {
            Some(breaker_config) => {
                breaker_config.validate()?;
                Some(Arc::new(CircuitBreaker::new(label.to_string(), breaker_config)))
            }
            None => None,
        };
        let metrics = Arc::new(PoolMetrics::new(endpoint).with_sla_target(config.sla_target()));
        let manager = SlotManager::new(
            connector,
            config.clone(),
            Arc::clone(&metrics),
            breaker.clone(),
            Arc::clone(&label),
        );
        // Connect and validation timeouts are applied inside the manager, where the
        // failure can be classified; `acquire` bounds the whole checkout.
        let pool = queue::Queue::new(manager, config.max_size());
        // The reaper also reports long holds, so it looks often enough for the leak threshold.
        let period = reaper::reaper_period(
            config
                .leak_detection_threshold()
                .map_or(config.overflow_idle_timeout(), |t| t.min(config.overflow_idle_timeout())),
        );
        let inner = Arc::new(Inner {
            pool,
            label,
            sizes: sizing::Sizes::new(&config),
            config,
            metrics,
            breaker,
            reaper: Mutex::new(None),
            #[cfg(feature = "otel")]
            observed: std::sync::OnceLock::new(),
        });
        #[cfg(feature = "otel")]
        {
            let observed = crate::telemetry::otel::observe(
                inner.metrics.endpoint(),
                Arc::downgrade(&inner),
                Inner::<C>::status,
            );
            let _ = inner.observed.set(observed);
        }
        let weak = Arc::downgrade(&inner);
        let task = crate::background::spawn(
            &runtime,
            {
                let weak = weak.clone();
                move || reaper::run(weak.clone(), period)
            },
            move || weak.upgrade().is_some_and(|inner| !inner.pool.is_closed()),
        );
        if let Ok(mut slot) = inner.reaper.lock() {
            *slot = Some(task);
        }
        Ok(Self { inner })
    }

    /// Checks out a connection: consults the breaker, waits for a slot, reuses the most
    /// recently returned idle connection (pinging it first if it has been idle past the
    /// threshold, discarding it and trying the next if the ping fails) or opens a new one.
    /// The acquire timeout bounds all of it, pings and connects included.
    ///
    /// Cancel-safe: dropping the future at any await point releases everything it held.
    ///
    /// # Errors
    /// - `CircuitOpen` when the endpoint's breaker is open (no wait, no I/O);
    /// - `PoolExhausted` with in-use, max, waiting and waited when no slot came free;
    /// - `ConnectFailed` when a new connection could not be opened, or opening or
    ///   validating one did not finish within the acquire timeout;
    /// - `Closed` after [`Self::close`].
    pub async fn acquire(&self) -> Result<PooledConnection<C>> {
        self.checkout(true).await
    }

    /// The checkout of [`Self::acquire`]; without `wait`, a full pool answers
    /// `PoolExhausted` at once instead of queueing for a slot (opening a connection or
    /// pinging an idle one still happen, bounded by the acquire timeout).
    async fn checkout(&self, wait: bool) -> Result<PooledConnection<C>> {
        // The clock is read by the checkout's polls (see `checkout::with_deadline`), not
        // here: taking an idle connection at once then costs one reading in all.
        let mut started = None;
        if self.inner.sizes.is_suspended() {
            // Boxed: rare, and it would otherwise grow every checkout's future.
            let now = Instant::now();
            let give_up = now + self.inner.config.acquire_timeout();
            Box::pin(self.wait_resumed(now, give_up)).await?;
            started = Some(now);
        }
        let permit = match &self.inner.breaker {
            Some(breaker) => Some(breaker.try_acquire()?),
            None => None,
        };
        // Pinned where it stands: the queue's future is not moved again.
        let checkout = std::pin::pin!(self.inner.pool.get(wait));
        let finished =
            checkout::with_deadline(started, self.inner.config.acquire_timeout(), checkout).await;
        let (got, did_io) = match finished {
            Ok(finished) => {
                let did_io = finished.step != checkout::Step::Waiting;
                let got = finished
                    .output
                    .map(|object| (object, finished.at, finished.waited))
                    .map_err(|e| self.map_error(e, finished.waited));
                (got, did_io)
            }
            Err(timed_out) => (Err(self.deadline_error(timed_out.step, timed_out.waited)), false),
        };
        let got = match got {
            // A connection opened while the pool was being closed is closed, not handed out.
            Ok((object, ..)) if self.inner.pool.is_closed() => {
                drop(queue::Lent::take(object));
                Err(Error::Closed { what: format!("pool {}", self.inner.label) })
            }
            other => other,
        };
        match got {
            Ok((object, checked_out, waited)) => {
                let mut connection = PooledConnection::new(object, checked_out, waited);
                if let Some(permit) = permit {
                    if did_io {
                        permit.success();
                    } else if permit.is_probe() {
                        // A recovery probe must prove the endpoint is back with a round
                        // trip: an idle connection handed out without I/O proves nothing.
                        match Box::pin(self.ping(&mut connection)).await {
                            Ok(()) => permit.success(),
                            Err(e) => {
                                connection.mark_broken();
                                permit.failure(e.kind());
                                return Err(e);
                            }
                        }
                    }
                    // Otherwise neutral: handing out an idle connection without a round
                    // trip says nothing about the endpoint's health.
                }
                self.inner.metrics.record_acquire(waited);
                Ok(connection)
            }
            Err(error) => {
                if let Some(permit) = permit {
                    permit.failure(error.kind());
                }
                Err(error)
            }
        }
    }

    /// The error of a checkout whose acquire timeout passed during `step`.
    fn deadline_error(&self, step: checkout::Step, waited: Duration) -> Error {
        let limit = self.inner.config.acquire_timeout();
        let what = match step {
            checkout::Step::Waiting => {
                return self.map_error(queue::QueueError::Full, waited);
            }
            checkout::Step::Connecting => "opening a new connection",
            checkout::Step::Validating => "pinging an idle connection",
        };
        self.inner.metrics.record_acquire_timeout();
        Error::ConnectFailed {
            endpoint: self.inner.label.to_string(),
            reason: crate::error::ConnectFailure::Timeout,
            attempts: 1,
            message: format!(
                "{what} did not finish within the acquire timeout of {}, which bounds the whole checkout; \
                 the server may be frozen or unreachable (raise UCM_ACQUIRE_TIMEOUT if it is only slow)",
                crate::error::human(limit)
            ),
            source: None,
        }
    }

    /// [`Self::acquire`], then makes the session read-only at the database when `mode` is
    /// [`ConnectionMode::ReadOnly`] and writable otherwise. The setting is remembered per
    /// connection, so the round trip is paid only when a connection changes mode.
    ///
    /// Cancel-safe: a future dropped during the change leaves the setting marked unknown,
    /// and the next checkout sets it again.
    ///
    /// # Errors
    /// As [`Self::acquire`]; and the connector's error when the change fails (the
    /// connection is then discarded).
    pub async fn acquire_for(&self, mode: ConnectionMode) -> Result<PooledConnection<C>> {
        self.checkout_for(mode, true).await
    }

    /// [`Self::acquire_for`] without queueing for a slot: `PoolExhausted` at once when
    /// every connection is in use and none may be opened, so a caller with another
    /// endpoint to try (a read with the primary behind the replicas) moves on instead of
    /// waiting out the acquire timeout.
    ///
    /// # Errors
    /// As [`Self::acquire_for`]; `PoolExhausted` without waiting.
    pub async fn try_acquire_for(&self, mode: ConnectionMode) -> Result<PooledConnection<C>> {
        self.checkout_for(mode, false).await
    }

    async fn checkout_for(&self, mode: ConnectionMode, wait: bool) -> Result<PooledConnection<C>> {
        let mut connection = self.checkout(wait).await?;
        let wanted = mode.is_read_only();
        if connection.pooled_begin().is_some() {
            // Behind a transaction pooler the session keeps nothing: each transaction's
            // BEGIN carries the mode instead.
            connection.set_read_only_state(Some(wanted));
        } else if connection.read_only() != Some(wanted) {
            connection.set_read_only_state(None);
            // Boxed: a mode change is rare, and its future would otherwise grow every
            // checkout's.
            // Bounded like a ping: a server that stopped answering must not hold the
            // checkout past its deadline.
            let limit = self.inner.config.validation_timeout();
            let switch = Box::pin(self.connector().set_read_only(&mut connection, wanted));
            let result = match tokio::time::timeout(limit, switch).await {
                Ok(result) => result,
                Err(_) => Err(Error::database(
                    crate::ErrorKind::ConnectionLost,
                    self.inner.label.to_string(),
                    None,
                    format!(
                        "switching the session's read-only mode did not answer within {}",
                        crate::error::human(limit)
                    ),
                )),
            };
            if let Err(e) = result {
                if e.kind().evicts_connection() {
                    connection.mark_lost();
                } else {
                    connection.mark_broken();
                }
                return Err(e);
            }
            connection.set_read_only_state(Some(wanted));
        }
        Ok(connection)
    }

    /// Opens connections concurrently until the pool holds its minimum idle count (the pool
    /// size unless configured lower; nothing for a lazy pool), and returns how many
    /// connections are open afterwards.
    ///
    /// # Errors
    /// The first connect error when not a single connection could be opened; when some
    /// could, the shortfall is logged and the pool fills the rest on demand.
    pub async fn prefill(&self) -> Result<usize> {
        let first_error = self.fill().await;
        let size = self.status().size;
        match first_error {
            Some(e) if size == 0 => Err(e),
            Some(e) => {
                tracing::warn!(pool = %self.inner.label, open = size, wanted = self.inner.sizes.min_idle(), "prefill opened fewer connections than the pool's minimum: {e}");
                Ok(size)
            }
            None => Ok(size),
        }
    }

    /// Opens connections concurrently, each bounded by the connect timeout (not by the
    /// acquire timeout: nobody waits on them), until the pool holds its minimum; returns
    /// the first connect error. Idle connections are taken out too while it runs, so that
    /// the new ones are opened rather than the idle ones handed back; it gives up at once
    /// when the pool has no free slot (callers are using it, and open what they need).
    /// Connect failures feed the breaker, as a caller's would.
    async fn fill(&self) -> Option<Error> {
        let status = self.status();
        let wanted = self.inner.sizes.min_idle().saturating_sub(status.size);
        if wanted == 0 || self.is_closed() {
            return None;
        }
        // Hold every connection until all are open, or the pool would hand the same
        // idle one back to each task.
        let mut held = Vec::with_capacity(wanted);
        let mut first_error = None;
        let mut to_open = wanted + status.idle;
        // An empty pool opens its first connection alone: a dead server then costs one
        // failed connect rather than one per slot, and one-time setup the first session
        // does (SQLite switching a new file to WAL, which takes an exclusive lock that a
        // concurrent connect is refused at once rather than waiting for) is done before
        // the others connect.
        if status.size == 0 && to_open > 1 {
            match self.inner.pool.get(false).await {
                Ok(object) => held.push(object),
                Err(e) => return self.prefill_failure(e),
            }
            to_open -= 1;
        }
        let mut tasks = JoinSet::new();
        for _ in 0..to_open {
            let pool = self.clone();
            tasks.spawn(async move { pool.inner.pool.get(false).await });
        }
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(Ok(object)) => held.push(object),
                Ok(Err(e)) => {
                    if let Some(e) = self.prefill_failure(e) {
                        first_error.get_or_insert(e);
                    }
                }
                Err(e) => {
                    first_error.get_or_insert(Error::other(format!("prefill task failed: {e}")));
                }
            }
        }
        if self.is_closed() {
            for object in held {
                drop(queue::Lent::take(object));
            }
        }
        first_error
    }

    /// What a prefill connect failure means: nothing when the pool had no free slot
    /// (callers hold it), otherwise the error, recorded by the breaker as a caller's would be.
    fn prefill_failure(&self, e: queue::QueueError) -> Option<Error> {
        if matches!(e, queue::QueueError::Full) {
            return None;
        }
        let e = self.map_error(e, Duration::ZERO);
        if let Some(breaker) = &self.inner.breaker {
            breaker.record_failure(e.kind());
        }
        Some(e)
    }

    /// The background refill: after connections were closed (lifetime, broken), opens
    /// replacements up to the pool size, so callers do not pay for connects inline. Skipped
    /// while the breaker is not closed (the endpoint is failing; its probes decide) or
    /// while tasks wait for connections (they open what they need themselves).
    pub(crate) async fn refill(&self) {
        let status = self.status();
        let breaker_closed = self
            .breaker()
            .is_none_or(|b| b.state() == crate::circuit_breaker::BreakerState::Closed);
        if status.size >= self.inner.sizes.min_idle() || status.waiting > 0 || !breaker_closed {
            return;
        }
        if let Some(e) = self.fill().await {
            tracing::debug!(pool = %self.inner.label, "background refill could not open a connection: {e}");
        }
    }

    /// Connection counts now; no I/O.
    pub fn status(&self) -> PoolStatus {
        self.inner.status()
    }

    /// The pool's counters and histograms.
    pub fn metrics(&self) -> &PoolMetrics {
        &self.inner.metrics
    }

    /// The endpoint's circuit breaker, when the pool has one.
    pub fn breaker(&self) -> Option<&CircuitBreaker> {
        self.inner.breaker.as_deref()
    }

    /// The connections checked out for longer than the leak detection threshold now,
    /// longest first, with where each was acquired; empty when leak detection is off.
    pub fn long_holds(&self) -> Vec<LongHold> {
        self.inner
            .pool
            .manager()
            .leaks
            .as_ref()
            .map_or_else(Vec::new, |leaks| leaks.long_holds(Instant::now()))
    }

    /// How many connections were reported as held past the leak detection threshold.
    pub fn long_holds_reported(&self) -> u64 {
        self.inner.pool.manager().leaks.as_ref().map_or(0, |leaks| leaks.reported())
    }

    /// Tells `listener` of the tables written through this pool from now on (see
    /// [`WriteListener`](crate::WriteListener)).
    pub fn add_write_listener(&self, listener: Arc<dyn crate::WriteListener>) {
        self.inner.pool.manager().writes.add(listener);
    }

    /// The endpoint's redacted label.
    pub fn label(&self) -> &str {
        &self.inner.label
    }

    /// The configuration the pool was built with.
    pub fn config(&self) -> &PoolConfiguration {
        &self.inner.config
    }

    /// The backend's connector.
    pub fn connector(&self) -> &C {
        &self.inner.pool.manager().connector
    }

    /// Whether [`Self::close`] has been called.
    pub fn is_closed(&self) -> bool {
        self.inner.pool.is_closed()
    }

    /// Makes every connection idle now be pinged before its next use, whatever its idle
    /// time: called when the endpoint was seen failing, so that dead connections are
    /// found at checkout (and replaced) rather than by the caller's statement.
    pub fn suspect_idle_connections(&self) {
        self.inner.pool.manager().suspect_idle_connections();
    }

    /// Ends the wait of every statement in flight on this endpoint (see
    /// [`StatementExpiry`]): the health loop found it no longer answering, so waiting out
    /// each statement's deadline would only hold its caller. Each such statement fails
    /// as a lost connection (an ambiguous commit where a write may have landed) and its
    /// connection is closed.
    pub fn abandon_in_flight(&self) {
        self.inner.pool.manager().abandon.raise();
    }

    /// Runs one reaper pass now instead of waiting for the next tick.
    pub fn reap_now(&self) {
        reaper::reap(&self.inner);
    }

    /// Graceful drain: refuses new acquires at once, closes idle connections, waits for
    /// checked-out connections to come back (they are closed as they do) for at most
    /// `deadline`, then stops the reaper. Calling it again is harmless.
    ///
    /// # Errors
    /// `Timeout` naming how many connections were still checked out at the deadline; they
    /// are closed when their holders drop them.
    pub async fn close(&self, deadline: Duration) -> Result<()> {
        let idle = self.inner.pool.close();
        for _ in 0..idle {
            self.inner.metrics.record_close(CloseReason::PoolClosed);
        }
        self.inner.stop_reaper();
        let started = Instant::now();
        loop {
            let size = self.inner.pool.status().size;
            if size == 0 {
                return Ok(());
            }
            if started.elapsed() >= deadline {
                return Err(Error::Timeout {
                    what: format!(
                        "draining {} ({size} connection(s) still checked out)",
                        self.inner.label
                    ),
                    after: deadline,
                });
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// One bounded validation round trip on `connection`.
    async fn ping(&self, connection: &mut PooledConnection<C>) -> Result<()> {
        let limit = self.inner.config.validation_timeout();
        match tokio::time::timeout(limit, self.connector().validate(connection)).await {
            Ok(result) => result,
            Err(_) => Err(Error::database(
                crate::ErrorKind::ConnectionLost,
                self.inner.label.to_string(),
                None,
                format!("the recovery probe's ping did not answer within {limit:?}"),
            )),
        }
    }

    fn map_error(&self, error: queue::QueueError, waited: Duration) -> Error {
        match error {
            queue::QueueError::Backend(e) => e,
            queue::QueueError::Full => {
                self.inner.metrics.record_acquire_timeout();
                let status = self.status();
                Error::PoolExhausted {
                    endpoint: self.inner.label.to_string(),
                    in_use: status.in_use,
                    max: status.max_size,
                    waiting: status.waiting,
                    waited,
                }
            }
            queue::QueueError::Closed => {
                Error::Closed { what: format!("pool {}", self.inner.label) }
            }
        }
    }
}

impl<C: Connector> Clone for Pool<C> {
    fn clone(&self) -> Self {
        Self { inner: Arc::clone(&self.inner) }
    }
}

impl<C: Connector> std::fmt::Debug for Pool<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("label", &self.inner.label)
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

impl<C: Connector> Inner<C> {
    fn stop_reaper(&self) {
        if let Ok(mut reaper) = self.reaper.lock()
            && let Some(task) = reaper.take()
        {
            task.abort();
        }
    }
}

impl<C: Connector> Drop for Inner<C> {
    fn drop(&mut self) {
        self.stop_reaper();
        // Connections still out keep the queue alive; they are closed when they come back.
        self.pool.close();
    }
}

#[cfg(test)]
mod tests;
