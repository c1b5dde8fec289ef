//! `SlotManager`, which opens and recycles the queue's connections through a `Connector` (lifetimes with jitter, validation only after idle, bounded I/O), and `Slot`, one pooled connection with its bookkeeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::Rng;
use tokio::time::{Instant, timeout};

use super::abandon::Abandon;
use super::checkout;
use super::leaks::LeakDetector;
use crate::circuit_breaker::CircuitBreaker;
use crate::config::PoolConfiguration;
use crate::connector::Connector;
use crate::error::{ConnectFailure, Error};
use crate::telemetry::metrics::{CloseReason, PoolMetrics};
use crate::writes::WriteListeners;

/// What belongs to the checkout holding a connection: set when it is handed out, emptied
/// when its guard is dropped. It lives in the (boxed) slot rather than in the guard, which
/// every layer of a checkout returns by value and which is kept small for that.
#[derive(Default)]
pub(crate) struct Lease {
    /// How long the checkout waited; counted into the SLA of its first statement only.
    pub(crate) waited: Duration,
    /// The checkout's id in the pool's leak detector, when leak detection is on.
    pub(crate) hold: Option<u64>,
    /// Run when the connection is released (returned, or closed), whatever the outcome.
    pub(crate) on_release: Option<Box<dyn FnOnce() + Send + Sync>>,
    /// Tables written in the open transaction, told again to the write listeners when it
    /// commits (empty, and never allocated, while nobody listens).
    pub(crate) written: Vec<String>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("waited", &self.waited)
            .field("hold", &self.hold)
            .field("on_release", &self.on_release.is_some())
            .field("written", &self.written)
            .finish()
    }
}

/// One pooled connection and the pool's bookkeeping about it.
#[derive(Debug)]
pub(crate) struct Slot<T> {
    pub(crate) connection: T,
    /// When this connection must be replaced (max lifetime minus its random jitter).
    pub(crate) expires: Instant,
    /// When it was last returned to the pool (or created): the start of its idle time.
    pub(crate) returned: Instant,
    /// Set while a transaction may be open; a connection returned so is rolled back first.
    pub(crate) in_transaction: bool,
    /// Set when an error showed the connection unusable; it is closed instead of pooled.
    pub(crate) broken: bool,
    /// The session's read-only setting as last set, `None` while unknown (new connection,
    /// or a change interrupted by a dropped future).
    pub(crate) read_only: Option<bool>,
    /// Set while one of ucm's statements is in flight on it; a connection returned so (its
    /// statement's future was dropped) may still be running that statement, so it is closed
    /// rather than handed to someone who would wait on it, or see its effects land later.
    pub(crate) in_statement: bool,
    /// The pool's metrics, kept here so that returning a connection costs no reference count.
    pub(crate) metrics: Arc<PoolMetrics>,
    /// The endpoint's breaker, which statements on this connection feed (a lost connection
    /// counts as a failure, a completed statement as a success).
    pub(crate) breaker: Option<Arc<CircuitBreaker>>,
    /// The pool's leak detector, when leak detection is on.
    pub(crate) leaks: Option<Arc<LeakDetector>>,
    /// The mode's statement timeout, kept here so that a statement reads it without a
    /// reference count.
    pub(crate) statement_timeout: Option<Duration>,
    /// The client's own deadline for one statement (see
    /// [`PoolConfiguration::client_statement_deadline`]).
    pub(crate) client_deadline: Option<Duration>,
    /// The endpoint's abandonment signal, and its count when the last statement started.
    pub(crate) abandon: Abandon,
    pub(crate) statement_generation: u64,
    /// Behind a transaction pooler, each transaction's opening statement for a read-write
    /// and a read-only session (see `PoolConfiguration::pooled_begin`).
    pub(crate) pooled_begin: Option<Arc<PooledBegin>>,
    /// Who is told of the tables written on this connection.
    pub(crate) writes: Arc<WriteListeners>,
    /// The state of the checkout holding the connection.
    pub(crate) lease: Lease,
}

/// The `BEGIN` statements of a session behind a transaction pooler.
#[derive(Debug)]
pub(crate) struct PooledBegin {
    pub(crate) read_write: Arc<str>,
    pub(crate) read_only: Arc<str>,
}

/// Opens and recycles the pool's connections through a [`Connector`].
pub(crate) struct SlotManager<C> {
    pub(crate) connector: C,
    pub(crate) config: PoolConfiguration,
    pub(crate) metrics: Arc<PoolMetrics>,
    pub(crate) breaker: Option<Arc<CircuitBreaker>>,
    pub(crate) leaks: Option<Arc<LeakDetector>>,
    pub(crate) label: Arc<str>,
    /// The pool's creation: the origin of `suspect_before`.
    pub(crate) epoch: Instant,
    /// Connections returned before this moment (nanoseconds after `epoch`; zero: none) are
    /// pinged before reuse whatever their idle time, because a connection of the same
    /// endpoint was lost since.
    pub(crate) suspect_before: AtomicU64,
    /// Raised when the endpoint stopped answering: statements in flight stop waiting.
    pub(crate) abandon: Abandon,
    /// Set when the connector is behind a transaction pooler.
    pub(crate) pooled_begin: Option<Arc<PooledBegin>>,
    /// Who is told of the tables written through this pool.
    pub(crate) writes: Arc<WriteListeners>,
}

impl<C: Connector> SlotManager<C> {
    /// A manager for `connector`, suspecting nothing yet.
    pub(crate) fn new(
        connector: C,
        config: PoolConfiguration,
        metrics: Arc<PoolMetrics>,
        breaker: Option<Arc<CircuitBreaker>>,
        label: Arc<str>,
    ) -> Self {
        let leaks = config
            .leak_detection_threshold()
            .map(|threshold| Arc::new(LeakDetector::new(threshold, Arc::clone(&label))));
        let pooled_begin = connector.transaction_pooled().then(|| {
            Arc::new(PooledBegin {
                read_write: config.pooled_begin(crate::ConnectionMode::ReadWrite).into(),
                read_only: config.pooled_begin(crate::ConnectionMode::ReadOnly).into(),
            })
        });
        Self {
            pooled_begin,
            connector,
            config,
            metrics,
            breaker,
            leaks,
            label,
            epoch: Instant::now(),
            suspect_before: 0.into(),
            abandon: Abandon::default(),
            writes: Arc::default(),
        }
    }

    /// Makes every connection idle now be pinged before its next use.
    pub(crate) fn suspect_idle_connections(&self) {
        let now = nanos_since(self.epoch, Instant::now()).max(1);
        self.suspect_before.fetch_max(now, Ordering::Relaxed);
    }

    /// Whether a connection returned at `returned` must be pinged whatever its idle time.
    fn is_suspect(&self, returned: Instant) -> bool {
        let before = self.suspect_before.load(Ordering::Relaxed);
        before != 0 && nanos_since(self.epoch, returned) < before
    }

    /// A lifetime shortened by a random amount up to the configured jitter, so that
    /// connections opened together (prefill) are not all replaced at the same moment.
    fn jittered_lifetime(&self) -> Duration {
        let jitter = self.config.lifetime_jitter();
        let cut = if jitter.is_zero() {
            Duration::ZERO
        } else {
            jitter.mul_f64(rand::rng().random_range(0.0..1.0))
        };
        self.config.max_lifetime().saturating_sub(cut)
    }

    fn discard(&self, reason: CloseReason, why: &str) -> Discarded {
        self.metrics.record_close(reason);
        tracing::debug!(pool = %self.label, reason = reason.as_str(), "closing connection: {why}");
        Discarded
    }
}

/// The first pause before a connect refused for its password is tried again with fresh
/// credentials (doubling up to 1 s, within the connect timeout).
const ROTATION_PAUSE: Duration = Duration::from_millis(50);

/// A connection closed instead of being handed out (the reason is in the metrics and the
/// debug log).
#[derive(Debug)]
pub(crate) struct Discarded;

impl<C: Connector> SlotManager<C> {
    /// Opens a new connection for a checkout. The slot is boxed: the pool's idle queue,
    /// every checkout's result and every guard hold it, and a box moves as one pointer
    /// where a connection (several hundred bytes for a driver's) would be copied whole at
    /// each step of the checkout.
    pub(crate) async fn create(&self) -> Result<Box<Slot<C::Connection>>, Error> {
        // Boxed: connecting is rare and its future large; inline, it would make the
        // checkout future (which embeds this one) as large, and every move of it a copy.
        Box::pin(self.open()).await
    }

    /// Readies an idle connection for a checkout: `Discarded` (and closed by the caller)
    /// when it is broken or expired, or fails its rollback or its ping.
    pub(crate) async fn recycle(&self, slot: &mut Slot<C::Connection>) -> Result<(), Discarded> {
        // The checkout's poll read the clock as it began; no second reading.
        let now = checkout::now();
        if slot.broken || slot.in_statement || self.connector.is_broken(&mut slot.connection) {
            return Err(self.discard(CloseReason::Broken, "it is broken"));
        }
        if now >= slot.expires {
            return Err(self.discard(CloseReason::Lifetime, "it reached its max lifetime"));
        }
        // The rare branches are boxed, as `create` is: the common case (a connection
        // returned lately and cleanly) then keeps this future small.
        // Normally a connection returned mid-transaction is rolled back by the task its
        // guard spawns; this catches the case where no runtime could run that task.
        if slot.in_transaction {
            Box::pin(self.roll_back(slot)).await?;
        }
        if now.duration_since(slot.returned) > self.config.validate_after_idle()
            || self.is_suspect(slot.returned)
        {
            Box::pin(self.validate(slot)).await?;
        }
        Ok(())
    }
}

impl<C: Connector> SlotManager<C> {
    /// Opens a connection (the pool's `create`): bounded by the connect timeout, tried
    /// again while a credential source may be mid-rotation.
    async fn open(&self) -> Result<Box<Slot<C::Connection>>, Error> {
        let started = Instant::now();
        let limit = self.config.connect_timeout();
        // Boxed, like every rare branch below: a driver's connect future is large, and
        // inline it would make every checkout future (which embeds this one) as large,
        // and every move of it a large copy.
        checkout::entered(checkout::Step::Connecting);
        let deadline = started + limit;
        let mut pause = ROTATION_PAUSE;
        let result = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let attempt = match timeout(left, Box::pin(self.connector.connect())).await {
                Ok(result) => result,
                Err(_) => Err(Error::ConnectFailed {
                    endpoint: self.label.to_string(),
                    reason: ConnectFailure::Timeout,
                    attempts: 1,
                    message: format!("no connection within the connect timeout of {limit:?}"),
                    source: None,
                }),
            };
            let refused_password = matches!(
                &attempt,
                Err(Error::ConnectFailed { reason: ConnectFailure::Authentication, .. })
            );
            if refused_password
                && self.connector.rotates_credentials()
                && deadline.saturating_duration_since(Instant::now()) > pause
            {
                tracing::info!(pool = %self.label, "password refused; the credential source may be mid-rotation, asking it again in {pause:?}");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
                continue;
            }
            break attempt;
        };
        self.metrics.record_connect(started.elapsed(), result.is_ok());
        let connection = result?;
        let now = Instant::now();
        Ok(Box::new(Slot {
            connection,
            expires: now + self.jittered_lifetime(),
            returned: now,
            in_transaction: false,
            broken: false,
            read_only: None,
            in_statement: false,
            metrics: Arc::clone(&self.metrics),
            breaker: self.breaker.clone(),
            leaks: self.leaks.clone(),
            statement_timeout: self.config.statement_timeout(),
            client_deadline: self.config.client_statement_deadline(),
            abandon: self.abandon.clone(),
            statement_generation: 0,
            pooled_begin: self.pooled_begin.clone(),
            writes: Arc::clone(&self.writes),
            lease: Lease::default(),
        }))
    }

    /// Rolls back a connection returned with a transaction open.
    async fn roll_back(&self, slot: &mut Slot<C::Connection>) -> Result<(), Discarded> {
        match timeout(self.config.validation_timeout(), self.connector.reset(&mut slot.connection))
            .await
        {
            Ok(Ok(())) => {
                slot.in_transaction = false;
                self.metrics.record_reset();
                Ok(())
            }
            _ => Err(self.discard(CloseReason::ResetFailed, "its rollback failed")),
        }
    }

    /// Pings a connection idle too long (or suspect) before it is handed out.
    async fn validate(&self, slot: &mut Slot<C::Connection>) -> Result<(), Discarded> {
        let limit = self.config.validation_timeout();
        checkout::entered(checkout::Step::Validating);
        match timeout(limit, self.connector.validate(&mut slot.connection)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(self.discard(CloseReason::ValidationFailed, &e.to_string())),
            Err(_) => Err(self.discard(
                CloseReason::ValidationFailed,
                &format!("its ping took longer than {limit:?}"),
            )),
        }
    }
}

/// Nanoseconds from `epoch` to `at` (zero when `at` is earlier), saturating.
fn nanos_since(epoch: Instant, at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(epoch).as_nanos()).unwrap_or(u64::MAX)
}
