//! In-process metrics: per-pool counters and latency histograms, read by `connection_info()` and exported by the façade.
//!
//! Recording is a handful of relaxed atomic adds, cheap enough for the acquire path. The
//! names follow the OpenTelemetry database client conventions so that the façade's
//! exporter maps them one to one (`db.client.connection.wait_time`, `.create_time`,
//! `.use_time`, `.timeouts`, `db.client.operation.duration`).

mod histogram;
mod status;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub use histogram::{Histogram, HistogramSnapshot};
pub use status::{PoolStatus, SlaSummary};

use crate::error::ErrorKind;
use crate::telemetry::EndpointAttributes;

/// Why the pool closed a connection; each reason has its own counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloseReason {
    /// It outlived its (jittered) max lifetime.
    Lifetime,
    /// It was an overflow connection idle for longer than the overflow idle timeout.
    OverflowIdle,
    /// The pre-use ping failed or timed out.
    ValidationFailed,
    /// A fatal error showed it broken, or its caller marked it so.
    Broken,
    /// Rolling back a transaction left open on return failed.
    ResetFailed,
    /// The pool was closed.
    PoolClosed,
}

impl CloseReason {
    const ALL: [Self; 6] = [
        Self::Lifetime,
        Self::OverflowIdle,
        Self::ValidationFailed,
        Self::Broken,
        Self::ResetFailed,
        Self::PoolClosed,
    ];

    /// A stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Lifetime => "lifetime",
            Self::OverflowIdle => "overflow_idle",
            Self::ValidationFailed => "validation_failed",
            Self::Broken => "broken",
            Self::ResetFailed => "reset_failed",
            Self::PoolClosed => "pool_closed",
        }
    }
}

/// Counters and histograms of one pool, fed by the pool and the backend; with the `otel`
/// feature, every measurement also goes to the OpenTelemetry instruments of the same name.
#[derive(Debug)]
pub struct PoolMetrics {
    endpoint: EndpointAttributes,
    #[cfg(feature = "otel")]
    otel: crate::telemetry::otel::Instruments,
    acquire_timeouts: AtomicU64,
    connections_created: AtomicU64,
    connect_failures: AtomicU64,
    closed: [AtomicU64; CloseReason::ALL.len()],
    resets: AtomicU64,
    wait_time: Histogram,
    create_time: Histogram,
    use_time: Histogram,
    operations: Histogram,
    operation_errors: [AtomicU64; ErrorKind::ALL.len()],
    /// The latency target statements are held to (their connection wait included), in
    /// nanoseconds; zero when none was set.
    sla_target_nanos: u64,
    /// Statements that met the target.
    sla_met: AtomicU64,
}

/// A point-in-time copy of a [`PoolMetrics`].
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct PoolMetricsSnapshot {
    /// Successful acquires.
    pub acquires: u64,
    /// Acquires that gave up because the pool stayed exhausted (`db.client.connection.timeouts`).
    pub acquire_timeouts: u64,
    /// Connections opened.
    pub connections_created: u64,
    /// Connection attempts that failed.
    pub connect_failures: u64,
    /// Connections closed, by reason (snake_case name, count); reasons with no closes are omitted.
    pub connections_closed: Vec<(&'static str, u64)>,
    /// Connections returned with a transaction open and rolled back before reuse.
    pub resets: u64,
    /// Time spent waiting for a connection (`db.client.connection.wait_time`).
    pub wait_time: HistogramSnapshot,
    /// Time spent opening connections (`db.client.connection.create_time`).
    pub create_time: HistogramSnapshot,
    /// Time between checkout and return (`db.client.connection.use_time`).
    pub use_time: HistogramSnapshot,
    /// Duration of operations run through the manager (`db.client.operation.duration`).
    pub operations: HistogramSnapshot,
    /// Failed operations by error kind (kind name, count); kinds with no failures are omitted.
    pub operation_errors: Vec<(&'static str, u64)>,
    /// Operations that finished within the SLA target (see `PoolConfiguration::sla_target`),
    /// their wait for a connection included; out of `operations.count`.
    pub within_sla: u64,
}

impl Default for PoolMetrics {
    fn default() -> Self {
        Self::new(EndpointAttributes::unnamed("pool"))
    }
}

impl PoolMetrics {
    /// Empty metrics for the pool of `endpoint`.
    pub fn new(endpoint: EndpointAttributes) -> Self {
        Self {
            #[cfg(feature = "otel")]
            otel: crate::telemetry::otel::Instruments::new(&endpoint),
            endpoint,
            acquire_timeouts: AtomicU64::default(),
            connections_created: AtomicU64::default(),
            connect_failures: AtomicU64::default(),
            closed: Default::default(),
            resets: AtomicU64::default(),
            wait_time: Histogram::default(),
            create_time: Histogram::default(),
            use_time: Histogram::default(),
            operations: Histogram::default(),
            operation_errors: Default::default(),
            sla_target_nanos: 0,
            sla_met: AtomicU64::default(),
        }
    }

    /// These metrics, counting operations against the latency `target`.
    #[must_use]
    pub fn with_sla_target(mut self, target: Duration) -> Self {
        self.sla_target_nanos = u64::try_from(target.as_nanos()).unwrap_or(u64::MAX);
        self
    }

    /// Who the pool talks to, as telemetry names it.
    pub fn endpoint(&self) -> &EndpointAttributes {
        &self.endpoint
    }

    /// Records a successful acquire and how long it waited.
    pub fn record_acquire(&self, waited: Duration) {
        // The wait histogram's count is the number of acquires; no second counter.
        self.wait_time.record(waited);
        #[cfg(feature = "otel")]
        self.otel.wait(waited);
    }
    /// Records an acquire that gave up on an exhausted pool.
    pub fn record_acquire_timeout(&self) {
        self.acquire_timeouts.fetch_add(1, Ordering::Relaxed);
        #[cfg(feature = "otel")]
        self.otel.timeout();
    }
    /// Records a connection attempt: its duration and whether it succeeded.
    pub fn record_connect(&self, took: Duration, ok: bool) {
        if ok {
            self.connections_created.fetch_add(1, Ordering::Relaxed);
            self.create_time.record(took);
            #[cfg(feature = "otel")]
            self.otel.create(took);
        } else {
            self.connect_failures.fetch_add(1, Ordering::Relaxed);
        }
    }
    /// Records that a connection was closed, and why.
    pub fn record_close(&self, reason: CloseReason) {
        let index = CloseReason::ALL.iter().position(|r| *r == reason).unwrap_or(0);
        self.closed[index].fetch_add(1, Ordering::Relaxed);
    }
    /// Records a rollback of a transaction left open when the connection came back.
    pub fn record_reset(&self) {
        self.resets.fetch_add(1, Ordering::Relaxed);
    }
    /// Records how long a connection was checked out.
    pub fn record_use(&self, held: Duration) {
        self.use_time.record(held);
        #[cfg(feature = "otel")]
        self.otel.use_time(held);
    }
    /// Records one statement: its duration and its error; with `otel`, also under its
    /// operation (read from `sql` only then). `waited` is how long the caller waited for
    /// the connection before this statement (zero after the first statement of a
    /// checkout): it counts toward the SLA, which is about what the caller experienced,
    /// but not toward `db.client.operation.duration`, which is the statement's alone.
    pub fn record_statement(
        &self,
        took: Duration,
        waited: Duration,
        sql: &str,
        error: Option<&crate::Error>,
    ) {
        self.record_operation(took, error.map(crate::Error::kind));
        let experienced = u64::try_from((took + waited).as_nanos()).unwrap_or(u64::MAX);
        if experienced <= self.sla_target_nanos {
            self.sla_met.fetch_add(1, Ordering::Relaxed);
        }
        #[cfg(feature = "otel")]
        self.otel.operation(took, sql, error);
        #[cfg(not(feature = "otel"))]
        let _ = sql;
    }
    /// Records one operation's duration and, when it failed, its error kind.
    pub fn record_operation(&self, took: Duration, error: Option<ErrorKind>) {
        self.operations.record(took);
        if let Some(kind) = error {
            let index = ErrorKind::ALL.iter().position(|k| *k == kind).unwrap_or(0);
            self.operation_errors[index].fetch_add(1, Ordering::Relaxed);
        }
    }
    /// How many connections were closed for `reason` so far.
    pub fn closed(&self, reason: CloseReason) -> u64 {
        let index = CloseReason::ALL.iter().position(|r| *r == reason).unwrap_or(0);
        self.closed[index].load(Ordering::Relaxed)
    }

    /// Copies every counter and histogram.
    pub fn snapshot(&self) -> PoolMetricsSnapshot {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let wait_time = self.wait_time.snapshot();
        PoolMetricsSnapshot {
            acquires: wait_time.count,
            acquire_timeouts: load(&self.acquire_timeouts),
            connections_created: load(&self.connections_created),
            connect_failures: load(&self.connect_failures),
            connections_closed: CloseReason::ALL
                .iter()
                .zip(&self.closed)
                .map(|(r, n)| (r.as_str(), load(n)))
                .filter(|(_, n)| *n > 0)
                .collect(),
            resets: load(&self.resets),
            wait_time,
            create_time: self.create_time.snapshot(),
            use_time: self.use_time.snapshot(),
            operations: self.operations.snapshot(),
            operation_errors: ErrorKind::ALL
                .iter()
                .zip(&self.operation_errors)
                .map(|(k, n)| (k.as_str(), load(n)))
                .filter(|(_, n)| *n > 0)
                .collect(),
            within_sla: load(&self.sla_met),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_histograms_accumulate() {
        let m = PoolMetrics::default();
        m.record_acquire(Duration::from_micros(3));
        m.record_acquire(Duration::from_millis(2));
        m.record_acquire_timeout();
        m.record_connect(Duration::from_millis(4), true);
        m.record_connect(Duration::from_millis(9), false);
        m.record_close(CloseReason::Lifetime);
        m.record_close(CloseReason::Lifetime);
        m.record_close(CloseReason::Broken);
        m.record_operation(Duration::from_millis(1), None);
        m.record_operation(Duration::from_millis(1), Some(ErrorKind::Deadlock));
        let s = m.snapshot();
        assert_eq!((s.acquires, s.acquire_timeouts), (2, 1));
        assert_eq!((s.connections_created, s.connect_failures), (1, 1));
        assert_eq!(s.connections_closed, vec![("lifetime", 2), ("broken", 1)]);
        assert_eq!(s.wait_time.count, 2);
        assert_eq!(s.create_time.count, 1);
        assert_eq!(s.operations.count, 2);
        assert_eq!(s.operation_errors, vec![("deadlock", 1)]);
        assert_eq!(m.closed(CloseReason::Lifetime), 2);
    }

    #[test]
    fn the_sla_counts_the_wait_for_the_connection_too() {
        let m = PoolMetrics::default().with_sla_target(Duration::from_millis(200));
        let ms = Duration::from_millis;
        m.record_statement(ms(50), ms(100), "SELECT 1", None); // 150 ms in all: met
        m.record_statement(ms(50), ms(180), "SELECT 1", None); // 230 ms: missed
        m.record_statement(ms(250), Duration::ZERO, "SELECT 1", None); // missed
        m.record_statement(ms(200), Duration::ZERO, "SELECT 1", None); // exactly: met
        let s = m.snapshot();
        assert_eq!((s.within_sla, s.operations.count), (2, 4));
        // The operation histogram holds the statements' own durations, not the waits.
        assert_eq!(s.operations.sum, ms(550));
    }
}
