//! Snapshots read from a pool and its metrics: `PoolStatus` (connection counts) and `SlaSummary` (operations within the mode's latency target).

use std::time::Duration;

/// Connection counts of a pool at one moment, for `connection_info()` and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct PoolStatus {
    /// Connections open now (idle plus in use).
    pub size: usize,
    /// Open connections waiting in the pool.
    pub idle: usize,
    /// Connections checked out.
    pub in_use: usize,
    /// Tasks waiting for a connection.
    pub waiting: usize,
    /// Connections kept (the configured pool size).
    pub pool_size: usize,
    /// The most connections allowed (pool size plus overflow).
    pub max_size: usize,
}

/// How many operations met the mode's latency target (`PoolConfiguration::sla_target`),
/// their wait for a connection included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct SlaSummary {
    /// The target.
    pub target: Duration,
    /// Operations measured.
    pub operations: u64,
    /// Of those, how many finished within the target.
    pub within_target: u64,
}

impl SlaSummary {
    /// The share of operations within the target (0 to 1), when there were any.
    pub fn share(&self) -> Option<f64> {
        #[allow(clippy::cast_precision_loss)] // Counts far below 2^52.
        (self.operations > 0).then(|| self.within_target as f64 / self.operations as f64)
    }
}

impl std::fmt::Display for SlaSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.share() {
            Some(share) => write!(
                f,
                "{:.2}% of {} operations within {:?}",
                share * 100.0,
                self.operations,
                self.target
            ),
            None => write!(f, "no operations yet (target {:?})", self.target),
        }
    }
}
