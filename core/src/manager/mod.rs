//! `Manager<B>`: `ConnectionManagerProtocol` for any backend, over one `Topology` per database kind picked from the URL at run time.

mod direct;
mod pipeline;
mod routing_session;
mod session;

use std::fmt;

use async_trait::async_trait;

pub use direct::{Direct, DirectConnection};
pub use routing_session::RoutingSession;
pub use session::{ObservedStatement, PooledSession};

use pipeline::{DEFAULT_PIPELINE_WIDTH, Pipeline};

use crate::config::{DatabaseKind, ManagerConfig};
use crate::connector::{Backend, BackendConnector};
use crate::error::{Error, Result};
use crate::health::HealthReport;
use crate::info::ConnectionInfo;
use crate::mode::{ConnectionMode, ManagerMode};
use crate::protocol::{
    ConnectionManagerProtocol, SqlExecutor, TransactionalConnection, run_statement,
};
use crate::retry::RetryPolicy;
use crate::topology::Topology;
use crate::value::{Row, Value};

/// The connection manager of backend `B`: one pool per endpoint, breaker, retry, routing,
/// health and metrics from core; the backend only opens and drives the connections.
pub struct Manager<B: Backend> {
    endpoints: Endpoints<B>,
    retry: RetryPolicy,
    /// Shared connections per mode for the protocol's single statements; 0: the pooled
    /// path (see [`Self::with_pipelining`]).
    pipeline_width: usize,
}

/// A connection from a [`Manager`], for whichever database the URL named; derefs through
/// its [`PooledSession`] to the driver's connection.
#[non_exhaustive]
pub enum Connection<B: Backend> {
    /// A PostgreSQL session.
    Postgres(PooledSession<B::Postgres>),
    /// A MySQL or MariaDB session.
    MySql(PooledSession<B::MySql>),
    /// A SQLite session.
    Sqlite(PooledSession<B::Sqlite>),
}

enum Endpoints<B: Backend> {
    Postgres(Topology<B::Postgres>, Pipeline<B::Postgres>),
    MySql(Topology<B::MySql>, Pipeline<B::MySql>),
    Sqlite(Topology<B::Sqlite>, Pipeline<B::Sqlite>),
}

/// Runs `$body` with `$t` bound to the topology and `$p` to its pipelined lanes, whatever
/// the database.
macro_rules! with_pipeline {
    ($endpoints:expr, $t:ident, $p:ident => $body:expr) => {
        match $endpoints {
            Endpoints::Postgres($t, $p) => $body,
            Endpoints::MySql($t, $p) => $body,
            Endpoints::Sqlite($t, $p) => $body,
        }
    };
}

/// Runs `$body` with `$t` bound to the topology, whatever the database.
macro_rules! with_topology {
    ($endpoints:expr, $t:ident => $body:expr) => {
        with_pipeline!($endpoints, $t, _lanes => $body)
    };
}

/// Runs `$body` with `$s` bound to the session, whatever the database.
macro_rules! with_session {
    ($connection:expr, $s:ident => $body:expr) => {
        match $connection {
            Connection::Postgres($s) => $body,
            Connection::MySql($s) => $body,
            Connection::Sqlite($s) => $body,
        }
    };
}

impl<B: Backend> Manager<B> {
    /// Connects a manager for `config`: builds one pool per endpoint and prefills the
    /// primary's, so a wrong URL, password or host fails here, with the reason.
    ///
    /// # Errors
    /// `Configuration` when the database's feature is not compiled in or the URL's options
    /// are invalid; `ConnectFailed` (with the reason: refused, DNS, authentication, missing
    /// database, TLS, timeout) when the primary cannot be reached.
    pub async fn connect(config: ManagerConfig) -> Result<Self> {
        let retry = config.retry().clone();
        let endpoints = match config.kind() {
            DatabaseKind::Postgres => {
                Endpoints::Postgres(topology::<B, _>(config).await?, Pipeline::new())
            }
            DatabaseKind::MySql => {
                Endpoints::MySql(topology::<B, _>(config).await?, Pipeline::new())
            }
            DatabaseKind::Sqlite => {
                Endpoints::Sqlite(topology::<B, _>(config).await?, Pipeline::new())
            }
        };
        Ok(Self { endpoints, retry, pipeline_width: 0 })
    }

    /// [`Self::connect`] with the configuration read from `DATABASE_URL`,
    /// `DATABASE_REPLICA_URLS` and the `UCM_*` overrides.
    ///
    /// # Errors
    /// As [`ManagerConfig::from_env`] and [`Self::connect`].
    pub async fn from_env(mode: ManagerMode) -> Result<Self> {
        Self::connect(ManagerConfig::from_env(mode)?).await
    }

    /// Replaces the retry policy (default: the configuration's [`ManagerConfig::retry`]: 3
    /// attempts, 50 ms to 2 s full-jitter backoff, unless the file or environment says otherwise).
    #[must_use]
    pub fn with_retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Changes every endpoint's pool size and overflow while the manager runs: growing
    /// opens connections in the background; shrinking closes idle connections at once and
    /// those in use beyond the new maximum when they come back (never taken from their
    /// holders). [`ConnectionManagerProtocol::connection_info`]'s pool status shows the
    /// sizes in effect.
    ///
    /// # Errors
    /// `Configuration` for a zero pool size; `Closed` after `close()`.
    pub async fn resize(&self, pool_size: usize, max_overflow: usize) -> Result<()> {
        with_topology!(&self.endpoints, t => t.resize(pool_size, max_overflow).await)
    }

    /// Stops handing out connections, for maintenance or a planned failover: checkouts
    /// from now on wait for [`Self::resume`] (each up to its acquire timeout, then
    /// `Suspended`, of kind `PoolExhausted`), while work already holding a connection
    /// finishes. The pipelined lane gives its shared connections back first. Returns once
    /// nothing is checked out, or after `deadline`.
    ///
    /// # Errors
    /// Connections still checked out at the deadline (the manager stays suspended).
    pub async fn suspend(&self, deadline: std::time::Duration) -> Result<()> {
        with_pipeline!(&self.endpoints, t, p => {
            // Suspended first, so that the lane cannot check out again once cleared.
            t.suspend();
            p.clear();
            t.drained(deadline).await
        })
    }

    /// The permission self-test: whether the role this manager logs in as can do what the
    /// configuration's [`PermissionPolicy`](crate::PermissionPolicy) requires and cannot do
    /// what it forbids (see [`crate::check_permissions`]).
    ///
    /// # Errors
    /// A failure that is not a refusal (the primary unreachable).
    pub async fn check_permissions(&self) -> Result<crate::PermissionReport> {
        let (kind, policy) = with_topology!(&self.endpoints, t => {
            (t.config().kind(), t.config().permissions().clone())
        });
        crate::check_permissions(self, kind, &policy).await
    }

    /// Hands out connections again after [`Self::suspend`].
    pub fn resume(&self) {
        with_topology!(&self.endpoints, t => t.resume());
    }

    /// Whether [`Self::suspend`] is in effect.
    pub fn is_suspended(&self) -> bool {
        with_topology!(&self.endpoints, t => t.is_suspended())
    }

    /// Tells `listener` of the tables written through this manager from now on: by its
    /// neutral statements and transactions, by the driver-shaped handles (sqlx's
    /// executors, the diesel DSL) and by the pipelined lane alike (see
    /// [`WriteListener`](crate::WriteListener) for when). A query cache uses it to drop
    /// what a write made stale.
    pub fn add_write_listener(&self, listener: std::sync::Arc<dyn crate::WriteListener>) {
        with_topology!(&self.endpoints, t => t.add_write_listener(&listener));
    }

    /// Runs the protocol's single statements ([`ConnectionManagerProtocol::execute`],
    /// [`ConnectionManagerProtocol::fetch_all`] and `fetch_optional`) through the pipelined
    /// lane, with up to `connections_per_mode` shared connections per connection mode (0:
    /// the pooled path, the default). See [`Self::pipelined`].
    #[must_use]
    pub fn with_pipelining(mut self, connections_per_mode: usize) -> Self {
        self.pipeline_width = connections_per_mode;
        self
    }

    /// The pipelined lane, for one call: statements outside a transaction from many tasks
    /// share a few connections (the manager's width, else 2 per mode), each sent without waiting for the replies before it, with the pooled path's
    /// routing, breaker, deadlines, metrics, errors and retry rule. On a driver that cannot
    /// pipeline (sqlx; diesel on MySQL and SQLite) or behind a transaction pooler, each
    /// statement runs on a pooled connection instead.
    pub fn pipelined(&self) -> Pipelined<'_, B> {
        let width = match self.pipeline_width {
            0 => DEFAULT_PIPELINE_WIDTH,
            width => width,
        };
        Pipelined { manager: self, width }
    }

    /// Connections the pipelined lane holds shared now, over every mode (each is checked
    /// out of its pool while shared).
    pub fn pipelined_connections(&self) -> usize {
        with_pipeline!(&self.endpoints, _topology, p => p.shared_connections())
    }

    /// The backend's name (`sqlx`, `diesel`).
    pub fn backend(&self) -> &'static str {
        B::NAME
    }

    /// The database system (`postgresql`, `mysql`, `sqlite`).
    pub fn system(&self) -> &'static str {
        with_topology!(&self.endpoints, t => t.config().kind().as_str())
    }

    /// True once `close()` has begun: every later checkout fails with `Closed`.
    pub fn is_closed(&self) -> bool {
        with_topology!(&self.endpoints, t => t.is_closed())
    }

    /// The configuration the manager was built from.
    pub fn config(&self) -> &ManagerConfig {
        with_topology!(&self.endpoints, t => t.config())
    }

    /// A connection on the primary whatever `mode`, for reads that must see recent
    /// writes (see [`RoutingSession`](super::RoutingSession)); `ReadOnly` is still
    /// read-only at the database.
    ///
    /// # Errors
    /// As [`ConnectionManagerProtocol::get_connection`].
    pub async fn get_connection_on_primary(&self, mode: ConnectionMode) -> Result<Connection<B>> {
        Ok(match &self.endpoints {
            Endpoints::Postgres(t, _) => {
                Connection::Postgres(PooledSession::new(t.acquire_on_primary(mode).await?))
            }
            Endpoints::MySql(t, _) => {
                Connection::MySql(PooledSession::new(t.acquire_on_primary(mode).await?))
            }
            Endpoints::Sqlite(t, _) => {
                Connection::Sqlite(PooledSession::new(t.acquire_on_primary(mode).await?))
            }
        })
    }

    /// How many failovers the manager has followed (see [`crate::topology`]).
    pub fn failovers(&self) -> u64 {
        with_topology!(&self.endpoints, t => t.failovers())
    }

    /// Opens one unpooled connection to the primary, with the same session settings as
    /// the pool's but none of its machinery (no breaker, retry, metrics): what the pool
    /// adds can be measured against it.
    ///
    /// # Errors
    /// `ConnectFailed` when the primary cannot be reached.
    pub async fn direct_connection(&self) -> Result<DirectConnection<B>> {
        Ok(match &self.endpoints {
            Endpoints::Postgres(t, _) => DirectConnection::Postgres(
                Direct::open(t.primary().connector(), t.primary().config().connect_timeout())
                    .await?,
            ),
            Endpoints::MySql(t, _) => DirectConnection::MySql(
                Direct::open(t.primary().connector(), t.primary().config().connect_timeout())
                    .await?,
            ),
            Endpoints::Sqlite(t, _) => DirectConnection::Sqlite(
                Direct::open(t.primary().connector(), t.primary().config().connect_timeout())
                    .await?,
            ),
        })
    }
}

/// The topology for `config` on connector `C`, or a message naming the feature to enable.
async fn topology<B: Backend, C: BackendConnector>(config: ManagerConfig) -> Result<Topology<C>> {
    if !C::ENABLED {
        let kind = config.kind();
        let feature = match kind {
            DatabaseKind::Postgres => "postgres",
            DatabaseKind::MySql => "mysql",
            DatabaseKind::Sqlite => "sqlite",
        };
        return Err(Error::config(
            "DATABASE_URL",
            format!(
                "the {} backend was built without {kind} support: enable its `{feature}` feature",
                B::NAME
            ),
        ));
    }
    Topology::connect(config, C::new).await
}

impl<B: Backend> fmt::Debug for Manager<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = f.debug_struct("Manager");
        out.field("backend", &B::NAME);
        with_topology!(&self.endpoints, t => out.field("topology", t));
        out.field("retry", &self.retry).finish()
    }
}

impl<B: Backend> Connection<B> {
    /// Runs `hook` when the connection is released: returned to its pool or closed.
    pub fn on_release(&mut self, hook: impl FnOnce() + Send + Sync + 'static) {
        with_session!(self, s => s.on_release(hook));
    }
}

impl<B: Backend> fmt::Debug for Connection<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        with_session!(self, s => f.debug_tuple(B::NAME).field(s).finish())
    }
}

#[async_trait]
impl<B: Backend> ConnectionManagerProtocol for Manager<B> {
    type Connection = Connection<B>;

    async fn get_connection(&self, mode: ConnectionMode) -> Result<Connection<B>> {
        Ok(match &self.endpoints {
            Endpoints::Postgres(t, _) => {
                Connection::Postgres(PooledSession::new(t.acquire(mode).await?))
            }
            Endpoints::MySql(t, _) => Connection::MySql(PooledSession::new(t.acquire(mode).await?)),
            Endpoints::Sqlite(t, _) => {
                Connection::Sqlite(PooledSession::new(t.acquire(mode).await?))
            }
        })
    }

    async fn health_check(&self) -> HealthReport {
        with_topology!(&self.endpoints, t => t.health_check().await)
    }

    fn connection_info(&self) -> ConnectionInfo {
        with_topology!(&self.endpoints, t => t.info(B::NAME))
    }

    fn is_healthy(&self) -> bool {
        with_topology!(&self.endpoints, t => t.is_healthy())
    }

    async fn close(&self) -> Result<()> {
        // The lane's shared connections are checked out: given back first, so the drain
        // waits only for their statements in flight.
        with_pipeline!(&self.endpoints, t, p => {
            p.clear();
            t.close(t.config().drain_deadline()).await
        })
    }

    fn retry_policy(&self) -> &RetryPolicy {
        &self.retry
    }

    async fn execute(&self, mode: ConnectionMode, sql: &str, params: &[Value]) -> Result<u64> {
        if self.pipeline_width > 0 {
            return self.pipelined().execute(mode, sql, params).await;
        }
        run_statement(
            &self.retry,
            mode,
            || self.get_connection(mode),
            |mut connection| async move { connection.execute(sql, params).await },
        )
        .await
    }

    async fn fetch_all(
        &self,
        mode: ConnectionMode,
        sql: &str,
        params: &[Value],
    ) -> Result<Vec<Row>> {
        if self.pipeline_width > 0 {
            return self.pipelined().fetch_all(mode, sql, params).await;
        }
        run_statement(
            &self.retry,
            mode,
            || self.get_connection(mode),
            |mut connection| async move { connection.fetch_all(sql, params).await },
        )
        .await
    }
}

/// The pipelined lane of a [`Manager`], from [`Manager::pipelined`]: single statements
/// outside a transaction, under the same retry rule as
/// [`ConnectionManagerProtocol::execute`] (a read is retried as a whole; a statement that
/// may write runs once, and a connection lost under it is an ambiguous commit).
#[derive(Debug, Clone, Copy)]
pub struct Pipelined<'m, B: Backend> {
    manager: &'m Manager<B>,
    width: usize,
}

impl<B: Backend> Pipelined<'_, B> {
    /// Runs one statement; returns the rows affected.
    ///
    /// # Errors
    /// As [`ConnectionManagerProtocol::execute`].
    pub async fn execute(&self, mode: ConnectionMode, sql: &str, params: &[Value]) -> Result<u64> {
        let (manager, width) = (self.manager, self.width);
        with_pipeline!(&manager.endpoints, t, p => run_statement(
            &manager.retry,
            mode,
            || p.lease(t, mode, width),
            |lease| lease.execute(p, sql, params),
        )
        .await)
    }

    /// Runs one query; returns every row.
    ///
    /// # Errors
    /// As [`ConnectionManagerProtocol::fetch_all`].
    pub async fn fetch_all(
        &self,
        mode: ConnectionMode,
        sql: &str,
        params: &[Value],
    ) -> Result<Vec<Row>> {
        let (manager, width) = (self.manager, self.width);
        with_pipeline!(&manager.endpoints, t, p => run_statement(
            &manager.retry,
            mode,
            || p.lease(t, mode, width),
            |lease| lease.fetch_all(p, sql, params),
        )
        .await)
    }

    /// Runs one query; returns its first row, if any.
    ///
    /// # Errors
    /// As [`Self::fetch_all`].
    pub async fn fetch_optional(
        &self,
        mode: ConnectionMode,
        sql: &str,
        params: &[Value],
    ) -> Result<Option<Row>> {
        Ok(self.fetch_all(mode, sql, params).await?.into_iter().next())
    }
}

#[async_trait]
impl<B: Backend> SqlExecutor for Connection<B> {
    async fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64> {
        with_session!(self, s => s.execute(sql, params).await)
    }

    async fn fetch_all(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>> {
        with_session!(self, s => s.fetch_all(sql, params).await)
    }
}

#[async_trait]
impl<B: Backend> TransactionalConnection for Connection<B> {
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
