//! `Topology`: one primary and zero or more replicas, each with its own pool, breaker and state; routing, the health loop with banning and promotion following, info and drain, shared by every backend.
//!
//! A backend's manager is a `Topology` of its connector plus driver glue, so everything
//! here exists once for all backends.
//!
//! - **Routing**: writes and `ReadWrite`/`Batch`/`Transactional` go to the primary;
//!   `ReadOnly` goes to the healthy replicas in turn, without waiting on a full one,
//!   skipping any that is banned, down or slow (degraded), and moves on within the same
//!   call past one whose checkout fails (marking it down), then falls back to the primary,
//!   then, if the primary cannot serve either, to a slow replica: a replica dying costs
//!   the caller latency, not an error.
//! - **Health loop** (`health_loop.rs`): a background task probes every endpoint every
//!   `health_interval` (every second while one is down, banned or slow): reachability,
//!   `pg_is_in_recovery()` and replay lag. It bans a replica lagging past
//!   `max_replica_lag` on two probes in a row, lets a down or banned one back after two good probes, and, in
//!   modes with high availability, follows a promotion: when the primary is unreachable or
//!   reports it is a standby and a former standby reports it is not, that endpoint becomes
//!   the primary. ucm never promotes a server itself. It marks a replica slow (degraded)
//!   when its probes take far longer than the primary's, and abandons the statements in
//!   flight on an endpoint that left two probes in a row unanswered (frozen, blackholed):
//!   they fail at once as lost connections, and reads among them are run again elsewhere.
//!   The task stops with `close()` and when the topology is dropped.

mod endpoint;
mod health_loop;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tracing::Instrument;

pub use endpoint::{
    PROBES_TO_ABANDON, PROBES_TO_BAN_FOR_LAG, PROBES_TO_RECOVER, SLOW_FACTOR, SLOW_MARGIN,
};

use crate::circuit_breaker::BreakerState;
use crate::config::{DatabaseUrl, ManagerConfig, PoolConfiguration};
use crate::connector::Connector;
use crate::error::{Error, ErrorKind, Result};
use crate::health::{EndpointRole, EndpointState, HealthReport, HealthStatus};
use crate::info::{ConnectionInfo, EndpointInfo};
use crate::mode::ConnectionMode;
use crate::pool::{Pool, PooledConnection};
use crate::telemetry::metrics::SlaSummary;
use endpoint::{Change, Endpoint};

/// How often an endpoint that is down or banned is re-probed (or the health interval, when
/// shorter), so that a recovery is noticed within seconds.
pub const RECHECK_INTERVAL: Duration = Duration::from_secs(1);

/// How soon an endpoint whose breaker is open is probed again after one good probe: the
/// second good probe in a row moves the breaker to half-open, so a server back from a
/// restart serves calls again within about this long, not a recovery timeout later.
pub const CONFIRM_INTERVAL: Duration = Duration::from_millis(250);

/// The endpoints of one manager, their pools and the task watching them.
#[derive(Debug)]
pub struct Topology<C: Connector> {
    shared: Arc<Shared<C>>,
    health_task: Mutex<Option<JoinHandle<()>>>,
}

/// What the topology and its health loop share.
#[derive(Debug)]
pub(crate) struct Shared<C: Connector> {
    config: ManagerConfig,
    /// In configuration order: the configured primary first, then the replicas.
    endpoints: Vec<Endpoint<C>>,
    /// The index of the endpoint that is the primary now (it moves on a failover).
    primary: AtomicUsize,
    next_replica: AtomicUsize,
    /// The last known aggregate health, as a [`HealthStatus`] index.
    health: AtomicU8,
    closed: AtomicBool,
    failovers: AtomicU64,
    last_failover: Mutex<Option<DateTime<Utc>>>,
    /// Wakes the health loop early (a read saw a replica fail).
    wake: Arc<Notify>,
    /// One probe round at a time (the loop's and `health_check()`'s), with the last
    /// round's report for callers that join a round in flight.
    round: tokio::sync::Mutex<Option<HealthReport>>,
    /// Rounds completed so far.
    rounds_done: AtomicU64,
    /// When the last round ended.
    last_round: Mutex<tokio::time::Instant>,
}

impl<C: Connector> Topology<C> {
    /// Builds one pool per endpoint of `config`, with a connector from `connector_for`
    /// and a circuit breaker when the mode has one, prefills the primary's pool (a
    /// primary that cannot be reached fails construction, with the reason) and, best
    /// effort, each replica's (an unreachable replica starts down and is routed around),
    /// then starts the health loop.
    ///
    /// # Errors
    /// The connector factory's error, or the primary's connect error.
    pub async fn connect(
        config: ManagerConfig,
        connector_for: impl Fn(&DatabaseUrl, &PoolConfiguration) -> Result<C>,
    ) -> Result<Self> {
        let pool_config = config.pool().clone();
        let breaker = pool_config.circuit_breaker().then(|| config.breaker().clone());
        let endpoints = config
            .endpoints()
            .map(|url| {
                Pool::for_endpoint(
                    url.endpoint_attributes(&url.label()),
                    connector_for(url, &pool_config)?,
                    pool_config.clone(),
                    breaker.clone(),
                )
                .map(Endpoint::new)
            })
            .collect::<Result<Vec<_>>>()?;
        endpoints[0].pool.prefill().await?;
        for replica in &endpoints[1..] {
            if let Err(e) = replica.pool.prefill().await {
                tracing::warn!(replica = %replica.pool.label(), "replica unreachable at start, reads go elsewhere: {e}");
                replica.update(|record| record.fail(e.to_string()));
            }
        }
        let wake = Arc::new(Notify::new());
        let shared = Arc::new(Shared {
            config,
            endpoints,
            primary: AtomicUsize::new(0),
            next_replica: AtomicUsize::new(0),
            health: AtomicU8::new(status_index(HealthStatus::Healthy)),
            closed: AtomicBool::new(false),
            failovers: AtomicU64::new(0),
            last_failover: Mutex::new(None),
            wake: Arc::clone(&wake),
            round: tokio::sync::Mutex::new(None),
            rounds_done: AtomicU64::new(0),
            last_round: Mutex::new(tokio::time::Instant::now()),
        });
        let weak = Arc::downgrade(&shared);
        let task = crate::background::spawn(
            &tokio::runtime::Handle::current(),
            {
                let weak = weak.clone();
                move || health_loop::run(weak.clone(), Arc::clone(&wake))
            },
            move || weak.upgrade().is_some_and(|shared| !shared.closed.load(Ordering::Acquire)),
        );
        Ok(Self { shared, health_task: Mutex::new(Some(task)) })
    }

    /// Checks out a connection routed for `mode` (see the module docs), with the session
    /// made read-only at the database for [`ConnectionMode::ReadOnly`].
    ///
    /// # Errors
    /// `Closed` after [`Self::close`]; otherwise the primary's acquire error (replica
    /// failures only move the read elsewhere).
    pub async fn acquire(&self, mode: ConnectionMode) -> Result<PooledConnection<C>> {
        self.acquire_routed(mode, false).await
    }

    /// [`Self::acquire`] on the primary whatever the mode: reads that must see the
    /// caller's own recent writes (read-your-writes).
    ///
    /// # Errors
    /// As [`Self::acquire`].
    pub async fn acquire_on_primary(&self, mode: ConnectionMode) -> Result<PooledConnection<C>> {
        self.acquire_routed(mode, true).await
    }

    async fn acquire_routed(
        &self,
        mode: ConnectionMode,
        primary_only: bool,
    ) -> Result<PooledConnection<C>> {
        let span =
            crate::telemetry::acquire_span(self.primary().metrics().endpoint(), mode.as_str());
        // Without a subscriber the checkout runs unwrapped: no span, and no extra move of
        // the (large) checkout future into an instrumenting wrapper.
        let result = match &span {
            Some(span) => self.shared.route(mode, primary_only).instrument(span.clone()).await,
            None => self.shared.route(mode, primary_only).await,
        };
        if let Err(error) = &result {
            crate::telemetry::record_failure(span.as_ref(), error);
        }
        result
    }

    /// Probes every endpoint now (as the health loop does: reachability, role, lag),
    /// applies what it finds (bans, recoveries, a failover), caches the aggregate for
    /// [`Self::is_healthy`] and reports it. When a round is already in flight (the loop's,
    /// or another caller's), waits for it and reports it instead: bounded by one probe
    /// deadline, never queued behind a round.
    pub async fn health_check(&self) -> HealthReport {
        health_loop::round(&self.shared).await
    }

    /// True once [`Self::close`] has begun: the manager serves nothing more.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    /// True when the last known health is healthy or degraded, and the manager is open.
    pub fn is_healthy(&self) -> bool {
        !self.shared.closed.load(Ordering::Acquire) && self.last_health().is_serving()
    }

    /// The last known aggregate health.
    pub fn last_health(&self) -> HealthStatus {
        match self.shared.health.load(Ordering::Relaxed) {
            0 => HealthStatus::Healthy,
            1 => HealthStatus::Degraded,
            _ => HealthStatus::Unhealthy,
        }
    }

    /// The cached picture of every endpoint, the current primary first; no I/O.
    pub fn info(&self, backend: &'static str) -> ConnectionInfo {
        let shared = &self.shared;
        let primary = shared.primary.load(Ordering::Acquire);
        let mut endpoints: Vec<EndpointInfo> = shared
            .endpoints
            .iter()
            .enumerate()
            .map(|(i, e)| shared.endpoint_info(e, shared.role(i, primary)))
            .collect();
        endpoints.sort_by_key(|e| e.role != EndpointRole::Primary);
        ConnectionInfo {
            mode: shared.config.mode(),
            backend,
            pool: shared.config.pool().clone(),
            endpoints,
            health: Some(self.last_health()),
            failovers: shared.failovers.load(Ordering::Relaxed),
            last_failover: *shared.last_failover.lock().unwrap_or_else(PoisonError::into_inner),
            sla: shared.sla(),
        }
    }

    /// Refuses new acquires at once, stops the health loop, then drains every pool within
    /// `deadline`.
    ///
    /// # Errors
    /// The first pool's `Timeout` when connections were still checked out at the deadline.
    pub async fn close(&self, deadline: Duration) -> Result<()> {
        self.shared.closed.store(true, Ordering::Release);
        self.stop_health_loop();
        self.shared.health.store(status_index(HealthStatus::Unhealthy), Ordering::Relaxed);
        // Every pool drains at once against the one deadline: a manager with replicas
        // closes within `deadline`, not one deadline per endpoint.
        self.on_every_pool("drain", move |pool| async move { pool.close(deadline).await }).await
    }

    /// Runs `task` on every endpoint's pool at once (`what` names it if a task panics) and
    /// returns the first error.
    async fn on_every_pool<F, Fut>(&self, what: &str, task: F) -> Result<()>
    where
        F: Fn(Pool<C>) -> Fut,
        Fut: std::future::Future<Output = Result<()>> + Send + 'static,
    {
        let mut tasks = tokio::task::JoinSet::new();
        for endpoint in &self.shared.endpoints {
            tasks.spawn(task(endpoint.pool.clone()));
        }
        let mut first_error = None;
        while let Some(joined) = tasks.join_next().await {
            let result = joined
                .map_err(|e| crate::Error::other(format!("a pool's {what} task failed: {e}")))
                .and_then(|result| result);
            if let Err(e) = result {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Resizes every endpoint's pool (see [`Pool::resize`]).
    ///
    /// # Errors
    /// The first pool's error.
    pub async fn resize(&self, pool_size: usize, max_overflow: usize) -> Result<()> {
        for endpoint in &self.shared.endpoints {
            endpoint.pool.resize(pool_size, max_overflow).await?;
        }
        Ok(())
    }

    /// Suspends every endpoint's pool (see [`Pool::suspend`]).
    pub fn suspend(&self) {
        for endpoint in &self.shared.endpoints {
            endpoint.pool.suspend();
        }
    }

    /// Waits for every endpoint's checked-out connections against the one deadline (see
    /// [`Pool::drained`]).
    ///
    /// # Errors
    /// The first pool's error: connections still checked out at the deadline.
    pub async fn drained(&self, deadline: Duration) -> Result<()> {
        self.on_every_pool("drain wait", move |pool| async move { pool.drained(deadline).await })
            .await
    }

    /// Resumes every endpoint's pool.
    pub fn resume(&self) {
        for endpoint in &self.shared.endpoints {
            endpoint.pool.resume();
        }
    }

    /// Whether the pools are suspended.
    pub fn is_suspended(&self) -> bool {
        self.shared.endpoints.iter().any(|endpoint| endpoint.pool.is_suspended())
    }

    /// Tells `listener` of the tables written through any endpoint's pool from now on
    /// (the primary's, and a replica's once it is promoted).
    pub fn add_write_listener(&self, listener: &Arc<dyn crate::WriteListener>) {
        for endpoint in &self.shared.endpoints {
            endpoint.pool.add_write_listener(Arc::clone(listener));
        }
    }

    /// The configuration the topology was built from.
    pub fn config(&self) -> &ManagerConfig {
        &self.shared.config
    }

    /// The pool of the endpoint that is the primary now.
    pub fn primary(&self) -> &Pool<C> {
        &self.shared.endpoints[self.shared.primary.load(Ordering::Acquire)].pool
    }

    /// The pools of the other endpoints (the replicas), in configuration order.
    pub fn replicas(&self) -> impl Iterator<Item = &Pool<C>> {
        let primary = self.shared.primary.load(Ordering::Acquire);
        self.shared
            .endpoints
            .iter()
            .enumerate()
            .filter(move |(i, _)| *i != primary)
            .map(|(_, e)| &e.pool)
    }

    /// How many failovers the topology has followed.
    pub fn failovers(&self) -> u64 {
        self.shared.failovers.load(Ordering::Relaxed)
    }

    fn stop_health_loop(&self) {
        let task = self.health_task.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(task) = task {
            task.abort();
        }
    }
}

impl<C: Connector> Drop for Topology<C> {
    fn drop(&mut self) {
        self.stop_health_loop();
    }
}

impl<C: Connector> Shared<C> {
    async fn route(&self, mode: ConnectionMode, primary_only: bool) -> Result<PooledConnection<C>> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed { what: "manager".into() });
        }
        let primary = self.primary.load(Ordering::Acquire);
        let reads_replicas = mode.is_read_only() && !primary_only && self.endpoints.len() > 1;
        if reads_replicas
            && let Some(connection) = self.try_replicas(mode, primary, EndpointState::Healthy).await
        {
            return Ok(connection);
        }
        let result = self.endpoints[primary].pool.acquire_for(mode).await;
        if let Err(e) = &result
            && !matches!(e, Error::CircuitOpen { .. })
            && says_endpoint_is_down(e)
        {
            // The primary failed a caller: probe now rather than at the next interval, so a
            // promotion is followed (or the primary's recovery seen) as soon as it happens.
            self.wake.notify_one();
        }
        if result.is_err()
            && reads_replicas
            && let Some(connection) =
                self.try_replicas(mode, primary, EndpointState::Degraded).await
        {
            // A slow replica is better than no answer.
            return Ok(connection);
        }
        result
    }

    /// A connection on one of the replicas in `state`, taken in turn, without waiting: a
    /// full one is passed over (the next replica, then the primary serve), so a saturated
    /// replica never costs a read the whole acquire timeout; only the primary, the last
    /// resort, is waited on. One whose checkout says it is gone is marked down.
    async fn try_replicas(
        &self,
        mode: ConnectionMode,
        primary: usize,
        state: EndpointState,
    ) -> Option<PooledConnection<C>> {
        let count = self.endpoints.len();
        let replicas = count - 1;
        let start = self.next_replica.fetch_add(1, Ordering::Relaxed);
        for offset in 0..replicas {
            // The replicas are every endpoint but the primary, taken in turn.
            let index = (primary + 1 + (start % replicas + offset) % replicas) % count;
            let replica = &self.endpoints[index];
            if replica.state() != state {
                continue;
            }
            match replica.pool.try_acquire_for(mode).await {
                Ok(connection) => return Some(connection),
                Err(e) => {
                    #[cfg(feature = "otel")]
                    crate::telemetry::otel::read_fallback(replica.pool.label());
                    tracing::debug!(replica = %replica.pool.label(), "read moves on from replica: {e}");
                    if says_endpoint_is_down(&e) {
                        let change = replica.update(|record| record.fail(e.to_string()));
                        if let Some(change) = change {
                            self.log_change(replica, &change);
                            self.wake.notify_one();
                        }
                    }
                }
            }
        }
        None
    }

    fn role(&self, index: usize, primary: usize) -> EndpointRole {
        if index == primary { EndpointRole::Primary } else { EndpointRole::Replica }
    }

    fn endpoint_info(&self, endpoint: &Endpoint<C>, role: EndpointRole) -> EndpointInfo {
        let record = endpoint.record().clone();
        let replication = match &record.last {
            Some(crate::health::Observation::Answered { replication, .. }) => *replication,
            _ => None,
        };
        EndpointInfo {
            state: record.state,
            state_reason: record.reason,
            in_recovery: replication.map(|r| r.in_recovery),
            lag: replication.and_then(|r| r.lag),
            latency: record.latency,
            bans: record.bans,
            last_probe: record.last_probe,
            ..EndpointInfo::from_pool(&endpoint.pool, role)
        }
    }

    /// The share of operations within the SLA target, over every endpoint.
    fn sla(&self) -> SlaSummary {
        let mut summary =
            SlaSummary { target: self.config.pool().sla_target(), operations: 0, within_target: 0 };
        for endpoint in &self.endpoints {
            let metrics = endpoint.pool.metrics().snapshot();
            summary.operations += metrics.operations.count;
            summary.within_target += metrics.within_sla;
        }
        summary
    }

    /// How long after the last round the next one is due: [`CONFIRM_INTERVAL`] while an
    /// endpoint with an open breaker has answered once, [`RECHECK_INTERVAL`] while one is
    /// out or its breaker not closed, else the health interval (never longer than it).
    fn next_interval(&self) -> Duration {
        let interval = self.config.pool().health_interval();
        let breaker_open =
            |e: &Endpoint<C>| e.pool.breaker().is_some_and(|b| b.state() != BreakerState::Closed);
        let awaiting_confirmation = self.endpoints.iter().any(|e| {
            breaker_open(e) && (1..endpoint::PROBES_TO_RECOVER).contains(&e.record().good_streak)
        });
        // A slow endpoint is probed as often as one that is out, so that its return to
        // speed is seen within seconds.
        let someone_out =
            self.endpoints.iter().any(|e| e.state() != EndpointState::Healthy || breaker_open(e));
        if awaiting_confirmation {
            interval.min(CONFIRM_INTERVAL)
        } else if someone_out {
            interval.min(RECHECK_INTERVAL)
        } else {
            interval
        }
    }

    fn log_change(&self, endpoint: &Endpoint<C>, change: &Change) {
        let label = endpoint.pool.label();
        match change {
            Change::Down(reason) => {
                tracing::warn!(endpoint = %label, "endpoint down, routed around until it answers again: {reason}");
            }
            Change::Banned(reason) => {
                tracing::warn!(endpoint = %label, "endpoint banned from reads: {reason}");
            }
            Change::Recovered => {
                tracing::info!(endpoint = %label, "endpoint recovered and serving again");
            }
        }
        #[cfg(feature = "otel")]
        crate::telemetry::otel::topology_change(
            label,
            match change {
                Change::Down(_) => "down",
                Change::Banned(_) => "banned",
                Change::Recovered => "recovered",
            },
        );
    }
}

/// Whether a failed checkout says the endpoint itself is gone (so reads should stop
/// trying it until the health loop sees it back), rather than busy or misused. A breaker
/// refusing because its half-open probes are all in flight (`retry_after` zero) is an
/// endpoint being tested, not one known to be down.
fn says_endpoint_is_down(error: &Error) -> bool {
    match error {
        Error::CircuitOpen { retry_after, .. } => !retry_after.is_zero(),
        other => matches!(
            other.kind(),
            ErrorKind::ConnectFailed | ErrorKind::ConnectionLost | ErrorKind::Timeout
        ),
    }
}

fn status_index(status: HealthStatus) -> u8 {
    match status {
        HealthStatus::Healthy => 0,
        HealthStatus::Degraded => 1,
        HealthStatus::Unhealthy => 2,
    }
}
