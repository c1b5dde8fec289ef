//! The legacy async `DatabaseSessionManager` (sessions, scoped transactions, close) and `get_session_context` for the async scope pattern.

use std::sync::Arc;

use tokio::sync::OnceCell;
use ucm::{
    BoxFuture, ConnectionManagerProtocol, ConnectionMode, DatabaseUrl, Result, Row, UnifiedManager,
    Value,
};

use crate::backing::Backing;
use crate::bridge;
use crate::session::{AsyncSession, Inner};

/// The legacy asynchronous session manager. Connects lazily, on the first session, like
/// the legacy engine; its connections are opened and driven on ucm-compat's runtime, so it
/// works from any runtime (see the crate documentation). `Debug` shows the URL redacted.
#[derive(Debug)]
pub struct DatabaseSessionManager {
    url: DatabaseUrl,
    echo: bool,
    backing: OnceCell<Backing>,
}

impl DatabaseSessionManager {
    /// A manager for `url`; `echo` logs every statement (not its parameters). Nothing is
    /// opened until the first session.
    ///
    /// # Errors
    /// `Configuration` for a malformed URL.
    pub fn new(url: &str, echo: bool) -> Result<Self> {
        Ok(Self { url: DatabaseUrl::parse(url)?, echo, backing: OnceCell::new() })
    }

    async fn backing(&self) -> Result<&Backing> {
        self.backing
            .get_or_try_init(|| {
                let url = self.url.clone();
                bridge::spawn(async move { Backing::open(&url).await })
            })
            .await
    }

    /// A session: the first statement opens a transaction, which the caller commits or
    /// rolls back. Dropped with a transaction open, it is rolled back.
    ///
    /// # Errors
    /// `ConnectFailed` on first use; then as `get_connection`.
    pub async fn session(&self) -> Result<AsyncSession> {
        let manager = Arc::clone(self.backing().await?.manager());
        let echo = self.echo;
        bridge::spawn(async move {
            let connection = manager.get_connection(ConnectionMode::ReadWrite).await?;
            Ok(AsyncSession::new(Inner::new(connection, echo)))
        })
        .await
    }

    /// Runs `work` in a session: commits when it returns `Ok`, rolls back when it returns
    /// `Err`, panics or is dropped, and always returns the connection to its pool.
    ///
    /// # Errors
    /// `work`'s error, or the session's or commit's.
    pub async fn session_scope<T, F>(&self, work: F) -> Result<T>
    where
        F: for<'s> FnOnce(&'s mut AsyncSession) -> BoxFuture<'s, Result<T>>,
    {
        let mut session = self.session().await?;
        match work(&mut session).await {
            Ok(value) => {
                session.commit().await?;
                Ok(value)
            }
            Err(e) => {
                if let Err(rollback) = session.rollback().await {
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
    /// `ConnectFailed` on first use; then the statement's classified error.
    pub async fn execute_query(&self, sql: &str, params: &[Value]) -> Result<Vec<Row>> {
        crate::echo(self.echo, sql);
        let manager = self.manager().await?;
        let (sql, params) = (sql.to_owned(), params.to_vec());
        bridge::spawn(
            async move { manager.fetch_all(ConnectionMode::ReadWrite, &sql, &params).await },
        )
        .await
    }

    /// Runs an `UPDATE` (or `DELETE`...) in its own transaction; returns the rows affected.
    ///
    /// # Errors
    /// `ConnectFailed` on first use; then the statement's classified error.
    pub async fn execute_update(&self, sql: &str, params: &[Value]) -> Result<u64> {
        crate::echo(self.echo, sql);
        let manager = self.manager().await?;
        let (sql, params) = (sql.to_owned(), params.to_vec());
        bridge::spawn(
            async move { manager.execute(ConnectionMode::ReadWrite, &sql, &params).await },
        )
        .await
    }

    /// Runs an `INSERT` in its own transaction; returns the rows inserted.
    ///
    /// # Errors
    /// As [`Self::execute_update`].
    pub async fn execute_insert(&self, sql: &str, params: &[Value]) -> Result<u64> {
        self.execute_update(sql, params).await
    }

    /// Closes the manager's own pool; with `unified-v2` the shared manager stays open.
    ///
    /// # Errors
    /// `Timeout` when connections were still checked out at the drain deadline.
    pub async fn close(&self) -> Result<()> {
        let Some(backing) = self.backing.get().cloned() else { return Ok(()) };
        bridge::spawn(async move { backing.close().await }).await
    }

    /// A sqlx-shaped pool over this manager's backing (created on first use); see
    /// `DatabaseManager::sqlx_pool`.
    ///
    /// # Errors
    /// `ConnectFailed` on first use.
    #[cfg(feature = "sqlx")]
    pub async fn sqlx_pool<DB: ucm::ucm_sqlx::SqlxDatabase>(
        &self,
    ) -> Result<ucm::ucm_sqlx::SqlxPool<DB>> {
        Ok(crate::bridge::sqlx_pool(self.backing().await?.manager()))
    }

    /// The manager underneath (created on first use), for the native protocol.
    ///
    /// # Errors
    /// `ConnectFailed` on first use.
    pub async fn manager(&self) -> Result<Arc<UnifiedManager>> {
        Ok(Arc::clone(self.backing().await?.manager()))
    }
}

/// A session from the process-wide `DatabaseSessionManager` for `DATABASE_URL`: the async
/// scope pattern. Commit it explicitly; dropped uncommitted, it rolls back.
///
/// ```no_run
/// # async fn example() -> ucm::Result<()> {
/// let mut session = ucm_compat::get_session_context().await?;
/// session.execute("UPDATE jobs SET state = 'done' WHERE id = $1", &[7.into()]).await?;
/// session.commit().await?;
/// # Ok(()) }
/// ```
///
/// # Errors
/// `Configuration` when `DATABASE_URL` is missing or malformed; then as
/// [`DatabaseSessionManager::session`].
pub async fn get_session_context() -> Result<AsyncSession> {
    static GLOBAL: OnceCell<DatabaseSessionManager> = OnceCell::const_new();
    let manager = GLOBAL
        .get_or_try_init(|| async {
            let url = std::env::var("DATABASE_URL").map_err(|_| {
                ucm::Error::config(
                    "DATABASE_URL",
                    "not set: export the database URL, e.g. postgres://user@host/db",
                )
            })?;
            DatabaseSessionManager::new(&url, false)
        })
        .await?;
    manager.session().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_the_url_redacted() {
        let manager =
            DatabaseSessionManager::new("postgres://app:s3cr3t-COMPAT-5@db.example/app", false)
                .unwrap();
        let debug = format!("{manager:?} {manager:#?}");
        assert!(!debug.contains("s3cr3t-COMPAT-5"), "{debug}");
        assert!(debug.contains("postgres://app:***@db.example:5432/app"), "{debug}");
    }
}
