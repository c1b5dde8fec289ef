//! `RetryBudget`: retries limited to a fraction of recent first attempts, so they cannot snowball in an outage.

use std::fmt;
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
/// a plain lock over a few integers keeps this one easy to check. Like tower's, it reads
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
    /// A lock over a few integers: the budget is touched once per call and once per retry,
    /// not per connection checkout, and an uncontended lock costs tens of nanoseconds.
    window: Mutex<Window>,
}

/// The sliding window: net deposits per slot, the current slot being written.
#[derive(Debug)]
struct Window {
    slots: [i64; SLOTS],
    current: usize,
    /// When the current slot started.
    current_started: Instant,
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
        let mut window = self.window();
        let current = window.current;
        window.slots[current] = window.slots[current].saturating_add(self.deposit_amount);
    }

    /// Takes one retry from the budget; `false`, and nothing taken, when it is spent.
    pub fn withdraw(&self) -> bool {
        let mut window = self.window();
        if self.balance(&window) < UNIT {
            return false;
        }
        let current = window.current;
        window.slots[current] = window.slots[current].saturating_sub(UNIT);
        true
    }

    /// How many retries the budget would allow right now.
    pub fn available(&self) -> u64 {
        let window = self.window();
        u64::try_from(self.balance(&window) / UNIT).unwrap_or(0)
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
        Self {
            ttl,
            min_per_sec,
            retry_ratio,
            reserve,
            deposit_amount,
            slot_width: ttl / 10,
            window: Mutex::new(Window {
                slots: [0; SLOTS],
                current: 0,
                current_started: Instant::now(),
            }),
        }
    }

    /// The window, slid forward to now: slots older than the window are emptied.
    fn window(&self) -> MutexGuard<'_, Window> {
        // Nothing under this lock panics, so a poisoned lock still holds coherent numbers.
        let mut window = self.window.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(window.current_started);
        if elapsed >= self.slot_width {
            let width = self.slot_width.as_nanos().max(1);
            let steps = elapsed.as_nanos() / width;
            for _ in 0..steps.min(SLOTS as u128) {
                window.current = (window.current + 1) % SLOTS;
                let current = window.current;
                window.slots[current] = 0;
            }
            // The new slot started at the last slot boundary, not now, so slots keep their width.
            let into_slot =
                Duration::from_nanos(u64::try_from(elapsed.as_nanos() % width).unwrap_or_default());
            window.current_started = now.checked_sub(into_slot).unwrap_or(now);
        }
        window
    }

    fn balance(&self, window: &Window) -> i64 {
        window.slots.iter().fold(self.reserve, |sum, slot| sum.saturating_add(*slot))
    }
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
