//! Health: per-endpoint probes and the healthy / degraded / unhealthy aggregation of a `HealthReport`.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

use crate::pool::{Connector, Pool};

/// The health of one component or of the whole manager.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
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
pub enum EndpointRole {
    /// Takes writes (and reads when no replica is healthy).
    Primary,
    /// Takes `ConnectionMode::ReadOnly` reads.
    Replica,
}

/// The result of probing one endpoint.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
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
}

/// An active health check of every endpoint, aggregated.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct HealthReport {
    /// The aggregate: unhealthy when no primary is healthy or degraded; degraded when the
    /// primary is degraded or any replica is not healthy; else healthy.
    pub status: HealthStatus,
    /// One entry per endpoint, primary first.
    pub components: Vec<ComponentHealth>,
    /// When the check ran.
    pub checked_at: DateTime<Utc>,
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
        Self { status, components, checked_at: Utc::now() }
    }
}

/// Probes one endpoint through its pool: acquire (breaker and timeouts included), then the
/// connector's ping, timed together. An open circuit, an exhausted pool or a failed ping
/// is unhealthy; a probe slower than [`SLOW_PROBE`] is degraded.
pub async fn probe<C: Connector>(pool: &Pool<C>, role: EndpointRole) -> ComponentHealth {
    let started = Instant::now();
    let outcome = match pool.acquire().await {
        Ok(mut connection) => {
            let result = tokio::time::timeout(
                pool.config().validation_timeout().max(SLOW_PROBE),
                pool.connector().validate(&mut connection),
            )
            .await;
            match result {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => {
                    if e.kind().evicts_connection() {
                        connection.mark_broken();
                    }
                    Err(e.to_string())
                }
                Err(_) => {
                    connection.mark_broken();
                    Err("the ping did not answer in time".to_owned())
                }
            }
        }
        Err(e) => Err(e.to_string()),
    };
    let latency = started.elapsed();
    let (status, message, latency) = match outcome {
        Ok(()) if latency > SLOW_PROBE => (
            HealthStatus::Degraded,
            Some(format!("slow: the probe took {latency:?}")),
            Some(latency),
        ),
        Ok(()) => (HealthStatus::Healthy, None, Some(latency)),
        Err(message) => (HealthStatus::Unhealthy, Some(message), None),
    };
    ComponentHealth { name: pool.label().to_owned(), role, status, latency, message }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::testing::MemoryConnector;
    use crate::{ManagerMode, PoolConfiguration};

    fn component(role: EndpointRole, status: HealthStatus) -> ComponentHealth {
        ComponentHealth { name: "x".into(), role, status, latency: None, message: None }
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
}
