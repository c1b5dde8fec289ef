//! `Counted`: one unit of an atomic count held for as long as a guard lives, so that a dropped future gives its unit back too.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Counts one of something in progress (a checkout waiting for a slot, a statement in
/// flight on a shared connection) in `count` until dropped.
pub(crate) struct Counted<'a>(&'a AtomicUsize);

impl<'a> Counted<'a> {
    pub(crate) fn enter(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unit_is_given_back_on_drop() {
        let count = AtomicUsize::new(0);
        let first = Counted::enter(&count);
        let second = Counted::enter(&count);
        assert_eq!(count.load(Ordering::Relaxed), 2);
        drop(first);
        assert_eq!(count.load(Ordering::Relaxed), 1);
        drop(second);
        assert_eq!(count.load(Ordering::Relaxed), 0);
    }
}
