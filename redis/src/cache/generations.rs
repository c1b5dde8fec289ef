//! Each table's write count in this process, and the Redis invalidations still in flight: what makes an entry read before a write count as stale after it, checked on every hit with atomic loads and no lock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// One table's counts.
#[derive(Debug, Default)]
struct TableCount {
    /// Writes this process has seen.
    writes: AtomicU64,
    /// Of those, the ones whose Redis invalidation has not landed yet.
    in_flight: AtomicU64,
}

/// The counts of every table seen so far; the lock is taken when an entry is read from
/// the database or Redis and when a write is counted, never on a hit.
#[derive(Debug, Default)]
pub(super) struct Generations {
    tables: Mutex<HashMap<String, Arc<TableCount>>>,
}

/// The write counts of an entry's tables when it was read: the entry is current while
/// they stay the same.
#[derive(Debug)]
pub(super) struct Snapshot {
    counts: Vec<Arc<TableCount>>,
    seen: Vec<u64>,
}

impl Snapshot {
    /// Whether no write to one of the tables was counted since.
    pub(super) fn is_current(&self) -> bool {
        self.counts.iter().zip(&self.seen).all(|(c, seen)| c.writes.load(Ordering::SeqCst) == *seen)
    }

    /// Whether a Redis invalidation of one of the tables is still on its way: Redis may
    /// still hold what the write made stale, so it is neither read nor written.
    pub(super) fn redis_behind(&self) -> bool {
        self.counts.iter().any(|c| c.in_flight.load(Ordering::SeqCst) > 0)
    }
}

impl Generations {
    fn counts(&self, tables: &[String]) -> Vec<Arc<TableCount>> {
        let mut map = self.tables.lock().unwrap_or_else(PoisonError::into_inner);
        tables.iter().map(|t| Arc::clone(map.entry(t.clone()).or_default())).collect()
    }

    /// The write counts of `tables` now.
    pub(super) fn snapshot(&self, tables: &[String]) -> Snapshot {
        let counts = self.counts(tables);
        let seen = counts.iter().map(|c| c.writes.load(Ordering::SeqCst)).collect();
        Snapshot { counts, seen }
    }

    /// Counts a write to each of `tables`; with `in_flight`, their Redis invalidation is
    /// on its way (end it with [`Self::landed`]). The invalidation is counted in flight
    /// before the write, so a reader that sees the write sees it in flight too.
    pub(super) fn written(&self, tables: &[String], in_flight: bool) {
        for count in self.counts(tables) {
            count.in_flight.fetch_add(u64::from(in_flight), Ordering::SeqCst);
            count.writes.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// The Redis invalidation of `tables` landed (or failed).
    pub(super) fn landed(&self, tables: &[String]) {
        for count in self.counts(tables) {
            let _ = count
                .in_flight
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_makes_earlier_snapshots_stale() {
        let generations = Generations::default();
        let tables = vec!["a".to_owned(), "b".to_owned()];
        let before = generations.snapshot(&tables);
        assert!(before.is_current());
        generations.written(&["b".to_owned()], true);
        assert!(!before.is_current());
        assert!(before.redis_behind());
        generations.landed(&["b".to_owned()]);
        assert!(!before.redis_behind());
        assert!(generations.snapshot(&tables).is_current());
    }
}
