//! `TrackedConnection<C>`: a diesel-async connection that remembers when one of ucm's operations on it was interrupted, so the pool never hands it out again.

use std::future::Future;
use std::ops::{Deref, DerefMut};

/// A diesel-async connection as pooled by ucm; derefs to the connection for the diesel DSL.
///
/// When a future running one of ucm's operations is dropped mid-flight, the driver may
/// still be using the connection (SQLite runs it on a blocking thread; a PostgreSQL
/// `BEGIN` may be half-sent). The connection is then marked interrupted and the pool
/// closes it instead of reusing it, without touching its inner state.
#[derive(Debug)]
pub struct TrackedConnection<C> {
    inner: C,
    interrupted: bool,
}

impl<C> TrackedConnection<C> {
    pub(crate) fn new(inner: C) -> Self {
        Self { inner, interrupted: false }
    }

    /// Whether an operation on this connection was dropped before it finished.
    pub fn is_interrupted(&self) -> bool {
        self.interrupted
    }

    /// Runs `operation` on the inner connection, marking the connection interrupted for
    /// as long as it runs: a dropped future leaves the mark set.
    pub(crate) async fn guarded<'c, T, F>(&'c mut self, operation: impl FnOnce(&'c mut C) -> F) -> T
    where
        F: Future<Output = T> + 'c,
    {
        let Self { inner, interrupted } = self;
        *interrupted = true;
        let result = operation(inner).await;
        *interrupted = false;
        result
    }
}

impl<C> Deref for TrackedConnection<C> {
    type Target = C;

    fn deref(&self) -> &C {
        &self.inner
    }
}

impl<C> DerefMut for TrackedConnection<C> {
    fn deref_mut(&mut self) -> &mut C {
        &mut self.inner
    }
}
