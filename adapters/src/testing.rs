//! Test fixtures (feature `testing`): a fresh database per test with a small lazy manager on it, dropped at the end even when the test panics; templates prepared once per process; a pinned test transaction rolled back at the end.
//!
//! ```no_run
//! # async fn example() -> ucm::Result<()> {
//! use ucm::testing::TestDatabase;
//! use ucm::{ConnectionManagerProtocol, ConnectionMode};
//!
//! // In a `#[tokio::test]`: a database of the test's own on the server of `PG_DATABASE_URL`.
//! let db = TestDatabase::create("postgres://postgres@127.0.0.1:5432/postgres").await?;
//! db.manager().execute(ConnectionMode::ReadWrite, "CREATE TABLE t (id INT8)", &[]).await?;
//! db.close().await?; // or let it drop: the database is dropped either way
//! # Ok(()) }
//! ```
//!
//! Each manager is lazy (`min_idle` 0: it connects on first use and keeps nothing idle
//! past the idle timeout) with a pool of 2 and an overflow of 3 by default, so a suite of
//! many tests holds few server connections. Its connections are opened on ucm's own
//! runtime, so a manager outlives the `#[tokio::test]` runtime that built it.
//!
//! Databases: PostgreSQL and MySQL/MariaDB (`CREATE DATABASE`, the admin URL's user needs
//! the right), and SQLite (a new file next to the admin URL's, or in the temporary
//! directory for `:memory:`). Templates: PostgreSQL (`CREATE DATABASE ... TEMPLATE`) and
//! SQLite (a copy of the file); MySQL has no template databases.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::OnceCell;
use ucm_kernel::{
    BoxFuture, ConnectionManagerProtocol, ConnectionMode, DatabaseKind, DatabaseUrl, Error,
    ManagerConfig, ManagerMode, PoolConfiguration, Result, SqlExecutor, TransactionalConnection,
};

use crate::{UnifiedConnection, UnifiedManager};

/// The scriptable in-memory connector, for fault tests without a database.
pub use ucm_kernel::pool::testing::MemoryConnector;

/// A database created for one test, with a manager on it; dropped (the database too) when
/// the value is, even when the test panics.
pub struct TestDatabase {
    manager: Arc<UnifiedManager>,
    url: DatabaseUrl,
    name: String,
    /// `None` once [`Self::close`] has cleaned up.
    cleanup: Option<Cleanup>,
}

/// What dropping a test database must undo.
#[derive(Debug, Clone)]
enum Cleanup {
    Server { admin: DatabaseUrl, name: String },
    File(PathBuf),
}

/// Options for [`TestDatabase`]: where, from what, and the manager's shape.
#[derive(Debug, Clone)]
pub struct TestDatabaseBuilder {
    admin: String,
    template: Option<String>,
    mode: ManagerMode,
    pool_size: usize,
    max_overflow: usize,
}

impl TestDatabaseBuilder {
    /// Copies the database from `template` (prepared with [`prepare_template`]) instead of
    /// starting empty.
    #[must_use]
    pub fn template(mut self, template: &str) -> Self {
        self.template = Some(template.to_owned());
        self
    }

    /// The manager's mode (default `AsyncModern`); its preset applies, but for the pool's
    /// sizes and laziness.
    #[must_use]
    pub fn mode(mut self, mode: ManagerMode) -> Self {
        self.mode = mode;
        self
    }

    /// The manager's pool size and overflow (default 2 and 3).
    #[must_use]
    pub fn pool(mut self, pool_size: usize, max_overflow: usize) -> Self {
        (self.pool_size, self.max_overflow) = (pool_size, max_overflow);
        self
    }

    /// Creates the database and a lazy manager on it.
    ///
    /// # Errors
    /// A malformed admin URL, a server that refuses `CREATE DATABASE`, a template that does
    /// not exist or is still in use past a few seconds.
    pub async fn create(self) -> Result<TestDatabase> {
        let admin = DatabaseUrl::parse_named("admin_url", &self.admin)?;
        let name = unique_name();
        let (url, cleanup) = match admin.kind() {
            DatabaseKind::Sqlite => {
                let path = sqlite_path(&admin, &name);
                if let Some(template) = &self.template {
                    let from = sqlite_path(&admin, template);
                    std::fs::copy(&from, &path).map_err(|e| {
                        Error::other(format!(
                            "could not copy the template {} to {}: {e}; prepare it with prepare_template first",
                            from.display(),
                            path.display()
                        ))
                    })?;
                }
                let url = admin.with_database(&path.to_string_lossy());
                (url, Cleanup::File(path))
            }
            kind => {
                let statement = create_statement(kind, &name, self.template.as_deref())?;
                create_on_server(&admin, &statement).await?;
                let url = admin.with_database(&name);
                (url, Cleanup::Server { admin, name: name.clone() })
            }
        };
        let pool = PoolConfiguration::builder(self.mode)
            .pool_size(self.pool_size)
            .max_overflow(self.max_overflow)
            .min_idle(0)
            .overflow_idle_timeout(Duration::from_secs(5))
            .build()?;
        let config =
            ManagerConfig::builder(self.mode).primary_url(url.clone()).pool(pool).build()?;
        match connect_on_ucm_runtime(config).await {
            Ok(manager) => {
                Ok(TestDatabase { manager: Arc::new(manager), url, name, cleanup: Some(cleanup) })
            }
            Err(e) => {
                if let Err(cleanup_error) = clean(cleanup).await {
                    tracing::warn!(
                        "dropping a test database after a failed start: {cleanup_error}"
                    );
                }
                Err(e)
            }
        }
    }
}

impl TestDatabase {
    /// Options for a fresh database on the server (or beside the SQLite file) of
    /// `admin_url`.
    pub fn builder(admin_url: &str) -> TestDatabaseBuilder {
        TestDatabaseBuilder {
            admin: admin_url.to_owned(),
            template: None,
            mode: ManagerMode::AsyncModern,
            pool_size: 2,
            max_overflow: 3,
        }
    }

    /// An empty database on the server of `admin_url`, with a lazy manager on it.
    ///
    /// # Errors
    /// As [`TestDatabaseBuilder::create`].
    pub async fn create(admin_url: &str) -> Result<Self> {
        Self::builder(admin_url).create().await
    }

    /// The manager on the test's database.
    pub fn manager(&self) -> &Arc<UnifiedManager> {
        &self.manager
    }

    /// The test's database URL (`Display` hides the password; `expose_url()` gives it to a
    /// driver or a migration tool).
    pub fn url(&self) -> &DatabaseUrl {
        &self.url
    }

    /// The database's name (for SQLite, its file's path).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A connection pinned for the test with a transaction open on it: everything run on it
    /// is rolled back when it is dropped, however the test ends.
    ///
    /// # Errors
    /// As the manager's `get_connection` and `BEGIN`.
    pub async fn transaction(&self) -> Result<UnifiedConnection> {
        let mut connection = self.manager.get_connection(ConnectionMode::Transactional).await?;
        connection.begin(ConnectionMode::Transactional).await?;
        Ok(connection)
    }

    /// Closes the manager (waiting for its checked-out connections) and drops the database.
    ///
    /// # Errors
    /// The manager's close error or the server's `DROP DATABASE` error; the database is
    /// dropped in either case when the server allows it.
    pub async fn close(mut self) -> Result<()> {
        let closed = self.manager.close().await;
        let cleaned = match self.cleanup.take() {
            Some(cleanup) => clean(cleanup).await,
            None => Ok(()),
        };
        closed.and(cleaned)
    }
}

impl Drop for TestDatabase {
    /// Drops the database on ucm's runtime, from inside the test's runtime or after it
    /// (a panicking test included); the server ends the manager's sessions on it.
    fn drop(&mut self) {
        let Some(cleanup) = self.cleanup.take() else { return };
        let name = self.name.clone();
        match ucm_kernel::blocking::block_on(clean(cleanup)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) | Err(e) => {
                tracing::warn!(database = %name, "could not drop the test database: {e}");
            }
        }
    }
}

impl std::fmt::Debug for TestDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestDatabase").field("url", &self.url).finish_non_exhaustive()
    }
}

/// Prepares the template `name` on the server of `admin_url` once per process: drops a
/// stale one, creates it empty, runs `setup` (the application's migrations) on a manager
/// of its own and closes that manager, so no pooled connection stays on the template
/// (PostgreSQL refuses to copy a database with sessions on it). Later calls with the same
/// server and name return at once.
///
/// # Errors
/// As [`TestDatabaseBuilder::create`], and `setup`'s error (the template is then dropped,
/// and the next call tries again).
pub async fn prepare_template<F>(admin_url: &str, name: &str, setup: F) -> Result<()>
where
    F: FnOnce(Arc<UnifiedManager>) -> BoxFuture<'static, Result<()>>,
{
    type Prepared = Arc<OnceCell<()>>;
    static PREPARED: OnceLock<Mutex<HashMap<String, Prepared>>> = OnceLock::new();
    let admin = DatabaseUrl::parse_named("admin_url", admin_url)?;
    if admin.kind() == DatabaseKind::MySql {
        return Err(Error::config(
            "template",
            "MySQL and MariaDB have no template databases; run the migrations on each test's \
             database instead",
        ));
    }
    let cell = Arc::clone(
        PREPARED
            .get_or_init(Mutex::default)
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(format!("{}#{name}", admin.label()))
            .or_default(),
    );
    cell.get_or_try_init(|| async {
        let (url, cleanup) = match admin.kind() {
            DatabaseKind::Sqlite => {
                let path = sqlite_path(&admin, name);
                remove_file_if_present(&path)?;
                (admin.with_database(&path.to_string_lossy()), Cleanup::File(path))
            }
            kind => {
                create_on_server(&admin, &drop_statement(kind, name)).await?;
                create_on_server(&admin, &create_statement(kind, name, None)?).await?;
                (
                    admin.with_database(name),
                    Cleanup::Server { admin: admin.clone(), name: name.to_owned() },
                )
            }
        };
        let manager = Arc::new(connect_on_ucm_runtime(admin_config(url)?).await?);
        let outcome = setup(Arc::clone(&manager)).await;
        let closed = manager.close().await;
        match outcome.and(closed) {
            Ok(()) => Ok(()),
            Err(e) => {
                if let Err(cleanup_error) = clean(cleanup).await {
                    tracing::warn!("dropping a template after its failed setup: {cleanup_error}");
                }
                Err(e)
            }
        }
    })
    .await
    .copied()
}

/// A database name no other test, run or process uses.
fn unique_name() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    format!("ucm_test_{}_{}_{nanos}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// The file of SQLite database `name`: beside the admin URL's file, or in the temporary
/// directory for an in-memory admin URL.
fn sqlite_path(admin: &DatabaseUrl, name: &str) -> PathBuf {
    let dir = admin
        .sqlite_path()
        .and_then(|path| PathBuf::from(path).parent().map(PathBuf::from))
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or_else(std::env::temp_dir);
    dir.join(format!("{name}.db"))
}

fn remove_file_if_present(path: &Path) -> Result<()> {
    for file in [path.to_path_buf(), path.with_extension("db-wal"), path.with_extension("db-shm")] {
        match std::fs::remove_file(&file) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(Error::other(format!("could not remove {}: {e}", file.display())));
            }
        }
    }
    Ok(())
}

fn quote(kind: DatabaseKind, name: &str) -> String {
    match kind {
        DatabaseKind::MySql => format!("`{}`", name.replace('`', "``")),
        _ => format!("\"{}\"", name.replace('"', "\"\"")),
    }
}

fn create_statement(kind: DatabaseKind, name: &str, template: Option<&str>) -> Result<String> {
    let create = format!("CREATE DATABASE {}", quote(kind, name));
    match (kind, template) {
        (_, None) => Ok(create),
        (DatabaseKind::Postgres, Some(template)) => {
            Ok(format!("{create} TEMPLATE {}", quote(kind, template)))
        }
        (_, Some(_)) => Err(Error::config(
            "template",
            "MySQL and MariaDB have no template databases; run the migrations on each test's \
             database instead",
        )),
    }
}

fn drop_statement(kind: DatabaseKind, name: &str) -> String {
    match kind {
        // FORCE (PostgreSQL 13+) ends the sessions still on it, the test's manager's too.
        DatabaseKind::Postgres => {
            format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quote(kind, name))
        }
        _ => format!("DROP DATABASE IF EXISTS {}", quote(kind, name)),
    }
}

/// Runs `statement` on a connection of its own to the admin URL's server, outside any
/// pool (so the admin database holds no pooled session afterwards). A template still in
/// use by a session that is closing (SQLSTATE 55006) is retried for a few seconds.
async fn create_on_server(admin: &DatabaseUrl, statement: &str) -> Result<()> {
    let statement = statement.to_owned();
    let admin = admin.clone();
    ucm_kernel::blocking::spawn(async move {
        let manager = UnifiedManager::connect(admin_config(admin)?).await?;
        let outcome = async {
            let mut connection = manager.direct_connection().await?;
            let mut attempt = 0;
            loop {
                match connection.execute(&statement, &[]).await {
                    Err(e) if e.sqlstate() == Some("55006") && attempt < 50 => {
                        attempt += 1;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    other => return other.map(|_| ()),
                }
            }
        }
        .await;
        manager.close().await?;
        outcome
    })
    .await
}

/// Undoes what creating a test database did.
async fn clean(cleanup: Cleanup) -> Result<()> {
    match cleanup {
        Cleanup::File(path) => remove_file_if_present(&path),
        Cleanup::Server { admin, name } => {
            if admin.kind() == DatabaseKind::MySql {
                end_mysql_sessions(&admin, &name).await?;
            }
            create_on_server(&admin, &drop_statement(admin.kind(), &name)).await
        }
    }
}

/// MySQL's `DROP DATABASE` waits for the metadata locks of other sessions' open
/// transactions: end the sessions on `name` first (PostgreSQL's `FORCE` does this itself).
async fn end_mysql_sessions(admin: &DatabaseUrl, name: &str) -> Result<()> {
    let (admin, name) = (admin.clone(), name.to_owned());
    ucm_kernel::blocking::spawn(async move {
        let manager = UnifiedManager::connect(admin_config(admin)?).await?;
        let outcome = async {
            let mut connection = manager.direct_connection().await?;
            let rows = connection
                .fetch_all(
                    "SELECT id FROM information_schema.processlist WHERE db = ? AND id <> CONNECTION_ID()",
                    &[name.as_str().into()],
                )
                .await?;
            for row in rows {
                let id: i64 = row.try_get("id")?;
                // A session that ended meanwhile is not an error.
                if let Err(e) = connection.execute(&format!("KILL {id}"), &[]).await {
                    tracing::debug!("ending session {id} on a test database: {e}");
                }
            }
            Ok(())
        }
        .await;
        manager.close().await?;
        outcome
    })
    .await
}

/// A one-connection lazy `Admin` manager on `url`, for setting up and dropping databases.
fn admin_config(url: DatabaseUrl) -> Result<ManagerConfig> {
    let pool = PoolConfiguration::builder(ManagerMode::Admin)
        .pool_size(1)
        .max_overflow(0)
        .min_idle(0)
        .build()?;
    ManagerConfig::builder(ManagerMode::Admin).primary_url(url).pool(pool).build()
}

/// Builds a manager on ucm's runtime, so its connections and background tasks belong to a
/// runtime that outlives the test's.
async fn connect_on_ucm_runtime(config: ManagerConfig) -> Result<UnifiedManager> {
    ucm_kernel::blocking::spawn(async move { UnifiedManager::connect(config).await }).await
}
