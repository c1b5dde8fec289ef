//! Sync over async: the sync adapter's futures run on a runtime of ucm-compat's own, from plain threads and from inside any tokio runtime, without "cannot start a runtime from within a runtime" and without deadlock.
//!
//! How: ucm-compat owns one small multi-thread runtime (two workers, threads named
//! `ucm-compat`), created on first use and kept for the life of the process; its workers
//! drive the sockets and timers of every connection the sync adapter opens.
//! - From a plain thread, [`block_on`] enters that runtime and polls the future there.
//! - From inside a tokio runtime, entering another runtime on the same thread is refused by
//!   tokio, so the future is polled on a scoped helper thread while the caller's thread
//!   waits; on a multi-thread runtime the wait goes through `block_in_place`, so the
//!   caller's other tasks move to other workers meanwhile. On a current-thread runtime the
//!   caller's runtime is blocked for the call's duration, as any blocking call would block
//!   it, but nothing the call needs runs there: no deadlock.

use std::future::Future;
use std::sync::OnceLock;

use tokio::runtime::{Handle, Runtime, RuntimeFlavor};
use ucm::{Error, Result};

/// The runtime the sync adapter's work runs on.
pub(crate) fn runtime() -> Result<&'static Runtime> {
    static RUNTIME: OnceLock<std::result::Result<Runtime, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("ucm-compat")
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| Error::other(format!("ucm-compat could not start its runtime: {e}")))
}

/// Runs `future` to completion on ucm-compat's runtime and returns its output, from any
/// thread (see the module documentation). A panic inside the future resumes in the caller.
///
/// # Errors
/// When ucm-compat's runtime cannot be started; otherwise whatever `future` returns.
pub(crate) fn block_on<F, T>(future: F) -> Result<T>
where
    F: Future<Output = Result<T>> + Send,
    T: Send,
{
    let runtime = runtime()?;
    let Ok(current) = Handle::try_current() else {
        return runtime.block_on(future);
    };
    let on_helper_thread = || {
        std::thread::scope(|scope| {
            scope
                .spawn(|| runtime.block_on(future))
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    };
    match current.runtime_flavor() {
        RuntimeFlavor::MultiThread => tokio::task::block_in_place(on_helper_thread),
        _ => on_helper_thread(),
    }
}

/// Drops `value` on ucm-compat's runtime, so that a pooled connection dropped from a plain
/// thread is still rolled back and returned to its pool (its guard needs a runtime).
pub(crate) fn drop_on_runtime<T: Send + 'static>(value: T) {
    match runtime() {
        Ok(runtime) => {
            runtime.spawn(async move { drop(value) });
        }
        Err(_) => drop(value),
    }
}

/// Runs `future` on ucm-compat's runtime from async code and awaits it, so connections
/// are opened and driven there whatever runtime the caller is on (a runtime that shuts
/// down, a test's, never strands a shared pool's sockets). A panic inside resumes in the
/// caller. Dropping the returned future lets the task finish on its own.
///
/// # Errors
/// When ucm-compat's runtime cannot be started; otherwise whatever `future` returns.
pub(crate) async fn spawn<F, T>(future: F) -> Result<T>
where
    F: Future<Output = Result<T>> + Send + 'static,
    T: Send + 'static,
{
    match runtime()?.spawn(future).await {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(Error::other("ucm-compat's runtime stopped while running the call")),
    }
}

/// A sqlx-shaped pool over `manager` whose checkouts run on ucm-compat's runtime, where the
/// adapters open every connection, so it works from any caller's runtime. Without the
/// runtime (it could not start), checkouts run on the caller's.
#[cfg(feature = "sqlx")]
pub(crate) fn sqlx_pool<DB: ucm::ucm_sqlx::SqlxDatabase>(
    manager: &std::sync::Arc<ucm::UnifiedManager>,
) -> ucm::ucm_sqlx::SqlxPool<DB> {
    let pool = ucm::ucm_sqlx::SqlxPool::new(
        std::sync::Arc::clone(manager),
        ucm::ConnectionMode::ReadWrite,
    );
    match runtime() {
        Ok(runtime) => pool.on_runtime(runtime.handle().clone()),
        Err(e) => {
            tracing::warn!(
                "ucm-compat's runtime is unavailable, the sqlx pool checks out on the caller's: {e}"
            );
            pool
        }
    }
}
