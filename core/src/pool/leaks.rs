//! Leak detection: connections held longer than a threshold are reported once, with the stack that checked them out, and listed while they stay out.
//!
//! Only built when `leak_detection_threshold` is set: each checkout then captures a
//! backtrace (unresolved, so tens of microseconds; HikariCP pays the same for its leak
//! detection) and takes a short lock to register the hold, and each return another to
//! remove it. Without a threshold, checkouts pay nothing.

use std::backtrace::Backtrace;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// A connection checked out for longer than the leak detection threshold.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct LongHold {
    /// How long it has been checked out.
    pub held_for: Duration,
    /// The first frame of the checkout's stack outside std, tokio, registry crates and
    /// ucm itself (`file:line`), or `unknown` when the stack tells nothing.
    pub acquired_at: String,
}

/// The holds of one pool.
#[derive(Debug)]
pub(crate) struct LeakDetector {
    threshold: Duration,
    label: Arc<str>,
    next_id: AtomicU64,
    holds: Mutex<HashMap<u64, Hold>>,
    reported: AtomicU64,
}

#[derive(Debug)]
struct Hold {
    since: Instant,
    stack: Backtrace,
    reported: bool,
}

impl LeakDetector {
    pub(crate) fn new(threshold: Duration, label: Arc<str>) -> Self {
        Self {
            threshold,
            label,
            next_id: AtomicU64::new(0),
            holds: Mutex::new(HashMap::new()),
            reported: AtomicU64::new(0),
        }
    }

    /// Registers a checkout made now by the calling stack; returns its id.
    pub(crate) fn register(&self, since: Instant) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let hold = Hold { since, stack: Backtrace::force_capture(), reported: false };
        self.lock().insert(id, hold);
        id
    }

    /// The connection `id` came back.
    pub(crate) fn release(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// Reports, once each, the holds that passed the threshold by `now`: a `warn` event
    /// with where the connection was acquired and the full stack at `debug`.
    pub(crate) fn scan(&self, now: Instant) {
        let mut holds = self.lock();
        for hold in holds.values_mut() {
            let held_for = now.saturating_duration_since(hold.since);
            if hold.reported || held_for < self.threshold {
                continue;
            }
            hold.reported = true;
            self.reported.fetch_add(1, Ordering::Relaxed);
            #[cfg(feature = "otel")]
            crate::telemetry::otel::long_hold(&self.label);
            let at = first_caller_frame(&hold.stack.to_string());
            tracing::warn!(
                pool = %self.label,
                held_ms = held_for.as_millis() as u64,
                acquired_at = %at,
                "a connection has been checked out for {held_for:?}, longer than the leak detection threshold of {:?}; \
                 it may be leaked (held across a slow call, or never dropped). Acquired at {at}",
                self.threshold
            );
            tracing::debug!(pool = %self.label, "stack of the long-held connection's checkout:\n{}", hold.stack);
        }
    }

    /// The holds past the threshold now, longest first.
    pub(crate) fn long_holds(&self, now: Instant) -> Vec<LongHold> {
        let mut long: Vec<LongHold> = self
            .lock()
            .values()
            .filter(|hold| now.saturating_duration_since(hold.since) >= self.threshold)
            .map(|hold| LongHold {
                held_for: now.saturating_duration_since(hold.since),
                acquired_at: first_caller_frame(&hold.stack.to_string()),
            })
            .collect();
        long.sort_by_key(|hold| std::cmp::Reverse(hold.held_for));
        long
    }

    /// How many long holds were reported since the pool started.
    pub(crate) fn reported(&self) -> u64 {
        self.reported.load(Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Hold>> {
        // The map stays coherent whatever panicked while it was held.
        self.holds.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Where the application checked the connection out: the location (`file:line`) of the
/// first frame of a rendered backtrace that is neither the standard library, a registry
/// crate (the runtime, the pool, ucm when used as a dependency) nor ucm's own checkout
/// path. Async frames carry no module path in their names (`{async_fn#0}`), so frames are
/// judged by their file, and by their name when it has a path.
fn first_caller_frame(stack: &str) -> String {
    const FOREIGN_FILES: [&str; 3] = ["/rustc/", "/.cargo/registry/", "/.cargo/git/"];
    /// ucm's own files on the checkout path, as they appear when ucm is built in its own
    /// workspace (its tests, its examples).
    const UCM_FILES: [&str; 10] = [
        "src/pool/leaks.rs",
        "src/pool/guard.rs",
        "src/pool/mod.rs",
        "src/pool/checkout.rs",
        "src/topology/mod.rs",
        "src/backend/manager.rs",
        "src/backend/session.rs",
        "src/backend/routing_session.rs",
        "src/protocol.rs",
        "src/registry.rs",
    ];
    const UCM_SYMBOLS: [&str; 6] =
        ["ucm_kernel::", "ucm_sqlx::", "ucm_diesel::", "ucm_compat::", "ucm::", "std::"];
    let mut lines = stack.lines().map(str::trim).peekable();
    while let Some(line) = lines.next() {
        // A frame is `N: symbol`, then optionally `at file:line:column`.
        let Some((_, symbol)) = line.split_once(": ") else { continue };
        let Some(location) = lines.peek().and_then(|next| next.strip_prefix("at ")) else {
            continue;
        };
        let file = location.split(':').next().unwrap_or(location);
        let ours = UCM_SYMBOLS.iter().any(|s| symbol.trim_start_matches('<').starts_with(s))
            && !symbol.contains("::tests::");
        if !ours
            && !FOREIGN_FILES.iter().any(|f| file.contains(f))
            && !UCM_FILES.iter().any(|f| file.ends_with(f))
        {
            return location.to_owned();
        }
    }
    "unknown".to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_callers_frame_is_picked() {
        let stack = "   0: std::backtrace::Backtrace::force_capture\n             at /rustc/abc/library/std/src/backtrace.rs:331:13\n   1: ucm_kernel::pool::leaks::LeakDetector::register\n             at ./src/pool/leaks.rs:60:40\n   2: <ucm_kernel::pool::Pool<C>>::acquire::{{closure}}\n             at ./src/pool/mod.rs:1:1\n   3: deadpool::x\n             at /root/.cargo/registry/src/index/deadpool-0.13.1/src/managed/pool.rs:1:1\n   4: app::handler::{{closure}}\n             at ./src/handler.rs:42:9\n";
        assert_eq!(first_caller_frame(stack), "./src/handler.rs:42:9");
        assert_eq!(first_caller_frame("disabled backtrace"), "unknown");
    }

    #[tokio::test(start_paused = true)]
    async fn long_holds_are_listed_and_reported_once() {
        let detector = LeakDetector::new(Duration::from_secs(2), Arc::from("db"));
        let start = Instant::now();
        let leaked = detector.register(start);
        let returned = detector.register(start);
        detector.release(returned);
        assert!(detector.long_holds(start + Duration::from_secs(1)).is_empty());
        detector.scan(start + Duration::from_secs(3));
        detector.scan(start + Duration::from_secs(4));
        assert_eq!(detector.reported(), 1);
        let long = detector.long_holds(start + Duration::from_secs(5));
        assert_eq!(long.len(), 1);
        assert_eq!(long[0].held_for, Duration::from_secs(5));
        assert_ne!(long[0].acquired_at, "", "{long:?}");
        detector.release(leaked);
        assert!(detector.long_holds(start + Duration::from_secs(6)).is_empty());
    }
}
