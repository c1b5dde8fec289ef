//! `BreakerState` and `BreakerSnapshot`: what a breaker reports about itself, for `connection_info()` and logs.

use std::fmt;
use std::time::Duration;

/// Where a circuit breaker is in its cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub enum BreakerState {
    /// Calls flow normally; consecutive counted failures are being counted.
    Closed,
    /// The endpoint is considered down: calls fail fast until the recovery timeout passes.
    Open,
    /// The recovery timeout passed: a bounded number of probe calls test the endpoint.
    HalfOpen,
}

/// A consistent picture of one breaker at one instant; costs a lock, so not for the hot path.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct BreakerSnapshot {
    /// The state. An open breaker whose recovery timeout has passed still reads `Open`
    /// until the next acquire attempt moves it to `HalfOpen`.
    pub state: BreakerState,
    /// Counted failures since the last success (or since the breaker last closed).
    pub consecutive_failures: u32,
    /// How many times the breaker has opened since it was created.
    pub times_opened: u64,
    /// The recovery timeout the breaker uses the next time it is open: the base one, grown
    /// by the multiplier for each failed probe since it last closed.
    pub current_recovery_timeout: Duration,
    /// When open, the time left until a probe is allowed (zero once it is due); `None`
    /// when closed or half-open.
    pub retry_after: Option<Duration>,
}

impl BreakerState {
    /// A short stable name (`closed`, `open`, `half_open`), for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }

    /// The encoding kept in the breaker's atomic state word.
    pub(super) fn to_u8(self) -> u8 {
        match self {
            Self::Closed => 0,
            Self::Open => 1,
            Self::HalfOpen => 2,
        }
    }

    /// The inverse of [`to_u8`](Self::to_u8); only the breaker writes the word, so any other
    /// value is impossible, and it is read as `Open`, the safe side.
    pub(super) fn from_u8(value: u8) -> Self {
        match value {
            0 => Self::Closed,
            2 => Self::HalfOpen,
            _ => Self::Open,
        }
    }
}

impl fmt::Display for BreakerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_encoding_round_trip() {
        let table = [
            (BreakerState::Closed, "closed"),
            (BreakerState::Open, "open"),
            (BreakerState::HalfOpen, "half_open"),
        ];
        for (state, name) in table {
            assert_eq!(state.as_str(), name);
            assert_eq!(state.to_string(), name);
            assert_eq!(BreakerState::from_u8(state.to_u8()), state);
        }
        assert_eq!(BreakerState::from_u8(200), BreakerState::Open);
    }
}
