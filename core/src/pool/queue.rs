//! `Queue`, the pool's slots: idle connections (the most recently returned handed out first), one permit per slot, waiters, resize and close.
//!
//! It is the part of the pool that deadpool used to be, kept to what ucm needs: a checkout
//! takes a permit (a slot), then the most recently returned idle connection (recycled by
//! the [`SlotManager`]: pinged after idle, discarded when expired or broken) or, when none
//! is idle, opens one. A returned connection goes back on the idle queue and its permit
//! back to the semaphore.
//!
//! The accounting holds `available permits + slots out == max_size + debt`, where a slot is
//! out from its permit's taking to its return (lent, or being recycled or opened). A
//! shrink takes back the free permits at once and records the rest as debt, which returns
//! pay before any permit is given back: a shrink below the connections in use is honoured
//! as they come back, and never by opening more (deadpool took back only the permits of
//! the idle connections it closed, so slots never opened could still open one each).

use std::collections::VecDeque;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::{Semaphore, TryAcquireError};

use super::slots::{Slot, SlotManager};
use crate::connector::Connector;
use crate::counted::Counted;
use crate::error::Error;

/// A pooled connection's slot, boxed so that it moves as one pointer.
pub(crate) type BoxedSlot<C> = Box<Slot<<C as Connector>::Connection>>;

/// Why a checkout from the queue got no connection.
#[derive(Debug)]
pub(crate) enum QueueError {
    /// Every slot is out, and the checkout was not to wait.
    Full,
    /// The queue was closed.
    Closed,
    /// Opening a new connection failed.
    Backend(Error),
}

/// The slots of one pool. Cheap to clone; clones share the queue.
pub(crate) struct Queue<C: Connector> {
    shared: Arc<Shared<C>>,
}

impl<C: Connector> Clone for Queue<C> {
    fn clone(&self) -> Self {
        Self { shared: Arc::clone(&self.shared) }
    }
}

struct Shared<C: Connector> {
    manager: SlotManager<C>,
    state: Mutex<State<C>>,
    /// One permit per slot that may be taken now.
    permits: Semaphore,
    /// Checkouts waiting for a permit.
    waiting: AtomicUsize,
}

struct State<C: Connector> {
    /// Oldest return first: checkouts take from the back, the reaper and shrinks from the
    /// front.
    idle: VecDeque<BoxedSlot<C>>,
    /// Connections open or being opened: idle, lent, or being recycled or opened.
    size: usize,
    max_size: usize,
    /// Permits a shrink could not take back (their slots were out): returns pay it first.
    debt: usize,
}

/// The queue's counts now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QueueStatus {
    pub(crate) size: usize,
    pub(crate) idle: usize,
    pub(crate) waiting: usize,
}

impl<C: Connector> Queue<C> {
    pub(crate) fn new(manager: SlotManager<C>, max_size: usize) -> Self {
        Self {
            shared: Arc::new(Shared {
                manager,
                state: Mutex::new(State {
                    idle: VecDeque::with_capacity(max_size),
                    size: 0,
                    max_size,
                    debt: 0,
                }),
                permits: Semaphore::new(max_size),
                waiting: AtomicUsize::new(0),
            }),
        }
    }

    /// The manager that opens, recycles and closes the connections.
    pub(crate) fn manager(&self) -> &SlotManager<C> {
        &self.shared.manager
    }

    /// Takes a slot, then an idle connection that passes its recycling or, when none is
    /// idle, a new one. Without `wait`, a queue with no free slot answers `Full` at once.
    ///
    /// Cancel-safe: a future dropped at any point gives its slot back (and closes a
    /// connection it was recycling).
    pub(crate) async fn get(&self, wait: bool) -> Result<Lent<C>, QueueError> {
        let shared = &*self.shared;
        match shared.permits.try_acquire() {
            Ok(permit) => permit.forget(),
            Err(TryAcquireError::Closed) => return Err(QueueError::Closed),
            Err(TryAcquireError::NoPermits) if !wait => return Err(QueueError::Full),
            // Boxed: the slow path, which would otherwise grow every checkout's future.
            Err(TryAcquireError::NoPermits) => Box::pin(shared.wait_for_permit()).await?,
        }
        let mut claim = Claim { shared, slot: None, opening: false };
        loop {
            let idle = shared.lock().idle.pop_back();
            let Some(slot) = idle else { break };
            claim.slot = Some(slot);
            if claim.recycle().await {
                return Ok(claim.lend(&self.shared));
            }
            claim.discard();
        }
        claim.opening = true;
        shared.lock().size += 1;
        let slot = shared.manager.create().await.map_err(QueueError::Backend)?;
        claim.slot = Some(slot);
        claim.opening = false;
        Ok(claim.lend(&self.shared))
    }

    /// Closes the idle connections for which `keep` says false, oldest returns first;
    /// returns how many it closed. Connections out are not seen.
    pub(crate) fn retain(&self, mut keep: impl FnMut(&Slot<C::Connection>) -> bool) -> usize {
        let removed: Vec<BoxedSlot<C>> = {
            let mut state = self.shared.lock();
            let mut removed = Vec::new();
            for slot in std::mem::take(&mut state.idle) {
                if keep(&slot) {
                    state.idle.push_back(slot);
                } else {
                    removed.push(slot);
                }
            }
            state.size -= removed.len();
            removed
        };
        // Closed outside the lock: dropping a driver's connection may do work.
        removed.len()
    }

    /// Sets the number of slots. Growing frees the new slots at once; shrinking closes
    /// idle connections beyond the new maximum (oldest returns first) and takes back the
    /// free permits, the rest as the connections out come back (they are closed then).
    pub(crate) fn resize(&self, max_size: usize) {
        if self.shared.permits.is_closed() {
            return;
        }
        let closed: Vec<BoxedSlot<C>> = {
            let mut state = self.shared.lock();
            let old = state.max_size;
            state.max_size = max_size;
            if max_size > old {
                let grown = max_size - old;
                let paid = grown.min(state.debt);
                state.debt -= paid;
                self.shared.permits.add_permits(grown - paid);
            } else if max_size < old {
                let shrunk = old - max_size;
                let taken = self.shared.permits.forget_permits(shrunk);
                state.debt += shrunk - taken;
            }
            let mut closed = Vec::new();
            while state.size > state.max_size {
                let Some(slot) = state.idle.pop_front() else { break };
                state.size -= 1;
                closed.push(slot);
            }
            closed
        };
        drop(closed);
    }

    /// Refuses checkouts from now on (a waiting one gets `Closed`), closes the idle
    /// connections and closes the others as they come back. Returns how many were idle.
    pub(crate) fn close(&self) -> usize {
        self.shared.permits.close();
        let idle: Vec<BoxedSlot<C>> = {
            let mut state = self.shared.lock();
            state.size -= state.idle.len();
            state.idle.drain(..).collect()
        };
        idle.len()
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.shared.permits.is_closed()
    }

    pub(crate) fn status(&self) -> QueueStatus {
        let state = self.shared.lock();
        QueueStatus {
            size: state.size,
            idle: state.idle.len(),
            waiting: self.shared.waiting.load(Ordering::Relaxed),
        }
    }
}

impl<C: Connector> Shared<C> {
    fn lock(&self) -> MutexGuard<'_, State<C>> {
        // The state is left consistent at every point a panic could unwind from.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn wait_for_permit(&self) -> Result<(), QueueError> {
        let _waiting = Counted::enter(&self.waiting);
        match self.permits.acquire().await {
            Ok(permit) => {
                permit.forget();
                Ok(())
            }
            Err(_) => Err(QueueError::Closed),
        }
    }

    /// Gives a slot's permit back: to the debt while a shrink is owed, else to the
    /// semaphore. The permit is added under the lock, so that a shrink never runs between
    /// the decision and the permit (it would leave a permit free while owing one).
    fn give_back(&self, mut state: MutexGuard<'_, State<C>>) {
        if state.debt > 0 {
            state.debt -= 1;
        } else {
            self.permits.add_permits(1);
        }
        drop(state);
    }

    /// A lent connection comes back: onto the idle queue, or closed when the queue is
    /// closed or holds more than its maximum.
    fn put_back(&self, slot: BoxedSlot<C>) {
        let mut state = self.lock();
        let surplus = self.permits.is_closed() || state.size > state.max_size;
        let closed = if surplus {
            state.size -= 1;
            Some(slot)
        } else {
            state.idle.push_back(slot);
            None
        };
        self.give_back(state);
        drop(closed);
    }

    /// A lent connection leaves the queue for good: its slot is freed.
    fn forget(&self) {
        let mut state = self.lock();
        state.size -= 1;
        self.give_back(state);
    }
}

/// A checkout holding a permit: the connection it is recycling or opening, if any.
/// Dropped before it is lent (the checkout failed or was cancelled), it closes that
/// connection and gives the permit back.
struct Claim<'a, C: Connector> {
    shared: &'a Shared<C>,
    /// An idle connection being recycled, or the one just opened; counted in `size`.
    slot: Option<BoxedSlot<C>>,
    /// A connection is being opened: counted in `size`, not yet in `slot`.
    opening: bool,
}

impl<C: Connector> Claim<'_, C> {
    async fn recycle(&mut self) -> bool {
        match self.slot.as_mut() {
            Some(slot) => self.shared.manager.recycle(slot).await.is_ok(),
            None => false,
        }
    }

    /// Closes the connection that failed its recycling; the permit is kept for the next.
    fn discard(&mut self) {
        if let Some(slot) = self.slot.take() {
            self.shared.lock().size -= 1;
            drop(slot);
        }
    }

    fn lend(mut self, shared: &Arc<Shared<C>>) -> Lent<C> {
        let slot = self.slot.take();
        self.opening = false;
        // The permit now belongs to the lent connection; this claim gives nothing back.
        std::mem::forget(self);
        Lent { slot, shared: Arc::clone(shared) }
    }
}

impl<C: Connector> Drop for Claim<'_, C> {
    fn drop(&mut self) {
        let slot = self.slot.take();
        let mut state = self.shared.lock();
        if slot.is_some() || self.opening {
            state.size -= 1;
        }
        self.shared.give_back(state);
        drop(slot);
    }
}

/// A connection lent out of the queue; it goes back when dropped.
pub(crate) struct Lent<C: Connector> {
    /// Always full until [`Lent::take`] or drop.
    slot: Option<BoxedSlot<C>>,
    shared: Arc<Shared<C>>,
}

impl<C: Connector> Lent<C> {
    /// Takes the connection out of the queue for good (to close it): its slot is freed.
    pub(crate) fn take(mut this: Self) -> Option<BoxedSlot<C>> {
        let slot = this.slot.take();
        if slot.is_some() {
            this.shared.forget();
        }
        slot
    }

    /// The queue it came from (a reference count more: for rare paths).
    pub(crate) fn queue(this: &Self) -> Queue<C> {
        Queue { shared: Arc::clone(&this.shared) }
    }

    /// The manager of the queue it came from.
    pub(crate) fn manager(this: &Self) -> &SlotManager<C> {
        &this.shared.manager
    }
}

impl<C: Connector> Deref for Lent<C> {
    type Target = Slot<C::Connection>;

    fn deref(&self) -> &Self::Target {
        match self.slot.as_deref() {
            Some(slot) => slot,
            None => taken(),
        }
    }
}

impl<C: Connector> DerefMut for Lent<C> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        match self.slot.as_deref_mut() {
            Some(slot) => slot,
            None => taken(),
        }
    }
}

#[allow(clippy::panic)] // Unreachable: only `take` and drop empty the option, and both consume.
fn taken() -> ! {
    panic!("ucm: a pooled connection used after it left its pool")
}

impl<C: Connector> Drop for Lent<C> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            self.shared.put_back(slot);
        }
    }
}

impl<C: Connector> std::fmt::Debug for Lent<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lent").field("lent", &self.slot.is_some()).finish_non_exhaustive()
    }
}
