//! `RetryBudget`: retries limited to a fraction of recent first attempts, so they cannot snowball in an outage.

use std::fmt;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::error::{Error, Result};

/// A token bucket shared by every caller of a [`RetryPolicy`](super::RetryPolicy): each
/// first attempt deposits, each retry withdraws, and a retry is allowed only while the
/// balance covers it.
///
/// Over any window of `ttl`, at most `min_per_sec * ttl + retry_ratio * (first attempts
/// in the window)` retries are allowed: a floor so that a quiet service can still retry,
/// plus a fraction of the traffic, so that during an outage retries add at most
/// `retry_ratio` to the load instead of multiplying it by `max_attempts`. Deposits and
/// withdrawals expire after between `ttl` and `1.1 × ttl` (the window slides in tenths).
///
/// This is the algorithm of Finagle's `RetryBudget` and tower's `TpsBudget`. We do not use
/// tower's: it would make tower a dependency of the driver-free core for one type, its
/// constructor panics on out-of-range values where ours returns a configuration error, and
/// deposits (once per operation, on every caller's path) are one atomic add, with a lock only
/// to move the window once per slot and to withdraw. Like tower's, it reads
/// `tokio::time::Instant`, so tests drive it on paused time.
pub struct RetryBudget {
    ttl: Duration,
    min_per_sec: u32,
    retry_ratio: f64,
    /// The floor, in thousandths of a retry.
    reserve: i64,
    /// What one first attempt deposits, in thousandths of a retry.
    deposit_amount: i64,
    /// The span of time each slot of the window covers (a tenth of `ttl`).
    slot_width: Duration,
    /// Net deposits per slot, in thousandths of a retry; deposits add here without a lock.
    slots: [AtomicI64; SLOTS],
    /// The slot being written.
    current: AtomicUsize,
    /// When the current slot ends, in nanoseconds since `epoch`.
    current_ends: AtomicU64,
    epoch: Instant,
    /// Taken to move the window and to withdraw: a withdrawal must read and take the
    /// balance at once, and it happens only when an operation is about to be retried.
    lock: Mutex<()>,
}

/// The current slot plus the ten that make up one `ttl` before it.
const SLOTS: usize = 11;
/// One retry, in the fixed-point unit balances are kept in.
const UNIT: i64 = 1_000;

impl RetryBudget {
    /// A budget allowing `min_per_sec * ttl` retries per `ttl` window, plus `retry_ratio`
    /// retries per first attempt made within it.
    ///
    /// # Errors
    /// [`Error::Configuration`] when `ttl` is outside 1 s..=60 s (Finagle's bounds: shorter
    /// windows make the budget jumpy, longer ones remember a past outage for too long) or
    /// `retry_ratio` is not a number between 0 and 1000.
    pub fn new(ttl: Duration, min_per_sec: u32, retry_ratio: f64) -> Result<Self> {
        if !(Duration::from_secs(1)..=Duration::from_secs(60)).contains(&ttl) {
            return Err(Error::config(
                "retry.budget.ttl",
                format!("{ttl:?} is outside 1s..=60s; the default of 10s suits most services"),
            ));
        }
        if !(0.0..=1000.0).contains(&retry_ratio) {
            return Err(Error::config(
                "retry.budget.retry_ratio",
                format!(
                    "{retry_ratio} is not between 0 and 1000; 0.2 allows one retry per five calls"
                ),
            ));
        }
        Ok(Self::unchecked(ttl, min_per_sec, retry_ratio))
    }

    /// Records a first attempt, which earns `retry_ratio` of a retry.
    pub fn deposit(&self) {
        if self.deposit_amount == 0 {
            return;
        }
        self.slide();
        let current = self.current.load(Ordering::Acquire);
        self.slots[current].fetch_add(self.deposit_amount, Ordering::Relaxed);
    }

    /// Takes one retry from the budget; `false`, and nothing taken, when it is spent.
    pub fn withdraw(&self) -> bool {
        let _guard = self.lock();
        self.slide_locked();
        if self.balance() < UNIT {
            return false;
        }
        let current = self.current.load(Ordering::Acquire);
        self.slots[current].fetch_sub(UNIT, Ordering::Relaxed);
        true
    }

    /// How many retries the budget would allow right now.
    pub fn available(&self) -> u64 {
        self.slide();
        u64::try_from(self.balance() / UNIT).unwrap_or(0)
    }

    /// The window deposits and withdrawals count in.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Retries per second allowed even with no traffic.
    pub fn min_per_sec(&self) -> u32 {
        self.min_per_sec
    }

    /// Retries earned per first attempt.
    pub fn retry_ratio(&self) -> f64 {
        self.retry_ratio
    }
}

impl Default for RetryBudget {
    /// `ttl` 10 s, `min_per_sec` 10, `retry_ratio` 0.2 (tower's and Finagle's defaults):
    /// 100 retries per 10 s for free, plus one retry per five calls.
    fn default() -> Self {
        Self::unchecked(Duration::from_secs(10), 10, 0.2)
    }
}

impl fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryBudget")
            .field("ttl", &self.ttl)
            .field("min_per_sec", &self.min_per_sec)
            .field("retry_ratio", &self.retry_ratio)
            .field("available", &self.available())
            .finish()
    }
}

impl RetryBudget {
    /// A budget from values already checked by `new` (or known good, for `default`).
    fn unchecked(ttl: Duration, min_per_sec: u32, retry_ratio: f64) -> Self {
        // Float-to-int `as` saturates, and both values are far inside i64 anyway.
        let reserve = (f64::from(min_per_sec) * ttl.as_secs_f64() * UNIT as f64) as i64;
        let deposit_amount = (retry_ratio * UNIT as f64).round() as i64;
        let slot_width = ttl / 10;
        Self {
            ttl,
            min_per_sec,
            retry_ratio,
            reserve,
            deposit_amount,
            slot_width,
            slots: std::array::from_fn(|_| AtomicI64::new(0)),
            current: AtomicUsize::new(0),
            current_ends: AtomicU64::new(nanos(slot_width)),
            epoch: Instant::now(),
            lock: Mutex::new(()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, ()> {
        // The lock guards no data of its own, so a poisoned one serves as well.
        self.lock.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Moves the window to now when the current slot has ended: one clock read and one
    /// atomic load when it has not, which is nearly always.
    fn slide(&self) {
        if nanos(self.epoch.elapsed()) >= self.current_ends.load(Ordering::Acquire) {
            let _guard = self.lock();
            self.slide_locked();
        }
    }

    /// Empties the slots that fell out of the window; the caller holds the lock.
    fn slide_locked(&self) {
        let now = nanos(self.epoch.elapsed());
        let ends = self.current_ends.load(Ordering::Acquire);
        if now < ends {
            return;
        }
        let width = nanos(self.slot_width).max(1);
        // Slots keep their width: the new slot starts at the last boundary, not now.
        let steps = (now - ends) / width + 1;
        let mut current = self.current.load(Ordering::Acquire);
        for _ in 0..steps.min(SLOTS as u64) {
            current = (current + 1) % SLOTS;
            self.slots[current].store(0, Ordering::Relaxed);
        }
        self.current.store(current, Ordering::Release);
        self.current_ends
            .store(ends.saturating_add(steps.saturating_mul(width)), Ordering::Release);
    }

    fn balance(&self) -> i64 {
        self.slots
            .iter()
            .fold(self.reserve, |sum, slot| sum.saturating_add(slot.load(Ordering::Relaxed)))
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    const MS: Duration = Duration::from_millis(1);

    fn drain(budget: &RetryBudget) -> u64 {
        let mut taken = 0;
        while budget.withdraw() {
            taken += 1;
            assert!(taken <= 1_000_000, "the budget never runs out");
        }
        taken
    }

    #[tokio::test(start_paused = true)]
    async fn allows_the_floor_plus_a_ratio_of_deposits() {
        // (ttl s, min_per_sec, retry_ratio, deposits) -> retries allowed
        let table = [
            (10, 10, 0.2, 0, 100),
            (10, 0, 0.2, 10, 2),
            (10, 0, 0.2, 4, 0),
            (10, 1, 0.5, 4, 12),
            (1, 0, 1.0, 3, 3),
            (1, 0, 2.5, 2, 5),
            (1, 0, 0.0, 100, 0),
            (60, 0, 1000.0, 1, 1000),
            (1, 0, 0.0, 0, 0),
        ];
        for (ttl, min_per_sec, ratio, deposits, allowed) in table {
            let budget = RetryBudget::new(Duration::from_secs(ttl), min_per_sec, ratio).unwrap();
            for _ in 0..deposits {
                budget.deposit();
            }
            let case = format!("ttl {ttl} min {min_per_sec} ratio {ratio} deposits {deposits}");
            assert_eq!(budget.available(), allowed, "{case}");
            assert_eq!(drain(&budget), allowed, "{case}");
            assert_eq!(budget.available(), 0, "{case}");
        }
        assert_eq!(RetryBudget::default().available(), 100);
    }

    #[tokio::test(start_paused = true)]
    async fn deposits_expire_as_the_window_slides() {
        let budget = RetryBudget::new(Duration::from_secs(1), 0, 1.0).unwrap();
        budget.deposit();
        tokio::time::advance(MS * 900).await;
        assert_eq!(budget.available(), 1, "a deposit lives at least ttl");
        tokio::time::advance(MS * 200).await;
        assert_eq!(budget.available(), 0, "and at most 1.1 ttl");

        budget.deposit();
        tokio::time::advance(MS * 500).await;
        budget.deposit();
        tokio::time::advance(MS * 650).await;
        // The first of the two is past 1.1 ttl, the second is not.
        assert_eq!(drain(&budget), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn spent_retries_come_back_once_the_window_passed() {
        let budget = RetryBudget::new(Duration::from_secs(1), 3, 0.0).unwrap();
        assert_eq!(drain(&budget), 3);
        tokio::time::advance(MS * 999).await;
        assert!(!budget.withdraw());
        tokio::time::advance(MS * 101).await;
        assert_eq!(drain(&budget), 3);
        // A long idle gap empties every slot at once.
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert_eq!(budget.available(), 3);
    }

    #[test]
    fn refuses_out_of_range_settings() {
        let table = [
            (MS * 999, 0.2, "retry.budget.ttl"),
            (Duration::from_secs(61), 0.2, "retry.budget.ttl"),
            (Duration::from_secs(10), -0.1, "retry.budget.retry_ratio"),
            (Duration::from_secs(10), 1000.5, "retry.budget.retry_ratio"),
            (Duration::from_secs(10), f64::NAN, "retry.budget.retry_ratio"),
        ];
        for (ttl, ratio, field) in table {
            let err = RetryBudget::new(ttl, 10, ratio).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Configuration);
            assert!(matches!(&err, Error::Configuration { field: f, .. } if f == field), "{err}");
        }
        for (secs, ratio) in [(1, 0.0), (60, 1000.0)] {
            RetryBudget::new(Duration::from_secs(secs), u32::MAX, ratio).unwrap();
        }
    }

    #[test]
    fn debug_shows_settings_and_balance() {
        let text = format!("{:?}", RetryBudget::default());
        for needle in ["ttl: 10s", "min_per_sec: 10", "retry_ratio: 0.2", "available: 100"] {
            assert!(text.contains(needle), "{needle} missing from {text}");
        }
    }
}
