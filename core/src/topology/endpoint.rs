//! One endpoint of a topology: its pool, its state (healthy, degraded, banned, down) and what its probes saw, with the rules that move it between states.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::connector::Connector;
use crate::connector::ReplicationStatus;
use crate::health::{EndpointState, Observation, SLOW_PROBE};
use crate::pool::Pool;

/// Consecutive good probes a down or banned endpoint needs before it takes reads again:
/// one good answer after a failure may be a flap, two a second apart are a recovery.
pub const PROBES_TO_RECOVER: u32 = 2;

/// Consecutive probes over the lag bound before a replica is banned for lag. A standby's
/// lag is the age of its last replayed commit while WAL waits to be replayed, so one
/// probe landing just as a commit arrives after a quiet spell reads the whole quiet spell
/// as lag; a real lag is still there at the next probe.
pub const PROBES_TO_BAN_FOR_LAG: u32 = 2;

/// Consecutive probes that got no answer at all in time (a frozen or blackholed server)
/// before the statements in flight on the endpoint are abandoned: one missed deadline may
/// be a busy server, two in a row are a server that is gone.
pub const PROBES_TO_ABANDON: u32 = 2;

/// A replica whose probes take more than this many times the primary's, plus
/// [`SLOW_MARGIN`], is slow: reads go to the faster endpoints (the primary included)
/// first, and to it only when none of them can serve.
pub const SLOW_FACTOR: u32 = 3;

/// See [`SLOW_FACTOR`]: the absolute part of the bound, so that a replica a few
/// milliseconds further away (another zone) is not taken for a slow one.
pub const SLOW_MARGIN: Duration = Duration::from_millis(50);

/// One endpoint: its pool, the state routing reads (one atomic load), and the record the
/// health loop keeps.
#[derive(Debug)]
pub(crate) struct Endpoint<C: Connector> {
    pub(crate) pool: Pool<C>,
    state: AtomicU8,
    record: Mutex<Record>,
}

/// What the health loop knows of one endpoint.
#[derive(Debug, Clone, Default)]
pub(crate) struct Record {
    pub(crate) state: EndpointState,
    /// Why it is not healthy (or how far its recovery got).
    pub(crate) reason: Option<String>,
    /// The last probe's observation.
    pub(crate) last: Option<Observation>,
    pub(crate) last_probe: Option<DateTime<Utc>>,
    /// It has been seen in recovery: a standby, so reporting otherwise means a promotion.
    pub(crate) was_standby: bool,
    /// It was the primary until a failover moved the role elsewhere.
    pub(crate) was_primary: bool,
    /// Consecutive good probes while down or banned.
    pub(crate) good_streak: u32,
    /// Consecutive probes over the lag bound while serving.
    pub(crate) lag_streak: u32,
    /// Its WAL position at the last probe, as a standby.
    pub(crate) last_position: Option<u64>,
    /// Consecutive probes that found its replay stalled behind the primary.
    pub(crate) stall_streak: u32,
    /// Consecutive probes that got no answer in time.
    pub(crate) unanswered_streak: u32,
    /// Its probes' round trip, smoothed (each probe weighs half).
    pub(crate) latency: Option<Duration>,
    /// Times it was banned or marked down.
    pub(crate) bans: u64,
}

/// What the primary showed in the same probe round, for judging the replicas against it.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PrimaryView {
    /// Its WAL position, when it answered as a primary.
    pub(crate) position: Option<u64>,
    /// Its smoothed probe latency.
    pub(crate) latency: Option<Duration>,
}

/// How a ban for lag starts its reason.
const LAG_REASON: &str = "replication lag";

/// A change of state worth a log line and a count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change {
    Down(String),
    Banned(String),
    Recovered,
}

impl<C: Connector> Endpoint<C> {
    pub(crate) fn new(pool: Pool<C>) -> Self {
        Self { pool, state: AtomicU8::new(0), record: Mutex::new(Record::default()) }
    }

    /// The state routing reads; no lock.
    pub(crate) fn state(&self) -> EndpointState {
        EndpointState::from_u8(self.state.load(Ordering::Relaxed))
    }

    /// The record, locked (never across an await).
    pub(crate) fn record(&self) -> MutexGuard<'_, Record> {
        // Every critical section leaves the record coherent, so a poisoned lock is usable.
        self.record.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on the record and publishes the state it leaves for routing.
    pub(crate) fn update<R>(&self, f: impl FnOnce(&mut Record) -> R) -> R {
        let mut record = self.record();
        let result = f(&mut record);
        self.state.store(record.state.to_u8(), Ordering::Relaxed);
        result
    }
}

impl Record {
    /// Applies one probe's `observation` to an endpoint that is (`is_primary`) or is not the
    /// primary, under the replication-lag bound `max_lag`; returns the change, if any.
    ///
    /// - A failure makes it down. A busy pool changes nothing.
    /// - A replica is banned when it lags past `max_lag`, or when it reports it is not a
    ///   standby although it was one (promoted behind the manager's back) or was the
    ///   primary before a failover (split brain): its data may differ from the primary's.
    /// - A primary is banned when it reports it is a standby (writes would fail).
    /// - A down or banned replica takes reads again after [`PROBES_TO_RECOVER`] consecutive
    ///   good probes; the primary at once, since nothing routes around it.
    ///
    /// `primary_position` is the primary's WAL position from the same round: a standby
    /// whose replay position stood still since its last probe while behind the primary,
    /// having replayed all it received (so not a paused replay, which its lag shows), has
    /// stopped receiving (a stopped WAL receiver, a broken stream) and serves reads ever
    /// staler while reporting no lag: banned after [`PROBES_TO_BAN_FOR_LAG`] such probes.
    pub(crate) fn observe(
        &mut self,
        observation: Observation,
        is_primary: bool,
        max_lag: Duration,
        primary: PrimaryView,
    ) -> Option<Change> {
        let PrimaryView { position: primary_position, latency: primary_latency } = primary;
        self.last_probe = Some(Utc::now());
        let before = self.state;
        let stalled = self.stalled(&observation, is_primary, primary_position);
        let unfit = match &observation {
            Observation::Busy(_) => {
                self.last = Some(observation);
                return None;
            }
            Observation::Failed { message, .. } => {
                self.unanswered_streak = if observation.unanswered() {
                    self.unanswered_streak.saturating_add(1)
                } else {
                    0
                };
                Some((EndpointState::Down, message.clone()))
            }
            Observation::Answered { replication, .. } => {
                replication.and_then(|r| self.unfit(r, is_primary, max_lag))
            }
        };
        let lagging = matches!(&observation, Observation::Answered { replication: Some(r), .. }
            if !is_primary && r.lag.is_some_and(|lag| lag > max_lag));
        self.lag_streak = if lagging { self.lag_streak.saturating_add(1) } else { 0 };
        let unconfirmed_lag = lagging
            && before.serves_reads()
            && self.lag_streak < PROBES_TO_BAN_FOR_LAG
            && unfit.as_ref().is_some_and(|(_, reason)| reason.starts_with(LAG_REASON));
        let unfit = if unconfirmed_lag { None } else { unfit };
        let unfit = match (unfit, stalled) {
            (None, Some(reason)) if self.stall_streak >= PROBES_TO_BAN_FOR_LAG => {
                Some((EndpointState::Banned, reason))
            }
            (unfit, _) => unfit,
        };
        if observation.answered() {
            self.unanswered_streak = 0;
        }
        let slow = self.slowness(is_primary, primary_latency);
        match match &observation {
            Observation::Answered { replication, .. } => *replication,
            _ => None,
        } {
            Some(ReplicationStatus { in_recovery: true, .. }) => self.was_standby = true,
            // A replica that reports being a primary while another endpoint is (the round
            // judged the primary before it): split brain, a detached clone. It is no
            // failover target until it is seen as a standby again, so a later blip of the
            // real primary cannot move the writes to it.
            Some(ReplicationStatus { in_recovery: false, .. }) if !is_primary => {
                self.was_standby = false;
            }
            _ => {}
        }
        self.last = Some(observation);
        match unfit {
            Some((state, reason)) => {
                self.good_streak = 0;
                self.state = state;
                self.reason = Some(reason.clone());
                (before != state).then(|| {
                    self.bans += 1;
                    if state == EndpointState::Down {
                        Change::Down(reason)
                    } else {
                        Change::Banned(reason)
                    }
                })
            }
            None => {
                let was_out = matches!(before, EndpointState::Down | EndpointState::Banned);
                self.good_streak = self.good_streak.saturating_add(1);
                if was_out && !is_primary && self.good_streak < PROBES_TO_RECOVER {
                    self.reason = Some(format!(
                        "recovering: {} of {PROBES_TO_RECOVER} good probes",
                        self.good_streak
                    ));
                    return None;
                }
                self.state =
                    if slow.is_some() { EndpointState::Degraded } else { EndpointState::Healthy };
                self.reason = slow;
                was_out.then_some(Change::Recovered)
            }
        }
    }

    /// Folds one probe's round trip into [`Record::latency`] (run before
    /// [`Self::observe`], so that the round compares every endpoint's smoothed latency).
    pub(crate) fn time(&mut self, observation: &Observation) {
        if let Observation::Answered { latency, .. } = observation {
            self.latency = Some(match self.latency {
                Some(smoothed) => (smoothed + *latency) / 2,
                None => *latency,
            });
        }
    }

    /// Why the endpoint counts as slow, if it does: its smoothed probe latency is over
    /// [`SLOW_PROBE`], or, for a replica, over [`SLOW_FACTOR`] times the primary's plus
    /// [`SLOW_MARGIN`].
    fn slowness(&self, is_primary: bool, primary_latency: Option<Duration>) -> Option<String> {
        let latency = self.latency?;
        if latency > SLOW_PROBE {
            return Some(format!("slow: its probes take {latency:.1?}"));
        }
        let primary = primary_latency.filter(|_| !is_primary)?;
        (latency > primary * SLOW_FACTOR + SLOW_MARGIN).then(|| {
            format!(
                "slow: its probes take {latency:.1?} against the primary's {primary:.1?}; \
                 reads go to faster endpoints first"
            )
        })
    }

    /// Whether this probe finds the standby's replay stalled behind the primary (see
    /// [`Self::observe`]), with the reason; counts the streak and remembers the
    /// position.
    fn stalled(
        &mut self,
        observation: &Observation,
        is_primary: bool,
        primary_position: Option<u64>,
    ) -> Option<String> {
        let status = match observation {
            Observation::Answered { replication: Some(status), .. } => *status,
            _ => {
                self.stall_streak = 0;
                return None;
            }
        };
        let position = status.position.filter(|_| status.in_recovery && !is_primary);
        let stalled = match (position, primary_position) {
            (Some(here), Some(primary)) => {
                here < primary
                    && self.last_position == Some(here)
                    && status.lag.is_none_or(|lag| lag.is_zero())
            }
            _ => false,
        };
        self.last_position = position;
        self.stall_streak = if stalled { self.stall_streak.saturating_add(1) } else { 0 };
        stalled.then(|| {
            format!(
                "replication stalled: its replay stands at WAL byte {} while the primary is at \
                 {}, and it receives nothing (is its WAL receiver running?)",
                position.unwrap_or_default(),
                primary_position.unwrap_or_default()
            )
        })
    }

    /// Marks the endpoint down on a failure seen outside the health loop (a read's checkout
    /// failed on it); returns the change when it was serving.
    pub(crate) fn fail(&mut self, reason: String) -> Option<Change> {
        self.good_streak = 0;
        let was_out = matches!(self.state, EndpointState::Down | EndpointState::Banned);
        self.state = EndpointState::Down;
        self.reason = Some(reason.clone());
        (!was_out).then(|| {
            self.bans += 1;
            Change::Down(reason)
        })
    }

    /// Why an endpoint that answered with `status` must not serve its role, if it must not.
    fn unfit(
        &self,
        status: ReplicationStatus,
        is_primary: bool,
        max_lag: Duration,
    ) -> Option<(EndpointState, String)> {
        let banned = |reason: String| Some((EndpointState::Banned, reason));
        if is_primary {
            return if status.in_recovery {
                banned("it reports it is a standby (in recovery): writes fail until a primary is found".to_owned())
            } else {
                None
            };
        }
        if !status.in_recovery && (self.was_standby || self.was_primary) {
            return banned(
                "it is no longer a standby (promoted or restarted as a primary) while another endpoint is the primary: its data may differ".to_owned(),
            );
        }
        match status.lag {
            Some(lag) if lag > max_lag => banned(format!(
                "{LAG_REASON} {:.1} s is over the {:.1} s bound",
                lag.as_secs_f64(),
                max_lag.as_secs_f64()
            )),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn answered(in_recovery: bool, lag_s: Option<f64>) -> Observation {
        Observation::Answered {
            latency: Duration::from_millis(2),
            replication: Some(ReplicationStatus {
                in_recovery,
                lag: lag_s.map(Duration::from_secs_f64),
                position: None,
            }),
        }
    }

    fn at_position(position: u64) -> PrimaryView {
        PrimaryView { position: Some(position), latency: None }
    }

    fn failed() -> Observation {
        Observation::Failed { kind: ErrorKind::ConnectFailed, message: "connection refused".into() }
    }

    #[test]
    fn replicas_are_banned_for_lag_and_failures_and_need_two_good_probes_to_return() {
        use EndpointState::{Banned, Down, Healthy};
        let max = Duration::from_secs(5);
        // (observation, expected state, expected change)
        let steps: Vec<(Observation, EndpointState, Option<&str>)> = vec![
            (answered(true, Some(0.0)), Healthy, None),
            (answered(true, Some(9.0)), Healthy, None), // one reading over the bound: not yet
            (answered(true, Some(0.0)), Healthy, None),
            (answered(true, Some(9.0)), Healthy, None),
            (answered(true, Some(9.0)), Banned, Some("banned")),
            (answered(true, Some(9.0)), Banned, None),
            (answered(true, Some(1.0)), Banned, None), // one good probe: recovering
            (answered(true, Some(0.5)), Healthy, Some("recovered")),
            (failed(), Down, Some("down")),
            (Observation::Busy("pool exhausted".into()), Down, None), // busy says nothing
            (answered(true, Some(0.0)), Down, None),
            (failed(), Down, None), // the streak starts again
            (answered(true, Some(0.0)), Down, None),
            (answered(true, None), Healthy, Some("recovered")),
        ];
        let mut record = Record::default();
        for (i, (observation, state, change)) in steps.into_iter().enumerate() {
            let got = record.observe(observation, false, max, PrimaryView::default());
            assert_eq!(record.state, state, "step {i}");
            let name = got.map(|c| match c {
                Change::Down(_) => "down",
                Change::Banned(_) => "banned",
                Change::Recovered => "recovered",
            });
            assert_eq!(name, change, "step {i}");
        }
        assert_eq!(record.bans, 2);
        assert!(record.was_standby);
    }

    #[test]
    fn a_standby_that_stops_being_one_is_banned_but_a_never_standby_replica_is_not() {
        let max = Duration::from_secs(5);
        // A logical replica, or the same server under another name: never in recovery.
        let mut logical = Record::default();
        assert_eq!(
            logical.observe(answered(false, None), false, max, PrimaryView::default()),
            None
        );
        assert_eq!(logical.state, EndpointState::Healthy);
        // A physical standby promoted while the primary still answers: split brain.
        let mut promoted = Record::default();
        promoted.observe(answered(true, Some(0.0)), false, max, PrimaryView::default());
        let change = promoted.observe(answered(false, None), false, max, PrimaryView::default());
        assert!(matches!(change, Some(Change::Banned(ref r)) if r.contains("no longer a standby")));
        // The old primary back as a primary after a failover: split brain too.
        let mut old_primary = Record { was_primary: true, ..Record::default() };
        old_primary.observe(answered(false, None), false, max, PrimaryView::default());
        assert_eq!(old_primary.state, EndpointState::Banned);
    }

    #[test]
    fn the_primary_recovers_at_once_and_is_banned_when_in_recovery() {
        let max = Duration::from_secs(5);
        let mut primary = Record::default();
        assert!(matches!(
            primary.observe(failed(), true, max, PrimaryView::default()),
            Some(Change::Down(_))
        ));
        assert_eq!(
            primary.observe(answered(false, None), true, max, PrimaryView::default()),
            Some(Change::Recovered)
        );
        assert_eq!(primary.state, EndpointState::Healthy);
        assert!(matches!(
            primary.observe(answered(true, None), true, max, PrimaryView::default()),
            Some(Change::Banned(_))
        ));
        // Lag never bans a primary: it has none.
        let mut fresh = Record::default();
        assert_eq!(
            fresh.observe(answered(false, Some(100.0)), true, max, PrimaryView::default()),
            None
        );
    }

    #[test]
    fn a_failure_seen_by_a_read_marks_a_serving_endpoint_down_once() {
        let mut record = Record::default();
        assert!(matches!(record.fail("refused".into()), Some(Change::Down(_))));
        assert_eq!(record.fail("refused again".into()), None);
        assert_eq!(record.state, EndpointState::Down);
        assert_eq!(record.bans, 1);
    }

    #[test]
    fn a_standby_whose_replay_stalls_behind_the_primary_is_banned_after_two_probes() {
        use EndpointState::{Banned, Healthy};
        let max = Duration::from_secs(30);
        let at = |position: u64, lag_s: f64| Observation::Answered {
            latency: Duration::from_millis(2),
            replication: Some(ReplicationStatus {
                in_recovery: true,
                lag: Some(Duration::from_secs_f64(lag_s)),
                position: Some(position),
            }),
        };
        let mut record = Record::default();
        // Caught up with an idle primary: never stalled, however long it stays there.
        for _ in 0..4 {
            assert_eq!(record.observe(at(100, 0.0), false, max, at_position(100)), None);
        }
        // Replay paused (it received more than it replayed: its lag shows): not a stall.
        for _ in 0..4 {
            record.observe(at(100, 3.0), false, max, at_position(500));
        }
        assert_eq!(record.state, Healthy);
        // Receiving nothing while the primary moves on: banned at the second such probe.
        assert_eq!(record.observe(at(100, 0.0), false, max, at_position(600)), None);
        let change = record.observe(at(100, 0.0), false, max, at_position(700));
        assert!(matches!(&change, Some(Change::Banned(r)) if r.contains("stalled")), "{change:?}");
        assert_eq!(record.state, Banned);
        // Streaming again: it catches up and is let back after two good probes.
        record.observe(at(800, 0.0), false, max, at_position(800));
        assert_eq!(
            record.observe(at(900, 0.0), false, max, at_position(900)),
            Some(Change::Recovered)
        );
    }
}
