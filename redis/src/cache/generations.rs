//! Each table's write count in this process, and the Redis invalidations still in flight: what makes an entry read before a write count as stale after it.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

/// Per table: how many writes this process has seen, and how many of their Redis
/// invalidations have not landed yet.
#[derive(Debug, Default)]
pub(super) struct Generations {
    tables: Mutex<HashMap<String, Table>>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Table {
    writes: u64,
    in_flight: u64,
}

impl Generations {
    /// The write counts of `tables` now, in order: an entry computed after this snapshot
    /// is current while the counts stay the same.
    pub(super) fn snapshot(&self, tables: &[String]) -> Vec<u64> {
        let map = self.tables.lock().unwrap_or_else(PoisonError::into_inner);
        tables.iter().map(|t| map.get(t).map_or(0, |table| table.writes)).collect()
    }

    /// Whether an entry of `tables` taken at `snapshot` is still current.
    pub(super) fn is_current(&self, tables: &[String], snapshot: &[u64]) -> bool {
        self.snapshot(tables) == snapshot
    }

    /// Counts a write to each of `tables`; with `in_flight`, their Redis invalidation is
    /// on its way (end it with [`Self::landed`]).
    pub(super) fn written(&self, tables: &[String], in_flight: bool) {
        let mut map = self.tables.lock().unwrap_or_else(PoisonError::into_inner);
        for name in tables {
            let table = map.entry(name.clone()).or_default();
            table.writes += 1;
            table.in_flight += u64::from(in_flight);
        }
    }

    /// The Redis invalidation of `tables` landed (or failed).
    pub(super) fn landed(&self, tables: &[String]) {
        let mut map = self.tables.lock().unwrap_or_else(PoisonError::into_inner);
        for name in tables {
            if let Some(table) = map.get_mut(name) {
                table.in_flight = table.in_flight.saturating_sub(1);
            }
        }
    }

    /// Whether a Redis invalidation of one of `tables` is still on its way: Redis may
    /// still hold what the write made stale, so it is neither read nor written.
    pub(super) fn redis_behind(&self, tables: &[String]) -> bool {
        let map = self.tables.lock().unwrap_or_else(PoisonError::into_inner);
        tables.iter().any(|t| map.get(t).is_some_and(|table| table.in_flight > 0))
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
        assert!(generations.is_current(&tables, &before));
        generations.written(&["b".to_owned()], true);
        assert!(!generations.is_current(&tables, &before));
        assert!(generations.redis_behind(&tables));
        generations.landed(&["b".to_owned()]);
        assert!(!generations.redis_behind(&tables));
        assert!(generations.is_current(&tables, &generations.snapshot(&tables)));
    }
}
