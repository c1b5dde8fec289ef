//! The background reaper: closes idle connections past their lifetime and idle ones beyond the pool's minimum, then opens replacements up to that minimum.

use std::sync::Weak;
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior, interval};

use super::Inner;
use crate::connector::Connector;
use crate::telemetry::metrics::CloseReason;

/// How often the reaper looks: often enough that an overflow connection lives at most
/// about 1.25× its idle timeout, rarely enough to cost nothing (never more than 10 Hz).
pub(crate) fn reaper_period(overflow_idle_timeout: Duration) -> Duration {
    (overflow_idle_timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(5))
}

/// Runs until the pool is dropped or closed. Holds only a weak reference between passes, so
/// a pool whose last handle is dropped goes away and takes this task with it.
pub(crate) async fn run<C: Connector>(pool: Weak<Inner<C>>, period: Duration) {
    let mut ticker = interval(period);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ticker.tick().await; // The first tick is immediate; nothing is idle yet.
    loop {
        ticker.tick().await;
        let Some(inner) = pool.upgrade() else { return };
        if inner.pool.is_closed() {
            return;
        }
        reap(&inner);
        if let Some(leaks) = &inner.pool.manager().leaks {
            leaks.scan(Instant::now());
        }
        super::Pool { inner }.refill().await;
    }
}

/// One pass: removes idle connections past their lifetime, then idle connections beyond
/// the pool's minimum (overflow ones, and in a lazy pool any) idle for longer than the
/// overflow idle timeout, oldest returns first. Connections in use are never touched; the queue shows only idle ones.
pub(crate) fn reap<C: Connector>(inner: &Inner<C>) {
    let now = Instant::now();
    let kept = inner.sizes.min_idle();
    let idle_limit = inner.config.overflow_idle_timeout();
    let mut excess = inner.pool.status().size.saturating_sub(kept);
    let closed = inner.pool.retain(|slot| {
        if now >= slot.expires {
            excess = excess.saturating_sub(1);
            slot.metrics.record_close(CloseReason::Lifetime);
            return false;
        }
        if excess > 0 && now.duration_since(slot.returned) >= idle_limit {
            excess -= 1;
            slot.metrics.record_close(CloseReason::OverflowIdle);
            return false;
        }
        true
    });
    if closed > 0 {
        tracing::debug!(pool = %inner.label, closed, "reaper closed idle connections");
    }
}
