//! `SqlxManager`: `ConnectionManagerProtocol` over core's `Topology` of sqlx connectors, the database picked from the URL at run time.

use async_trait::async_trait;
use ucm_core::topology::{DRAIN_DEADLINE, Topology};
use ucm_core::{
    ConnectionInfo, ConnectionManagerProtocol, ConnectionMode, DatabaseKind, Error, HealthReport,
    ManagerConfig, ManagerMode, Result, RetryPolicy, Row, SqlExecutor, TransactionalConnection,
    Value,
};

use crate::connector::SqlxConnector;
#[cfg(feature = "mysql")]
use crate::mysql::MySqlDialect;
#[cfg(feature = "postgres")]
use crate::postgres::PgDialect;
use crate::session::SqlxSession;
#[cfg(feature = "sqlite")]
use crate::sqlite::SqliteDialect;

/// The connection manager on sqlx: one pool per endpoint (core's pool), breaker, retry,
/// health and metrics from core; sqlx only opens and drives the connections.
#[derive(Debug)]
pub struct SqlxManager {
    endpoints: Endpoints,
    retry: RetryPolicy,
}

/// A connection from a [`SqlxManager`], for whichever database the URL named.
#[derive(Debug)]
#[non_exhaustive]
pub enum SqlxConnection {
    /// A PostgreSQL session.
    #[cfg(feature = "postgres")]
    Postgres(SqlxSession<PgDialect>),
    /// A MySQL or MariaDB session.
    #[cfg(feature = "mysql")]
    MySql(SqlxSession<MySqlDialect>),
    /// A SQLite session.
    #[cfg(feature = "sqlite")]
    Sqlite(SqlxSession<SqliteDialect>),
}

#[derive(Debug)]
enum Endpoints {
    #[cfg(feature = "postgres")]
    Postgres(Topology<SqlxConnector<PgDialect>>),
    #[cfg(feature = "mysql")]
    MySql(Topology<SqlxConnector<MySqlDialect>>),
    #[cfg(feature = "sqlite")]
    Sqlite(Topology<SqlxConnector<SqliteDialect>>),
}

/// Runs `$body` with `$t` bound to the topology, whatever the database.
macro_rules! with_topology {
    ($endpoints:expr, $t:ident => $body:expr) => {
        match $endpoints {
            #[cfg(feature = "postgres")]
            Endpoints::Postgres($t) => $body,
            #[cfg(feature = "mysql")]
            Endpoints::MySql($t) => $body,
            #[cfg(feature = "sqlite")]
            Endpoints::Sqlite($t) => $body,
        }
    };
}

/// Runs `$body` with `$s` bound to the session, whatever the database.
macro_rules! with_session {
    ($connection:expr, $s:ident => $body:expr) => {
        match $connection {
            #[cfg(feature = "postgres")]
            SqlxConnection::Postgres($s) => $body,
            #[cfg(feature = "mysql")]
            SqlxConnection::MySql($s) => $body,
            #[cfg(feature = "sqlite")]
            SqlxConnection::Sqlite($s) => $body,
        }
    };
}

impl SqlxManager {
    /// Connects a manager for `config`: builds one pool per endpoint and prefills the
    /// primary's, so a wrong URL, password or host fails here, with the reason.
    ///
    /// # Errors
    /// `Configuration` when the database's feature is not compiled in or the URL's options
    /// are invalid; `ConnectFailed` (with the reason: refused, DNS, authentication, missing
    /// database, TLS, timeout) when the primary cannot be reached.
    pub async fn connect(config: ManagerConfig) -> Result<Self> {
        let endpoints = match config.kind() {
            #[cfg(feature = "postgres")]
            DatabaseKind::Postgres => {
                Endpoints::Postgres(Topology::connect(config, SqlxConnector::new).await?)
            }
            #[cfg(feature = "mysql")]
            DatabaseKind::MySql => {
                Endpoints::MySql(Topology::connect(config, SqlxConnector::new).await?)
            }
            #[cfg(feature = "sqlite")]
            DatabaseKind::Sqlite => {
                Endpoints::Sqlite(Topology::connect(config, SqlxConnector::new).await?)
            }
            #[allow(unreachable_patterns)] // Reachable when a database feature is off.
            other => {
                return Err(Error::config(
                    "DATABASE_URL",
                    format!(
                        "ucm-sqlx was built without {other} support: enable its `{}` feature",
                        feature_of(other)
                    ),
                ));
            }
        };
        Ok(Self { endpoints, retry: RetryPolicy::default() })
    }

    /// [`Self::connect`] with the configuration read from `DATABASE_URL`,
    /// `DATABASE_REPLICA_URLS` and the `UCM_*` overrides.
    ///
    /// # Errors
    /// As [`ManagerConfig::from_env`] and [`Self::connect`].
    pub async fn from_env(mode: ManagerMode) -> Result<Self> {
        Self::connect(ManagerConfig::from_env(mode)?).await
    }

    /// Replaces the retry policy (default: 3 attempts, 50 ms to 2 s full-jitter backoff).
    #[must_use]
    pub fn with_retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The database system (`postgresql`, `mysql`, `sqlite`).
    pub fn system(&self) -> &'static str {
        with_topology!(&self.endpoints, t => t.config().kind().as_str())
    }

    /// The configuration the manager was built from.
    pub fn config(&self) -> &ManagerConfig {
        with_topology!(&self.endpoints, t => t.config())
    }
}

fn feature_of(kind: DatabaseKind) -> &'static str {
    match kind {
        DatabaseKind::Postgres => "postgres",
        DatabaseKind::MySql => "mysql",
        DatabaseKind::Sqlite => "sqlite",
    }
}

#[async_trait]
impl ConnectionManagerProtocol for SqlxManager {
    type Connection = SqlxConnection;

    async fn get_connection(&self, mode: ConnectionMode) -> Result<SqlxConnection> {
        Ok(match &self.endpoints {
            #[cfg(feature = "postgres")]
            Endpoints::Postgres(t) => {
                SqlxConnection::Postgres(SqlxSession::new(t.acquire(mode).await?))
            }
            #[cfg(feature = "mysql")]
            Endpoints::MySql(t) => SqlxConnection::MySql(SqlxSession::new(t.acquire(mode).await?)),
            #[cfg(feature = "sqlite")]
            Endpoints::Sqlite(t) => {
                SqlxConnection::Sqlite(SqlxSession::new(t.acquire(mode).await?))
            }
        })
    }

    async fn health_check(&self) -> HealthReport {
        with_topology!(&self.endpoints, t => t.health_check().await)
    }

    fn connection_info(&self) -> ConnectionInfo {
        with_topology!(&self.endpoints, t => t.info("sqlx"))
    }

    fn is_healthy(&self) -> bool {
        with_topology!(&self.endpoints, t => t.is_healthy())
    }

    async fn close(&self) -> Result<()> {
        with_topology!(&self.endpoints, t => t.close(DRAIN_DEADLINE).await)
    }

    fn retry_policy(&self) -> &RetryPolicy {
        &self.retry
    }
}

#[async_trait]
impl SqlExecutor for SqlxConnection {
    async fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64> {
        with_session!(self, s => s.execute(sql, params).await)
    }

    async fn fetch_all(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>> {
        with_session!(self, s => s.fetch_all(sql, params).await)
    }
}

#[async_trait]
impl TransactionalConnection for SqlxConnection {
    async fn begin(&mut self, mode: ConnectionMode) -> Result<()> {
        with_session!(self, s => s.begin(mode).await)
    }

    async fn commit(&mut self) -> Result<()> {
        with_session!(self, s => s.commit().await)
    }

    async fn rollback(&mut self) -> Result<()> {
        with_session!(self, s => s.rollback().await)
    }
}
