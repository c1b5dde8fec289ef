//! `Backoff`: exponential backoff with full jitter, the delay before each retry.

use std::time::Duration;

use rand::Rng;

/// Exponential backoff with "full jitter": the delay before retry `n` (counting from 0) is
/// drawn uniformly from `[0, min(max, base * 2^n)]`.
///
/// Full jitter (AWS Architecture Blog, "Exponential Backoff And Jitter") spreads the
/// retries of many clients that failed together over the whole window, instead of having
/// them come back in synchronised waves; of the jitter schemes it does the least total work
/// for contended resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Backoff {
    /// The ceiling of the first retry's delay, doubled for each further retry. Default 50 ms:
    /// a serialization failure or a dropped connection usually clears within milliseconds.
    pub base: Duration,
    /// The ceiling never grows beyond this. Default 2 s, so that a retried call stays well
    /// inside typical request deadlines.
    pub max: Duration,
}

impl Backoff {
    /// The largest delay retry `retry` (0 for the first retry) may wait:
    /// `min(max, base * 2^retry)`, saturating instead of overflowing for large `retry`.
    pub fn ceiling(&self, retry: u32) -> Duration {
        if self.base.is_zero() {
            return Duration::ZERO;
        }
        // In nanoseconds as u128, so that no real base and retry count can overflow before
        // the cap applies; whatever does overflow is past the cap anyway.
        let uncapped =
            1u128.checked_shl(retry).and_then(|factor| self.base.as_nanos().checked_mul(factor));
        match uncapped {
            Some(nanos) if nanos < self.max.as_nanos() => duration_from_nanos(nanos),
            _ => self.max,
        }
    }

    /// A delay for retry `retry` (0 for the first retry), uniform in
    /// `[0, ceiling(retry)]`, drawn from `rng`.
    pub fn delay<R: Rng + ?Sized>(&self, retry: u32, rng: &mut R) -> Duration {
        // A ceiling beyond u64 nanoseconds (585 years) is drawn below u64::MAX nanoseconds,
        // which keeps the delay within the ceiling.
        let ceiling = u64::try_from(self.ceiling(retry).as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rng.random_range(0..=ceiling))
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self { base: Duration::from_millis(50), max: Duration::from_secs(2) }
    }
}

/// A `Duration` from a nanosecond count known to be below some `Duration`'s.
fn duration_from_nanos(nanos: u128) -> Duration {
    const NANOS_PER_SEC: u128 = 1_000_000_000;
    let secs = u64::try_from(nanos / NANOS_PER_SEC).unwrap_or(u64::MAX);
    // The remainder is below one billion, so it fits in u32.
    let subsec = u32::try_from(nanos % NANOS_PER_SEC).unwrap_or(0);
    Duration::new(secs, subsec)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn ceiling_doubles_then_caps() {
        let backoff = Backoff::default();
        let table = [(0, 50), (1, 100), (2, 200), (3, 400), (4, 800), (5, 1600), (6, 2000)];
        for (retry, ms) in table {
            assert_eq!(backoff.ceiling(retry), MS * ms, "retry {retry}");
        }
        for retry in [7, 31, 32, 63, 64, 127, 128, 1_000, u32::MAX] {
            assert_eq!(backoff.ceiling(retry), backoff.max, "retry {retry}");
        }
    }

    #[test]
    fn huge_values_saturate_instead_of_overflowing() {
        let mut rng = StdRng::seed_from_u64(7);
        let table = [
            Backoff { base: Duration::from_nanos(1), max: Duration::MAX },
            Backoff { base: Duration::MAX, max: Duration::MAX },
            Backoff { base: Duration::from_secs(u64::MAX / 4), max: Duration::MAX },
            Backoff { base: Duration::ZERO, max: Duration::MAX },
        ];
        for backoff in table {
            for retry in [0, 63, 64, 65, 93, 127, 128, u32::MAX] {
                let ceiling = backoff.ceiling(retry);
                assert!(ceiling <= backoff.max, "{backoff:?} retry {retry}");
                assert!(backoff.delay(retry, &mut rng) <= ceiling, "{backoff:?} retry {retry}");
            }
        }
        // A 1 ns base really doubles 64 times before reaching a large cap.
        let tiny = Backoff { base: Duration::from_nanos(1), max: Duration::MAX };
        assert_eq!(tiny.ceiling(64), duration_from_nanos(1u128 << 64));
        assert_eq!(Backoff { base: Duration::ZERO, max: MS }.ceiling(u32::MAX), Duration::ZERO);
    }

    #[test]
    fn delays_are_spread_over_the_whole_window() {
        let mut rng = StdRng::seed_from_u64(42);
        let backoff = Backoff::default();
        for retry in [0, 3, 10] {
            let ceiling = backoff.ceiling(retry);
            let (mut low, mut high) = (0, 0);
            for _ in 0..1_000 {
                let delay = backoff.delay(retry, &mut rng);
                assert!(delay <= ceiling, "retry {retry}: {delay:?} > {ceiling:?}");
                if delay < ceiling / 4 {
                    low += 1;
                } else if delay > ceiling * 3 / 4 {
                    high += 1;
                }
            }
            // About 250 of each are expected; 150 is far outside the binomial spread.
            assert!(low > 150 && high > 150, "retry {retry}: {low} low, {high} high");
        }
    }

    proptest! {
        #[test]
        fn delay_never_exceeds_the_ceiling(
            base_ns in 0u64..=u64::MAX,
            max_ns in 0u64..=u64::MAX,
            retry in 0u32..=200,
            seed in any::<u64>(),
        ) {
            let backoff = Backoff { base: Duration::from_nanos(base_ns), max: Duration::from_nanos(max_ns) };
            let ceiling = backoff.ceiling(retry);
            prop_assert!(ceiling <= backoff.max);
            prop_assert!(ceiling <= backoff.ceiling(retry + 1), "the ceiling never shrinks");
            let delay = backoff.delay(retry, &mut StdRng::seed_from_u64(seed));
            prop_assert!(delay <= ceiling, "{:?} > {:?}", delay, ceiling);
        }
    }
}
