//! The per-endpoint circuit breaker: Closed, Open, HalfOpen, with a growing recovery timeout.
//!
//! One [`CircuitBreaker`] guards each endpoint, in the acquire path. It opens after
//! [`failure_threshold`](CircuitBreakerConfig::failure_threshold) consecutive failures that
//! say the endpoint is unwell ([`ErrorKind::trips_breaker`]: connect failures, lost
//! connections), fails fast while open, lets a bounded number of probes through once the
//! recovery timeout has passed, and closes again after enough successful probes; a failed
//! probe re-opens it with a longer recovery timeout (×1.5, capped), which is reset to the
//! base when it closes. Any other failure (pool exhaustion, SQL errors, read-only
//! violations...) is neutral: it neither counts as a failure nor as a success.
//!
//! Every call goes through [`CircuitBreaker::try_acquire`], which hands out a
//! [`BreakerPermit`]; the caller reports the outcome on it, and dropping it unreported is
//! neutral, so a cancelled acquire can never keep a half-open probe slot taken.
//!
//! # Cost on the hot path
//!
//! Nearly every call happens while the breaker is closed and the endpoint healthy, so that
//! path touches no lock and writes no shared memory: `try_acquire` is one atomic load of
//! the state, and `success` is one atomic load of the failure count, which is already zero.
//! A write to a shared cache line on every call would make all cores contend for that line,
//! and a mutex would add contention on top. The [`Mutex`] is taken only for counted
//! failures, state transitions and calls while open or half-open, all of which are rare or
//! happen when the endpoint is already failing; it keeps the transitions simple and exact.

mod config;
mod state;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

pub use config::CircuitBreakerConfig;
pub use state::{BreakerSnapshot, BreakerState};

use crate::error::{Error, ErrorKind, Result};

/// The circuit breaker of one endpoint; share it (e.g. in an `Arc`) between all callers.
#[derive(Debug)]
pub struct CircuitBreaker {
    /// The endpoint's redacted label, for errors and logs.
    endpoint: String,
    config: CircuitBreakerConfig,
    /// The state, readable without the lock; written only while holding `inner`.
    state: AtomicU8,
    /// Counted failures since the last success. Outside the lock so that a success in the
    /// closed state can check it, and usually find it zero, without locking.
    consecutive_failures: AtomicU32,
    /// Set once a lost connection has been counted since the last success or other failure:
    /// losses that arrive together count once (see [`Self::record_connection_lost`]).
    loss_counted: AtomicBool,
    inner: Mutex<Inner>,
}

/// Leave to make one call through a [`CircuitBreaker`]; report how the call went with
/// [`success`](Self::success) or [`failure`](Self::failure).
///
/// Dropping the permit without reporting is neutral: it frees its half-open probe slot and
/// counts nothing, which is what a cancelled or abandoned call should do.
#[must_use = "report the outcome with success() or failure(); dropping the permit counts nothing"]
#[derive(Debug)]
pub struct BreakerPermit<'a> {
    breaker: &'a CircuitBreaker,
    role: Role,
}

/// How soon after closing a breaker that trips again counts its endpoint as flapping, in
/// configured recovery timeouts: within ten of them, the recovery timeout grows from the
/// last one instead of starting over from the configured one.
pub const FLAP_WINDOW_RECOVERIES: u32 = 10;

/// The part of the breaker that changes only under the lock.
#[derive(Debug)]
struct Inner {
    state: BreakerState,
    /// When the breaker last opened; meaningful while open.
    opened_at: Instant,
    /// The recovery timeout of the current or next open period.
    recovery_timeout: Duration,
    /// When it last closed after an open period; `None` before it ever opened.
    closed_at: Option<Instant>,
    /// Probe permits handed out in the current half-open period and not yet settled.
    probes_in_flight: u32,
    /// Successes counted in the current half-open period.
    probe_successes: u32,
    times_opened: u64,
    /// Bumped on every transition, so that a probe permit from an earlier half-open period
    /// does not release a slot of the current one.
    epoch: u64,
}

/// What a permit was handed out as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// A normal call while closed.
    Closed,
    /// A half-open probe, holding one probe slot of the period `epoch`.
    Probe { epoch: u64 },
    /// The outcome was already reported.
    Settled,
}

/// Who reports an outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Permit(Role),
    /// `record_success`/`record_failure`: an outcome seen outside any permit.
    Record,
}

/// How a call went, as far as the breaker cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Success,
    /// A failure that counts (its kind trips the breaker).
    Failure(ErrorKind),
    Neutral,
}

/// A state change, logged once the lock is released.
#[derive(Debug)]
enum Transition {
    Opened { from: BreakerState, failures: u32, kind: ErrorKind, recovery_timeout: Duration },
    HalfOpened { after: Duration },
    Closed { successes: u32 },
}

impl CircuitBreaker {
    /// A closed breaker for `endpoint` (a redacted label such as `db:5432/app`, shown in
    /// errors and logs).
    ///
    /// The configuration is not validated here (call [`CircuitBreakerConfig::validate`]
    /// when building it); values out of range are pulled into range (zero thresholds
    /// become 1, a multiplier below 1 becomes 1) so the breaker always works.
    pub fn new(endpoint: impl Into<String>, config: CircuitBreakerConfig) -> Self {
        let config = config.sanitized();
        let inner = Inner {
            state: BreakerState::Closed,
            opened_at: Instant::now(),
            recovery_timeout: config.recovery_timeout,
            closed_at: None,
            probes_in_flight: 0,
            probe_successes: 0,
            times_opened: 0,
            epoch: 0,
        };
        Self {
            endpoint: endpoint.into(),
            config,
            state: AtomicU8::new(BreakerState::Closed.to_u8()),
            consecutive_failures: AtomicU32::new(0),
            loss_counted: AtomicBool::new(false),
            inner: Mutex::new(inner),
        }
    }

    /// Asks to make one call to the endpoint.
    ///
    /// Closed: always granted, at the cost of one atomic load. Open: refused until the
    /// recovery timeout has passed; the first call after that moves the breaker to
    /// half-open and becomes its first probe. Half-open: granted while fewer than
    /// [`half_open_max_probes`](CircuitBreakerConfig::half_open_max_probes) probes are in
    /// flight.
    ///
    /// # Errors
    /// [`Error::CircuitOpen`] when the breaker is open (`retry_after` is the time left
    /// until a probe is allowed) or half-open with every probe slot taken (`retry_after`
    /// is zero: a probe is in flight and its outcome decides).
    pub fn try_acquire(&self) -> Result<BreakerPermit<'_>> {
        if self.state.load(Ordering::Acquire) == BreakerState::Closed.to_u8() {
            return Ok(BreakerPermit { breaker: self, role: Role::Closed });
        }
        self.try_acquire_slow()
    }

    /// Reports a success observed outside a permit (e.g. a health probe). While half-open
    /// it counts toward closing; while open it is ignored (the recovery timeout decides).
    pub fn record_success(&self) {
        if self.state.load(Ordering::Acquire) == BreakerState::Closed.to_u8() {
            self.reset_failures_if_closed();
        } else {
            self.apply(Source::Record, Outcome::Success);
        }
    }

    /// Reports a failure observed outside a permit (e.g. a health probe). It counts only if
    /// `kind` [trips the breaker](ErrorKind::trips_breaker); while open it is ignored.
    pub fn record_failure(&self, kind: ErrorKind) {
        if kind.trips_breaker() {
            self.apply(Source::Record, Outcome::Failure(kind));
        }
    }

    /// A connection broke under a statement (the server closed it, or stopped answering).
    /// That says the endpoint may be unwell, so it counts as a failure; but connections lost
    /// together (a server restart, an administrator terminating sessions, a pooler
    /// recycling its backends) count once, until a success or another failure is recorded:
    /// the connects that follow decide whether the endpoint is down. Otherwise one
    /// `pg_terminate_backend` round over a busy pool of eight would open the breaker of a
    /// server that accepts connections the whole time.
    pub fn record_connection_lost(&self) {
        if self.loss_counted.swap(true, Ordering::AcqRel) {
            return;
        }
        self.record_failure(ErrorKind::ConnectionLost);
    }

    /// An outside check (the topology's health loop) reached the endpoint on a connection
    /// of its own: an open breaker moves to half-open now instead of at the end of its
    /// recovery timeout, so real calls probe it at once. Closed and half-open breakers are
    /// left as they are: the probes of real calls still decide whether it closes.
    pub fn recovery_observed(&self) {
        if self.state.load(Ordering::Acquire) != BreakerState::Open.to_u8() {
            return;
        }
        let now = Instant::now();
        let transition = {
            let mut inner = self.lock();
            (inner.state == BreakerState::Open).then(|| {
                let after = now.saturating_duration_since(inner.opened_at);
                self.enter(&mut inner, BreakerState::HalfOpen, now);
                Transition::HalfOpened { after }
            })
        };
        if let Some(transition) = transition {
            self.log(&transition);
        }
    }

    /// The current state, from one atomic load. An open breaker whose recovery timeout has
    /// passed reads `Open` until the next [`try_acquire`](Self::try_acquire).
    pub fn state(&self) -> BreakerState {
        BreakerState::from_u8(self.state.load(Ordering::Acquire))
    }

    /// A consistent picture of the breaker, for `connection_info()`; takes the lock.
    pub fn snapshot(&self) -> BreakerSnapshot {
        let now = Instant::now();
        let inner = self.lock();
        let retry_after = (inner.state == BreakerState::Open).then(|| {
            inner.recovery_timeout.saturating_sub(now.saturating_duration_since(inner.opened_at))
        });
        BreakerSnapshot {
            state: inner.state,
            consecutive_failures: self.consecutive_failures.load(Ordering::Relaxed),
            times_opened: inner.times_opened,
            // Closed: what the next open period would wait (grown while it flaps).
            current_recovery_timeout: if inner.state == BreakerState::Closed {
                self.next_recovery_timeout(&inner, now)
            } else {
                inner.recovery_timeout
            },
            retry_after,
        }
    }

    /// The endpoint's redacted label.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The configuration in force (after out-of-range values were pulled into range).
    pub fn config(&self) -> &CircuitBreakerConfig {
        &self.config
    }
}

impl BreakerPermit<'_> {
    /// The call succeeded: resets the failure count when closed, counts toward closing when
    /// this permit is a half-open probe.
    pub fn success(mut self) {
        let role = std::mem::replace(&mut self.role, Role::Settled);
        self.breaker.settle(role, Outcome::Success);
    }

    /// The call failed with `kind`. It counts only if the kind
    /// [trips the breaker](ErrorKind::trips_breaker) (connect failures, lost connections);
    /// any other kind is neutral, exactly like dropping the permit.
    pub fn failure(mut self, kind: ErrorKind) {
        let role = std::mem::replace(&mut self.role, Role::Settled);
        let outcome = if kind.trips_breaker() { Outcome::Failure(kind) } else { Outcome::Neutral };
        self.breaker.settle(role, outcome);
    }

    /// Whether this permit is a half-open probe (so its outcome decides whether the breaker
    /// closes) rather than a normal call through a closed breaker.
    pub fn is_probe(&self) -> bool {
        matches!(self.role, Role::Probe { .. })
    }
}

impl Drop for BreakerPermit<'_> {
    fn drop(&mut self) {
        let role = std::mem::replace(&mut self.role, Role::Settled);
        self.breaker.settle(role, Outcome::Neutral);
    }
}

impl CircuitBreaker {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // No code under this lock panics, and every critical section leaves `Inner`
        // coherent at each step, so a poisoned lock holds nothing worth refusing.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn try_acquire_slow(&self) -> Result<BreakerPermit<'_>> {
        let now = Instant::now();
        let mut transition = None;
        let granted = {
            let mut inner = self.lock();
            match inner.state {
                // Closed between the atomic load and the lock.
                BreakerState::Closed => Ok(Role::Closed),
                BreakerState::Open => {
                    let elapsed = now.saturating_duration_since(inner.opened_at);
                    if elapsed >= inner.recovery_timeout {
                        self.enter(&mut inner, BreakerState::HalfOpen, now);
                        inner.probes_in_flight = 1;
                        transition = Some(Transition::HalfOpened { after: elapsed });
                        Ok(Role::Probe { epoch: inner.epoch })
                    } else {
                        Err(inner.recovery_timeout - elapsed)
                    }
                }
                BreakerState::HalfOpen => {
                    if inner.probes_in_flight < self.config.half_open_max_probes {
                        inner.probes_in_flight += 1;
                        Ok(Role::Probe { epoch: inner.epoch })
                    } else {
                        Err(Duration::ZERO)
                    }
                }
            }
        };
        if let Some(transition) = transition {
            self.log(&transition);
        }
        match granted {
            Ok(role) => Ok(BreakerPermit { breaker: self, role }),
            Err(retry_after) => {
                Err(Error::CircuitOpen { endpoint: self.endpoint.clone(), retry_after })
            }
        }
    }

    fn settle(&self, role: Role, outcome: Outcome) {
        match (role, outcome) {
            // The hot path: a call through a closed breaker that did not fail.
            (Role::Settled, _) | (Role::Closed, Outcome::Neutral) => {}
            (Role::Closed, Outcome::Success) => self.reset_failures_if_closed(),
            (role, outcome) => self.apply(Source::Permit(role), outcome),
        }
    }

    /// Resets the failure count without locking, and without writing when it is already
    /// zero. Only while closed: the count of an open or half-open breaker is left to the
    /// locked path, and a late success from a call made before the breaker opened says
    /// nothing about the endpoint now.
    fn reset_failures_if_closed(&self) {
        if self.consecutive_failures.load(Ordering::Relaxed) != 0
            && self.state.load(Ordering::Acquire) == BreakerState::Closed.to_u8()
        {
            self.consecutive_failures.store(0, Ordering::Relaxed);
            self.loss_counted.store(false, Ordering::Release);
        }
    }

    /// Applies an outcome under the lock, and logs the transition it caused, if any.
    fn apply(&self, source: Source, outcome: Outcome) {
        let now = Instant::now();
        let transition = {
            let mut inner = self.lock();
            // Whatever the outcome, a probe of the current half-open period frees its slot.
            let current_probe = matches!(
                source,
                Source::Permit(Role::Probe { epoch })
                    if inner.state == BreakerState::HalfOpen && epoch == inner.epoch
            );
            if current_probe {
                inner.probes_in_flight = inner.probes_in_flight.saturating_sub(1);
            }
            match (inner.state, outcome) {
                (_, Outcome::Neutral) | (BreakerState::Open, _) => None,
                (BreakerState::Closed, Outcome::Success) => {
                    self.consecutive_failures.store(0, Ordering::Relaxed);
                    self.loss_counted.store(false, Ordering::Release);
                    None
                }
                (BreakerState::Closed, Outcome::Failure(kind)) => {
                    if kind != ErrorKind::ConnectionLost {
                        self.loss_counted.store(false, Ordering::Release);
                    }
                    let failures = self.count_failure();
                    (failures >= self.config.failure_threshold).then(|| {
                        inner.recovery_timeout = self.next_recovery_timeout(&inner, now);
                        self.enter(&mut inner, BreakerState::Open, now);
                        Transition::Opened {
                            from: BreakerState::Closed,
                            failures,
                            kind,
                            recovery_timeout: inner.recovery_timeout,
                        }
                    })
                }
                // In half-open, only the probes of this period and outside observations
                // count; a call let through before the breaker opened describes the past.
                (BreakerState::HalfOpen, _) if !(current_probe || source == Source::Record) => None,
                (BreakerState::HalfOpen, Outcome::Success) => {
                    self.consecutive_failures.store(0, Ordering::Relaxed);
                    inner.probe_successes = inner.probe_successes.saturating_add(1);
                    let successes = inner.probe_successes;
                    (successes >= self.config.success_threshold).then(|| {
                        self.enter(&mut inner, BreakerState::Closed, now);
                        Transition::Closed { successes }
                    })
                }
                (BreakerState::HalfOpen, Outcome::Failure(kind)) => {
                    let failures = self.count_failure();
                    inner.recovery_timeout = self.grown(inner.recovery_timeout);
                    self.enter(&mut inner, BreakerState::Open, now);
                    Some(Transition::Opened {
                        from: BreakerState::HalfOpen,
                        failures,
                        kind,
                        recovery_timeout: inner.recovery_timeout,
                    })
                }
            }
        };
        if let Some(transition) = transition {
            self.log(&transition);
        }
    }

    /// Adds one counted failure and returns the new count. An atomic read-modify-write, so
    /// that a concurrent lock-free reset is ordered before or after it, never lost inside it.
    fn count_failure(&self) -> u32 {
        let previous = self
            .consecutive_failures
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| Some(n.saturating_add(1)))
            .unwrap_or_else(|n| n);
        previous.saturating_add(1)
    }

    /// The recovery timeout of an open period starting now from closed: tripping again
    /// within [`FLAP_WINDOW_RECOVERIES`] configured recovery timeouts of closing, the
    /// endpoint is flapping and the timeout grows from the last one, so the breaker backs
    /// off; otherwise it starts over from the configured one.
    fn next_recovery_timeout(&self, inner: &Inner, now: Instant) -> Duration {
        let window = self.config.recovery_timeout.saturating_mul(FLAP_WINDOW_RECOVERIES);
        let flapping =
            inner.closed_at.is_some_and(|closed| now.saturating_duration_since(closed) < window);
        if flapping { self.grown(inner.recovery_timeout) } else { self.config.recovery_timeout }
    }

    /// The recovery timeout after one more failed probe: ×multiplier, capped.
    fn grown(&self, timeout: Duration) -> Duration {
        let max = self.config.max_recovery_timeout;
        // `try_from_secs_f64` rather than `mul_f64`, which panics on overflow.
        Duration::try_from_secs_f64(timeout.as_secs_f64() * self.config.backoff_multiplier)
            .map_or(max, |grown| grown.min(max))
    }

    /// Moves to `state`, resetting what belongs to the period being left; with the lock held.
    fn enter(&self, inner: &mut Inner, state: BreakerState, now: Instant) {
        inner.state = state;
        inner.epoch = inner.epoch.wrapping_add(1);
        inner.probes_in_flight = 0;
        inner.probe_successes = 0;
        // A new period: the next lost connection counts again.
        self.loss_counted.store(false, Ordering::Release);
        match state {
            BreakerState::Open => {
                inner.opened_at = now;
                inner.times_opened = inner.times_opened.saturating_add(1);
            }
            BreakerState::Closed => {
                inner.closed_at = Some(now);
                self.consecutive_failures.store(0, Ordering::Relaxed);
            }
            BreakerState::HalfOpen => {}
        }
        // Release pairs with the Acquire loads of the lock-free paths.
        self.state.store(state.to_u8(), Ordering::Release);
    }

    fn log(&self, transition: &Transition) {
        let endpoint = self.endpoint.as_str();
        #[cfg(feature = "otel")]
        crate::telemetry::otel::breaker_transition(
            endpoint,
            match transition {
                Transition::Opened { .. } => "open",
                Transition::HalfOpened { .. } => "half_open",
                Transition::Closed { .. } => "closed",
            },
        );
        match *transition {
            Transition::Opened {
                from: BreakerState::HalfOpen,
                failures,
                kind,
                recovery_timeout,
            } => {
                tracing::warn!(
                    endpoint,
                    error.kind = %kind,
                    consecutive_failures = failures,
                    ?recovery_timeout,
                    "circuit breaker re-opened: a half-open probe failed; failing fast until \
                     the longer recovery timeout passes"
                );
            }
            Transition::Opened { failures, kind, recovery_timeout, .. } => {
                tracing::warn!(
                    endpoint,
                    error.kind = %kind,
                    consecutive_failures = failures,
                    ?recovery_timeout,
                    "circuit breaker opened after consecutive connection failures; failing fast \
                     until the recovery timeout passes"
                );
            }
            Transition::HalfOpened { after } => {
                tracing::info!(
                    endpoint,
                    open_for = ?after,
                    "circuit breaker half-open: letting probes through"
                );
            }
            Transition::Closed { successes } => {
                tracing::info!(
                    endpoint,
                    successes,
                    "circuit breaker closed: the endpoint answers again"
                );
            }
        }
    }
}
