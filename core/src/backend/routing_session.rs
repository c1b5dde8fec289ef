//! `RoutingSession`: one unit of work's view of a manager (a request, a job), whose reads stay on the primary for a while after its own writes (read-your-writes).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

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
/// a `ReadOnly` checkout made within that window after this session's last write checkout
/// (`ReadWrite`, `Batch` or `Transactional`) goes to the primary, so the session reads
/// what it just wrote even where replicas lag; other sessions keep reading from replicas.
/// The window counts from the write's checkout: make it longer than your writes take.
/// Without a window, a session routes exactly as its manager does.
///
/// It implements [`ConnectionManagerProtocol`], so `execute`, `fetch_all` and
/// transactions work on it as on the manager. [`close`](ConnectionManagerProtocol::close)
/// on a session closes nothing: the manager belongs to whoever created it.
#[derive(Debug)]
pub struct RoutingSession<'m, B: Backend> {
    manager: ManagerRef<'m, B>,
    /// When the session was created: the origin of `last_write`.
    origin: Instant,
    /// Nanoseconds after `origin` of the last write checkout, plus one; zero: none yet.
    last_write: AtomicU64,
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
        Self { manager, origin: Instant::now(), last_write: AtomicU64::new(0) }
    }

    /// Whether this session's reads go to the primary now.
    pub fn reads_from_primary(&self) -> bool {
        let Some(window) = self.manager.config().pool().read_your_writes() else { return false };
        match self.last_write.load(Ordering::Relaxed) {
            0 => false,
            plus_one => {
                let written = self.origin + std::time::Duration::from_nanos(plus_one - 1);
                written.elapsed() < window
            }
        }
    }

    fn record_write(&self) {
        let nanos = u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX - 1);
        self.last_write.store(nanos + 1, Ordering::Relaxed);
    }
}

#[async_trait]
impl<B: Backend> ConnectionManagerProtocol for RoutingSession<'_, B> {
    type Connection = Connection<B>;

    async fn get_connection(&self, mode: ConnectionMode) -> Result<Connection<B>> {
        if !mode.is_read_only() {
            self.record_write();
            return self.manager.get_connection(mode).await;
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
