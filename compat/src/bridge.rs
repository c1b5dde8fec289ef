//! Sync over async: the sync adapter's futures run on ucm's runtime for blocking calls (`ucm_kernel::blocking`), from plain threads and from inside any tokio runtime, without "cannot start a runtime from within a runtime" and without deadlock.
//!
//! How (the logic lives once, in `ucm_kernel::blocking`, shared with ucm-diesel's blocking
//! pool): ucm owns one small multi-thread runtime, created on first use and kept for the
//! life of the process; its workers drive the sockets and timers of every connection the
//! sync adapter opens. [`block_on`] polls a future in that runtime's context from any
//! thread, through `block_in_place` when called on a multi-thread runtime's worker.

use std::future::Future;

use tokio::runtime::Runtime;
use ucm::Result;

/// The runtime the sync adapter's work runs on: ucm's runtime for blocking calls.
pub(crate) fn runtime() -> Result<&'static Runtime> {
    ucm_kernel::blocking::runtime()
}

/// Runs `future` to completion on ucm's runtime and returns its output, from any thread
/// (see the module documentation). A panic inside the future resumes in the caller.
///
/// # Errors
/// When ucm's runtime cannot be started; otherwise whatever `future` returns.
pub(crate) fn block_on<F, T>(future: F) -> Result<T>
where
    F: Future<Output = Result<T>>,
{
    ucm_kernel::blocking::block_on(future)?
}

/// Drops `value` on ucm's runtime, so that a pooled connection dropped from a plain
/// thread is still rolled back and returned to its pool (its guard needs a runtime).
pub(crate) fn drop_on_runtime<T: Send + 'static>(value: T) {
    match runtime() {
        Ok(runtime) => {
            runtime.spawn(async move { drop(value) });
        }
        Err(_) => drop(value),
    }
}

/// Runs `future` on ucm's runtime from async code and awaits it: see
/// [`ucm_kernel::blocking::spawn`].
///
/// # Errors
/// When ucm's runtime cannot be started; otherwise whatever `future` returns.
pub(crate) async fn spawn<F, T>(future: F) -> Result<T>
where
    F: Future<Output = Result<T>> + Send + 'static,
    T: Send + 'static,
{
    ucm_kernel::blocking::spawn(future).await
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
