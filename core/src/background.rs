//! Background tasks (a pool's reaper, a topology's health loop) that outlive the runtime that started them: when that runtime shuts down while the task is still wanted, it starts again on ucm's own runtime.
//!
//! A manager is often built on one runtime and used from others: a process-wide manager
//! first used by one `#[tokio::test]` (each has its own runtime), or by a library's
//! short-lived runtime. Tokio drops a runtime's tasks when it shuts down; without this the
//! manager would silently lose its health checks (no failover followed, no recovery seen)
//! and its reaper (no refill, no lifetime enforcement) from then on.
//!
//! The task runs on the runtime given (so tests on a paused clock drive it as before).
//! A guard inside it tells the three ways it can end apart: it returned (its owner is
//! gone or closed: done), it was aborted by its owner's `close` (not wanted any more), or
//! its runtime dropped it while its owner still wants it: then a new task made by the
//! same factory is spawned on [`crate::blocking::runtime`].

use std::future::Future;
use std::sync::Arc;

use tokio::runtime::Handle;
use tokio::task::JoinHandle;

/// Spawns `make()` on `runtime`, started again on ucm's runtime if `runtime` shuts down
/// while `wanted()` still holds.
pub(crate) fn spawn<M, F, W>(runtime: &Handle, make: M, wanted: W) -> JoinHandle<()>
where
    M: Fn() -> F + Send + Sync + 'static,
    F: Future<Output = ()> + Send + 'static,
    W: Fn() -> bool + Send + Sync + 'static,
{
    runtime.spawn(relocating(Arc::new(Task {
        make: Box::new(move || Box::pin(make())),
        wanted: Box::new(wanted),
    })))
}

type Make = Box<dyn Fn() -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

struct Task {
    make: Make,
    wanted: Box<dyn Fn() -> bool + Send + Sync>,
}

/// Runs one incarnation of `task` under a guard that relocates it if it is dropped
/// unfinished and still wanted.
async fn relocating(task: Arc<Task>) {
    let mut guard = Relocate { task: Some(Arc::clone(&task)) };
    (task.make)().await;
    guard.task = None; // Returned: done.
}

struct Relocate {
    /// `None` once the task returned.
    task: Option<Arc<Task>>,
}

impl Drop for Relocate {
    fn drop(&mut self) {
        let Some(task) = self.task.take() else { return };
        if !(task.wanted)() {
            return; // Aborted by its owner's close, or its owner is gone.
        }
        let Ok(ucm) = crate::blocking::runtime() else {
            tracing::warn!("a background task's runtime shut down and ucm's could not start");
            return;
        };
        let on_ucm = Handle::try_current().is_ok_and(|current| current.id() == ucm.handle().id());
        if on_ucm {
            return; // ucm's own runtime is shutting down: the process is ending.
        }
        tracing::debug!("a background task's runtime shut down; it goes on on ucm's runtime");
        ucm.spawn(relocating(task));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    use std::time::Duration;

    use super::*;

    /// A task started on a runtime that is then dropped keeps running on ucm's runtime
    /// while wanted, and stops being relocated once unwanted.
    #[test]
    fn a_task_outlives_its_runtime_while_wanted() {
        let ticks = Arc::new(AtomicU32::new(0));
        let wanted = Arc::new(AtomicBool::new(true));
        let first = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let (t, w) = (Arc::clone(&ticks), Arc::clone(&wanted));
        first.block_on(async {
            spawn(
                &Handle::current(),
                move || {
                    let t = Arc::clone(&t);
                    async move {
                        loop {
                            t.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                    }
                },
                move || w.load(Ordering::SeqCst),
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        });
        drop(first);
        let at_drop = ticks.load(Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(100));
        assert!(ticks.load(Ordering::SeqCst) > at_drop + 3, "it went on after its runtime");
        wanted.store(false, Ordering::SeqCst);
    }

    /// An aborted task that is no longer wanted is not started again.
    #[test]
    fn an_unwanted_task_is_not_relocated() {
        let ticks = Arc::new(AtomicU32::new(0));
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let t = Arc::clone(&ticks);
        runtime.block_on(async {
            let handle = spawn(
                &Handle::current(),
                move || {
                    let t = Arc::clone(&t);
                    async move {
                        loop {
                            t.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                    }
                },
                || false,
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
            handle.abort();
        });
        drop(runtime);
        let after = ticks.load(Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(ticks.load(Ordering::SeqCst), after);
    }
}
