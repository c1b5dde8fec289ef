//! Retry: exponential backoff with full jitter, bounded attempts and a retry budget.
//!
//! A [`RetryPolicy`] decides whether a failure is worth another attempt (only
//! [transient](crate::Error::is_transient) ones, plus an ambiguous commit of work the
//! caller marks idempotent), waits a [`Backoff`] delay drawn with full jitter, and stops
//! when attempts run out or the shared [`RetryBudget`] says too many calls are already
//! being retried. [`RetryPolicy::run`] is the loop; the caller passes the whole unit of
//! work, so a transaction is re-run from its start.

mod backoff;
mod budget;
mod policy;
#[cfg(test)]
mod tests;

pub use backoff::Backoff;
pub use budget::RetryBudget;
pub use policy::RetryPolicy;
