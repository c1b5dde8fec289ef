//! `ConnectionInfo`: the cached, no-I/O picture of a manager (mode, configuration, endpoints, pool counts, breakers, metrics).

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::circuit_breaker::BreakerSnapshot;
use crate::config::PoolConfiguration;
use crate::connector::Connector;
use crate::health::{EndpointRole, EndpointState, HealthStatus};
use crate::mode::ManagerMode;
use crate::pool::{LongHold, Pool};
use crate::telemetry::metrics::PoolMetricsSnapshot;
use crate::telemetry::metrics::{PoolStatus, SlaSummary};

/// What `connection_info()` returns: everything known without touching the network.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
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
    /// Failovers followed: times the primary role moved to a promoted endpoint.
    pub failovers: u64,
    /// When the last failover was followed.
    pub last_failover: Option<DateTime<Utc>>,
    /// Operations against the mode's latency target, over every endpoint.
    pub sla: SlaSummary,
}

/// The cached state of one endpoint.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
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
    /// Its state as the health loop last saw it (decides routing).
    pub state: EndpointState,
    /// Why it is not healthy, when it is not (or how far its recovery got).
    pub state_reason: Option<String>,
    /// Whether it last reported being a standby, when its database reports roles.
    pub in_recovery: Option<bool>,
    /// Its replay lag at the last probe, when it is a standby.
    pub lag: Option<Duration>,
    /// Its health probes' round trip, smoothed; a replica much slower than the primary is
    /// degraded and read from only when no faster endpoint can serve.
    pub latency: Option<Duration>,
    /// Times it was banned or marked down.
    pub bans: u64,
    /// When the health loop last probed it.
    pub last_probe: Option<DateTime<Utc>>,
    /// Connections of its pool checked out for longer than the leak detection threshold
    /// now, longest first, with where each was acquired (empty when detection is off).
    pub long_holds: Vec<LongHold>,
}

impl EndpointInfo {
    /// Reads an endpoint's pool state; no I/O. The health fields start as healthy and
    /// unprobed: a topology fills them from its health loop's record.
    pub fn from_pool<C: Connector>(pool: &Pool<C>, role: EndpointRole) -> Self {
        Self {
            label: pool.label().to_owned(),
            role,
            status: pool.status(),
            breaker: pool.breaker().map(|b| b.snapshot()),
            metrics: pool.metrics().snapshot(),
            state: EndpointState::Healthy,
            state_reason: None,
            in_recovery: None,
            lag: None,
            latency: None,
            bans: 0,
            last_probe: None,
            long_holds: pool.long_holds(),
        }
    }
}

impl ConnectionInfo {
    /// The primary's entry, when there is one.
    pub fn primary(&self) -> Option<&EndpointInfo> {
        self.endpoints.iter().find(|e| e.role == EndpointRole::Primary)
    }
}
