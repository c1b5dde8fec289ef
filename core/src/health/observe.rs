//! `observe`: one active probe of an endpoint (reachability, role and replication lag), through its pool, or around it while its breaker is open.

use std::time::Duration;

use tokio::time::{Instant, timeout};

use super::{ComponentHealth, EndpointRole, EndpointState, SLOW_PROBE};
use crate::circuit_breaker::BreakerState;
use crate::connector::Connector;
use crate::connector::ReplicationStatus;
use crate::error::{ConnectFailure, Error, ErrorKind, Result};
use crate::pool::Pool;

/// What one probe of an endpoint found.
#[derive(Debug, Clone, PartialEq)]
pub enum Observation {
    /// The endpoint answered.
    Answered {
        /// The probe's round trip (checkout or connect, then the query).
        latency: Duration,
        /// Its place in replication, when its database reports one.
        replication: Option<ReplicationStatus>,
    },
    /// Its pool had no connection to spare within the acquire timeout: the endpoint is
    /// busy, which says nothing about whether it is up.
    Busy(String),
    /// It did not answer: refused, timed out, lost.
    Failed {
        /// What kind of failure (`Timeout` when nothing answered in time, the connect
        /// included).
        kind: ErrorKind,
        /// The error, scrubbed of any password.
        message: String,
    },
}

/// Probes the endpoint of `pool`: a pooled connection (so the probe also exercises the
/// checkout path and feeds the breaker) runs the database's replication query, or a ping
/// where the database has no replication. While the endpoint's breaker is open the pool
/// would fail fast without I/O (and while it is half-open, its probe slots belong to real
/// calls), so the probe opens a connection of its own instead; the health loop moves an
/// open breaker to half-open after two such successes in a row.
///
/// Every step is bounded (the acquire and connect timeouts, then the validation timeout,
/// at least [`SLOW_PROBE`], for the query), and a pool whose every connection is in use is
/// reported busy at once rather than waited on. A failure makes the pool ping its idle
/// connections before their next use, since they probably died with the endpoint.
pub async fn observe<C: Connector>(pool: &Pool<C>) -> Observation {
    let started = Instant::now();
    let breaker_open = pool.breaker().is_some_and(|b| b.state() != BreakerState::Closed);
    let limit = probe_deadline(pool);
    let probe =
        async { if breaker_open { probe_direct(pool).await } else { probe_pooled(pool).await } };
    let result = timeout(limit, probe).await.unwrap_or_else(|_| {
        Err(Error::Timeout {
            what: format!(
                "the health probe of {} (no answer: frozen or unreachable?)",
                pool.label()
            ),
            after: limit,
        })
    });
    match result {
        Ok(replication) => Observation::Answered { latency: started.elapsed(), replication },
        Err(e) if e.kind() == ErrorKind::PoolExhausted => Observation::Busy(e.to_string()),
        Err(Error::ConnectFailed {
            reason: ConnectFailure::TooManyConnections, message, ..
        }) => {
            // The server answered, to say it is full: busy, not gone.
            Observation::Busy(message)
        }
        Err(e) => {
            pool.suspect_idle_connections();
            // A connect that got no answer in time is as unanswered as a query that got none.
            let kind = match &e {
                Error::ConnectFailed { reason: ConnectFailure::Timeout, .. } => ErrorKind::Timeout,
                other => other.kind(),
            };
            Observation::Failed { kind, message: e.to_string() }
        }
    }
}

impl Observation {
    /// Whether the endpoint answered.
    pub fn answered(&self) -> bool {
        matches!(self, Self::Answered { .. })
    }

    /// Whether the probe got no answer at all in time (as from a frozen or blackholed
    /// server), rather than a refusal or an error.
    pub fn unanswered(&self) -> bool {
        matches!(self, Self::Failed { kind: ErrorKind::Timeout, .. })
    }

    /// What the endpoint said of its replication role, when it answered with one.
    pub fn in_recovery(&self) -> Option<bool> {
        match self {
            Self::Answered { replication: Some(r), .. } => Some(r.in_recovery),
            _ => None,
        }
    }

    /// The endpoint as a health-report component, in `state`, with `reason` (else this
    /// observation's failure, or a slow probe) as its message.
    pub fn component(
        &self,
        name: &str,
        role: EndpointRole,
        state: EndpointState,
        reason: Option<&str>,
    ) -> ComponentHealth {
        let (latency, replication, failure) = match self {
            Self::Answered { latency, replication } => (Some(*latency), *replication, None),
            Self::Busy(message) | Self::Failed { message, .. } => (None, None, Some(message)),
        };
        let slow =
            latency.filter(|l| *l > SLOW_PROBE).map(|l| format!("slow: the probe took {l:?}"));
        let message = reason.map(str::to_owned).or_else(|| failure.cloned()).or(slow);
        ComponentHealth {
            name: name.to_owned(),
            role,
            status: state.status(role),
            latency,
            message,
            state,
            in_recovery: replication.map(|r| r.in_recovery),
            lag: replication.and_then(|r| r.lag),
        }
    }
}

/// The probe on a pooled connection; a failed or unanswered query closes the connection
/// and counts against the breaker.
async fn probe_pooled<C: Connector>(pool: &Pool<C>) -> Result<Option<ReplicationStatus>> {
    let status = pool.status();
    if status.idle == 0 && status.size >= status.max_size {
        // Every connection is at work, perhaps each stuck in a statement on a server that
        // stopped answering: a probe waiting its turn would hold `health_check()` for the
        // whole acquire timeout and say nothing. A connection of its own tells.
        return probe_direct(pool).await;
    }
    let mut connection = pool.acquire().await?;
    let result = bounded(pool, read_status(pool.connector(), &mut connection)).await;
    if let Err(e) = &result {
        if e.kind().evicts_connection() || e.kind() == ErrorKind::Timeout {
            connection.mark_lost();
        }
        if let Some(breaker) = pool.breaker() {
            breaker.record_failure(e.kind());
        }
    }
    result
}

/// The probe on a connection of its own, closed afterwards.
async fn probe_direct<C: Connector>(pool: &Pool<C>) -> Result<Option<ReplicationStatus>> {
    let limit = pool.config().connect_timeout();
    let mut connection = match timeout(limit, pool.connector().connect()).await {
        Ok(connection) => connection?,
        Err(_) => {
            return Err(Error::Timeout {
                what: format!("connecting to {} for a health probe", pool.label()),
                after: limit,
            });
        }
    };
    bounded(pool, read_status(pool.connector(), &mut connection)).await
}

/// How long a whole probe (checkout or connect, then the query) may take before the
/// endpoint counts as not answering: the pool's validation timeout, at least
/// [`SLOW_PROBE`]. A frozen server (its sockets open, nothing answering) is then found out
/// within it, whatever the connect and acquire timeouts.
pub(crate) fn probe_deadline<C: Connector>(pool: &Pool<C>) -> Duration {
    pool.config().validation_timeout().max(SLOW_PROBE)
}

/// `query` bounded by the [`probe_deadline`].
async fn bounded<C: Connector, T>(
    pool: &Pool<C>,
    query: impl Future<Output = Result<T>>,
) -> Result<T> {
    let limit = probe_deadline(pool);
    timeout(limit, query).await.unwrap_or_else(|_| {
        Err(Error::Timeout { what: format!("the health probe of {}", pool.label()), after: limit })
    })
}

/// The replication status, or a ping where the database reports none.
async fn read_status<C: Connector>(
    connector: &C,
    connection: &mut C::Connection,
) -> Result<Option<ReplicationStatus>> {
    match connector.replication_status(connection).await? {
        Some(status) => Ok(Some(status)),
        None => connector.validate(connection).await.map(|()| None),
    }
}
