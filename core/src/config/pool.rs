//! `PoolConfiguration`: the mode presets of DESIGN.md, overrides by builder and environment, and validation.

use std::fmt;
use std::time::Duration;

use crate::config::{DatabaseUrl, Pooler};
use crate::error::{Error, Result};
use crate::mode::ManagerMode;

/// How one endpoint's pool and its resilience behave. Built only through
/// [`PoolConfiguration::for_mode`] or [`PoolConfigurationBuilder`], so it is always coherent.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct PoolConfiguration {
    mode: ManagerMode,
    pool_size: usize,
    /// `None`: the pool size (prefilled and kept).
    min_idle: Option<usize>,
    max_overflow: usize,
    acquire_timeout: Duration,
    connect_timeout: Duration,
    validation_timeout: Duration,
    validate_after_idle: Duration,
    max_lifetime: Duration,
    lifetime_jitter: Duration,
    overflow_idle_timeout: Duration,
    high_availability: bool,
    circuit_breaker: bool,
    application_name: String,
    time_zone: String,
    health_interval: Duration,
    max_replica_lag: Duration,
    read_your_writes: Option<Duration>,
    sla_target: Duration,
    statement_timeout: Option<Duration>,
    lock_timeout: Option<Duration>,
    idle_in_transaction_timeout: Option<Duration>,
    leak_detection_threshold: Option<Duration>,
    tcp_keepalive: Option<Duration>,
    tcp_user_timeout: Option<Duration>,
    pooler: Pooler,
}

/// The TCP keepalive idle time of every preset: a connection idle this long is probed by
/// the kernel (then every [`TCP_KEEPALIVE_INTERVAL`]), so a peer that vanished is noticed
/// in well under a minute rather than the kernel's two hours.
pub const DEFAULT_TCP_KEEPALIVE: Duration = Duration::from_secs(15);

/// The interval between the kernel's keepalive probes once they begin.
pub const TCP_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);

/// The `TCP_USER_TIMEOUT` of every preset: sent data unacknowledged this long closes the
/// connection (the kernel would otherwise retransmit for about 15 minutes).
pub const DEFAULT_TCP_USER_TIMEOUT: Duration = Duration::from_secs(30);

impl PoolConfiguration {
    /// The preset of DESIGN.md for `mode`:
    ///
    /// | mode | pool | overflow | acquire timeout | HA | breaker |
    /// |---|---|---|---|---|---|
    /// | `McpServer` | 20 | 10 | 0.2 s | no | yes |
    /// | `MlTraining` | 15 | 10 | 5 s | yes | no |
    /// | `Admin` | 5 | 2 | 10 s | yes | no |
    /// | `SyncHeavy` | 10 | 15 | 5 s | no | yes |
    /// | `AsyncModern` | 12 | 8 | 5 s | no | yes |
    /// | `HighAvailability` | 20 | 20 | 10 s | yes | yes |
    ///
    /// Every mode also gets: connect timeout 10 s, validation when idle for more than
    /// 500 ms with a timeout of half the acquire timeout (at most 2 s), max lifetime 3600 s
    /// minus up to 180 s of jitter, overflow connections closed after 30 s idle,
    /// `application_name = ucm_<mode>` and time zone UTC; topology health probed every
    /// 10 s, replicas more than 30 s behind skipped for reads, no read-your-writes window,
    /// and the mode's [`sla_target`](Self::sla_target).
    pub fn for_mode(mode: ManagerMode) -> Self {
        let (pool_size, max_overflow, acquire_ms, high_availability, circuit_breaker, sla_ms) =
            match mode {
                ManagerMode::McpServer => (20, 10, 200, false, true, 200),
                ManagerMode::MlTraining => (15, 10, 5_000, true, false, 5_000),
                ManagerMode::Admin => (5, 2, 10_000, true, false, 10_000),
                ManagerMode::SyncHeavy => (10, 15, 5_000, false, true, 1_000),
                ManagerMode::AsyncModern => (12, 8, 5_000, false, true, 500),
                ManagerMode::HighAvailability => (20, 20, 10_000, true, true, 500),
            };
        let (statement_timeout, lock_timeout, idle_in_transaction_timeout) = deadlines(mode);
        let acquire_timeout = Duration::from_millis(acquire_ms);
        Self {
            mode,
            pool_size,
            min_idle: None,
            max_overflow,
            acquire_timeout,
            connect_timeout: Duration::from_secs(10),
            validation_timeout: default_validation_timeout(acquire_timeout),
            // HikariCP's alive-bypass window: a connection used this recently is trusted.
            validate_after_idle: Duration::from_millis(500),
            max_lifetime: Duration::from_secs(3600),
            lifetime_jitter: Duration::from_secs(180),
            overflow_idle_timeout: Duration::from_secs(30),
            high_availability,
            circuit_breaker,
            application_name: mode.application_name(),
            time_zone: "UTC".to_owned(),
            // Often enough to follow a failover within seconds, rarely enough to cost nothing.
            health_interval: Duration::from_secs(10),
            // Past this, a replica's answers are stale enough that most applications would
            // rather pay the primary's latency.
            max_replica_lag: Duration::from_secs(30),
            read_your_writes: None,
            sla_target: Duration::from_millis(sla_ms),
            statement_timeout,
            lock_timeout,
            idle_in_transaction_timeout,
            leak_detection_threshold: None,
            tcp_keepalive: Some(DEFAULT_TCP_KEEPALIVE),
            tcp_user_timeout: Some(DEFAULT_TCP_USER_TIMEOUT),
            pooler: Pooler::Auto,
        }
    }

    /// A builder starting from `mode`'s preset.
    pub fn builder(mode: ManagerMode) -> PoolConfigurationBuilder {
        PoolConfigurationBuilder { config: Self::for_mode(mode), validation_timeout_set: false }
    }

    /// The mode whose preset this configuration started from.
    pub fn mode(&self) -> ManagerMode {
        self.mode
    }
    /// Connections kept open (prefilled at start). Preset: see [`Self::for_mode`].
    pub fn pool_size(&self) -> usize {
        self.pool_size
    }

    /// Connections opened at start and kept open while idle; the pool size unless set
    /// lower. `0` is a lazy pool: the manager is built without connecting, connections are
    /// opened on demand and closed after `overflow_idle_timeout` idle (test suites with a
    /// manager per test, tools that may never query).
    pub fn min_idle(&self) -> usize {
        self.min_idle.unwrap_or(self.pool_size)
    }
    /// Extra connections allowed under load, closed again after [`Self::overflow_idle_timeout`].
    pub fn max_overflow(&self) -> usize {
        self.max_overflow
    }
    /// The most connections the pool ever holds: pool size plus overflow.
    pub fn max_size(&self) -> usize {
        self.pool_size + self.max_overflow
    }
    /// How long an acquire waits for a free slot before failing with `PoolExhausted`.
    pub fn acquire_timeout(&self) -> Duration {
        self.acquire_timeout
    }
    /// How long opening one connection may take before it fails with `ConnectFailed`. Default 10 s.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }
    /// How long the pre-use ping may take before the connection is discarded. Always below the acquire timeout.
    pub fn validation_timeout(&self) -> Duration {
        self.validation_timeout
    }
    /// A connection idle for longer than this is pinged before use; one used more recently is not. Default 500 ms.
    pub fn validate_after_idle(&self) -> Duration {
        self.validate_after_idle
    }
    /// The longest a connection lives before it is replaced. Default 3600 s.
    pub fn max_lifetime(&self) -> Duration {
        self.max_lifetime
    }
    /// Each connection's lifetime is shortened by a random amount up to this, so that
    /// connections opened together are not all replaced together. Default 180 s.
    pub fn lifetime_jitter(&self) -> Duration {
        self.lifetime_jitter
    }
    /// Connections beyond the pool size are closed after being idle this long. Default 30 s.
    pub fn overflow_idle_timeout(&self) -> Duration {
        self.overflow_idle_timeout
    }
    /// Whether the mode routes reads to replicas and follows failover.
    pub fn high_availability(&self) -> bool {
        self.high_availability
    }
    /// Whether each endpoint's circuit breaker is in the acquire path.
    pub fn circuit_breaker(&self) -> bool {
        self.circuit_breaker
    }
    /// The `application_name` sent to the server (`ucm_<mode>`), visible in `pg_stat_activity`.
    pub fn application_name(&self) -> &str {
        &self.application_name
    }
    /// The session time zone every connection is set to. Default `UTC`.
    pub fn time_zone(&self) -> &str {
        &self.time_zone
    }
    /// The time zone as MySQL takes it: UTC as the offset `+00:00`, since named zones need
    /// the server's time zone tables, which are often not loaded; any other value as given.
    pub fn mysql_time_zone(&self) -> &str {
        match self.time_zone.as_str() {
            "UTC" | "utc" | "Etc/UTC" => "+00:00",
            other => other,
        }
    }
    /// How often the manager's background task probes every endpoint (reachability, role,
    /// replication lag). While an endpoint is down or banned it is re-probed every second
    /// (or at this interval when shorter), so recovery is noticed quickly. Default 10 s.
    pub fn health_interval(&self) -> Duration {
        self.health_interval
    }
    /// A replica whose replay lags further behind its primary than this (on two probes in a
    /// row) is banned from reads until it catches up. Default 30 s.
    pub fn max_replica_lag(&self) -> Duration {
        self.max_replica_lag
    }
    /// After a write through a [`RoutingSession`](crate::RoutingSession), that
    /// session's reads stay on the primary for this long, so it reads its own writes.
    /// Default `None` (off): reads go to replicas at once.
    pub fn read_your_writes(&self) -> Option<Duration> {
        self.read_your_writes
    }
    /// The latency an operation (its wait for a connection plus its statement) should stay
    /// within; `connection_info()` and the health report give the share that did. Preset
    /// per mode: 200 ms for `McpServer`, 500 ms for `AsyncModern` and `HighAvailability`,
    /// 1 s for `SyncHeavy`, 5 s for `MlTraining`, 10 s for `Admin`.
    pub fn sla_target(&self) -> Duration {
        self.sla_target
    }
    /// The longest one statement may run: the server cancels it (PostgreSQL's
    /// `statement_timeout`, MariaDB's `max_statement_time`, MySQL's `max_execution_time`
    /// for reads), and the client gives up shortly after, discarding the connection, in
    /// case the server cannot answer at all (frozen, blackholed). `None`: no limit. Preset
    /// per mode: see [`Self::for_mode`].
    pub fn statement_timeout(&self) -> Option<Duration> {
        self.statement_timeout
    }
    /// How long a statement waits for a row or table lock before failing (PostgreSQL's
    /// `lock_timeout`, MySQL's `innodb_lock_wait_timeout`, in whole seconds there).
    /// `None`: the server's default. Preset per mode: see [`Self::for_mode`].
    pub fn lock_timeout(&self) -> Option<Duration> {
        self.lock_timeout
    }
    /// A session idle inside an open transaction for longer than this is ended by the
    /// server, releasing its locks (PostgreSQL's `idle_in_transaction_session_timeout`;
    /// MySQL has no equivalent). `None`: no limit. Preset per mode: see [`Self::for_mode`].
    pub fn idle_in_transaction_timeout(&self) -> Option<Duration> {
        self.idle_in_transaction_timeout
    }
    /// TCP keepalive on every connection: idle this long, the kernel probes the peer every
    /// [`TCP_KEEPALIVE_INTERVAL`] and closes the connection after three unanswered probes,
    /// so a server that vanished (a dead host, a partition) is found even on a connection
    /// nobody uses. `None`: the driver's default. Default [`DEFAULT_TCP_KEEPALIVE`]. Set on
    /// diesel's PostgreSQL and MySQL connections; sqlx 0.9 exposes no socket options, so
    /// there ucm's statement deadlines, probes and validation do this work.
    pub fn tcp_keepalive(&self) -> Option<Duration> {
        self.tcp_keepalive
    }
    /// `TCP_USER_TIMEOUT` on every connection (Linux): data sent and unacknowledged for this
    /// long closes the connection, so a statement sent to a frozen or blackholed server
    /// fails at the socket instead of retransmitting for minutes. `None`: the kernel's
    /// default. Default [`DEFAULT_TCP_USER_TIMEOUT`]. Set on diesel's PostgreSQL
    /// connections (tokio-postgres); neither mysql_async nor sqlx 0.9 can set it.
    pub fn tcp_user_timeout(&self) -> Option<Duration> {
        self.tcp_user_timeout
    }
    /// Whether PostgreSQL is reached through a transaction pooler (see [`Pooler`]). Default
    /// [`Pooler::Auto`]: recognised from the URL.
    pub fn pooler(&self) -> Pooler {
        self.pooler
    }
    /// Behind a transaction pooler, the statement that opens each transaction in `mode`:
    /// `BEGIN READ WRITE` (`BEGIN READ ONLY` for a read-only mode) followed by the session settings as
    /// `SET LOCAL` (time zone, statement, lock and idle-in-transaction timeouts), in one
    /// simple-protocol round trip, since nothing set on the session survives the
    /// transaction there.
    pub fn pooled_begin(&self, mode: crate::ConnectionMode) -> String {
        // Both ways said outright: a server connection may come with a session default
        // another client of the pooler left behind.
        let begin = if mode.is_read_only() { "BEGIN READ ONLY" } else { "BEGIN READ WRITE" };
        let mut begin = format!("{begin}; SET LOCAL TIME ZONE {}", self.postgres_time_zone());
        for (name, value) in self.postgres_deadline_settings() {
            begin.push_str(&format!("; SET LOCAL {name} = '{value}'"));
        }
        begin
    }
    /// A connection checked out for longer than this is reported once as a possible leak
    /// (a `warn` event with where it was acquired, a counter, and a line in
    /// `connection_info()`); it is not taken back. Default `None` (off), as in HikariCP:
    /// what is "too long" depends on the application.
    pub fn leak_detection_threshold(&self) -> Option<Duration> {
        self.leak_detection_threshold
    }
    /// The client's own deadline for one statement: the statement timeout plus a grace
    /// period (as long again, between 50 ms and 1 s) for the server's cancellation to
    /// arrive first. `None` when there is no statement timeout.
    pub fn client_statement_deadline(&self) -> Option<Duration> {
        self.statement_timeout
            .map(|limit| limit + limit.clamp(Duration::from_millis(50), Duration::from_secs(1)))
    }
    /// The deadlines as PostgreSQL settings for the startup packet (no round trip):
    /// `statement_timeout`, `lock_timeout` and `idle_in_transaction_session_timeout`, in
    /// milliseconds; a limit that is off is left at the server's default.
    pub fn postgres_deadline_settings(&self) -> Vec<(&'static str, String)> {
        [
            ("statement_timeout", self.statement_timeout),
            ("lock_timeout", self.lock_timeout),
            ("idle_in_transaction_session_timeout", self.idle_in_transaction_timeout),
        ]
        .into_iter()
        .filter_map(|(name, limit)| Some((name, format!("{}ms", limit?.as_millis().max(1)))))
        .collect()
    }
    /// The deadlines as MySQL/MariaDB session statements, run once per new connection; each
    /// entry lists alternatives tried in order until one succeeds: MariaDB's
    /// `max_statement_time` (seconds, every statement) then MySQL's `max_execution_time`
    /// (milliseconds, `SELECT` only); `innodb_lock_wait_timeout` in whole seconds (at least
    /// 1). MySQL has no idle-in-transaction limit.
    pub fn mysql_deadline_statements(&self) -> Vec<Vec<String>> {
        let mut statements = Vec::new();
        if let Some(limit) = self.statement_timeout {
            statements.push(vec![
                format!("SET SESSION max_statement_time = {:.3}", limit.as_secs_f64()),
                format!("SET SESSION max_execution_time = {}", limit.as_millis().max(1)),
            ]);
        }
        if let Some(limit) = self.lock_timeout {
            statements.push(vec![format!(
                "SET SESSION innodb_lock_wait_timeout = {}",
                limit.as_secs_f64().ceil().max(1.0)
            )]);
        }
        statements
    }
    /// The session statements a new connection to `url` runs before it is pooled (see
    /// [`crate::connector::apply_session_statements`]): MySQL's deadlines; none for
    /// PostgreSQL (its settings travel in the startup packet) or SQLite; a time zone other
    /// than UTC. None at all behind a transaction pooler, where the session keeps nothing
    /// (each transaction's `BEGIN` sets what is needed).
    pub fn session_statements(&self, url: &DatabaseUrl) -> Vec<Vec<String>> {
        if self.pooler.is_transaction_pooled(url) {
            return Vec::new();
        }
        self.session_statements_for(url.kind())
    }
    fn session_statements_for(&self, kind: crate::DatabaseKind) -> Vec<Vec<String>> {
        let mut statements = match kind {
            crate::DatabaseKind::MySql => self.mysql_deadline_statements(),
            crate::DatabaseKind::Postgres | crate::DatabaseKind::Sqlite => Vec::new(),
        };
        // The drivers set UTC themselves after connecting (diesel-async runs `SET TIME ZONE
        // 'UTC'`, sqlx sends its own `TimeZone=UTC` startup parameter after ours), so any
        // other zone is set again once they are done. The value was validated at
        // construction (a name or an offset, no quote), so quoting it is enough.
        if let Some(set) = self.time_zone_statement(kind) {
            statements.push(vec![set]);
        }
        statements
    }
    /// The statement that sets a time zone other than UTC on a `kind` session; `None` for
    /// UTC (the drivers' own default) and SQLite (no session zone). PostgreSQL reads a bare
    /// `+05:30` with POSIX's inverted sign, so offsets go through an `INTERVAL` there.
    fn time_zone_statement(&self, kind: crate::DatabaseKind) -> Option<String> {
        let zone = self.time_zone.as_str();
        if matches!(zone, "UTC" | "utc" | "Etc/UTC" | "+00:00") {
            return None;
        }
        match kind {
            crate::DatabaseKind::Postgres => {
                Some(format!("SET TIME ZONE {}", self.postgres_time_zone()))
            }
            crate::DatabaseKind::MySql => {
                Some(format!("SET time_zone = '{}'", self.mysql_time_zone()))
            }
            crate::DatabaseKind::Sqlite => None,
        }
    }
    /// The time zone as PostgreSQL's `SET TIME ZONE` takes it: a quoted name, or an
    /// offset as an `INTERVAL` (a bare `'+05:30'` is read with POSIX's inverted sign).
    fn postgres_time_zone(&self) -> String {
        let zone = self.time_zone.as_str();
        if zone.starts_with(['+', '-']) {
            format!("INTERVAL '{zone}' HOUR TO MINUTE")
        } else {
            format!("'{zone}'")
        }
    }
    /// The application name a session to `url` announces: the URL's `application_name`
    /// parameter when it has one (as libpq takes it), else this preset's.
    pub fn application_name_for<'a>(&'a self, url: &'a DatabaseUrl) -> &'a str {
        url.param("application_name").unwrap_or(&self.application_name)
    }

    fn validate(&self) -> Result<()> {
        let fail =
            |field: &str, message: String| Err(Error::config(format!("pool.{field}"), message));
        if self.pool_size == 0 {
            return fail("pool_size", "must be at least 1".into());
        }
        if self.min_idle() > self.pool_size {
            return fail(
                "min_idle",
                format!(
                    "{} is more than pool_size ({}); set it at most to the pool size",
                    self.min_idle(),
                    self.pool_size
                ),
            );
        }
        if self.pool_size.checked_add(self.max_overflow).is_none_or(|max| max > 10_000) {
            return fail(
                "max_overflow",
                format!(
                    "pool_size + max_overflow = {} + {} is beyond 10000 connections",
                    self.pool_size, self.max_overflow
                ),
            );
        }
        for (field, value) in [
            ("acquire_timeout", self.acquire_timeout),
            ("connect_timeout", self.connect_timeout),
            ("validation_timeout", self.validation_timeout),
            ("max_lifetime", self.max_lifetime),
            ("overflow_idle_timeout", self.overflow_idle_timeout),
            ("health_interval", self.health_interval),
            ("sla_target", self.sla_target),
        ] {
            if value.is_zero() {
                return fail(field, "must be greater than zero".into());
            }
        }
        for (field, value) in [
            ("statement_timeout", self.statement_timeout),
            ("lock_timeout", self.lock_timeout),
            ("idle_in_transaction_timeout", self.idle_in_transaction_timeout),
            ("leak_detection_threshold", self.leak_detection_threshold),
            ("tcp_keepalive", self.tcp_keepalive),
            ("tcp_user_timeout", self.tcp_user_timeout),
        ] {
            if value.is_some_and(|v| v < Duration::from_millis(1)) {
                return fail(field, "must be at least 1ms; use `off` (None) for no limit".into());
            }
        }
        if self.validation_timeout >= self.acquire_timeout {
            return fail(
                "validation_timeout",
                format!(
                    "{:?} must be shorter than acquire_timeout ({:?}), or a single slow ping would use the whole acquire budget",
                    self.validation_timeout, self.acquire_timeout
                ),
            );
        }
        if self.lifetime_jitter >= self.max_lifetime {
            return fail(
                "lifetime_jitter",
                format!(
                    "{:?} must be shorter than max_lifetime ({:?})",
                    self.lifetime_jitter, self.max_lifetime
                ),
            );
        }
        if self.application_name.is_empty()
            || self.application_name.len() > 63
            || !self.application_name.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
        {
            return fail(
                "application_name",
                "must be 1 to 63 printable ASCII characters (PostgreSQL's NAMEDATALEN; the \
                 server replaces anything else), with no control characters"
                    .into(),
            );
        }
        if !is_valid_time_zone(&self.time_zone) {
            return fail(
                "time_zone",
                format!(
                    "must be UTC, an IANA time zone name such as Europe/Paris, \
                     America/Argentina/Buenos_Aires or Etc/GMT+3 (letters, digits, '_', '-', \
                     '+' and '/' between names), or an offset such as +05:30 or -08:00; at \
                     most {MAX_TIME_ZONE_LEN} characters, no quotes, spaces, ';' or '\\'"
                ),
            );
        }
        Ok(())
    }
}

impl fmt::Display for PoolConfiguration {
    /// One line per setting, for `ucm config`; contains no secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let yes_no = |on: bool| if on { "yes" } else { "no" };
        writeln!(f, "pool:        preset {}", self.mode)?;
        let ryw = self.read_your_writes.map_or_else(|| "off".to_owned(), |w| format!("{w:?}"));
        let limit = |d: Option<Duration>| d.map_or_else(|| "none".to_owned(), |d| format!("{d:?}"));
        let rows: [(&str, String); 25] = [
            ("pool_size", format!("{} connections", self.pool_size)),
            ("min_idle", format!("{} connections", self.min_idle())),
            (
                "max_overflow",
                format!("{} connections (at most {} in all)", self.max_overflow, self.max_size()),
            ),
            ("acquire_timeout", format!("{:?}", self.acquire_timeout)),
            ("connect_timeout", format!("{:?}", self.connect_timeout)),
            ("validation_timeout", format!("{:?}", self.validation_timeout)),
            ("validate_after_idle", format!("{:?}", self.validate_after_idle)),
            ("max_lifetime", format!("{:?}", self.max_lifetime)),
            ("lifetime_jitter", format!("{:?}", self.lifetime_jitter)),
            ("overflow_idle_timeout", format!("{:?}", self.overflow_idle_timeout)),
            ("high_availability", yes_no(self.high_availability).to_owned()),
            ("circuit_breaker", yes_no(self.circuit_breaker).to_owned()),
            ("application_name", self.application_name.clone()),
            ("time_zone", self.time_zone.clone()),
            ("health_interval", format!("{:?}", self.health_interval)),
            ("max_replica_lag", format!("{:?}", self.max_replica_lag)),
            ("read_your_writes", ryw),
            ("sla_target", format!("{:?}", self.sla_target)),
            ("statement_timeout", limit(self.statement_timeout)),
            ("lock_timeout", limit(self.lock_timeout)),
            ("idle_in_transaction_timeout", limit(self.idle_in_transaction_timeout)),
            ("leak_detection", limit(self.leak_detection_threshold)),
            ("tcp_keepalive", limit(self.tcp_keepalive)),
            ("tcp_user_timeout", limit(self.tcp_user_timeout)),
            ("pooler", self.pooler.to_string()),
        ];
        for (name, value) in rows {
            writeln!(f, "  {:<22} {value}", format!("{name}:"))?;
        }
        Ok(())
    }
}

impl Default for PoolConfiguration {
    fn default() -> Self {
        Self::for_mode(ManagerMode::default())
    }
}

/// Overrides a preset field by field; [`PoolConfigurationBuilder::build`] validates the result.
#[derive(Debug, Clone)]
#[must_use]
pub struct PoolConfigurationBuilder {
    config: PoolConfiguration,
    /// Whether the validation timeout was set explicitly; if not, it is derived from the
    /// (possibly overridden) acquire timeout at build time.
    validation_timeout_set: bool,
}

impl PoolConfigurationBuilder {
    /// Connections opened at start and kept while idle (at most the pool size; default the
    /// pool size). `0` makes the pool lazy: see [`PoolConfiguration::min_idle`].
    pub fn min_idle(mut self, value: usize) -> Self {
        self.config.min_idle = Some(value);
        self
    }

    /// Connections kept open (prefilled at start, unless [`Self::min_idle`] is lower).
    pub fn pool_size(mut self, value: usize) -> Self {
        self.config.pool_size = value;
        self
    }
    /// Extra connections allowed under load.
    pub fn max_overflow(mut self, value: usize) -> Self {
        self.config.max_overflow = value;
        self
    }
    /// How long an acquire waits for a free slot.
    pub fn acquire_timeout(mut self, value: Duration) -> Self {
        self.config.acquire_timeout = value;
        self
    }
    /// How long opening one connection may take.
    pub fn connect_timeout(mut self, value: Duration) -> Self {
        self.config.connect_timeout = value;
        self
    }
    /// How long the pre-use ping may take.
    pub fn validation_timeout(mut self, value: Duration) -> Self {
        self.config.validation_timeout = value;
        self.validation_timeout_set = true;
        self
    }
    /// Idle time after which a connection is pinged before use.
    pub fn validate_after_idle(mut self, value: Duration) -> Self {
        self.config.validate_after_idle = value;
        self
    }
    /// The longest a connection lives.
    pub fn max_lifetime(mut self, value: Duration) -> Self {
        self.config.max_lifetime = value;
        self
    }
    /// The most a connection's lifetime is shortened at random.
    pub fn lifetime_jitter(mut self, value: Duration) -> Self {
        self.config.lifetime_jitter = value;
        self
    }
    /// Idle time after which overflow connections are closed.
    pub fn overflow_idle_timeout(mut self, value: Duration) -> Self {
        self.config.overflow_idle_timeout = value;
        self
    }
    /// Whether reads go to replicas and failover is followed.
    pub fn high_availability(mut self, value: bool) -> Self {
        self.config.high_availability = value;
        self
    }
    /// Whether the circuit breaker is in the acquire path.
    pub fn circuit_breaker(mut self, value: bool) -> Self {
        self.config.circuit_breaker = value;
        self
    }
    /// The `application_name` sent to the server.
    pub fn application_name(mut self, value: impl Into<String>) -> Self {
        self.config.application_name = value.into();
        self
    }
    /// The session time zone.
    pub fn time_zone(mut self, value: impl Into<String>) -> Self {
        self.config.time_zone = value.into();
        self
    }

    /// How often the topology's endpoints are probed.
    pub fn health_interval(mut self, value: Duration) -> Self {
        self.config.health_interval = value;
        self
    }
    /// The replication lag beyond which a replica is skipped for reads.
    pub fn max_replica_lag(mut self, value: Duration) -> Self {
        self.config.max_replica_lag = value;
        self
    }
    /// How long a session's reads stay on the primary after its write (`None`: off).
    pub fn read_your_writes(mut self, value: Option<Duration>) -> Self {
        self.config.read_your_writes = value;
        self
    }
    /// The latency target operations are measured against.
    pub fn sla_target(mut self, value: Duration) -> Self {
        self.config.sla_target = value;
        self
    }
    /// The longest one statement may run (`None`: no limit).
    pub fn statement_timeout(mut self, value: Option<Duration>) -> Self {
        self.config.statement_timeout = value;
        self
    }
    /// TCP keepalive idle time (`None`: the driver's default).
    pub fn tcp_keepalive(mut self, value: Option<Duration>) -> Self {
        self.config.tcp_keepalive = value;
        self
    }
    /// `TCP_USER_TIMEOUT` (`None`: the kernel's default).
    pub fn tcp_user_timeout(mut self, value: Option<Duration>) -> Self {
        self.config.tcp_user_timeout = value;
        self
    }
    /// Whether PostgreSQL is reached through a transaction pooler (default: recognised from
    /// the URL).
    pub fn pooler(mut self, value: Pooler) -> Self {
        self.config.pooler = value;
        self
    }
    /// How long a statement waits for a lock (`None`: the server's default).
    pub fn lock_timeout(mut self, value: Option<Duration>) -> Self {
        self.config.lock_timeout = value;
        self
    }
    /// How long a session may sit idle in an open transaction (`None`: no limit).
    pub fn idle_in_transaction_timeout(mut self, value: Option<Duration>) -> Self {
        self.config.idle_in_transaction_timeout = value;
        self
    }
    /// How long a connection may stay checked out before it is reported (`None`: off).
    pub fn leak_detection_threshold(mut self, value: Option<Duration>) -> Self {
        self.config.leak_detection_threshold = value;
        self
    }

    /// Applies overrides from the process environment; see [`Self::env_overrides`].
    ///
    /// # Errors
    /// A `Configuration` error naming the variable when one is set but malformed.
    pub fn from_env(self) -> Result<Self> {
        self.env_overrides(|name| std::env::var(name).ok())
    }

    /// Applies overrides from `lookup` (the environment, or a map in tests):
    /// `UCM_POOL_SIZE`, `UCM_MAX_OVERFLOW`, `UCM_ACQUIRE_TIMEOUT`, `UCM_CONNECT_TIMEOUT`,
    /// `UCM_VALIDATION_TIMEOUT`, `UCM_VALIDATE_AFTER_IDLE`, `UCM_MAX_LIFETIME`,
    /// `UCM_LIFETIME_JITTER`, `UCM_OVERFLOW_IDLE_TIMEOUT` (durations as `250ms`, `5s`, `2m`
    /// or bare seconds such as `0.2`), `UCM_HIGH_AVAILABILITY`, `UCM_CIRCUIT_BREAKER`
    /// (`true`/`false`/`1`/`0`), `UCM_APPLICATION_NAME`, `UCM_TIME_ZONE`,
    /// `UCM_HEALTH_INTERVAL`, `UCM_MAX_REPLICA_LAG`, `UCM_SLA_TARGET`, and
    /// `UCM_MIN_IDLE`, `UCM_READ_YOUR_WRITES`, `UCM_STATEMENT_TIMEOUT`, `UCM_LOCK_TIMEOUT`,
    /// `UCM_IDLE_IN_TRANSACTION_TIMEOUT`, `UCM_LEAK_DETECTION_THRESHOLD`, `UCM_TCP_KEEPALIVE`,
    /// `UCM_TCP_USER_TIMEOUT` (a duration, or `off`), `UCM_POOLER`: the `[pool]` keys of
    /// [`ConfigSources`](super::ConfigSources), upper-cased. The file `UCM_CONFIG` names is
    /// not read here; [`ManagerConfig::from_env`](super::ManagerConfig::from_env) reads it.
    ///
    /// # Errors
    /// A `Configuration` error naming the variable when one is set but malformed.
    pub fn env_overrides(self, lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let mode = self.config.mode;
        let resolved = super::ConfigSources::from_lookup(lookup).without_file().resolve(mode)?;
        super::settings::pool(self, &resolved)
    }

    /// Validates and returns the configuration.
    ///
    /// # Errors
    /// A `Configuration` error naming the field when the settings are incoherent: a zero
    /// pool size or timeout, a validation timeout not shorter than the acquire timeout,
    /// jitter not shorter than the lifetime, or an out-of-range application name.
    pub fn build(mut self) -> Result<PoolConfiguration> {
        if !self.validation_timeout_set {
            self.config.validation_timeout =
                default_validation_timeout(self.config.acquire_timeout);
        }
        self.config.validate()?;
        Ok(self.config)
    }
}

/// The server-enforced deadlines of `mode`: statement timeout, lock timeout, idle in
/// transaction. Interactive callers (`McpServer`, whose tools answer people) get the
/// original system's 150 ms; request-serving modes 30 s; batch work a minute; training
/// jobs ten minutes; `Admin` (migrations, maintenance) no statement limit at all. Lock
/// waits stay well under the statement limit so a blocked statement says "lock" rather
/// than "timeout"; a session idle in a transaction is ended long before it can hold
/// locks for minutes.
fn deadlines(mode: ManagerMode) -> (Option<Duration>, Option<Duration>, Option<Duration>) {
    let ms = |n: u64| Some(Duration::from_millis(n));
    let s = |n: u64| Some(Duration::from_secs(n));
    match mode {
        ManagerMode::McpServer => (ms(150), ms(100), s(5)),
        ManagerMode::AsyncModern | ManagerMode::HighAvailability => (s(30), s(5), s(60)),
        ManagerMode::SyncHeavy => (s(60), s(10), s(60)),
        ManagerMode::MlTraining => (s(600), s(30), s(300)),
        ManagerMode::Admin => (None, s(60), s(1800)),
    }
}

/// Half the acquire budget, at most 2 s: a dead idle connection can then be detected and
/// replaced by a fresh one within the same acquire.
fn default_validation_timeout(acquire_timeout: Duration) -> Duration {
    (acquire_timeout / 2).min(Duration::from_secs(2))
}

pub(crate) fn parse_count(name: &str, value: &str) -> Result<usize> {
    value
        .trim()
        .parse()
        .map_err(|_| Error::config(name, format!("{value:?} is not a whole number")))
}

pub(crate) fn parse_bool(name: &str, value: &str) -> Result<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(Error::config(name, format!("{value:?} is not a boolean; use true or false"))),
    }
}

/// Parses `250ms`, `5s`, `2m`, or a bare number of seconds (`0.2`).
pub(crate) fn parse_duration(name: &str, value: &str) -> Result<Duration> {
    let v = value.trim();
    let (number, scale) = if let Some(n) = v.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('m') {
        (n, 60.0)
    } else {
        (v, 1.0)
    };
    let bad = || {
        Error::config(name, format!("{value:?} is not a duration; write e.g. 250ms, 5s, 2m or 0.2"))
    };
    let n: f64 = number.trim().parse().map_err(|_| bad())?;
    Duration::try_from_secs_f64(n * scale).map_err(|_| bad())
}

/// The longest time zone accepted; the longest IANA name is 32 characters.
const MAX_TIME_ZONE_LEN: usize = 64;

/// Whether `tz` is a time zone every backend may send as it is: an IANA name (`UTC`,
/// `Europe/Paris`, `America/Argentina/Buenos_Aires`, `Etc/GMT+3`) or an offset `±HH:MM`.
/// The value reaches MySQL's `SET time_zone = '...'` and PostgreSQL's startup options
/// (`-c TimeZone=...`), so nothing that could end a literal or an option (a quote, a
/// space, `;`, `\`, a comment's `--`) gets through.
fn is_valid_time_zone(tz: &str) -> bool {
    if tz.is_empty() || tz.len() > MAX_TIME_ZONE_LEN {
        return false;
    }
    if let Some(offset) = tz.strip_prefix(['+', '-']) {
        let bytes = offset.as_bytes();
        return bytes.len() == 5
            && bytes[2] == b':'
            && [0, 1, 3, 4].iter().all(|&i| bytes[i].is_ascii_digit())
            && offset[..2] <= *"14"
            && offset[3..] < *"60";
    }
    !tz.contains("--")
        && tz.split('/').all(|name| {
            name.starts_with(|c: char| c.is_ascii_alphabetic())
                && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '+'))
        })
}

#[cfg(test)]
#[path = "pool_tests.rs"]
mod tests;
