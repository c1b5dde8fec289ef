//! `ConnectionInfo`: the cached, no-I/O picture of a manager (mode, configuration, endpoints, pool counts, breakers, metrics).

use crate::circuit_breaker::BreakerSnapshot;
use crate::config::PoolConfiguration;
use crate::health::{EndpointRole, HealthStatus};
use crate::metrics::PoolMetricsSnapshot;
use crate::mode::ManagerMode;
use crate::pool::{Connector, Pool, PoolStatus};

/// What `connection_info()` returns: everything known without touching the network.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct ConnectionInfo {
    /// The manager's mode.
    pub mode: ManagerMode,
    /// The backend serving it (`sqlx`, `diesel`, `memory`...).
    pub backend: &'static str,
    /// The effective pool configuration (shared by every endpoint).
    pub pool: PoolConfiguration,
    /// Each endpoint, primary first.
    pub endpoints: Vec<EndpointInfo>,
    /// The last known aggregate health, when a check has run.
    pub health: Option<HealthStatus>,
}

/// The cached state of one endpoint.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct EndpointInfo {
    /// The endpoint's redacted label.
    pub label: String,
    /// Its role.
    pub role: EndpointRole,
    /// Its pool's connection counts.
    pub status: PoolStatus,
    /// Its circuit breaker, when the mode has one.
    pub breaker: Option<BreakerSnapshot>,
    /// Its pool's counters and histograms.
    pub metrics: PoolMetricsSnapshot,
}

impl EndpointInfo {
    /// Reads an endpoint's state from its pool; no I/O.
    pub fn from_pool<C: Connector>(pool: &Pool<C>, role: EndpointRole) -> Self {
        Self {
            label: pool.label().to_owned(),
            role,
            status: pool.status(),
            breaker: pool.breaker().map(|b| b.snapshot()),
            metrics: pool.metrics().snapshot(),
        }
    }
}

impl ConnectionInfo {
    /// The primary's entry, when there is one.
    pub fn primary(&self) -> Option<&EndpointInfo> {
        self.endpoints.iter().find(|e| e.role == EndpointRole::Primary)
    }
}
