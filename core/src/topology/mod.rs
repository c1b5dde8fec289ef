//! `Topology`: one primary and zero or more replicas, each with its own pool and breaker; routing, cached health, info and drain, shared by every backend.
//!
//! A backend's manager is a `Topology` of its connector plus driver glue, so everything
//! here (routing decisions, health aggregation and caching, drain) exists once for all
//! backends. Routing today: writes and `ReadWrite`/`Batch`/`Transactional` go to the
//! primary; `ReadOnly` goes to the replicas in turn, skipping one whose acquire fails (an
//! open circuit, exhaustion, a refused connect) and falling back to the primary, so a
//! replica dying costs the caller latency, not an error. The background health loop,
//! replica banning by lag and promotion following build on this (see DESIGN.md, Topology).

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::time::Duration;

use tracing::Instrument;

use crate::circuit_breaker::CircuitBreakerConfig;
use crate::config::{DatabaseUrl, ManagerConfig, PoolConfiguration};
use crate::error::{Error, Result};
use crate::health::{EndpointRole, HealthReport, HealthStatus, probe};
use crate::info::{ConnectionInfo, EndpointInfo};
use crate::mode::ConnectionMode;
use crate::pool::{Connector, Pool, PooledConnection};
use crate::telemetry::Endpoint;

/// How long [`Topology::close`] waits for checked-out connections before giving up.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(30);

/// The endpoints of one manager and their pools.
#[derive(Debug)]
pub struct Topology<C: Connector> {
    config: ManagerConfig,
    primary: Pool<C>,
    replicas: Vec<Pool<C>>,
    next_replica: AtomicUsize,
    /// The last known aggregate health, as a [`HealthStatus`] index.
    health: AtomicU8,
    closed: AtomicBool,
}

impl<C: Connector> Topology<C> {
    /// Builds one pool per endpoint of `config`, with a connector from `connector_for`
    /// and a circuit breaker when the mode has one, then prefills the primary's pool (a
    /// primary that cannot be reached fails construction, with the reason) and, best
    /// effort, each replica's (an unreachable replica is logged and routed around).
    ///
    /// # Errors
    /// The connector factory's error, or the primary's connect error.
    pub async fn connect(
        config: ManagerConfig,
        connector_for: impl Fn(&DatabaseUrl, &PoolConfiguration) -> Result<C>,
    ) -> Result<Self> {
        let pool_config = config.pool().clone();
        let breaker = pool_config.circuit_breaker().then(CircuitBreakerConfig::default);
        let make = |url: &DatabaseUrl| -> Result<Pool<C>> {
            Pool::for_endpoint(
                Endpoint::from_url(url, &url.label()),
                connector_for(url, &pool_config)?,
                pool_config.clone(),
                breaker.clone(),
            )
        };
        let primary = make(config.primary())?;
        let replicas = config.replicas().iter().map(make).collect::<Result<Vec<_>>>()?;
        primary.prefill().await?;
        for replica in &replicas {
            if let Err(e) = replica.prefill().await {
                tracing::warn!(replica = %replica.label(), "replica unreachable at start, reads go elsewhere: {e}");
            }
        }
        Ok(Self {
            config,
            primary,
            replicas,
            next_replica: AtomicUsize::new(0),
            health: AtomicU8::new(status_index(HealthStatus::Healthy)),
            closed: AtomicBool::new(false),
        })
    }

    /// Checks out a connection routed for `mode` (see the module docs), with the session
    /// made read-only at the database for [`ConnectionMode::ReadOnly`].
    ///
    /// # Errors
    /// `Closed` after [`Self::close`]; otherwise the primary's acquire error (replica
    /// failures only move the read elsewhere).
    pub async fn acquire(&self, mode: ConnectionMode) -> Result<PooledConnection<C>> {
        let span = crate::telemetry::acquire_span(self.primary.metrics().endpoint(), mode.as_str());
        // Without a subscriber the checkout runs unwrapped: no span, and no extra move of
        // the (large) checkout future into an instrumenting wrapper.
        let result = match &span {
            Some(span) => self.route(mode).instrument(span.clone()).await,
            None => self.route(mode).await,
        };
        if let Err(error) = &result {
            crate::telemetry::record_failure(span.as_ref(), error);
        }
        result
    }

    async fn route(&self, mode: ConnectionMode) -> Result<PooledConnection<C>> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed { what: "manager".into() });
        }
        if mode.is_read_only() && !self.replicas.is_empty() {
            let start = self.next_replica.fetch_add(1, Ordering::Relaxed);
            for offset in 0..self.replicas.len() {
                let replica = &self.replicas[(start + offset) % self.replicas.len()];
                match replica.acquire_for(mode).await {
                    Ok(connection) => return Ok(connection),
                    Err(e) => {
                        #[cfg(feature = "otel")]
                        crate::telemetry::otel::read_fallback(replica.label());
                        tracing::debug!(replica = %replica.label(), "read moves on from replica: {e}");
                    }
                }
            }
        }
        self.primary.acquire_for(mode).await
    }

    /// Probes every endpoint, aggregates, and caches the result for [`Self::is_healthy`].
    pub async fn health_check(&self) -> HealthReport {
        let mut components = vec![probe(&self.primary, EndpointRole::Primary).await];
        for replica in &self.replicas {
            components.push(probe(replica, EndpointRole::Replica).await);
        }
        let report = HealthReport::from_components(components);
        self.health.store(status_index(report.status), Ordering::Relaxed);
        report
    }

    /// True when the last known health is healthy or degraded, and the manager is open.
    pub fn is_healthy(&self) -> bool {
        !self.closed.load(Ordering::Acquire) && self.last_health().is_serving()
    }

    /// The last known aggregate health.
    pub fn last_health(&self) -> HealthStatus {
        match self.health.load(Ordering::Relaxed) {
            0 => HealthStatus::Healthy,
            1 => HealthStatus::Degraded,
            _ => HealthStatus::Unhealthy,
        }
    }

    /// The cached picture of every endpoint; no I/O.
    pub fn info(&self, backend: &'static str) -> ConnectionInfo {
        let mut endpoints = vec![EndpointInfo::from_pool(&self.primary, EndpointRole::Primary)];
        endpoints.extend(
            self.replicas.iter().map(|r| EndpointInfo::from_pool(r, EndpointRole::Replica)),
        );
        ConnectionInfo {
            mode: self.config.mode(),
            backend,
            pool: self.config.pool().clone(),
            endpoints,
            health: Some(self.last_health()),
        }
    }

    /// Refuses new acquires at once, then drains every pool within `deadline`.
    ///
    /// # Errors
    /// The first pool's `Timeout` when connections were still checked out at the deadline.
    pub async fn close(&self, deadline: Duration) -> Result<()> {
        self.closed.store(true, Ordering::Release);
        self.health.store(status_index(HealthStatus::Unhealthy), Ordering::Relaxed);
        let mut first_error = None;
        for pool in std::iter::once(&self.primary).chain(&self.replicas) {
            if let Err(e) = pool.close(deadline).await {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// The configuration the topology was built from.
    pub fn config(&self) -> &ManagerConfig {
        &self.config
    }

    /// The primary's pool.
    pub fn primary(&self) -> &Pool<C> {
        &self.primary
    }

    /// The replicas' pools.
    pub fn replicas(&self) -> &[Pool<C>] {
        &self.replicas
    }
}

fn status_index(status: HealthStatus) -> u8 {
    match status {
        HealthStatus::Healthy => 0,
        HealthStatus::Degraded => 1,
        HealthStatus::Unhealthy => 2,
    }
}

#[cfg(test)]
mod tests;
