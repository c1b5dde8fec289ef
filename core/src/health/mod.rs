//! Health: per-endpoint probes and the healthy / degraded / unhealthy aggregation of a `HealthReport`.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::connector::Connector;
use crate::pool::Pool;

mod observe;

#[cfg(test)]
pub(crate) use observe::probe_deadline;
pub use observe::{Observation, observe};

/// The health of one component or of the whole manager.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum HealthStatus {
    /// Everything answers in time.
    Healthy,
    /// Serving, with reduced capacity or redundancy (a replica down, a slow primary).
    Degraded,
    /// Not serving writes: the primary does not answer.
    Unhealthy,
}

/// The role an endpoint plays in the manager's topology.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum EndpointRole {
    /// Takes writes (and reads when no replica is healthy).
    Primary,
    /// Takes `ConnectionMode::ReadOnly` reads.
    Replica,
}

/// The state of one endpoint as the topology's health loop sees it; decides routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum EndpointState {
    /// Answers in time; a replica in this state takes reads.
    #[default]
    Healthy,
    /// Answers, slowly; still takes its share of work.
    Degraded,
    /// Answers but must not take reads: a replica lagging past `max_replica_lag` or one
    /// that stopped being a standby, or a primary that reports it is a standby. Re-probed
    /// every second and let back in after consecutive good probes.
    Banned,
    /// Does not answer (refused, timed out, lost). Re-probed every second and let back in
    /// after consecutive good probes.
    Down,
}

impl EndpointState {
    /// A stable lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Healthy => "healthy",
            Self::Degraded => "degraded",
            Self::Banned => "banned",
            Self::Down => "down",
        }
    }

    /// Whether a replica in this state takes reads.
    pub fn serves_reads(self) -> bool {
        matches!(self, Self::Healthy | Self::Degraded)
    }

    /// The component status it makes for an endpoint in `role`: a banned replica is
    /// degraded redundancy, a banned primary (one in recovery) cannot take writes.
    pub fn status(self, role: EndpointRole) -> HealthStatus {
        match (self, role) {
            (Self::Healthy, _) => HealthStatus::Healthy,
            (Self::Degraded, _) | (Self::Banned, EndpointRole::Replica) => HealthStatus::Degraded,
            (Self::Banned, EndpointRole::Primary) | (Self::Down, _) => HealthStatus::Unhealthy,
        }
    }

    pub(crate) fn to_u8(self) -> u8 {
        self as u8
    }

    pub(crate) fn from_u8(value: u8) -> Self {
        match value {
            0 => Self::Healthy,
            1 => Self::Degraded,
            2 => Self::Banned,
            _ => Self::Down,
        }
    }
}

impl fmt::Display for EndpointState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The result of probing one endpoint.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct ComponentHealth {
    /// The endpoint's redacted label.
    pub name: String,
    /// Its role.
    pub role: EndpointRole,
    /// Its status.
    pub status: HealthStatus,
    /// The probe's round trip (acquire plus ping), when it got that far.
    pub latency: Option<Duration>,
    /// Why it is not healthy, when it is not.
    pub message: Option<String>,
    /// Its state in the topology after this probe (decides routing).
    pub state: EndpointState,
    /// Whether it reported being a standby; `None` when it did not answer or its database
    /// reports no replication role (SQLite).
    pub in_recovery: Option<bool>,
    /// Its replay lag, when it is a standby that reports one.
    pub lag: Option<Duration>,
}

/// An active health check of every endpoint, aggregated.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct HealthReport {
    /// The aggregate: unhealthy when no primary is healthy or degraded; degraded when the
    /// primary is degraded or any replica is not healthy; else healthy.
    pub status: HealthStatus,
    /// One entry per endpoint, primary first.
    pub components: Vec<ComponentHealth>,
    /// When the check ran.
    pub checked_at: DateTime<Utc>,
    /// The share of operations within the mode's SLA target, when the report comes from a
    /// manager that has run operations.
    pub sla: Option<crate::telemetry::metrics::SlaSummary>,
}

/// A probe slower than this marks the endpoint degraded rather than healthy.
pub const SLOW_PROBE: Duration = Duration::from_secs(1);

impl HealthStatus {
    /// A stable lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Healthy => "healthy",
            Self::Degraded => "degraded",
            Self::Unhealthy => "unhealthy",
        }
    }

    /// Whether the manager is serving: healthy or degraded.
    pub fn is_serving(self) -> bool {
        self != Self::Unhealthy
    }
}

impl fmt::Display for HealthStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl EndpointRole {
    /// A stable lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Primary => "primary",
            Self::Replica => "replica",
        }
    }
}

impl HealthReport {
    /// Aggregates component results (see [`HealthReport::status`]).
    pub fn from_components(components: Vec<ComponentHealth>) -> Self {
        let primary = components
            .iter()
            .filter(|c| c.role == EndpointRole::Primary)
            .map(|c| c.status)
            .min()
            .unwrap_or(HealthStatus::Unhealthy);
        let replicas_ok = components
            .iter()
            .filter(|c| c.role == EndpointRole::Replica)
            .all(|c| c.status == HealthStatus::Healthy);
        let status = match primary {
            HealthStatus::Unhealthy => HealthStatus::Unhealthy,
            HealthStatus::Healthy if replicas_ok => HealthStatus::Healthy,
            _ => HealthStatus::Degraded,
        };
        Self { status, components, checked_at: Utc::now(), sla: None }
    }
}

/// Probes one endpoint through its pool (see [`observe`]) and reports it as a component:
/// an endpoint that answered within [`SLOW_PROBE`] is healthy, a slower one degraded, one
/// that failed (or whose pool had no connection to spare) unhealthy.
pub async fn probe<C: Connector>(pool: &Pool<C>, role: EndpointRole) -> ComponentHealth {
    let observation = observe(pool).await;
    let state = match &observation {
        Observation::Answered { latency, .. } if *latency > SLOW_PROBE => EndpointState::Degraded,
        Observation::Answered { .. } => EndpointState::Healthy,
        Observation::Busy(_) | Observation::Failed { .. } => EndpointState::Down,
    };
    observation.component(pool.label(), role, state, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use crate::pool::testing::MemoryConnector;
    use crate::{ManagerMode, PoolConfiguration};

    fn component(role: EndpointRole, status: HealthStatus) -> ComponentHealth {
        ComponentHealth {
            name: "x".into(),
            role,
            status,
            latency: None,
            message: None,
            state: EndpointState::Healthy,
            in_recovery: None,
            lag: None,
        }
    }

    #[test]
    fn aggregation_follows_the_primary_then_the_replicas() {
        use EndpointRole::{Primary, Replica};
        use HealthStatus::{Degraded, Healthy, Unhealthy};
        let table = [
            (vec![], Unhealthy),
            (vec![(Primary, Healthy)], Healthy),
            (vec![(Primary, Degraded)], Degraded),
            (vec![(Primary, Unhealthy)], Unhealthy),
            (vec![(Primary, Healthy), (Replica, Healthy)], Healthy),
            (vec![(Primary, Healthy), (Replica, Unhealthy)], Degraded),
            (vec![(Primary, Healthy), (Replica, Degraded)], Degraded),
            (vec![(Primary, Unhealthy), (Replica, Healthy)], Unhealthy),
            (vec![(Replica, Healthy)], Unhealthy),
        ];
        for (components, expected) in table {
            let input: Vec<_> = components.iter().map(|(r, s)| component(*r, *s)).collect();
            assert_eq!(HealthReport::from_components(input).status, expected, "{components:?}");
        }
        assert!(Degraded.is_serving() && !Unhealthy.is_serving());
    }

    #[tokio::test(start_paused = true)]
    async fn probes_report_latency_and_failures() {
        let connector = MemoryConnector::new();
        let config = PoolConfiguration::for_mode(ManagerMode::Admin);
        let pool = Pool::new("memory:probe", connector.clone(), config, None).unwrap();
        connector.set_latency(std::time::Duration::from_millis(5));
        let healthy = probe(&pool, EndpointRole::Primary).await;
        assert_eq!(healthy.status, HealthStatus::Healthy);
        assert_eq!(healthy.latency, Some(std::time::Duration::from_millis(5)));
        connector.set_latency(std::time::Duration::from_millis(1500));
        let slow = probe(&pool, EndpointRole::Primary).await;
        assert_eq!(slow.status, HealthStatus::Degraded);
        connector.set_latency(std::time::Duration::ZERO);
        connector.break_existing_connections();
        connector.refuse_connections(true);
        let down = probe(&pool, EndpointRole::Replica).await;
        assert_eq!(down.status, HealthStatus::Unhealthy);
        assert!(down.message.unwrap().contains("connection refused"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_pool_with_every_connection_in_use_is_probed_on_a_connection_of_its_own() {
        let connector = MemoryConnector::new();
        let config = PoolConfiguration::builder(ManagerMode::Admin)
            .pool_size(1)
            .max_overflow(0)
            .build()
            .unwrap();
        let pool = Pool::new("memory:busy", connector.clone(), config, None).unwrap();
        let held = pool.acquire().await.unwrap();
        let started = tokio::time::Instant::now();
        let observation = observe(&pool).await;
        assert!(observation.answered(), "{observation:?}");
        assert_eq!(
            started.elapsed(),
            std::time::Duration::ZERO,
            "the 10 s acquire timeout was not waited"
        );
        assert_eq!(pool.status().size, 1, "the probe's own connection is not pooled");
        // A server that stopped answering is found out by that connection, within the
        // probe's deadline, though every pooled connection is busy.
        connector.set_connect_delay(std::time::Duration::from_secs(60));
        let observation = observe(&pool).await;
        assert!(
            matches!(observation, Observation::Failed { kind: ErrorKind::Timeout, .. }),
            "{observation:?}"
        );
        assert_eq!(started.elapsed(), probe_deadline(&pool), "bounded by the probe deadline");
        drop(held);
        connector.set_connect_delay(std::time::Duration::ZERO);
        assert!(observe(&pool).await.answered());
    }
}
