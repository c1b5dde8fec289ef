//! Sizes that change at run time: `Pool::resize` (pool size and overflow, shrinking through idle connections first) and `Pool::suspend`/`resume` (new checkouts wait while checked-out work finishes).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::Pool;
use crate::config::PoolConfiguration;
use crate::connector::Connector;
use crate::error::{Error, Result};
use crate::telemetry::metrics::CloseReason;

/// The pool's sizes now: the configuration's at first, then [`Pool::resize`]'s.
#[derive(Debug)]
pub(crate) struct Sizes {
    pool_size: AtomicUsize,
    max_size: AtomicUsize,
    min_idle: AtomicUsize,
    /// The configured minimum when set below the pool size (a lazy pool's 0); `None`: the
    /// pool size, whatever it becomes.
    configured_min_idle: Option<usize>,
    /// `true` while suspended: one atomic load on every checkout, no lock.
    suspended: AtomicBool,
    /// Wakes the checkouts waiting for resume.
    resumed: Notify,
}

impl Sizes {
    pub(crate) fn new(config: &PoolConfiguration) -> Self {
        let configured_min_idle =
            (config.min_idle() < config.pool_size()).then(|| config.min_idle());
        Self {
            pool_size: AtomicUsize::new(config.pool_size()),
            max_size: AtomicUsize::new(config.max_size()),
            min_idle: AtomicUsize::new(config.min_idle()),
            configured_min_idle,
            suspended: AtomicBool::new(false),
            resumed: Notify::new(),
        }
    }

    pub(crate) fn pool_size(&self) -> usize {
        self.pool_size.load(Ordering::Acquire)
    }

    pub(crate) fn max_size(&self) -> usize {
        self.max_size.load(Ordering::Acquire)
    }

    /// Connections kept open while idle.
    pub(crate) fn min_idle(&self) -> usize {
        self.min_idle.load(Ordering::Acquire)
    }

    pub(crate) fn is_suspended(&self) -> bool {
        self.suspended.load(Ordering::Acquire)
    }
}

impl<C: Connector> Pool<C> {
    /// Changes the pool size and overflow without a restart. Growing opens connections up
    /// to the new minimum in the background; shrinking closes idle connections at once
    /// (most recently used kept), and connections in use beyond the new maximum are closed
    /// when they come back, never taken from their holders.
    ///
    /// # Errors
    /// `Configuration` when `pool_size` is zero; `Closed` after [`Self::close`].
    pub async fn resize(&self, pool_size: usize, max_overflow: usize) -> Result<()> {
        if pool_size == 0 {
            return Err(Error::config(
                "pool_size",
                "must be at least 1; suspend the pool instead to stop new checkouts",
            ));
        }
        if self.is_closed() {
            return Err(Error::Closed { what: format!("pool {}", self.inner.label) });
        }
        let sizes = &self.inner.sizes;
        let max_size = pool_size + max_overflow;
        let min_idle = sizes.configured_min_idle.map_or(pool_size, |m| m.min(pool_size));
        sizes.pool_size.store(pool_size, Ordering::Release);
        sizes.max_size.store(max_size, Ordering::Release);
        sizes.min_idle.store(min_idle, Ordering::Release);
        // The queue closes idle connections beyond the new maximum now, and those in use
        // beyond it when they are returned.
        self.inner.pool.resize(max_size);
        // Idle connections beyond the new pool size go now rather than after the overflow
        // idle timeout: a shrink is asked for to free server sessions.
        let mut excess = self.inner.pool.status().size.saturating_sub(pool_size);
        self.inner.pool.retain(|slot| {
            if excess == 0 {
                return true;
            }
            excess -= 1;
            slot.metrics.record_close(CloseReason::OverflowIdle);
            false
        });
        tracing::info!(pool = %self.inner.label, pool_size, max_overflow, "pool resized");
        self.refill().await;
        Ok(())
    }

    /// Stops handing out connections: checkouts from now on wait (up to their acquire
    /// timeout) for [`Self::resume`]; connections already checked out are left to finish
    /// (see [`Self::drained`]).
    pub fn suspend(&self) {
        if !self.inner.sizes.suspended.swap(true, Ordering::AcqRel) {
            tracing::info!(pool = %self.inner.label, "pool suspended");
        }
    }

    /// Waits until no connection is checked out, up to `deadline`.
    ///
    /// # Errors
    /// `Other` naming the connections still in use at the deadline.
    pub async fn drained(&self, deadline: Duration) -> Result<()> {
        let until = Instant::now() + deadline;
        loop {
            let in_use = self.status().in_use;
            if in_use == 0 {
                return Ok(());
            }
            if Instant::now() >= until {
                return Err(Error::other(format!(
                    "pool {}: {in_use} connection(s) were still checked out after {}; they \
                     finish on their own",
                    self.inner.label,
                    crate::error::human(deadline)
                )));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Hands out connections again; checkouts waiting since [`Self::suspend`] go on.
    pub fn resume(&self) {
        if self.inner.sizes.suspended.swap(false, Ordering::AcqRel) {
            self.inner.sizes.resumed.notify_waiters();
            tracing::info!(pool = %self.inner.label, "pool resumed");
        }
    }

    /// Whether [`Self::suspend`] is in effect.
    pub fn is_suspended(&self) -> bool {
        self.inner.sizes.is_suspended()
    }

    /// Waits, until `give_up`, for the pool to be resumed.
    pub(super) async fn wait_resumed(&self, started: Instant, give_up: Instant) -> Result<()> {
        let sizes = &self.inner.sizes;
        let resumed = async {
            loop {
                // Registered before the flag is read, so a resume in between is not missed.
                let notified = sizes.resumed.notified();
                if !sizes.is_suspended() {
                    return;
                }
                notified.await;
            }
        };
        match tokio::time::timeout_at(give_up, resumed).await {
            Ok(()) => Ok(()),
            Err(_) => Err(Error::Suspended {
                endpoint: self.inner.label.to_string(),
                waited: started.elapsed(),
            }),
        }
    }
}
