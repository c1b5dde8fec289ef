//! The topology's health loop: probe rounds over every endpoint, state changes, promotion following, and the background task that runs them.

use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError, Weak};

use chrono::Utc;
use tokio::sync::Notify;
use tokio::task::JoinSet;

use tokio::time::Instant;

use super::endpoint::{PROBES_TO_ABANDON, PROBES_TO_RECOVER, PrimaryView};
use super::{CONFIRM_INTERVAL, Shared, status_index};
use crate::config::DatabaseKind;
use crate::connector::Connector;
use crate::error::ErrorKind;
use crate::health::{EndpointRole, HealthReport, Observation, observe};

/// The background task: a probe round at start (unless the pool is lazy), then one every
/// `health_interval` (every [`RECHECK_INTERVAL`](super::RECHECK_INTERVAL) while an
/// endpoint is out or its breaker open, whoever found it out; every
/// [`CONFIRM_INTERVAL`](super::CONFIRM_INTERVAL) while an open breaker awaits its second
/// good probe), or at once when woken. It ticks at the shortest of these and probes only
/// when a round is due, so a `health_check()` that finds trouble speeds it up at once. Holds
/// only a weak reference between ticks, so it ends when the topology is dropped even if
/// nobody aborts it.
pub(super) async fn run<C: Connector>(shared: Weak<Shared<C>>, wake: Arc<Notify>) {
    let Some(tick) =
        shared.upgrade().map(|s| s.config.pool().health_interval().min(CONFIRM_INTERVAL))
    else {
        return;
    };
    // A first round at once, so that roles and lag are known from the start (a lagging
    // replica is not read from for a whole interval, a promotion right after start is
    // recognised as one); not for a lazy manager, which connects on first use only.
    if let Some(shared) = shared.upgrade()
        && shared.config.pool().min_idle() > 0
    {
        round(&shared).await;
    }
    loop {
        let woken = tokio::select! {
            () = tokio::time::sleep(tick) => false,
            () = wake.notified() => true,
        };
        let Some(shared) = shared.upgrade() else { return };
        if shared.closed.load(Ordering::Acquire) {
            return;
        }
        let since = shared.last_round.lock().unwrap_or_else(PoisonError::into_inner).elapsed();
        if woken || since >= shared.next_interval() {
            round(&shared).await;
        }
    }
}

/// One probe round: observes every endpoint concurrently (so one that never answers does
/// not delay the others), follows a promotion in modes with high availability (deciding
/// the roles before judging anyone, so the promoted endpoint is judged as the primary it
/// now is), applies each observation to its record, and caches and returns the aggregate.
///
/// One round runs at a time: a caller that finds one in flight waits for it and takes its
/// report (joins it) rather than queueing a round of its own behind it, so a
/// `health_check()` takes at most about one probe deadline however often it is called.
pub(super) async fn round<C: Connector>(shared: &Shared<C>) -> HealthReport {
    let seen = shared.rounds_done.load(Ordering::Acquire);
    let mut last = shared.round.lock().await;
    if shared.rounds_done.load(Ordering::Acquire) != seen
        && let Some(report) = last.as_ref()
    {
        return report.clone();
    }
    let mut probes = JoinSet::new();
    for (index, endpoint) in shared.endpoints.iter().enumerate() {
        let pool = endpoint.pool.clone();
        probes.spawn(async move { (index, observe(&pool).await) });
    }
    let mut observations: Vec<Observation> = vec![
        Observation::Failed {
            kind: ErrorKind::Other,
            message: "the health probe's task ended without a result".to_owned(),
        };
        shared.endpoints.len()
    ];
    while let Some(joined) = probes.join_next().await {
        if let Ok((index, observation)) = joined {
            observations[index] = observation;
        }
    }
    let mut primary = shared.primary.load(Ordering::Acquire);
    if shared.config.pool().high_availability() {
        let views: Vec<View> = shared
            .endpoints
            .iter()
            .zip(&observations)
            .map(|(endpoint, observation)| View {
                answered: !matches!(observation, Observation::Failed { .. }),
                in_recovery: observation.in_recovery(),
                was_standby: endpoint.record().was_standby,
            })
            .collect();
        // Only PostgreSQL's "in recovery" says for certain that a server is a standby; a
        // MySQL server's read_only is an operator's switch, flipped for maintenance too.
        let role_swap = shared.config.kind() == DatabaseKind::Postgres;
        if let Some(target) = promotion_target(primary, &views, role_swap) {
            follow_promotion(shared, primary, target);
            primary = target;
        }
    }
    let max_lag = shared.config.pool().max_replica_lag();
    for (endpoint, observation) in shared.endpoints.iter().zip(&observations) {
        endpoint.update(|r| r.time(observation));
    }
    let primary_view = PrimaryView {
        position: match &observations[primary] {
            Observation::Answered { replication: Some(status), .. } if !status.in_recovery => {
                status.position
            }
            _ => None,
        },
        latency: shared.endpoints[primary].record().latency,
    };
    for (index, (endpoint, observation)) in shared.endpoints.iter().zip(observations).enumerate() {
        let (change, good_streak, unanswered) = endpoint.update(|r| {
            let change = r.observe(observation, index == primary, max_lag, primary_view);
            (change, r.good_streak, r.unanswered_streak)
        });
        if unanswered >= PROBES_TO_ABANDON {
            // Gone, whatever its pool says: statements waiting on it would wait out their
            // deadlines for nothing. Reads among them are run again elsewhere.
            endpoint.pool.abandon_in_flight();
        }
        if good_streak >= PROBES_TO_RECOVER
            && let Some(breaker) = endpoint.pool.breaker()
        {
            // Two good probes in a row: an open breaker lets real calls probe the endpoint
            // now rather than after its recovery timeout. A single good answer does not,
            // or a flapping endpoint would never feel the breaker's backoff.
            breaker.recovery_observed();
        }
        if let Some(change) = change {
            shared.log_change(endpoint, &change);
        }
    }
    let report = shared.report();
    shared.health.store(status_index(report.status), Ordering::Relaxed);
    *shared.last_round.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now();
    *last = Some(report.clone());
    shared.rounds_done.fetch_add(1, Ordering::Release);
    report
}

/// What a promotion decision needs to know of one endpoint in a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct View {
    /// It answered, or was too busy to (a busy endpoint is not a gone one).
    answered: bool,
    in_recovery: Option<bool>,
    /// It was seen as a standby in an earlier round.
    was_standby: bool,
}

/// The endpoint that should become the primary, if the current one (`primary`) is gone.
///
/// The primary is gone when it did not answer or reports it is a standby. A candidate
/// answered, reports it is not a standby, and was one before (it was promoted), or, where
/// `role_swap` holds (PostgreSQL, whose "in recovery" only a standby reports), the old
/// primary itself now reports being a standby (the two swapped roles). A replica that
/// never was a standby (a logical replica, or the same server under another name) is not
/// taken for a promoted one otherwise. The first candidate in configuration order wins.
fn promotion_target(primary: usize, views: &[View], role_swap: bool) -> Option<usize> {
    let current = views.get(primary)?;
    let demoted = current.in_recovery == Some(true);
    if current.answered && !demoted {
        return None;
    }
    views.iter().enumerate().position(|(i, v)| {
        i != primary
            && v.answered
            && v.in_recovery == Some(false)
            && (v.was_standby || (demoted && role_swap))
    })
}

/// Moves the primary role from `old` to `new`, counts and logs the failover. The records
/// are then judged in their new roles by the round.
fn follow_promotion<C: Connector>(shared: &Shared<C>, from: usize, to: usize) {
    let (old, new) = (&shared.endpoints[from], &shared.endpoints[to]);
    new.update(|record| {
        record.was_standby = false;
        record.was_primary = false;
        record.good_streak = 0;
    });
    old.update(|record| record.was_primary = true);
    shared.primary.store(to, Ordering::Release);
    let failovers = shared.failovers.fetch_add(1, Ordering::Relaxed) + 1;
    *shared.last_failover.lock().unwrap_or_else(PoisonError::into_inner) = Some(Utc::now());
    tracing::warn!(
        from = %old.pool.label(),
        to = %new.pool.label(),
        failovers,
        "failover followed: the primary is gone and {} reports it was promoted; writes go there now",
        new.pool.label()
    );
    #[cfg(feature = "otel")]
    crate::telemetry::otel::topology_change(new.pool.label(), "failover");
}

impl<C: Connector> Shared<C> {
    /// The report of the last round, the current primary first.
    fn report(&self) -> HealthReport {
        let primary = self.primary.load(Ordering::Acquire);
        let mut components: Vec<_> = self
            .endpoints
            .iter()
            .enumerate()
            .filter_map(|(i, endpoint)| {
                let record = endpoint.record();
                let role = self.role(i, primary);
                let last = record.last.as_ref()?;
                Some(last.component(
                    endpoint.pool.label(),
                    role,
                    record.state,
                    record.reason.as_deref(),
                ))
            })
            .collect();
        components.sort_by_key(|c| c.role != EndpointRole::Primary);
        let mut report = HealthReport::from_components(components);
        report.sla = Some(self.sla());
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(answered: bool, in_recovery: Option<bool>, was_standby: bool) -> View {
        View { answered, in_recovery, was_standby }
    }

    #[test]
    fn a_promotion_is_followed_only_when_the_primary_is_gone_and_a_standby_was_promoted() {
        let up_primary = view(true, Some(false), false);
        let down = view(false, None, false);
        let demoted = view(true, Some(true), false);
        let standby = view(true, Some(true), true);
        let promoted = view(true, Some(false), true);
        let never_standby = view(true, Some(false), false);
        let busy = view(true, None, false);
        let table: [(&[View], Option<usize>); 9] = [
            (&[up_primary, standby], None),
            // A split brain while the primary answers: no failover (the replica is banned).
            (&[up_primary, promoted], None),
            (&[down, standby], None),
            (&[down, promoted], Some(1)),
            (&[down, never_standby], None),
            // The roles swapped: the old primary is a standby now.
            (&[demoted, never_standby], Some(1)),
            (&[down, standby, promoted], Some(2)),
            // Nobody to fail over to: SQLite and unknown roles report nothing.
            (&[down, view(true, None, false)], None),
            // A primary too busy to answer the probe is not gone.
            (&[busy, promoted], None),
        ];
        for (views, expected) in table {
            assert_eq!(promotion_target(0, views, true), expected, "{views:?}");
        }
        assert_eq!(promotion_target(1, &[promoted, down], true), Some(0));
        // MySQL: a primary set read_only (maintenance) hands nothing to a writable replica
        // that was never seen read-only; an observed promotion is still followed.
        assert_eq!(promotion_target(0, &[demoted, never_standby], false), None);
        assert_eq!(promotion_target(0, &[demoted, promoted], false), Some(1));
    }
}
