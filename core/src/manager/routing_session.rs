//! `RoutingSession`: one unit of work's view of a manager (a request, a job), whose reads stay on the primary for a while after its own writes (read-your-writes).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use async_trait::async_trait;
use tokio::time::Instant;

use super::{Backend, Connection, Manager};
use crate::error::Result;
use crate::health::HealthReport;
use crate::info::ConnectionInfo;
use crate::mode::ConnectionMode;
use crate::protocol::ConnectionManagerProtocol;
use crate::retry::RetryPolicy;

/// A manager as one unit of work sees it. With a read-your-writes window configured
/// ([`PoolConfiguration::read_your_writes`](crate::PoolConfiguration::read_your_writes)),
/// a `ReadOnly` checkout made while one of this session's write connections (`ReadWrite`,
/// `Batch` or `Transactional`) is checked out, or within that window after it was
/// released, goes to the primary, so the session reads what it just wrote even where
/// replicas lag; other sessions keep reading from replicas. The window counts from the
/// write connection's release (after its commit), however long the write took.
/// Without a window, a session routes exactly as its manager does.
///
/// It implements [`ConnectionManagerProtocol`], so `execute`, `fetch_all` and
/// transactions work on it as on the manager. [`close`](ConnectionManagerProtocol::close)
/// on a session closes nothing: the manager belongs to whoever created it.
#[derive(Debug)]
pub struct RoutingSession<'m, B: Backend> {
    manager: ManagerRef<'m, B>,
    writes: Arc<Writes>,
}

/// A session's writes, as its read routing needs them; shared with the release hooks of
/// its write connections.
#[derive(Debug)]
struct Writes {
    /// When the session was created: the origin of `last_release`.
    origin: Instant,
    /// Write connections checked out now.
    in_flight: AtomicUsize,
    /// Nanoseconds after `origin` of the last write connection's release, plus one; zero:
    /// none yet.
    last_release: AtomicU64,
}

/// One write checkout, counted in flight until dropped (with its connection, through the
/// release hook, or at once when the checkout failed).
struct WriteInFlight {
    writes: Arc<Writes>,
    /// A connection was handed out, so a write may have happened.
    checked_out: bool,
}

impl WriteInFlight {
    fn start(writes: &Arc<Writes>) -> Self {
        writes.in_flight.fetch_add(1, Ordering::AcqRel);
        Self { writes: Arc::clone(writes), checked_out: false }
    }
}

impl Drop for WriteInFlight {
    fn drop(&mut self) {
        if self.checked_out {
            let nanos =
                u64::try_from(self.writes.origin.elapsed().as_nanos()).unwrap_or(u64::MAX - 1);
            self.writes.last_release.store(nanos + 1, Ordering::Release);
        }
        self.writes.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The session's manager: borrowed, or shared for a session that must own what it uses
/// (a web request's, handed out by an extractor).
#[derive(Debug)]
enum ManagerRef<'m, B: Backend> {
    Borrowed(&'m Manager<B>),
    Shared(Arc<Manager<B>>),
}

impl<B: Backend> std::ops::Deref for ManagerRef<'_, B> {
    type Target = Manager<B>;

    fn deref(&self) -> &Manager<B> {
        match self {
            Self::Borrowed(manager) => manager,
            Self::Shared(manager) => manager,
        }
    }
}

impl<B: Backend> Manager<B> {
    /// A [`RoutingSession`] on this manager, for one unit of work.
    pub fn session(&self) -> RoutingSession<'_, B> {
        RoutingSession::new(ManagerRef::Borrowed(self))
    }

    /// A [`RoutingSession`] that holds the shared manager itself, so it can be moved and
    /// kept (`'static`): a web request's session, a spawned job's.
    pub fn shared_session(self: &Arc<Self>) -> RoutingSession<'static, B> {
        RoutingSession::new(ManagerRef::Shared(Arc::clone(self)))
    }
}

impl<'m, B: Backend> RoutingSession<'m, B> {
    fn new(manager: ManagerRef<'m, B>) -> Self {
        let writes = Writes {
            origin: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last_release: AtomicU64::new(0),
        };
        Self { manager, writes: Arc::new(writes) }
    }

    /// Whether this session's reads go to the primary now.
    pub fn reads_from_primary(&self) -> bool {
        let Some(window) = self.manager.config().pool().read_your_writes() else { return false };
        if self.writes.in_flight.load(Ordering::Acquire) > 0 {
            return true;
        }
        match self.writes.last_release.load(Ordering::Acquire) {
            0 => false,
            plus_one => {
                let released = self.writes.origin + std::time::Duration::from_nanos(plus_one - 1);
                released.elapsed() < window
            }
        }
    }
}

#[async_trait]
impl<B: Backend> ConnectionManagerProtocol for RoutingSession<'_, B> {
    type Connection = Connection<B>;

    async fn get_connection(&self, mode: ConnectionMode) -> Result<Connection<B>> {
        if !mode.is_read_only() {
            let mut write = WriteInFlight::start(&self.writes);
            let mut connection = self.manager.get_connection(mode).await?;
            write.checked_out = true;
            connection.on_release(move || drop(write));
            return Ok(connection);
        }
        if self.reads_from_primary() {
            self.manager.get_connection_on_primary(mode).await
        } else {
            self.manager.get_connection(mode).await
        }
    }

    async fn health_check(&self) -> HealthReport {
        self.manager.health_check().await
    }

    fn connection_info(&self) -> ConnectionInfo {
        self.manager.connection_info()
    }

    fn is_healthy(&self) -> bool {
        self.manager.is_healthy()
    }

    async fn close(&self) -> Result<()> {
        Ok(())
    }

    fn retry_policy(&self) -> &RetryPolicy {
        self.manager.retry_policy()
    }
}
