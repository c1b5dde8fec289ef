//! `CircuitBreakerConfig`: thresholds and recovery timeouts of the breaker, with their defaults and validation.

use std::time::Duration;

use crate::error::{Error, Result};

/// How a [`CircuitBreaker`](super::CircuitBreaker) decides to open, probe and close.
///
/// Fields are public because any combination that passes [`validate`](Self::validate) is
/// coherent; the defaults are those of DESIGN.md (Resilience).
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct CircuitBreakerConfig {
    /// Consecutive counted failures (connect failures, lost connections) that open the
    /// breaker. Default 5: one or two failures are routine blips, five in a row with no
    /// success between them mean the endpoint is down.
    pub failure_threshold: u32,
    /// How long the breaker stays open before it lets a probe through. Default 1 s: a
    /// server that restarts in a fraction of a second costs about a second of fast
    /// failures, not a minute (HikariCP resumes on the first successful connect); an
    /// endpoint that stays down is probed less and less often through
    /// [`backoff_multiplier`](Self::backoff_multiplier), and a single probe at a time keeps
    /// the probing cheap.
    pub recovery_timeout: Duration,
    /// Factor applied to the recovery timeout each time a probe fails and the breaker
    /// re-opens, so that an endpoint that stays down is probed less and less often.
    /// Default 1.5; must be at least 1.
    pub backoff_multiplier: f64,
    /// The recovery timeout never grows beyond this. Default 300 s, so an endpoint that
    /// comes back is noticed within five minutes at worst.
    pub max_recovery_timeout: Duration,
    /// Calls let through at once while half-open. Default 1: a single probe is enough to
    /// learn whether the endpoint is back, and more would stampede a recovering server.
    pub half_open_max_probes: u32,
    /// Successful probes needed to close the breaker again. Default 3, so that one lucky
    /// connection to a flapping server does not close it.
    pub success_threshold: u32,
}

impl CircuitBreakerConfig {
    /// Checks that the configuration is coherent.
    ///
    /// # Errors
    /// [`Error::Configuration`] naming the field at fault (`breaker.<field>`) when a
    /// threshold or the probe count is zero, the multiplier is below 1 or not a number, or
    /// the maximum recovery timeout is below the base one.
    pub fn validate(&self) -> Result<()> {
        let fail =
            |field: &str, message: String| Err(Error::config(format!("breaker.{field}"), message));
        if self.failure_threshold == 0 {
            return fail("failure_threshold", "must be at least 1".into());
        }
        if self.success_threshold == 0 {
            return fail("success_threshold", "must be at least 1".into());
        }
        if self.half_open_max_probes == 0 {
            return fail(
                "half_open_max_probes",
                "must be at least 1, or the breaker could never close again".into(),
            );
        }
        // Written so that NaN fails too.
        if !(self.backoff_multiplier >= 1.0 && self.backoff_multiplier.is_finite()) {
            return fail(
                "backoff_multiplier",
                format!(
                    "{} is not a finite number of at least 1; use 1 for a fixed recovery timeout",
                    self.backoff_multiplier
                ),
            );
        }
        if self.max_recovery_timeout < self.recovery_timeout {
            return fail(
                "max_recovery_timeout",
                format!(
                    "{:?} is below recovery_timeout ({:?}); raise it or lower recovery_timeout",
                    self.max_recovery_timeout, self.recovery_timeout
                ),
            );
        }
        Ok(())
    }

    /// The same configuration with every out-of-range value pulled into range, so that a
    /// breaker built from an unvalidated configuration still opens, probes and closes.
    pub(super) fn sanitized(mut self) -> Self {
        self.failure_threshold = self.failure_threshold.max(1);
        self.success_threshold = self.success_threshold.max(1);
        self.half_open_max_probes = self.half_open_max_probes.max(1);
        if !(self.backoff_multiplier >= 1.0 && self.backoff_multiplier.is_finite()) {
            self.backoff_multiplier = 1.0;
        }
        self.max_recovery_timeout = self.max_recovery_timeout.max(self.recovery_timeout);
        self
    }
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            recovery_timeout: Duration::from_secs(1),
            backoff_multiplier: 1.5,
            max_recovery_timeout: Duration::from_secs(300),
            half_open_max_probes: 1,
            success_threshold: 3,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn defaults_are_the_designed_ones_and_valid() {
        let config = CircuitBreakerConfig::default();
        assert_eq!(config.failure_threshold, 5);
        assert_eq!(config.recovery_timeout, Duration::from_secs(1));
        assert!((config.backoff_multiplier - 1.5).abs() < f64::EPSILON);
        assert_eq!(config.max_recovery_timeout, Duration::from_secs(300));
        assert_eq!(config.half_open_max_probes, 1);
        assert_eq!(config.success_threshold, 3);
        config.validate().unwrap();
    }

    #[test]
    fn incoherent_configurations_name_their_field() {
        type Edit = fn(&mut CircuitBreakerConfig);
        let table: [(Edit, &str); 7] = [
            (|c| c.failure_threshold = 0, "breaker.failure_threshold"),
            (|c| c.success_threshold = 0, "breaker.success_threshold"),
            (|c| c.half_open_max_probes = 0, "breaker.half_open_max_probes"),
            (|c| c.backoff_multiplier = 0.9, "breaker.backoff_multiplier"),
            (|c| c.backoff_multiplier = f64::NAN, "breaker.backoff_multiplier"),
            (|c| c.backoff_multiplier = f64::INFINITY, "breaker.backoff_multiplier"),
            (
                |c| c.max_recovery_timeout = Duration::from_millis(500),
                "breaker.max_recovery_timeout",
            ),
        ];
        for (edit, field) in table {
            let mut config = CircuitBreakerConfig::default();
            edit(&mut config);
            let err = config.validate().unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Configuration);
            assert!(matches!(&err, Error::Configuration { field: f, .. } if f == field), "{err}");
            // Whatever was wrong, the sanitized copy is valid.
            config.sanitized().validate().unwrap();
        }
    }

    #[test]
    fn edge_values_that_are_coherent_pass() {
        let config = CircuitBreakerConfig {
            failure_threshold: 1,
            recovery_timeout: Duration::ZERO,
            backoff_multiplier: 1.0,
            max_recovery_timeout: Duration::ZERO,
            half_open_max_probes: 1,
            success_threshold: 1,
        };
        config.validate().unwrap();
        assert_eq!(config.clone().sanitized(), config);
    }
}
