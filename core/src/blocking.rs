//! Sync over async: ucm's own runtime, and `block_on`, which runs a future to completion on it from a plain thread or from inside any tokio runtime, without "cannot start a runtime from within a runtime" and without deadlock.
//!
//! For the blocking faces of ucm (ucm-compat's sync adapter, ucm-diesel's blocking pool).
//! ucm owns one small multi-thread runtime (two workers, threads named `ucm-blocking`),
//! created on first use and kept for the life of the process; its workers drive the
//! sockets and timers of every connection opened from a blocking call, so nothing such a
//! connection needs ever runs on the caller's runtime.
//! - From a plain thread, [`block_on`] enters that runtime and polls the future there.
//! - From inside a tokio runtime, tokio refuses to start another runtime on the same
//!   thread, so the future is polled on the caller's thread inside ucm's runtime's context
//!   (its spawns, sockets and timers go to ucm's runtime, whose workers drive them) while
//!   the thread parks between wake-ups. On a multi-thread runtime the wait goes through
//!   `block_in_place`, so the caller's other tasks move to other workers meanwhile. On a
//!   current-thread runtime the caller's runtime is blocked for the call's duration, as any
//!   blocking call would block it, but nothing the call needs runs there: no deadlock.
//!
//! The future need not be `Send` (diesel's sync connection wrapper hands over futures it
//! does not promise to be `Send`): it is never moved to another thread.

use std::cell::Cell;
use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::Thread;

use tokio::runtime::{Handle, Runtime, RuntimeFlavor};

use crate::error::{Error, Result};

/// ucm's runtime for blocking calls, started on first use.
///
/// # Errors
/// When the runtime cannot be started (the OS refused its threads); later calls return the
/// same error.
pub fn runtime() -> Result<&'static Runtime> {
    static RUNTIME: OnceLock<std::result::Result<Runtime, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("ucm-blocking")
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| {
            Error::other(format!("ucm could not start its runtime for blocking calls: {e}"))
        })
}

/// Runs `future` to completion on ucm's runtime and returns its output, from any thread
/// (see the module documentation). A panic inside the future resumes in the caller.
///
/// # Errors
/// When ucm's runtime cannot be started; the future's own output is returned as it is.
pub fn block_on<F: Future>(future: F) -> Result<F::Output> {
    Ok(block_on_runtime(runtime()?, future))
}

/// [`block_on`] on a given runtime, for a caller that already holds ucm's [`runtime`].
///
/// A call nested in another (a blocking call made by a future that a blocking call is
/// driving) polls its future right there: the thread is already blocked for the outer call
/// and already in the runtime's context.
pub fn block_on_runtime<F: Future>(runtime: &Runtime, future: F) -> F::Output {
    if BLOCKING.get() {
        let _context = runtime.enter();
        return poll_on_this_thread(future);
    }
    let _blocking = Blocking::mark();
    let Ok(current) = Handle::try_current() else {
        return runtime.block_on(future);
    };
    let here = || {
        let _context = runtime.enter();
        poll_on_this_thread(future)
    };
    match current.runtime_flavor() {
        RuntimeFlavor::MultiThread => tokio::task::block_in_place(here),
        _ => here(),
    }
}

/// Polls `future` on this thread until it is ready, parking the thread between wake-ups,
/// in whatever runtime context the thread is in (none, for a future that needs none).
pub fn poll_on_this_thread<F: Future>(future: F) -> F::Output {
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut context = Context::from_waker(&waker);
    let mut future = pin!(future);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
        std::thread::park();
    }
}

thread_local! {
    /// Whether this thread is inside [`block_on_runtime`].
    static BLOCKING: Cell<bool> = const { Cell::new(false) };
}

/// Marks this thread as inside [`block_on_runtime`] until dropped (also on a panic).
struct Blocking;

impl Blocking {
    fn mark() -> Self {
        BLOCKING.set(true);
        Self
    }
}

impl Drop for Blocking {
    fn drop(&mut self) {
        BLOCKING.set(false);
    }
}

/// Wakes the thread polling in [`poll_on_this_thread`].
struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Runs `future` on ucm's runtime from async code and awaits it, so the connections it
/// opens are driven there whatever runtime the caller is on (a runtime that shuts down, a
/// test's, never strands a shared pool's sockets). A panic inside resumes in the caller.
/// Dropping the returned future lets the task finish on its own.
///
/// # Errors
/// When ucm's runtime cannot be started; otherwise whatever `future` returns.
pub async fn spawn<F, T>(future: F) -> Result<T>
where
    F: Future<Output = Result<T>> + Send + 'static,
    T: Send + 'static,
{
    match runtime()?.spawn(future).await {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(Error::other("ucm's runtime stopped while running the call")),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::block_on;

    /// A timer and a spawned task both need a runtime: they get ucm's.
    async fn needs_a_runtime() -> u32 {
        tokio::time::sleep(Duration::from_millis(5)).await;
        tokio::spawn(async { 7 }).await.unwrap()
    }

    #[test]
    fn from_a_plain_thread() {
        assert_eq!(block_on(needs_a_runtime()).unwrap(), 7);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn from_inside_a_multi_thread_runtime() {
        assert_eq!(block_on(needs_a_runtime()).unwrap(), 7);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn from_inside_a_current_thread_runtime() {
        assert_eq!(block_on(needs_a_runtime()).unwrap(), 7);
    }

    /// A blocking call made by a future that a blocking call drives, on every kind of thread.
    async fn nested() -> u32 {
        let inner = block_on(needs_a_runtime()).unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
        inner + 1
    }

    #[test]
    fn nested_from_a_plain_thread() {
        assert_eq!(block_on(nested()).unwrap(), 8);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn nested_from_inside_a_current_thread_runtime() {
        assert_eq!(block_on(nested()).unwrap(), 8);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn nested_from_inside_a_multi_thread_runtime() {
        assert_eq!(block_on(nested()).unwrap(), 8);
    }

    #[test]
    fn a_future_that_is_not_send() {
        let shared = std::rc::Rc::new(3);
        let future = async move {
            tokio::time::sleep(Duration::from_millis(1)).await;
            *shared
        };
        assert_eq!(block_on(future).unwrap(), 3);
    }
}
