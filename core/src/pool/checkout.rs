//! What a checkout is doing (waiting for a slot, connecting, validating), so that one deadline can bound it all and still say which step ran out of time.
//!
//! `acquire_timeout` bounds the whole checkout: the wait for a slot, the pings of idle
//! connections and the opening of a new one. The queue runs those steps inside its own
//! `get`, so the pool's manager notes each step it enters in a task-local cell that
//! [`Pool::acquire`](super::Pool::acquire) reads when the deadline passes. Outside a
//! checkout (prefill, the background refill) there is no cell and the notes are dropped.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use tokio::time::Instant;

/// A step of one checkout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Waiting for a free slot.
    Waiting,
    /// Opening a new connection.
    Connecting,
    /// Pinging an idle connection before handing it out.
    Validating,
}

/// What one poll of a checkout shares with the pool's manager: the step it entered, and
/// the moment the poll began, which the manager reads as "now" (a poll does not block, so
/// it is that moment to within the poll's own CPU time) instead of reading the clock again.
struct PollState {
    step: Cell<Step>,
    now: Instant,
}

tokio::task_local! {
    static CHECKOUT: PollState;
}

/// A checkout that finished within its deadline.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Finished<T> {
    pub(crate) output: T,
    /// The last step it entered: anything but `Waiting` means it talked to the server (a
    /// connect or a ping).
    pub(crate) step: Step,
    /// When it finished: the connection is checked out from then.
    pub(crate) at: Instant,
    /// How long it took from `started` (zero when it finished on its first poll without
    /// I/O: an idle connection taken at once, in well under a microsecond).
    pub(crate) waited: Duration,
}

/// A checkout whose deadline passed: the step it was in, and how long it had run.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct TimedOut {
    pub(crate) step: Step,
    pub(crate) waited: Duration,
}

/// Runs `checkout` with a fresh step cell, bounded by `limit` from `started` (or from its
/// first poll when `None`).
///
/// The caller pins `checkout` where it stands (`std::pin::pin!`), and the cell is set
/// around each poll of it (`sync_scope`) rather than by wrapping it in a task-local future:
/// the checkout future, which embeds the queue's, is then never moved again, where each
/// wrapper used to copy it whole (and hold one more copy in its state). The deadline's
/// timer is made only when the checkout does not finish on its first poll, and the clock is
/// read once per poll: the hot path (an idle connection taken at once) registers no timer,
/// allocates nothing and reads the clock once, that reading serving as the pool manager's
/// "now" and as the moment the connection is checked out.
pub(crate) async fn with_deadline<F: Future>(
    started: Option<Instant>,
    limit: Duration,
    mut checkout: Pin<&mut F>,
) -> Result<Finished<F::Output>, TimedOut> {
    let mut step = Step::Waiting;
    let mut started = started;
    let mut timer: Option<Pin<Box<tokio::time::Sleep>>> = None;
    std::future::poll_fn(|cx| {
        let now = Instant::now();
        // Only the first poll of a checkout begun here finds no start.
        let first_poll = started.is_none();
        let began = *started.get_or_insert(now);
        let polled = CHECKOUT.sync_scope(PollState { step: Cell::new(step), now }, || {
            let polled = checkout.as_mut().poll(cx);
            step = CHECKOUT.with(|state| state.step.get());
            polled
        });
        if let Poll::Ready(output) = polled {
            if first_poll && step == Step::Waiting {
                return Poll::Ready(Ok(Finished { output, step, at: now, waited: Duration::ZERO }));
            }
            // It waited or did I/O: the poll that finished may have run a while (a TLS
            // handshake's last step), so the clock is read again.
            let at = Instant::now();
            let waited = at.saturating_duration_since(began);
            return Poll::Ready(Ok(Finished { output, step, at, waited }));
        }
        let timer = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(began + limit)));
        timer.as_mut().poll(cx).map(|()| Err(TimedOut { step, waited: began.elapsed() }))
    })
    .await
}

/// Notes that the current checkout entered `step`; a no-op outside a checkout.
pub(crate) fn entered(step: Step) {
    let _ = CHECKOUT.try_with(|state| state.step.set(step));
}

/// Now, as the pool's manager reads it: the moment the current poll of a checkout began,
/// or the clock outside a checkout (prefill, the background refill).
pub(crate) fn now() -> Instant {
    CHECKOUT.try_with(|state| state.now).unwrap_or_else(|_| Instant::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_step_in_progress_is_reported() {
        let limit = Duration::from_millis(10);
        let timed_out = with_deadline(
            None,
            limit,
            std::pin::pin!(async {
                entered(Step::Connecting);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }),
        )
        .await;
        assert_eq!(timed_out, Err(TimedOut { step: Step::Connecting, waited: limit }));
        let done = with_deadline(None, limit, std::pin::pin!(async { 7 })).await.map(|f| f.output);
        assert_eq!(done, Ok(7));
        let pinged =
            with_deadline(None, limit, std::pin::pin!(async { entered(Step::Validating) }))
                .await
                .map(|f| f.step);
        assert_eq!(pinged, Ok(Step::Validating));
        entered(Step::Validating); // Outside a checkout: ignored, no panic.
        assert!(CHECKOUT.try_with(|_| ()).is_err());
    }

    /// On the real clock, where two readings differ: a paused clock would make any two
    /// readings equal, and the test unable to tell one reading from two.
    #[tokio::test]
    async fn a_checkout_taken_at_once_reads_the_clock_once() {
        let before = Instant::now();
        let finished = with_deadline(None, Duration::from_secs(1), std::pin::pin!(async { now() }))
            .await
            .unwrap();
        // The manager's "now" is the poll's reading, which is also the checkout's moment.
        assert_eq!(finished.output, finished.at);
        assert_eq!(finished.waited, Duration::ZERO);
        assert!(finished.at >= before);
    }

    #[tokio::test(start_paused = true)]
    async fn a_checkout_that_waits_counts_from_its_start() {
        let started = Instant::now();
        tokio::time::advance(Duration::from_millis(30)).await;
        // Begun 30 ms ago (a suspended pool's wait): the limit and the wait count from then.
        let finished = with_deadline(
            Some(started),
            Duration::from_secs(1),
            std::pin::pin!(async {
                tokio::time::sleep(Duration::from_millis(20)).await;
                now()
            }),
        )
        .await
        .unwrap();
        assert_eq!(finished.waited, Duration::from_millis(50));
        assert_eq!(finished.output, started + Duration::from_millis(50), "the last poll's now");
        let second = Instant::now();
        tokio::time::advance(Duration::from_millis(10)).await;
        let timed_out = with_deadline(
            Some(second),
            Duration::from_millis(40),
            std::pin::pin!(tokio::time::sleep(Duration::from_secs(1))),
        )
        .await;
        assert_eq!(
            timed_out,
            Err(TimedOut { step: Step::Waiting, waited: Duration::from_millis(40) })
        );
    }
}
