//! `Abandon` and `StatementExpiry`: what ends a statement's wait without an answer, its client deadline or the health loop abandoning an endpoint that stopped answering.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

/// One endpoint's abandonment signal: the health loop raises it when the endpoint missed
/// two probe deadlines in a row (frozen, blackholed), and every statement in flight on
/// its connections then stops waiting, instead of waiting out its client deadline (30 s
/// and more in some modes) on a server that will not answer.
#[derive(Debug, Clone, Default)]
pub(crate) struct Abandon(Arc<Signal>);

#[derive(Debug, Default)]
struct Signal {
    /// How many times the endpoint was abandoned.
    generation: AtomicU64,
    notify: Notify,
}

impl Abandon {
    /// The count of abandonments so far; a statement started at this count is abandoned
    /// once it grows.
    pub(crate) fn generation(&self) -> u64 {
        self.0.generation.load(Ordering::Acquire)
    }

    /// Ends the wait of every statement in flight now.
    pub(crate) fn raise(&self) {
        self.0.generation.fetch_add(1, Ordering::AcqRel);
        self.0.notify.notify_waiters();
    }

    /// Completes once the endpoint is abandoned after `generation`.
    async fn after(self, generation: u64) {
        let notified = self.0.notify.notified();
        tokio::pin!(notified);
        // Registered before the count is read again, so a raise in between is not missed.
        notified.as_mut().enable();
        if self.generation() != generation {
            return;
        }
        notified.await;
    }
}

/// When the wait for one statement's answer ends without one: its client deadline passed,
/// or its endpoint was abandoned (see
/// [`Pool::abandon_in_flight`](super::Pool::abandon_in_flight)). Handed out by
/// [`PooledConnection::statement_started`](super::PooledConnection::statement_started).
#[derive(Debug)]
#[must_use = "bound the driver's call with it"]
pub struct StatementExpiry {
    deadline: Option<Duration>,
    abandon: Option<(Abandon, u64)>,
}

impl StatementExpiry {
    pub(crate) fn new(deadline: Option<Duration>, abandon: Option<(Abandon, u64)>) -> Self {
        Self { deadline, abandon }
    }

    /// No deadline and no endpoint to abandon: the wait never ends by itself.
    pub fn never() -> Self {
        Self { deadline: None, abandon: None }
    }

    /// The client's deadline for the statement, if the mode sets one.
    pub fn deadline(&self) -> Option<Duration> {
        self.deadline
    }

    /// Completes when the wait ends without an answer (never, when there is neither a
    /// deadline nor an endpoint); the deadline counts from the first poll.
    pub fn expired(self) -> impl Future<Output = ()> + Send + 'static {
        let Self { deadline, abandon } = self;
        async move {
            let abandoned = async move {
                match abandon {
                    Some((signal, generation)) => signal.after(generation).await,
                    None => std::future::pending().await,
                }
            };
            match deadline {
                Some(deadline) => tokio::select! {
                    () = tokio::time::sleep(deadline) => {}
                    () = abandoned => {}
                },
                None => abandoned.await,
            }
        }
    }

    /// Awaits `call` until the wait ends; `None` when it ended without an answer.
    pub async fn bound<F: Future>(self, call: F) -> Option<F::Output> {
        if self.deadline.is_none() && self.abandon.is_none() {
            return Some(call.await);
        }
        let expired = self.expired();
        tokio::select! {
            biased;
            output = call => Some(output),
            () = expired => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_statement_waits_until_its_deadline_or_its_endpoint_is_abandoned() {
        let never = std::future::pending::<()>;
        let expiry = StatementExpiry::new(Some(Duration::from_secs(5)), None);
        let started = tokio::time::Instant::now();
        assert_eq!(expiry.bound(never()).await, None);
        assert_eq!(started.elapsed(), Duration::from_secs(5));

        let signal = Abandon::default();
        let expiry = StatementExpiry::new(Some(Duration::from_secs(30)), Some((signal.clone(), 0)));
        let started = tokio::time::Instant::now();
        let raise = {
            let signal = signal.clone();
            async move {
                tokio::time::sleep(Duration::from_secs(2)).await;
                signal.raise();
            }
        };
        let (outcome, ()) = tokio::join!(expiry.bound(never()), raise);
        assert_eq!(outcome, None);
        assert_eq!(started.elapsed(), Duration::from_secs(2));

        // A statement started after the abandonment is not abandoned by it.
        let expiry = StatementExpiry::new(None, Some((signal.clone(), signal.generation())));
        assert_eq!(expiry.bound(async { 7 }).await, Some(7));
        let expiry = StatementExpiry::new(Some(Duration::from_secs(1)), Some((signal, 1)));
        let started = tokio::time::Instant::now();
        assert_eq!(expiry.bound(never()).await, None);
        assert_eq!(started.elapsed(), Duration::from_secs(1));
    }
}
