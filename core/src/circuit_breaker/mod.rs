//! The per-endpoint circuit breaker: Closed, Open, HalfOpen, with a growing recovery timeout.
