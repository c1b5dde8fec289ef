//! `ucm`, the crate users depend on: backend selection, the global registry, the test adapter and telemetry wiring.
//!
//! Today it re-exports [`ucm_core`], so `use ucm::...` already reaches the protocol, the
//! modes and presets, configuration and URLs, errors, the circuit breaker, retry and the
//! pool. Backend selection by the `sqlx`/`diesel` features and `get_unified_manager(mode)`
//! arrive with the façade issue.

pub use ucm_core::*;

/// The README's example, compiled and run as a doctest so that it cannot drift.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
