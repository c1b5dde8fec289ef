//! What a checkout is doing (waiting for a slot, connecting, validating), so that one deadline can bound it all and still say which step ran out of time.
//!
//! `acquire_timeout` bounds the whole checkout: the wait for a slot, the pings of idle
//! connections and the opening of a new one. deadpool runs those steps inside its own
//! `get`, out of ucm's sight, so the pool's manager notes each step it enters in a
//! task-local cell that [`Pool::acquire`](super::Pool::acquire) reads when the deadline
//! passes. Outside a checkout (prefill, the background refill) there is no cell and the
//! notes are dropped.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

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

tokio::task_local! {
    static STEP: Cell<Step>;
}

/// Runs `checkout` with a fresh step cell and a deadline. Returns its output with the last
/// step it entered (anything but `Waiting` means it talked to the server: a connect or a
/// ping), or on time out the step it was in.
///
/// The caller pins `checkout` where it stands (`std::pin::pin!`), and the cell is set
/// around each poll of it (`sync_scope`) rather than by wrapping it in a task-local future:
/// the checkout future, which embeds deadpool's, is then never moved again, where each
/// wrapper used to copy it whole (and hold one more copy in its state). The deadline's
/// timer is made only when the checkout does not finish on its first poll: the hot path
/// (an idle connection taken at once) registers no timer and allocates nothing.
pub(crate) async fn with_deadline<F: Future>(
    deadline: tokio::time::Instant,
    mut checkout: Pin<&mut F>,
) -> Result<(F::Output, Step), Step> {
    let mut step = Step::Waiting;
    let mut timer: Option<Pin<Box<tokio::time::Sleep>>> = None;
    let finished = std::future::poll_fn(|cx| {
        let polled = STEP.sync_scope(Cell::new(step), || {
            let polled = checkout.as_mut().poll(cx);
            step = STEP.with(Cell::get);
            polled
        });
        if let Poll::Ready(output) = polled {
            return Poll::Ready(Some(output));
        }
        let timer = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        timer.as_mut().poll(cx).map(|()| None)
    })
    .await;
    finished.map(|output| (output, step)).ok_or(step)
}

/// Notes that the current checkout entered `step`; a no-op outside a checkout.
pub(crate) fn entered(step: Step) {
    let _ = STEP.try_with(|cell| cell.set(step));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn the_step_in_progress_is_reported() {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(10);
        let timed_out = with_deadline(
            deadline,
            std::pin::pin!(async {
                entered(Step::Connecting);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }),
        )
        .await;
        assert_eq!(timed_out, Err(Step::Connecting));
        let later = deadline + Duration::from_secs(1);
        let done = with_deadline(later, std::pin::pin!(async { 7 })).await;
        assert_eq!(done, Ok((7, Step::Waiting)));
        let pinged =
            with_deadline(later, std::pin::pin!(async { entered(Step::Validating) })).await;
        assert_eq!(pinged, Ok(((), Step::Validating)));
        entered(Step::Validating); // Outside a checkout: ignored, no panic.
        assert!(STEP.try_with(Cell::get).is_err());
    }
}
