//! A scriptable in-memory connector for fault tests without a database: slow, refused and broken connections, injected latency.
//!
//! It is a real [`Connector`]: the pool opens, validates, resets and closes its connections
//! exactly as it does a driver's, and the connector counts each of those so a test can
//! assert on them. Delays use tokio's clock, so tests run on paused time.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> ucm_kernel::Result<()> {
//! use ucm_kernel::pool::{Pool, testing::MemoryConnector};
//! use ucm_kernel::{ManagerMode, PoolConfiguration};
//!
//! let connector = MemoryConnector::new();
//! let pool = Pool::new("memory", connector.clone(), PoolConfiguration::for_mode(ManagerMode::Admin), None)?;
//! pool.prefill().await?;
//! assert_eq!(connector.opened(), 5);
//! connector.refuse_connections(true); // the "server" goes away
//! # Ok(()) }
//! ```

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use super::Connector;
use crate::connector::ReplicationStatus;
use crate::error::{ConnectFailure, Error, ErrorKind, Result};

/// A connector whose behaviour a test scripts; clones share the script and the counters.
#[derive(Debug, Clone, Default)]
pub struct MemoryConnector {
    script: Arc<Script>,
}

/// A connection made by [`MemoryConnector`].
#[derive(Debug)]
pub struct MemoryConnection {
    id: u64,
    generation: u64,
    in_transaction: bool,
    read_only: bool,
    script: Arc<Script>,
}

#[derive(Debug, Default)]
struct Script {
    connect_delay: Mutex<Duration>,
    latency: Mutex<Duration>,
    refuse: AtomicBool,
    fail_validation: AtomicBool,
    fail_reset: AtomicBool,
    /// Connections made before this generation are broken.
    broken_before: AtomicU64,
    generation: AtomicU64,
    next_id: AtomicU64,
    connect_attempts: AtomicU64,
    opened: AtomicU64,
    closed: AtomicU64,
    validations: AtomicU64,
    resets: AtomicU64,
    read_only_changes: AtomicU64,
    replication: Mutex<Option<ReplicationStatus>>,
}

impl MemoryConnector {
    /// A connector that connects at once and never fails until told to.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes every connect take `delay` (before succeeding or being refused).
    pub fn set_connect_delay(&self, delay: Duration) {
        if let Ok(mut slot) = self.script.connect_delay.lock() {
            *slot = delay;
        }
    }

    /// Adds `latency` to every validation, reset and [`MemoryConnection::query`].
    pub fn set_latency(&self, latency: Duration) {
        if let Ok(mut slot) = self.script.latency.lock() {
            *slot = latency;
        }
    }

    /// Refuses (or accepts again) new connections, like a server that is down.
    pub fn refuse_connections(&self, refuse: bool) {
        self.script.refuse.store(refuse, Ordering::SeqCst);
    }

    /// Makes every validation ping fail (or pass again).
    pub fn fail_validation(&self, fail: bool) {
        self.script.fail_validation.store(fail, Ordering::SeqCst);
    }

    /// Makes every reset (rollback on return) fail (or pass again).
    pub fn fail_reset(&self, fail: bool) {
        self.script.fail_reset.store(fail, Ordering::SeqCst);
    }

    /// Breaks every connection open now, like a server restart: their queries and pings fail.
    /// Connections opened afterwards work.
    pub fn break_existing_connections(&self) {
        let generation = self.script.generation.fetch_add(1, Ordering::SeqCst) + 1;
        self.script.broken_before.store(generation, Ordering::SeqCst);
    }

    /// What the "server" reports of its replication role (standby or not, lag) to health
    /// probes; `None` (the default) reports none, like SQLite, and probes just ping.
    pub fn set_replication(&self, status: Option<ReplicationStatus>) {
        if let Ok(mut slot) = self.script.replication.lock() {
            *slot = status;
        }
    }

    /// Connect attempts so far, successful or not.
    pub fn connect_attempts(&self) -> u64 {
        self.script.connect_attempts.load(Ordering::SeqCst)
    }
    /// Connections opened so far.
    pub fn opened(&self) -> u64 {
        self.script.opened.load(Ordering::SeqCst)
    }
    /// Connections closed (dropped) so far.
    pub fn closed(&self) -> u64 {
        self.script.closed.load(Ordering::SeqCst)
    }
    /// Connections open now.
    pub fn live(&self) -> u64 {
        self.opened() - self.closed()
    }
    /// Validation pings so far.
    pub fn validations(&self) -> u64 {
        self.script.validations.load(Ordering::SeqCst)
    }
    /// Session read-only changes so far.
    pub fn read_only_changes(&self) -> u64 {
        self.script.read_only_changes.load(Ordering::SeqCst)
    }
    /// Resets (rollbacks on return) so far.
    pub fn resets(&self) -> u64 {
        self.script.resets.load(Ordering::SeqCst)
    }

    fn latency(&self) -> Duration {
        self.script.latency.lock().map(|d| *d).unwrap_or_default()
    }
}

impl MemoryConnection {
    /// This connection's number, in order of opening from 0.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Whether a transaction is open on this connection.
    pub fn in_transaction(&self) -> bool {
        self.in_transaction
    }

    /// Whether the session refuses writes (set by the pool for `ConnectionMode::ReadOnly`).
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// Whether the connector has broken this connection.
    pub fn is_broken(&self) -> bool {
        self.generation < self.script.broken_before.load(Ordering::SeqCst)
    }

    /// A round trip: waits the injected latency, then fails if the connection is broken.
    ///
    /// # Errors
    /// `ConnectionLost` when the connection was broken by the script.
    pub async fn query(&mut self) -> Result<()> {
        let latency = self.script.latency.lock().map(|d| *d).unwrap_or_default();
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        if self.is_broken() {
            return Err(Error::database(
                ErrorKind::ConnectionLost,
                "memory",
                Some("08006".into()),
                "connection broken by the test script",
            ));
        }
        Ok(())
    }

    /// Opens a transaction (one round trip).
    ///
    /// # Errors
    /// As [`Self::query`].
    pub async fn begin(&mut self) -> Result<()> {
        self.query().await?;
        self.in_transaction = true;
        Ok(())
    }

    /// Commits the open transaction (one round trip).
    ///
    /// # Errors
    /// As [`Self::query`].
    pub async fn commit(&mut self) -> Result<()> {
        self.query().await?;
        self.in_transaction = false;
        Ok(())
    }
}

impl Drop for MemoryConnection {
    fn drop(&mut self) {
        self.script.closed.fetch_add(1, Ordering::SeqCst);
    }
}

impl Connector for MemoryConnector {
    type Connection = MemoryConnection;

    async fn connect(&self) -> Result<MemoryConnection> {
        self.script.connect_attempts.fetch_add(1, Ordering::SeqCst);
        let delay = self.script.connect_delay.lock().map(|d| *d).unwrap_or_default();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if self.script.refuse.load(Ordering::SeqCst) {
            return Err(Error::ConnectFailed {
                endpoint: "memory".into(),
                reason: ConnectFailure::Refused,
                attempts: 1,
                message: "the memory connector refuses connections (scripted)".into(),
                source: None,
            });
        }
        self.script.opened.fetch_add(1, Ordering::SeqCst);
        Ok(MemoryConnection {
            id: self.script.next_id.fetch_add(1, Ordering::SeqCst),
            generation: self.script.generation.load(Ordering::SeqCst),
            in_transaction: false,
            read_only: false,
            script: Arc::clone(&self.script),
        })
    }

    async fn validate(&self, connection: &mut MemoryConnection) -> Result<()> {
        self.script.validations.fetch_add(1, Ordering::SeqCst);
        connection.query().await?;
        if self.script.fail_validation.load(Ordering::SeqCst) {
            return Err(Error::database(
                ErrorKind::ConnectionLost,
                "memory",
                None,
                "ping failed (scripted)",
            ));
        }
        Ok(())
    }

    async fn reset(&self, connection: &mut MemoryConnection) -> Result<()> {
        self.script.resets.fetch_add(1, Ordering::SeqCst);
        let latency = self.latency();
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        if self.script.fail_reset.load(Ordering::SeqCst) || connection.is_broken() {
            return Err(Error::database(
                ErrorKind::ConnectionLost,
                "memory",
                None,
                "rollback failed (scripted)",
            ));
        }
        connection.in_transaction = false;
        Ok(())
    }

    async fn set_read_only(
        &self,
        connection: &mut MemoryConnection,
        read_only: bool,
    ) -> Result<()> {
        self.script.read_only_changes.fetch_add(1, Ordering::SeqCst);
        connection.query().await?;
        connection.read_only = read_only;
        Ok(())
    }

    fn is_broken(&self, connection: &mut MemoryConnection) -> bool {
        connection.is_broken()
    }

    async fn replication_status(
        &self,
        connection: &mut MemoryConnection,
    ) -> Result<Option<ReplicationStatus>> {
        let status = self.script.replication.lock().map(|s| *s).unwrap_or_default();
        if status.is_some() {
            connection.query().await?;
        }
        Ok(status)
    }
}
