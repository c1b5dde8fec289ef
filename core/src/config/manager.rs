//! `ManagerConfig`: one manager's endpoints (a primary and its replicas), pool, breaker, retry and drain settings, from a builder, a TOML file or the environment.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use super::pool::PoolConfiguration;
use super::settings::{self, ConfigSources, Origin};
use super::{CredentialSource, DatabaseKind, DatabaseUrl, PermissionPolicy};
use crate::circuit_breaker::CircuitBreakerConfig;
use crate::error::{Error, Result};
use crate::mode::ManagerMode;
use crate::retry::RetryPolicy;

/// The endpoint set and settings of one manager: its mode, a primary, zero or more read
/// replicas, the pool settings every endpoint's pool uses, the circuit breaker's thresholds,
/// the retry policy and the drain deadline.
///
/// Built only through [`ManagerConfig::builder`], [`ManagerConfig::from_sources`] (a TOML
/// file and the environment, see [`ConfigSources`]), [`ManagerConfig::from_env`] or
/// [`ManagerConfig::from_lookup`], so it always holds: every replica is the primary's
/// [`DatabaseKind`]; SQLite has no replicas; no replica is the primary or another replica
/// (same host, port and database).
///
/// `Display` prints the effective configuration, redacted, as `ucm config` shows it.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct ManagerConfig {
    mode: ManagerMode,
    primary: DatabaseUrl,
    replicas: Vec<DatabaseUrl>,
    pool: PoolConfiguration,
    breaker: CircuitBreakerConfig,
    retry: RetryPolicy,
    drain_deadline: Duration,
    permissions: PermissionPolicy,
    /// Where each setting that is not the preset's came from.
    origins: BTreeMap<String, Origin>,
}

impl ManagerConfig {
    /// How long [`close`](crate::ConnectionManagerProtocol::close) waits for checked-out
    /// connections by default before closing them anyway.
    pub const DEFAULT_DRAIN_DEADLINE: Duration = Duration::from_secs(30);

    /// The environment variable holding the primary's URL.
    pub const PRIMARY_ENV: &'static str = "DATABASE_URL";
    /// The environment variable holding the replicas' URLs, comma-separated.
    pub const REPLICAS_ENV: &'static str = "DATABASE_REPLICA_URLS";

    /// A builder for a manager of `mode`; its pool defaults to [`PoolConfiguration::for_mode`].
    pub fn builder(mode: ManagerMode) -> ManagerConfigBuilder {
        ManagerConfigBuilder {
            mode,
            primary: None,
            replicas: Vec::new(),
            pool: None,
            breaker: None,
            retry: None,
            drain_deadline: None,
            permissions: None,
            credentials: None,
            origins: BTreeMap::new(),
            names: FieldNames::builder(),
        }
    }

    /// Reads `sources` (a TOML file, the environment) over `mode`'s preset; see
    /// [`ConfigSources`] for the precedence and the names.
    ///
    /// # Errors
    /// As [`Self::builder_from`] and [`ManagerConfigBuilder::build`].
    pub fn from_sources(mode: ManagerMode, sources: &ConfigSources) -> Result<Self> {
        Self::builder_from(mode, sources)?.build()
    }

    /// A builder holding what `sources` set for `mode`, so that the builder's own calls
    /// come on top of the file and the environment.
    ///
    /// # Errors
    /// A `Configuration` error naming the key and its file, or the variable: an unreadable
    /// or malformed file, an unknown key or mode, a malformed value, an incoherent pool,
    /// breaker or retry setting. No error contains a password.
    pub fn builder_from(
        mode: ManagerMode,
        sources: &ConfigSources,
    ) -> Result<ManagerConfigBuilder> {
        let resolved = sources.resolve(mode)?;
        let mut builder = Self::builder(mode);
        let layer = &resolved.layer;
        if let Some(url) = &layer.primary {
            builder.names.primary = resolved.field("primary");
            builder = builder.primary(url);
        }
        if let Some(list) = &layer.replicas {
            let (urls, comma_separated) = list.urls();
            builder.names.replicas = resolved.field("replicas");
            builder.names.comma_separated = comma_separated;
            builder = builder.replicas(urls);
        }
        let pool = settings::pool(PoolConfiguration::builder(mode), &resolved)?.build()?;
        builder.breaker = Some(settings::breaker(&resolved)?);
        builder.retry = Some(settings::retry(&resolved)?);
        builder.drain_deadline = settings::drain_deadline(&resolved)?;
        builder.credentials = settings::credentials(&resolved)?;
        builder.permissions = Some(settings::permissions(&resolved, mode)?);
        builder.origins = resolved.origins;
        Ok(builder.pool(pool))
    }

    /// Reads the process environment, and the TOML file `UCM_CONFIG` names; see
    /// [`Self::from_lookup`] and [`ConfigSources`].
    ///
    /// # Errors
    /// As [`Self::from_lookup`].
    pub fn from_env(mode: ManagerMode) -> Result<Self> {
        Self::from_sources(mode, &ConfigSources::environment())
    }

    /// Reads `lookup` as the environment (a map in tests), and the file its `UCM_CONFIG`
    /// names: `DATABASE_URL` (else libpq's `PG*` variables), `DATABASE_REPLICA_URLS`
    /// (comma-separated; whitespace around items is trimmed and empty items are skipped, so
    /// a ',' inside a URL must be written %2C), and the `UCM_*` settings of
    /// [`ConfigSources`] on top of `mode`'s preset.
    ///
    /// # Errors
    /// A `Configuration` error when `DATABASE_URL` is unset or blank, when a URL is malformed
    /// (naming `DATABASE_URL` or `DATABASE_REPLICA_URLS[i]`, `i` counting the non-empty items
    /// from 0), when a pool override is malformed or incoherent, or when the endpoints break
    /// an invariant (see [`ManagerConfigBuilder::build`]). No error contains a password.
    pub fn from_lookup(mode: ManagerMode, lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        Self::from_sources(mode, &ConfigSources::from_lookup(lookup))
    }

    /// The mode the manager is tuned for.
    pub fn mode(&self) -> ManagerMode {
        self.mode
    }

    /// The endpoint that takes writes (and reads when no replica is healthy).
    pub fn primary(&self) -> &DatabaseUrl {
        &self.primary
    }

    /// The read replicas, in the order given; empty by default.
    pub fn replicas(&self) -> &[DatabaseUrl] {
        &self.replicas
    }

    /// The primary followed by the replicas.
    pub fn endpoints(&self) -> impl Iterator<Item = &DatabaseUrl> {
        std::iter::once(&self.primary).chain(&self.replicas)
    }

    /// The database kind of every endpoint.
    pub fn kind(&self) -> DatabaseKind {
        self.primary.kind()
    }

    /// The pool configuration each endpoint's pool uses. Default: `mode`'s preset.
    pub fn pool(&self) -> &PoolConfiguration {
        &self.pool
    }

    /// The circuit breaker's thresholds, used when the pool's
    /// [`circuit_breaker`](PoolConfiguration::circuit_breaker) is on. Default:
    /// [`CircuitBreakerConfig::default`].
    pub fn breaker(&self) -> &CircuitBreakerConfig {
        &self.breaker
    }

    /// The retry policy of the manager's calls. Default: [`RetryPolicy::default`].
    pub fn retry(&self) -> &RetryPolicy {
        &self.retry
    }

    /// How long `close()` waits for checked-out connections. Default
    /// [`Self::DEFAULT_DRAIN_DEADLINE`].
    pub fn drain_deadline(&self) -> Duration {
        self.drain_deadline
    }

    /// What the role must and must not be able to do, which `check_permissions` verifies.
    /// Default: [`PermissionPolicy::for_mode`].
    pub fn permissions(&self) -> &PermissionPolicy {
        &self.permissions
    }

    /// Where each setting that is not the preset's came from, by dotted key
    /// (`pool.pool_size`, `primary`...); empty for a configuration built in code.
    pub fn origins(&self) -> &BTreeMap<String, Origin> {
        &self.origins
    }
}

/// Collects a [`ManagerConfig`]'s endpoints and pool; [`ManagerConfigBuilder::build`]
/// reports the first malformed URL or broken invariant.
#[derive(Debug)]
#[must_use]
pub struct ManagerConfigBuilder {
    mode: ManagerMode,
    // URLs are parsed as they arrive, so the builder never holds a raw URL (and its
    // password) in a form its `Debug` could show; errors wait for `build`.
    primary: Option<Result<DatabaseUrl>>,
    replicas: Vec<Result<DatabaseUrl>>,
    pool: Option<PoolConfiguration>,
    breaker: Option<CircuitBreakerConfig>,
    retry: Option<RetryPolicy>,
    drain_deadline: Option<Duration>,
    permissions: Option<PermissionPolicy>,
    credentials: Option<CredentialSource>,
    origins: BTreeMap<String, Origin>,
    names: FieldNames,
}

impl ManagerConfigBuilder {
    /// The primary's URL; see [`DatabaseUrl::parse`] for the accepted forms.
    pub fn primary(mut self, url: &str) -> Self {
        self.primary = Some(DatabaseUrl::parse_named(&self.names.primary, url));
        self
    }

    /// The primary, already parsed.
    pub fn primary_url(mut self, url: DatabaseUrl) -> Self {
        self.primary = Some(Ok(url));
        self
    }

    /// Adds one replica URL.
    pub fn replica(mut self, url: &str) -> Self {
        let field = format!("{}[{}]", self.names.replicas, self.replicas.len());
        let is_url =
            url.contains("://") || url.get(..7).is_some_and(|s| s.eq_ignore_ascii_case("sqlite:"));
        let parsed = if self.names.comma_separated && !is_url {
            // In a comma-separated list, a piece without a scheme is most likely the tail of
            // a URL cut at a ',' inside its password.
            Err(Error::config(
                field,
                format!(
                    "is not a URL (no scheme://); URLs in {} are separated by ',', so a ',' \
                     inside a password must be percent-encoded as %2C",
                    self.names.replicas
                ),
            ))
        } else {
            DatabaseUrl::parse_named(&field, url)
        };
        self.replicas.push(parsed);
        self
    }

    /// Adds one replica, already parsed.
    pub fn replica_url(mut self, url: DatabaseUrl) -> Self {
        self.replicas.push(Ok(url));
        self
    }

    /// Adds several replica URLs, in order.
    pub fn replicas<I, S>(self, urls: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        urls.into_iter().fold(self, |builder, url| builder.replica(url.as_ref()))
    }

    /// The pool configuration; default [`PoolConfiguration::for_mode`] of the builder's mode.
    pub fn pool(mut self, pool: PoolConfiguration) -> Self {
        self.pool = Some(pool);
        self
    }

    /// Drops the replicas given so far (by a file or the environment), so that the next
    /// [`Self::replica`] calls replace them.
    pub fn without_replicas(mut self) -> Self {
        self.replicas.clear();
        self
    }

    /// Every endpoint's new connections log in with what `source` gives at the time,
    /// instead of the URLs' user and password (see [`CredentialSource`]).
    pub fn credentials(mut self, source: CredentialSource) -> Self {
        self.credentials = Some(source);
        self
    }

    /// The circuit breaker's thresholds (checked by `build`).
    pub fn breaker(mut self, breaker: CircuitBreakerConfig) -> Self {
        self.breaker = Some(breaker);
        self
    }

    /// The retry policy (checked by `build`).
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = Some(retry);
        self
    }

    /// What the role must and must not be able to do (see [`PermissionPolicy`]).
    pub fn permissions(mut self, policy: PermissionPolicy) -> Self {
        self.permissions = Some(policy);
        self
    }

    /// How long `close()` waits for checked-out connections before closing them anyway.
    pub fn drain_deadline(mut self, deadline: Duration) -> Self {
        self.drain_deadline = Some(deadline);
        self
    }

    /// Checks the endpoints and returns the configuration.
    ///
    /// # Errors
    /// A `Configuration` error, naming the setting: no primary ("set DATABASE_URL"), the
    /// first malformed URL (primary first, then replicas in order), a replica of another
    /// database kind than the primary, any replica for SQLite, a replica that is the primary
    /// (same host, port and database), the same replica listed twice, or an incoherent
    /// breaker or retry setting.
    pub fn build(self) -> Result<ManagerConfig> {
        let names = self.names;
        let primary = self.primary.ok_or_else(|| {
            Error::config(
                &names.primary,
                "no primary database URL; set DATABASE_URL, e.g. postgres://user@localhost:5432/app \
                 (or call ManagerConfigBuilder::primary)",
            )
        })??;
        let mut replicas = self.replicas.into_iter().collect::<Result<Vec<_>>>()?;
        let mut primary = primary;
        if let Some(source) = self.credentials {
            primary = primary.with_credentials(source.clone());
            replicas = replicas.into_iter().map(|r| r.with_credentials(source.clone())).collect();
        }
        let kind = primary.kind();
        if kind == DatabaseKind::Sqlite && !replicas.is_empty() {
            return Err(Error::config(
                &names.replicas,
                "a SQLite database has no replicas (it is one file, read and written through the \
                 primary); remove the replica URLs",
            ));
        }
        for (i, replica) in replicas.iter().enumerate() {
            let field = || format!("{}[{i}]", names.replicas);
            if replica.kind() != kind {
                return Err(Error::config(
                    field(),
                    format!(
                        "is a {} URL but the primary is {kind}; every endpoint of one manager \
                         must be the same kind of database",
                        replica.kind()
                    ),
                ));
            }
            if replica.same_endpoint(&primary) {
                return Err(Error::config(
                    field(),
                    format!(
                        "{} is the primary itself; a replica must be another server, so remove it \
                         from the list",
                        replica.label()
                    ),
                ));
            }
            if let Some(j) = replicas[..i].iter().position(|other| other.same_endpoint(replica)) {
                return Err(Error::config(
                    field(),
                    format!(
                        "{} is listed twice (also at [{j}]); remove the duplicate",
                        replica.label()
                    ),
                ));
            }
        }
        let pool = self.pool.unwrap_or_else(|| PoolConfiguration::for_mode(self.mode));
        let breaker = self.breaker.unwrap_or_default();
        breaker.validate()?;
        let retry = self.retry.unwrap_or_default();
        retry.validate()?;
        if self.drain_deadline.is_some_and(|d| d.is_zero()) {
            return Err(Error::config(
                "drain_deadline",
                "must be above zero, or close() would cut every checked-out connection at once",
            ));
        }
        Ok(ManagerConfig {
            mode: self.mode,
            primary,
            replicas,
            pool,
            breaker,
            retry,
            drain_deadline: self.drain_deadline.unwrap_or(ManagerConfig::DEFAULT_DRAIN_DEADLINE),
            permissions: self.permissions.unwrap_or_else(|| PermissionPolicy::for_mode(self.mode)),
            origins: self.origins,
        })
    }
}

impl fmt::Display for ManagerConfig {
    /// A multi-line report of the effective configuration; URLs are redacted.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "mode:        {}", self.mode)?;
        writeln!(f, "database:    {}", self.kind())?;
        writeln!(f, "primary:     {}", EndpointLine(&self.primary))?;
        if self.replicas.is_empty() {
            writeln!(f, "replicas:    none (reads go to the primary)")?;
        }
        for (i, replica) in self.replicas.iter().enumerate() {
            writeln!(f, "replica[{i}]:  {}", EndpointLine(replica))?;
        }
        write!(f, "{}", self.pool)?;
        let b = &self.breaker;
        writeln!(
            f,
            "breaker:     opens after {} failures, probes after {:?} (x{} per re-open, at most \
             {:?}), {} probe(s) at once, closes after {} successes",
            b.failure_threshold,
            b.recovery_timeout,
            b.backoff_multiplier,
            b.max_recovery_timeout,
            b.half_open_max_probes,
            b.success_threshold
        )?;
        let r = &self.retry;
        writeln!(
            f,
            "retry:       {} attempts, backoff {:?} to {:?}, budget {:?} window, {}/s minimum, \
             ratio {}",
            r.max_attempts,
            r.backoff.base,
            r.backoff.max,
            r.budget.ttl(),
            r.budget.min_per_sec(),
            r.budget.retry_ratio()
        )?;
        writeln!(f, "drain:       {:?}", self.drain_deadline)?;
        if self.origins.is_empty() {
            return writeln!(f, "set by:      the preset and the code (no file, no variable)");
        }
        writeln!(f, "set by:      (everything else is the preset's)")?;
        for (key, origin) in &self.origins {
            let source = match origin {
                Origin::File { .. } => "file",
                Origin::Environment(_) => "environment",
                Origin::Libpq(_) => "libpq variables",
            };
            writeln!(f, "  {key:<28} {source}: {origin}")?;
        }
        Ok(())
    }
}

/// The names errors give the primary and replica settings: where they came from.
#[derive(Debug, Clone)]
struct FieldNames {
    primary: String,
    replicas: String,
    /// The replicas were one comma-separated string (a ',' in a password must be %2C).
    comma_separated: bool,
}

impl FieldNames {
    fn builder() -> Self {
        Self { primary: "primary".into(), replicas: "replicas".into(), comma_separated: false }
    }
}

/// One endpoint line of the report: the redacted URL and its TLS mode.
struct EndpointLine<'a>(&'a DatabaseUrl);

impl fmt::Display for EndpointLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.kind() {
            DatabaseKind::Sqlite => write!(f, "{} (file, no tls)", self.0)?,
            _ => write!(f, "{} (tls {})", self.0, self.0.ssl_mode())?,
        }
        match self.0.credential_source() {
            Some(source) => write!(f, " (credentials: {})", source.describe()),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use super::*;
    use crate::error::ErrorKind;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> =
            pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        move |key| map.get(key).cloned()
    }

    fn env_error(pairs: &[(&str, &str)]) -> String {
        let err = ManagerConfig::from_lookup(ManagerMode::AsyncModern, lookup(pairs)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Configuration);
        err.to_string()
    }

    #[test]
    fn environment_gives_primary_replicas_and_pool_overrides() {
        let config = ManagerConfig::from_lookup(
            ManagerMode::HighAvailability,
            lookup(&[
                ("DATABASE_URL", "postgresql+asyncpg://app:s3cret@primary.db/shop\n"),
                (
                    "DATABASE_REPLICA_URLS",
                    " postgres://app:s3cret@r1.db/shop , ,postgres://r2.db:5433/shop,",
                ),
                ("UCM_POOL_SIZE", "3"),
                ("UCM_ACQUIRE_TIMEOUT", "3s"),
            ]),
        )
        .unwrap();
        assert_eq!(config.mode(), ManagerMode::HighAvailability);
        assert_eq!(config.kind(), DatabaseKind::Postgres);
        assert_eq!(config.primary().label(), "primary.db:5432/shop");
        let replicas: Vec<String> = config.replicas().iter().map(DatabaseUrl::label).collect();
        assert_eq!(replicas, ["r1.db:5432/shop", "r2.db:5433/shop"]);
        assert_eq!(config.endpoints().count(), 3);
        assert_eq!(config.pool().pool_size(), 3);
        assert_eq!(config.pool().acquire_timeout(), Duration::from_secs(3));
        assert_eq!(config.pool().mode(), ManagerMode::HighAvailability);
    }

    #[test]
    fn environment_errors_name_the_variable_and_never_the_password() {
        type Env<'a> = &'a [(&'a str, &'a str)];
        let cases: [(Env<'_>, &[&str]); 7] = [
            (&[], &["DATABASE_URL", "set DATABASE_URL, e.g. postgres://user@localhost:5432/app"]),
            (&[("DATABASE_URL", "  ")], &["set DATABASE_URL"]),
            (
                &[("DATABASE_URL", "postgres://u:pw9/secret@db/app")],
                &["DATABASE_URL: the port is not a number"],
            ),
            (
                &[
                    ("DATABASE_URL", "postgres://db/app"),
                    ("DATABASE_REPLICA_URLS", "postgres://r1/app,postgres://u:pw9#secret@r2/app"),
                ],
                &["DATABASE_REPLICA_URLS[1]", "%23"],
            ),
            (
                &[
                    ("DATABASE_URL", "postgres://db/app"),
                    ("DATABASE_REPLICA_URLS", ",postgres://u:pw9,secret@r2/app"),
                ],
                &["DATABASE_REPLICA_URLS[0]: the port is not a number"],
            ),
            (
                &[
                    ("DATABASE_URL", "postgres://db/app"),
                    ("DATABASE_REPLICA_URLS", "postgres://r1/app,secret@r2/app"),
                ],
                &["DATABASE_REPLICA_URLS[1]", "%2C"],
            ),
            (
                &[("DATABASE_URL", "postgres://db/app"), ("UCM_POOL_SIZE", "many")],
                &["UCM_POOL_SIZE"],
            ),
        ];
        for (pairs, needles) in cases {
            let text = env_error(pairs);
            for needle in needles {
                assert!(text.contains(needle), "{needle:?} missing from {text}");
            }
            assert!(!text.contains("secret") && !text.contains("pw9"), "{text}");
        }
    }

    #[test]
    fn invariant_violations_are_refused() {
        let b = || ManagerConfig::builder(ManagerMode::AsyncModern);
        let cases: [(ManagerConfigBuilder, &[&str]); 6] = [
            (
                b().replica("postgres://r1/app"),
                &["primary: no primary database URL", "set DATABASE_URL"],
            ),
            (
                b().primary("postgres://db/app").replica("mysql://r1/app"),
                &["replicas[0]", "is a mysql URL but the primary is postgresql"],
            ),
            (
                b().primary("sqlite://data/app.db").replica("sqlite://data/copy.db"),
                &["replicas:", "no replicas"],
            ),
            (
                b().primary("postgres://a:pw@DB:5432/app")
                    .replica("postgresql://b@db/app?sslmode=require"),
                &["replicas[0]", "db:5432/app is the primary itself"],
            ),
            (
                b().primary("postgres://db/app").replicas([
                    "postgres://r1/app",
                    "postgres://r2/app",
                    "postgres://r1:5432/app",
                ]),
                &["replicas[2]", "r1:5432/app is listed twice (also at [0])"],
            ),
            (
                b().primary("postgres://db/app").replicas(["postgres://r1/app", "redis://r2"]),
                &["replicas[1]", "unknown scheme"],
            ),
        ];
        for (builder, needles) in cases {
            let text = builder.build().unwrap_err().to_string();
            for needle in needles {
                assert!(text.contains(needle), "{needle:?} missing from {text}");
            }
        }
    }

    #[test]
    fn builder_defaults_the_pool_to_the_mode_preset() {
        let config = ManagerConfig::builder(ManagerMode::McpServer)
            .primary_url(DatabaseUrl::parse("sqlite::memory:").unwrap())
            .build()
            .unwrap();
        assert_eq!(config.pool(), &PoolConfiguration::for_mode(ManagerMode::McpServer));
        assert!(config.replicas().is_empty());
        let custom = PoolConfiguration::builder(ManagerMode::Admin).pool_size(2).build().unwrap();
        let config = ManagerConfig::builder(ManagerMode::McpServer)
            .primary("mysql://u@db/app")
            .replica_url(DatabaseUrl::parse("mariadb://u@r1/app").unwrap())
            .pool(custom.clone())
            .build()
            .unwrap();
        assert_eq!(config.pool(), &custom);
        assert_eq!(config.replicas().len(), 1);
    }

    #[test]
    fn the_report_shows_every_setting_and_no_password() {
        let config = ManagerConfig::from_lookup(
            ManagerMode::McpServer,
            lookup(&[
                ("DATABASE_URL", "postgres://app:Pr1m%40ry-pw@db.example.com/shop"),
                (
                    "DATABASE_REPLICA_URLS",
                    "postgres://app:R3pl1ca-pw@[::1]:5433/shop?sslmode=verify-full",
                ),
            ]),
        )
        .unwrap();
        let report = config.to_string();
        for needle in [
            "mode:        mcp_server",
            "database:    postgresql",
            "primary:     postgres://app:***@db.example.com:5432/shop (tls prefer)",
            "replica[0]:  postgres://app:***@[::1]:5433/shop?sslmode=verify-full (tls verify-full)",
            "pool:        preset mcp_server",
            "pool_size:             20 connections",
            "max_overflow:          10 connections (at most 30 in all)",
            "acquire_timeout:       200ms",
            "connect_timeout:       10s",
            "validation_timeout:    100ms",
            "validate_after_idle:   500ms",
            "max_lifetime:          3600s",
            "lifetime_jitter:       180s",
            "overflow_idle_timeout: 30s",
            "high_availability:     no",
            "circuit_breaker:       yes",
            "application_name:      ucm_mcp_server",
            "time_zone:             UTC",
            "statement_timeout:     150ms",
            "lock_timeout:          100ms",
            "idle_in_transaction_timeout: 5s",
            "leak_detection:        none",
        ] {
            assert!(report.contains(needle), "{needle:?} missing from\n{report}");
        }
        for secret in ["Pr1m", "R3pl1ca"] {
            assert!(!report.contains(secret), "{report}");
            assert!(!format!("{config:?}").contains(secret));
        }
        let sqlite =
            ManagerConfig::builder(ManagerMode::Admin).primary("sqlite::memory:").build().unwrap();
        let report = sqlite.to_string();
        assert!(report.contains("primary:     sqlite::memory: (file, no tls)"), "{report}");
        assert!(report.contains("replicas:    none"), "{report}");
    }
}
