//! The legacy sync `DatabaseManager`: sessions, scoped transactions, one-shot statements, health and retry, blocking; plus the process-wide `get_db_manager`/`close_db_manager`.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ucm::{
    ConnectionManagerProtocol, ConnectionMode, DatabaseUrl, HealthStatus, Result, Row,
    UnifiedManager, Value,
};

use crate::backing::Backing;
use crate::bridge;
use crate::session::{Inner, Session};

/// The legacy synchronous database manager. Every method blocks; all of them work from
/// plain threads and from inside a tokio runtime (see the crate documentation).
#[derive(Debug)]
pub struct DatabaseManager {
    backing: Backing,
    echo: bool,
}

impl DatabaseManager {
    /// Connects a manager for `url`; `echo` logs every statement (not its parameters) at
    /// INFO on the `ucm_compat::sql` target. Without `unified-v2` it opens a pool of its
    /// own; with it, it joins the unified manager for `url`.
    ///
    /// # Errors
    /// `Configuration` for a malformed URL; `ConnectFailed` (with the reason) when the
    /// database cannot be reached.
    pub fn new(url: &str, echo: bool) -> Result<Self> {
        let url = DatabaseUrl::parse(url)?;
        let backing = bridge::block_on(Backing::open(&url))?;
        Ok(Self { backing, echo })
    }

    /// A session: the first statement opens a transaction, which the caller commits or
    /// rolls back. Dropped with a transaction open, it is rolled back.
    ///
    /// # Errors
    /// As `get_connection`: `PoolExhausted`, `ConnectFailed`, `CircuitOpen`, `Closed`.
    pub fn get_session(&self) -> Result<Session> {
        let connection =
            bridge::block_on(self.manager().get_connection(ConnectionMode::ReadWrite))?;
        Ok(Session::new(Inner::new(connection, self.echo)))
    }

    /// Runs `work` in a session: commits when it returns `Ok`, rolls back when it returns
    /// `Err` or panics (the panic then continues), and always returns the connection to its
    /// pool.
    ///
    /// # Errors
    /// `work`'s error, or the session's or commit's.
    pub fn session_scope<T>(&self, work: impl FnOnce(&mut Session) -> Result<T>) -> Result<T> {
        let mut session = self.get_session()?;
        match work(&mut session) {
            Ok(value) => {
                session.commit()?;
                Ok(value)
            }
            Err(e) => {
                if let Err(rollback) = session.rollback() {
                    tracing::debug!(
                        "rollback after a failed session scope also failed: {rollback}"
                    );
                }
                Err(e)
            }
        }
    }

    /// Runs a query in its own transaction and returns its rows.
    ///
    /// # Errors
    /// The statement's classified error.
    pub fn execute_query(&self, sql: &str, params: &[Value]) -> Result<Vec<Row>> {
        self.echo(sql);
        bridge::block_on(self.manager().fetch_all(ConnectionMode::ReadWrite, sql, params))
    }

    /// Runs an `UPDATE` (or `DELETE`...) in its own transaction; returns the rows affected.
    ///
    /// # Errors
    /// The statement's classified error.
    pub fn execute_update(&self, sql: &str, params: &[Value]) -> Result<u64> {
        self.echo(sql);
        bridge::block_on(self.manager().execute(ConnectionMode::ReadWrite, sql, params))
    }

    /// Runs an `INSERT` in its own transaction; returns the rows inserted.
    ///
    /// # Errors
    /// The statement's classified error.
    pub fn execute_insert(&self, sql: &str, params: &[Value]) -> Result<u64> {
        self.execute_update(sql, params)
    }

    /// Whether the database answers (`SELECT 1` on every endpoint): healthy or degraded.
    pub fn health_check(&self) -> bool {
        let report = bridge::block_on(async { Ok(self.manager().health_check().await) });
        report.is_ok_and(|r| matches!(r.status, HealthStatus::Healthy | HealthStatus::Degraded))
    }

    /// Runs `op` until it succeeds, at most `retries` more times after the first attempt,
    /// sleeping `delay`, then twice that, and so on between attempts. Only errors that say
    /// nothing was applied and trying again may work are retried (serialization failure,
    /// deadlock, a connect failure, a connection lost inside a transaction or a read-only
    /// session); an `AmbiguousCommit` (a write or commit whose reply was lost: it may have
    /// been applied) and any other error are returned at once, so nothing is sent twice.
    ///
    /// # Errors
    /// The last attempt's error.
    pub fn with_retry<T>(
        &self,
        mut op: impl FnMut() -> Result<T>,
        retries: u32,
        delay: Duration,
    ) -> Result<T> {
        let mut attempt = 0;
        loop {
            match op() {
                Ok(value) => return Ok(value),
                Err(e) if e.is_transient() && attempt < retries => {
                    let wait = delay.saturating_mul(2_u32.saturating_pow(attempt));
                    tracing::debug!(attempt, ?wait, "retrying after a transient error: {e}");
                    std::thread::sleep(wait);
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Closes the manager's own pool (draining checked-out connections); with
    /// `unified-v2` the shared manager stays open for its other users.
    ///
    /// # Errors
    /// `Timeout` when connections were still checked out at the drain deadline.
    pub fn close(&self) -> Result<()> {
        bridge::block_on(self.backing.close())
    }

    /// A sqlx-shaped pool over this manager's backing (its private pool, or with
    /// `unified-v2` the unified manager): `&pool` runs sqlx's own queries (`query!`...),
    /// `pool.begin()` gives an owned transaction, and every statement gets ucm's routing,
    /// breaker, deadlines and telemetry. Its connections are opened on ucm-compat's runtime,
    /// like the manager's own, so the pool works from any runtime.
    #[cfg(feature = "sqlx")]
    pub fn sqlx_pool<DB: ucm::ucm_sqlx::SqlxDatabase>(&self) -> ucm::ucm_sqlx::SqlxPool<DB> {
        crate::bridge::sqlx_pool(self.manager())
    }

    /// The manager underneath, for the native protocol: the migration's last step.
    pub fn manager(&self) -> &Arc<UnifiedManager> {
        self.backing.manager()
    }

    fn echo(&self, sql: &str) {
        crate::echo(self.echo, sql);
    }
}

static GLOBAL: Mutex<Option<Arc<DatabaseManager>>> = Mutex::new(None);

/// The process-wide `DatabaseManager` for `DATABASE_URL`, created on first use.
///
/// # Errors
/// `Configuration` when `DATABASE_URL` is missing or malformed; `ConnectFailed`.
pub fn get_db_manager() -> Result<Arc<DatabaseManager>> {
    let mut global = GLOBAL.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(manager) = global.as_ref() {
        return Ok(Arc::clone(manager));
    }
    let url = std::env::var("DATABASE_URL").map_err(|_| {
        ucm::Error::config(
            "DATABASE_URL",
            "not set: export the database URL, e.g. postgres://user@host/db",
        )
    })?;
    let manager = Arc::new(DatabaseManager::new(&url, false)?);
    *global = Some(Arc::clone(&manager));
    Ok(manager)
}

/// Closes and forgets the process-wide `DatabaseManager`; the next [`get_db_manager`]
/// creates a new one. Does nothing when none was created.
///
/// # Errors
/// As [`DatabaseManager::close`].
pub fn close_db_manager() -> Result<()> {
    let manager = GLOBAL.lock().unwrap_or_else(PoisonError::into_inner).take();
    match manager {
        Some(manager) => manager.close(),
        None => Ok(()),
    }
}
