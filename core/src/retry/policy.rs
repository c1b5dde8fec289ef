//! `RetryPolicy`: which failures are retried, how often and how long apart, and the loop that does it.

use std::future::Future;
use std::sync::Arc;

use crate::error::{Error, ErrorKind, Result};

use super::{Backoff, RetryBudget};

/// How failed operations are retried: bounded by attempts, spaced by [`Backoff`], and
/// limited overall by a shared [`RetryBudget`].
///
/// Retried: errors that are [transient](Error::is_transient) (connect failures other
/// than bad credentials or a missing database, lost connections, serialization failures
/// and deadlocks); an [ambiguous commit](ErrorKind::AmbiguousCommit) only when the caller
/// says the work is idempotent, since re-running a commit that did land would apply it
/// twice. Never retried: pool exhaustion and an open circuit (the caller bounded that wait
/// on purpose), SQL errors, constraint and read-only violations, timeouts.
///
/// Cloning a policy shares its budget.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts in all, the first included; 1 means no retry. Default 3: most transient
    /// failures clear on the first retry, and more attempts mostly add load to an endpoint
    /// that is down.
    pub max_attempts: u32,
    /// The delay before each retry. Default 50 ms base, 2 s cap.
    pub backoff: Backoff,
    /// The budget every retry draws from; share one per manager so that an outage cannot
    /// multiply the load by `max_attempts`. Default: [`RetryBudget::default`].
    pub budget: Arc<RetryBudget>,
}

/// Why an attempt's failure is or is not followed by another attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Retry,
    /// The failure would not go away by trying again.
    Permanent,
    OutOfAttempts,
    OutOfBudget,
}

impl RetryPolicy {
    /// A policy that makes one attempt and never retries.
    pub fn none() -> Self {
        Self { max_attempts: 1, ..Self::default() }
    }

    /// Checks that the policy is coherent.
    ///
    /// # Errors
    /// [`Error::Configuration`] naming the field at fault when `max_attempts` is zero or
    /// the backoff's `max` is below its `base`.
    pub fn validate(&self) -> Result<()> {
        if self.max_attempts == 0 {
            return Err(Error::config(
                "retry.max_attempts",
                "must be at least 1 (the first attempt); use 1 to disable retries",
            ));
        }
        if self.backoff.max < self.backoff.base {
            return Err(Error::config(
                "retry.backoff.max",
                format!(
                    "{:?} is below the base delay ({:?}); raise it or lower the base",
                    self.backoff.max, self.backoff.base
                ),
            ));
        }
        Ok(())
    }

    /// Whether to retry after attempt number `attempt` (1 for the first) failed with
    /// `error`: the error is transient (or an ambiguous commit of `idempotent` work),
    /// attempts are left, and the budget allows one more retry.
    ///
    /// When it returns `true` it has withdrawn that retry from the budget, so call it once
    /// per failed attempt, as [`run`](Self::run) does.
    pub fn should_retry(&self, error: &Error, attempt: u32, idempotent: bool) -> bool {
        self.verdict(error, attempt, idempotent) == Verdict::Retry
    }

    /// The delay before re-running after attempt number `attempt` failed with `error`, or
    /// `None` when the policy gives up (see [`should_retry`](Self::should_retry), whose
    /// budget withdrawal this shares). For loops that cannot be written as a closure for
    /// [`run`](Self::run), such as one that lends the caller's transaction work to each
    /// attempt; such a loop calls [`RetryBudget::deposit`] once per operation itself.
    pub fn retry_delay(
        &self,
        error: &Error,
        attempt: u32,
        idempotent: bool,
    ) -> Option<std::time::Duration> {
        if self.should_retry(error, attempt, idempotent) {
            #[cfg(feature = "otel")]
            crate::telemetry::otel::retry(error.kind().as_str());
            Some(self.backoff.delay(attempt - 1, &mut rand::rng()))
        } else {
            None
        }
    }

    /// Runs `op` until it succeeds or the policy gives up, and returns its last result.
    ///
    /// `op` receives the attempt number (1 for the first) and must redo the whole unit of
    /// work each time: for a transaction, pass the closure that begins, runs and commits
    /// it, so a retry re-runs it from the start on a fresh connection. Set `idempotent`
    /// only if applying the work twice is harmless; it allows a retry after an ambiguous
    /// commit. Between attempts it sleeps for the [`Backoff`] delay.
    ///
    /// # Errors
    /// The error of the last attempt: the first error that is not retried, or the last
    /// transient one when attempts or the budget ran out.
    pub async fn run<T, F, Fut>(&self, idempotent: bool, mut op: F) -> Result<T>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        self.budget.deposit();
        let mut attempt = 1;
        loop {
            let error = match op(attempt).await {
                Ok(value) => return Ok(value),
                Err(error) => error,
            };
            match self.verdict(&error, attempt, idempotent) {
                Verdict::Retry => {
                    #[cfg(feature = "otel")]
                    crate::telemetry::otel::retry(error.kind().as_str());
                }
                Verdict::Permanent => return Err(error),
                Verdict::OutOfAttempts => {
                    tracing::debug!(
                        error.kind = %error.kind(),
                        attempt,
                        "giving up: no attempts left"
                    );
                    return Err(error);
                }
                Verdict::OutOfBudget => {
                    tracing::debug!(
                        error.kind = %error.kind(),
                        attempt,
                        "giving up: the retry budget is spent, too many calls are being retried"
                    );
                    return Err(error);
                }
            }
            // The thread-local generator is not `Send`, so it must not live across the await.
            let delay = self.backoff.delay(attempt - 1, &mut rand::rng());
            tracing::debug!(
                error.kind = %error.kind(),
                attempt,
                max_attempts = self.max_attempts,
                ?delay,
                %error,
                "retrying after a transient error"
            );
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    fn verdict(&self, error: &Error, attempt: u32, idempotent: bool) -> Verdict {
        let retryable =
            error.is_transient() || (idempotent && error.kind() == ErrorKind::AmbiguousCommit);
        if !retryable {
            Verdict::Permanent
        } else if attempt >= self.max_attempts {
            Verdict::OutOfAttempts
        } else if !self.budget.withdraw() {
            // Checked last, so that a retry that would not happen anyway costs no budget.
            Verdict::OutOfBudget
        } else {
            Verdict::Retry
        }
    }
}

/// Two policies are equal when they retry alike: same attempts, backoff and budget
/// parameters (not the budget's current balance).
impl PartialEq for RetryPolicy {
    fn eq(&self, other: &Self) -> bool {
        self.max_attempts == other.max_attempts
            && self.backoff == other.backoff
            && self.budget.ttl() == other.budget.ttl()
            && self.budget.min_per_sec() == other.budget.min_per_sec()
            && self.budget.retry_ratio() == other.budget.retry_ratio()
    }
}

/// The policy's parameters, as the `[retry]` keys of a configuration file name them.
#[cfg(feature = "serde")]
impl serde::Serialize for RetryPolicy {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut s = serializer.serialize_struct("RetryPolicy", 6)?;
        s.serialize_field("max_attempts", &self.max_attempts)?;
        s.serialize_field("backoff_base", &self.backoff.base)?;
        s.serialize_field("backoff_max", &self.backoff.max)?;
        s.serialize_field("budget_ttl", &self.budget.ttl())?;
        s.serialize_field("budget_min_per_sec", &self.budget.min_per_sec())?;
        s.serialize_field("budget_ratio", &self.budget.retry_ratio())?;
        s.end()
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { max_attempts: 3, backoff: Backoff::default(), budget: Arc::default() }
    }
}
