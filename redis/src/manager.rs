//! `RedisManager`: Redis commands through ucm-kernel's pool (breaker, acquire deadline, validation, lifetimes, metrics), each bounded by a deadline, with failures read as ucm's errors.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::{Cmd, FromRedisValue, Script, ScriptInvocation};
use tracing::Instrument;
use ucm_kernel::backend::Pool;
use ucm_kernel::telemetry::{self, EndpointAttributes};
use ucm_kernel::{
    CircuitBreakerConfig, Error, ErrorKind, ManagerMode, PoolConfiguration, PoolStatus,
    RedisSettings, Result,
};

use crate::connector::{RedisConnector, command_error};
use crate::url::RedisUrl;

/// The deadline of a command when the pool configuration sets no statement timeout.
const DEFAULT_COMMAND_DEADLINE: Duration = Duration::from_secs(30);

/// A pool of Redis connections for one server or Sentinel service.
#[derive(Debug, Clone)]
pub struct RedisManager {
    pool: Pool<RedisConnector>,
    /// The replicas' pool, when reads may go to replicas ([`Self::read`]).
    replicas: Option<Pool<RedisConnector>>,
    deadline: Duration,
    /// When the sentinels were last asked whether the master moved (see `master_moved`).
    sentinel_asked: Arc<Mutex<Option<Instant>>>,
}

/// How often an open breaker may ask the sentinels whether the master moved.
const SENTINEL_RECHECK: Duration = Duration::from_millis(200);

impl RedisManager {
    /// Connects to `url` with `mode`'s preset pool (sizes, timeouts, breaker) and opens
    /// its connections, so an unreachable server or a wrong password fails here.
    ///
    /// # Errors
    /// As [`Self::connect_with`].
    pub async fn connect(url: &str, mode: ManagerMode) -> Result<Self> {
        Self::connect_with(RedisUrl::parse(url)?, PoolConfiguration::for_mode(mode)).await
    }

    /// Connects with `config`'s sizes, timeouts and breaker switch; the deadline of each
    /// command is the configuration's client statement deadline (30 s when it sets none).
    ///
    /// # Errors
    /// `ConnectFailed` with the reason (refused, authentication, no sentinel...).
    pub async fn connect_with(url: RedisUrl, config: PoolConfiguration) -> Result<Self> {
        Self::connect_bounded(url, config, None).await
    }

    /// Connects to the Redis a configuration names for a mode ([`ucm_kernel::ConfigSources::redis`]:
    /// `[redis]`, `REDIS_URL`...): its URL, its pool, its command timeout.
    ///
    /// # Errors
    /// A malformed URL, named by where it came from (never its text); as
    /// [`Self::connect_with`].
    pub async fn from_settings(settings: &RedisSettings) -> Result<Self> {
        let url = RedisUrl::parse(settings.expose_url())
            .map_err(|e| Error::config(settings.url_origin(), e.to_string()))?;
        let manager =
            Self::connect_bounded(url, settings.pool().clone(), settings.command_timeout()).await?;
        if settings.read_from_replicas() { manager.read_from_replicas() } else { Ok(manager) }
    }

    /// [`Self::connect_with`], each command bounded by `deadline` when given.
    async fn connect_bounded(
        url: RedisUrl,
        config: PoolConfiguration,
        deadline: Option<Duration>,
    ) -> Result<Self> {
        let deadline = deadline
            .or_else(|| config.client_statement_deadline())
            .unwrap_or(DEFAULT_COMMAND_DEADLINE);
        let breaker = config.circuit_breaker().then(CircuitBreakerConfig::default);
        let connector = RedisConnector::new(url.clone(), config.connect_timeout());
        let (address, port) = match (url.service(), url.hosts()) {
            (None, [(host, port)]) => (Some(host.clone()), Some(*port)),
            _ => (None, None),
        };
        let endpoint = EndpointAttributes {
            system: "redis",
            namespace: Some(url.db().to_string()),
            address,
            port,
            pool: format!("redis {}", url.label()),
        };
        let pool = Pool::for_endpoint(endpoint, connector, config, breaker)?;
        pool.prefill().await?;
        Ok(Self { pool, replicas: None, deadline, sentinel_asked: Arc::new(Mutex::new(None)) })
    }

    /// This manager with [`Self::read`] sent to the Sentinel service's replicas (each new
    /// replica connection takes the next replica the sentinels list as up and in sync),
    /// falling back to the master when no replica answers. The replicas' pool has the
    /// master pool's configuration and opens its connections when first used.
    ///
    /// Replicas apply writes asynchronously: a read there may miss a write the master
    /// acknowledged a moment ago. Read what must be current with [`Self::query`].
    ///
    /// # Errors
    /// `Configuration` for a URL without Sentinel.
    pub fn read_from_replicas(mut self) -> Result<Self> {
        let master = self.pool.connector();
        let url = master.url().clone();
        let config = self.pool.config().clone();
        let connector = RedisConnector::for_replicas(url.clone(), config.connect_timeout())?;
        let mut endpoint = self.pool.metrics().endpoint().clone();
        endpoint.pool = format!("redis {} replicas", url.label());
        let breaker = config.circuit_breaker().then(CircuitBreakerConfig::default);
        self.replicas = Some(Pool::for_endpoint(endpoint, connector, config, breaker)?);
        Ok(self)
    }

    /// Runs `cmd` and reads its reply as `T`.
    ///
    /// # Errors
    /// The pool's acquire errors (exhausted, circuit open, connect failed); `Timeout` past
    /// the deadline; `ConnectionLost` (the connection is closed, not reused);
    /// `ReadOnlyViolation` for a write that reached a replica after a failover (the
    /// connection is closed, so the next one asks the sentinels again); `Query` for the
    /// command's own error.
    pub async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T> {
        self.run(&command_name(cmd), |mut c| async move { cmd.query_async::<T>(&mut c).await })
            .await
    }

    /// Runs a pipeline (atomic if it says so) and reads its replies as `T`.
    ///
    /// # Errors
    /// As [`Self::query`].
    pub async fn pipeline<T: FromRedisValue>(&self, pipe: &redis::Pipeline) -> Result<T> {
        self.run("PIPELINE", |mut c| async move { pipe.query_async::<T>(&mut c).await }).await
    }

    /// Runs a Lua script with `keys` and `args`.
    ///
    /// # Errors
    /// As [`Self::query`].
    pub async fn script<T: FromRedisValue>(
        &self,
        script: &Script,
        keys: &[&str],
        args: &[&str],
    ) -> Result<T> {
        let mut invocation = script.prepare_invoke();
        for key in keys {
            invocation.key(*key);
        }
        for arg in args {
            invocation.arg(*arg);
        }
        self.invoke(&invocation).await
    }

    /// Runs a prepared script invocation (keys and arguments of any type).
    ///
    /// # Errors
    /// As [`Self::query`].
    pub async fn invoke<T: FromRedisValue>(&self, invocation: &ScriptInvocation<'_>) -> Result<T> {
        self.run("EVALSHA", |mut c| async move { invocation.invoke_async::<T>(&mut c).await }).await
    }

    /// Runs the command `name` (`op`) on the master, retried where that is safe, in the
    /// command's span.
    async fn run<T, F, Fut>(&self, name: &str, op: F) -> Result<T>
    where
        F: Fn(MultiplexedConnection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let span = self.span(name);
        // Boxed: a command's future nests the driver's deeply, and the cache nests it
        // again; unboxed, a caller's `tokio::spawn` of a cache read overflows the
        // compiler's trait-solving depth. One allocation per network round trip.
        let outcome = Box::pin(self.retried(&op)).instrument(span.clone()).await;
        recorded(&span, outcome)
    }

    /// The span of one command (`db.system.name` `redis`, `db.operation.name` the
    /// command), as the database side's statements have; a disabled span (entering it
    /// costs nothing) when no subscriber wants it.
    fn span(&self, name: &str) -> tracing::Span {
        if !tracing::enabled!(target: "ucm::redis", tracing::Level::INFO) {
            return tracing::Span::none();
        }
        let endpoint = self.pool.metrics().endpoint();
        tracing::info_span!(
            target: "ucm::redis",
            "db.operation",
            otel.name = %name,
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            db.system.name = "redis",
            db.namespace = endpoint.namespace.as_deref(),
            db.operation.name = %name,
            server.address = endpoint.address.as_deref(),
            server.port = endpoint.port.map(i64::from),
            db.client.connection.pool.name = %endpoint.pool,
            db.response.status_code = tracing::field::Empty,
            error.type = tracing::field::Empty,
        )
    }

    /// Runs a read-only `cmd` on a replica when [`Self::read_from_replicas`] is on (else on
    /// the master), and on the master when the replica fails (unreachable, frozen past the
    /// deadline, its breaker open, none up): the caller gets an answer while the master
    /// does. A reply the replica gave (the command's own error included) is returned as is.
    ///
    /// # Errors
    /// As [`Self::query`], from the master.
    pub async fn read<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T> {
        let Some(replicas) = &self.replicas else { return self.query(cmd).await };
        let op = |mut c: MultiplexedConnection| async move { cmd.query_async::<T>(&mut c).await };
        let span = self.span(&command_name(cmd));
        // Boxed, as in `run`.
        let read = Box::pin(async {
            match self.attempt(replicas, &op).await {
                Err(e) if e.kind() != ErrorKind::Query => {
                    tracing::debug!(pool = %replicas.label(), "a read fell back to the master: {e}");
                    self.retried(&op).await
                }
                other => other,
            }
        });
        let outcome = read.instrument(span.clone()).await;
        recorded(&span, outcome)
    }

    /// [`Self::attempt`], once more on a fresh connection when a replica refused the
    /// command (`READONLY`: a failover demoted the server this connection reached, and
    /// nothing was executed, so a second attempt is safe), or when the breaker is open on
    /// a master the sentinels have replaced.
    async fn retried<T, F, Fut>(&self, op: &F) -> Result<T>
    where
        F: Fn(MultiplexedConnection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        match self.attempt(&self.pool, op).await {
            Err(e) if e.kind() == ErrorKind::ReadOnlyViolation => {
                tracing::info!(pool = %self.pool.label(), "a replica refused a command (failover); retrying on a fresh connection");
                self.attempt(&self.pool, op).await
            }
            // The breaker opened on a master that failed; if the sentinels have promoted
            // another since, that is a different server: the breaker half-opens now (a
            // probe connects to the new master) and the command, never sent, is tried.
            Err(e) if e.kind() == ErrorKind::CircuitOpen && self.master_moved().await => {
                self.attempt(&self.pool, op).await
            }
            other => other,
        }
    }

    /// Whether the sentinels promoted another master since the last connect, asked at most
    /// every 200 ms; when they did, the breaker half-opens at once.
    async fn master_moved(&self) -> bool {
        {
            let Ok(mut last) = self.sentinel_asked.lock() else { return false };
            if last.is_some_and(|at| at.elapsed() < SENTINEL_RECHECK) {
                return false;
            }
            *last = Some(Instant::now());
        }
        let moved = self.pool.connector().master_moved().await;
        if moved && let Some(breaker) = self.pool.breaker() {
            tracing::info!(pool = %self.pool.label(), "the sentinels promoted another master: half-opening the breaker");
            breaker.recovery_observed();
        }
        moved
    }

    /// Checks out a connection, runs `op` on a handle to it (a multiplexed connection's
    /// clone shares its socket) within the deadline, records the outcome, and closes the
    /// connection when it was lost, timed out or reached a replica.
    async fn attempt<T, F, Fut>(&self, pool: &Pool<RedisConnector>, op: &F) -> Result<T>
    where
        F: Fn(MultiplexedConnection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let mut connection = pool.acquire().await?;
        let started = Instant::now();
        let handle = (*connection).clone();
        let outcome = match tokio::time::timeout(self.deadline, op(handle)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(command_error(pool.label(), &e)),
            Err(_) => Err(Error::database(
                ErrorKind::Timeout,
                pool.label(),
                None,
                format!("no reply within the command deadline of {:?}", self.deadline),
            )),
        };
        if let Err(e) = &outcome {
            let closes = matches!(
                e.kind(),
                ErrorKind::ConnectionLost | ErrorKind::ReadOnlyViolation | ErrorKind::Timeout
            );
            if closes {
                connection.mark_lost();
            }
        }
        let error = outcome.as_ref().err().map(Error::kind);
        pool.metrics().record_operation(started.elapsed(), error);
        outcome
    }

    /// `PING` on a pooled connection: whether the server answers now.
    ///
    /// # Errors
    /// As [`Self::query`].
    pub async fn ping(&self) -> Result<()> {
        self.query::<String>(&redis::cmd("PING")).await.map(drop)
    }

    /// Connection counts now; no I/O.
    pub fn status(&self) -> PoolStatus {
        self.pool.status()
    }

    /// The pool, for its metrics and breaker.
    pub fn pool(&self) -> &Pool<RedisConnector> {
        &self.pool
    }

    /// The replicas' pool, when [`Self::read_from_replicas`] is on.
    pub fn replica_pool(&self) -> Option<&Pool<RedisConnector>> {
        self.replicas.as_ref()
    }

    /// Closes the pools after waiting up to `deadline` for checked-out connections.
    ///
    /// # Errors
    /// Connections still out at the deadline.
    pub async fn close(&self, deadline: Duration) -> Result<()> {
        if let Some(replicas) = &self.replicas {
            replicas.close(deadline).await?;
        }
        self.pool.close(deadline).await
    }
}

/// A command's name (`GET`, `SET`...), for its span.
fn command_name(cmd: &Cmd) -> String {
    match cmd.args_iter().next() {
        Some(redis::Arg::Simple(name)) => String::from_utf8_lossy(name).to_uppercase(),
        _ => "COMMAND".to_owned(),
    }
}

/// `outcome`, its failure recorded on `span` (`error.type`, the OpenTelemetry status).
fn recorded<T>(span: &tracing::Span, outcome: Result<T>) -> Result<T> {
    if let Err(e) = &outcome
        && !span.is_none()
    {
        telemetry::record_failure(Some(span), e);
    }
    outcome
}
