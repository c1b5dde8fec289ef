//! Applying resolved settings: each `Scalar` read as what its key needs, onto the pool builder, the breaker, the retry policy and the drain deadline.

use std::sync::Arc;
use std::time::Duration;

use super::layer::{BreakerLayer, CacheLayer, PoolLayer, RedisLayer, RetryLayer, Scalar};
use super::sources::Resolved;
use crate::circuit_breaker::CircuitBreakerConfig;
use crate::config::pool::{PoolConfigurationBuilder, parse_bool, parse_count, parse_duration};
use crate::config::{
    CacheSettings, CredentialSource, Credentials, PermissionPolicy, PoolConfiguration,
    RedisSettings, Secret,
};
use crate::error::{Error, Result};
use crate::mode::ManagerMode;
use crate::retry::{RetryBudget, RetryPolicy};

impl Scalar {
    fn count(&self, field: &str) -> Result<usize> {
        parse_count(field, &self.0)
    }

    fn small_count(&self, field: &str) -> Result<u32> {
        let n = self.count(field)?;
        u32::try_from(n).map_err(|_| Error::config(field, format!("{n} is too large")))
    }

    fn duration(&self, field: &str) -> Result<Duration> {
        parse_duration(field, &self.0)
    }

    /// A duration, or `off` (`false`, `no`, `none`, `0`) for none.
    fn limit(&self, field: &str) -> Result<Option<Duration>> {
        match self.0.trim().to_ascii_lowercase().as_str() {
            "off" | "false" | "no" | "none" | "0" => Ok(None),
            _ => self.duration(field).map(Some),
        }
    }

    fn flag(&self, field: &str) -> Result<bool> {
        parse_bool(field, &self.0)
    }

    fn number(&self, field: &str) -> Result<f64> {
        self.0.trim().parse().map_err(|_| {
            Error::config(field, format!("{:?} is not a number; write e.g. 1.5", self.0))
        })
    }

    fn text(&self) -> String {
        self.0.clone()
    }
}

/// `builder` with every `[pool]` setting of `resolved` applied.
pub(crate) fn pool(
    mut builder: PoolConfigurationBuilder,
    resolved: &Resolved,
) -> Result<PoolConfigurationBuilder> {
    let layer: &PoolLayer = &resolved.layer.pool;
    for &key in PoolLayer::KEYS {
        let Some(v) = layer.get(key) else { continue };
        let field = resolved.field(&format!("pool.{key}"));
        let f = field.as_str();
        builder = match key {
            "pool_size" => builder.pool_size(v.count(f)?),
            "min_idle" => builder.min_idle(v.count(f)?),
            "max_overflow" => builder.max_overflow(v.count(f)?),
            "acquire_timeout" => builder.acquire_timeout(v.duration(f)?),
            "connect_timeout" => builder.connect_timeout(v.duration(f)?),
            "validation_timeout" => builder.validation_timeout(v.duration(f)?),
            "validate_after_idle" => builder.validate_after_idle(v.duration(f)?),
            "max_lifetime" => builder.max_lifetime(v.duration(f)?),
            "lifetime_jitter" => builder.lifetime_jitter(v.duration(f)?),
            "overflow_idle_timeout" => builder.overflow_idle_timeout(v.duration(f)?),
            "health_interval" => builder.health_interval(v.duration(f)?),
            "max_replica_lag" => builder.max_replica_lag(v.duration(f)?),
            "sla_target" => builder.sla_target(v.duration(f)?),
            "high_availability" => builder.high_availability(v.flag(f)?),
            "circuit_breaker" => builder.circuit_breaker(v.flag(f)?),
            "application_name" => builder.application_name(v.text()),
            "time_zone" => builder.time_zone(v.text()),
            "pooler" => builder.pooler(v.0.parse().map_err(|_| {
                Error::config(
                    f,
                    format!("{:?} is not a pooler mode; use auto, none or transaction", v.0),
                )
            })?),
            "read_your_writes" => builder.read_your_writes(v.limit(f)?),
            "statement_timeout" => builder.statement_timeout(v.limit(f)?),
            "lock_timeout" => builder.lock_timeout(v.limit(f)?),
            "idle_in_transaction_timeout" => builder.idle_in_transaction_timeout(v.limit(f)?),
            "leak_detection_threshold" => builder.leak_detection_threshold(v.limit(f)?),
            "tcp_keepalive" => builder.tcp_keepalive(v.limit(f)?),
            "tcp_user_timeout" => builder.tcp_user_timeout(v.limit(f)?),
            other => return Err(unapplied("pool", other)),
        };
    }
    Ok(builder)
}

/// The breaker's defaults with every `[breaker]` setting of `resolved` applied, validated.
pub(crate) fn breaker(resolved: &Resolved) -> Result<CircuitBreakerConfig> {
    let mut config = CircuitBreakerConfig::default();
    let layer: &BreakerLayer = &resolved.layer.breaker;
    for &key in BreakerLayer::KEYS {
        let Some(v) = layer.get(key) else { continue };
        let field = resolved.field(&format!("breaker.{key}"));
        let f = field.as_str();
        match key {
            "failure_threshold" => config.failure_threshold = v.small_count(f)?,
            "recovery_timeout" => config.recovery_timeout = v.duration(f)?,
            "backoff_multiplier" => config.backoff_multiplier = v.number(f)?,
            "max_recovery_timeout" => config.max_recovery_timeout = v.duration(f)?,
            "half_open_max_probes" => config.half_open_max_probes = v.small_count(f)?,
            "success_threshold" => config.success_threshold = v.small_count(f)?,
            other => return Err(unapplied("breaker", other)),
        }
    }
    config.validate()?;
    Ok(config)
}

/// The default retry policy with every `[retry]` setting of `resolved` applied, validated,
/// with a budget of its own.
pub(crate) fn retry(resolved: &Resolved) -> Result<RetryPolicy> {
    let defaults = RetryPolicy::default();
    let (mut max_attempts, mut backoff) = (defaults.max_attempts, defaults.backoff);
    let budget = &defaults.budget;
    let (mut ttl, mut min_per_sec, mut ratio) =
        (budget.ttl(), budget.min_per_sec(), budget.retry_ratio());
    let layer: &RetryLayer = &resolved.layer.retry;
    for &key in RetryLayer::KEYS {
        let Some(v) = layer.get(key) else { continue };
        let field = resolved.field(&format!("retry.{key}"));
        let f = field.as_str();
        match key {
            "max_attempts" => max_attempts = v.small_count(f)?,
            "backoff_base" => backoff.base = v.duration(f)?,
            "backoff_max" => backoff.max = v.duration(f)?,
            "budget_ttl" => ttl = v.duration(f)?,
            "budget_min_per_sec" => min_per_sec = v.small_count(f)?,
            "budget_ratio" => ratio = v.number(f)?,
            other => return Err(unapplied("retry", other)),
        }
    }
    let budget = Arc::new(RetryBudget::new(ttl, min_per_sec, ratio)?);
    let policy = RetryPolicy { max_attempts, backoff, budget };
    policy.validate()?;
    Ok(policy)
}

/// `drain_deadline`, if set.
pub(crate) fn drain_deadline(resolved: &Resolved) -> Result<Option<Duration>> {
    resolved
        .layer
        .drain_deadline
        .as_ref()
        .map(|v| v.duration(&resolved.field("drain_deadline")))
        .transpose()
}

/// The credential source `user`, `password_file` and `password_env` make, if any: a
/// password file or variable (with the user, if set), or the user alone (the URL's
/// password).
pub(crate) fn credentials(resolved: &Resolved) -> Result<Option<CredentialSource>> {
    let layer = &resolved.layer;
    let user = layer.user.clone();
    match (&layer.password_file, &layer.password_env) {
        (Some(_), Some(_)) => Err(Error::config(
            resolved.field("password_env"),
            format!(
                "both a password file ({}) and a password variable are set; keep one",
                resolved.field("password_file")
            ),
        )),
        (Some(path), None) => Ok(Some(CredentialSource::password_file(path, user))),
        (None, Some(var)) => Ok(Some(CredentialSource::password_env(var, user))),
        (None, None) => Ok(user.map(|user| {
            CredentialSource::from_fn(format!("user {user}"), move || {
                let user = Some(user.clone());
                async move { Ok(Credentials { user, password: None }) }
            })
        })),
    }
}

/// `mode`'s default policy with every `[permissions]` setting of `resolved` applied.
pub(crate) fn permissions(resolved: &Resolved, mode: ManagerMode) -> Result<PermissionPolicy> {
    let mut policy = PermissionPolicy::for_mode(mode);
    let layer = &resolved.layer.permissions;
    for (slot, value) in [
        (&mut policy.read, &layer.read),
        (&mut policy.write, &layer.write),
        (&mut policy.deny_read, &layer.deny_read),
        (&mut policy.deny_write, &layer.deny_write),
    ] {
        if let Some(tables) = value {
            slot.clone_from(tables);
        }
    }
    if let Some(rule) = &layer.ddl {
        policy.ddl = rule.0.parse().map_err(|_| {
            Error::config(
                resolved.field("permissions.ddl"),
                format!("{:?} is not a rule; use required, forbidden or allowed", rule.0),
            )
        })?;
    }
    Ok(policy)
}

/// `[redis]` for `mode`, when it names a URL: the pool is the mode's preset with the
/// table's sizes, timeouts and breaker switch.
pub(crate) fn redis(resolved: &Resolved, mode: ManagerMode) -> Result<Option<RedisSettings>> {
    let layer: &RedisLayer = &resolved.layer.redis;
    let Some(url) = &layer.url else { return Ok(None) };
    let mut builder = PoolConfiguration::builder(mode);
    let (mut command_timeout, mut read_from_replicas) = (None, false);
    for &key in RedisLayer::KEYS {
        let Some(v) = layer.get(key) else { continue };
        let field = resolved.field(&format!("redis.{key}"));
        let f = field.as_str();
        builder = match key {
            "url" => builder,
            "pool_size" => builder.pool_size(v.count(f)?),
            "max_overflow" => builder.max_overflow(v.count(f)?),
            "acquire_timeout" => builder.acquire_timeout(v.duration(f)?),
            "connect_timeout" => builder.connect_timeout(v.duration(f)?),
            "circuit_breaker" => builder.circuit_breaker(v.flag(f)?),
            "command_timeout" => {
                command_timeout = Some(v.duration(f)?);
                builder
            }
            "read_from_replicas" => {
                read_from_replicas = v.flag(f)?;
                builder
            }
            other => return Err(unapplied("redis", other)),
        };
    }
    Ok(Some(RedisSettings {
        url: Secret::new(url.0.clone()),
        url_origin: resolved.field("redis.url"),
        pool: builder.build()?,
        command_timeout,
        read_from_replicas,
    }))
}

/// `[cache]` for a mode.
pub(crate) fn cache(resolved: &Resolved) -> Result<CacheSettings> {
    let layer: &CacheLayer = &resolved.layer.cache;
    let mut settings = CacheSettings::default();
    for &key in CacheLayer::KEYS {
        let Some(v) = layer.get(key) else { continue };
        let field = resolved.field(&format!("cache.{key}"));
        let f = field.as_str();
        match key {
            "l1_capacity" => {
                settings.l1_capacity = Some(u64::try_from(v.count(f)?).unwrap_or(u64::MAX))
            }
            "l1_ttl" => settings.l1_ttl = Some(v.duration(f)?),
            "l2_ttl" => settings.l2_ttl = Some(v.duration(f)?),
            other => return Err(unapplied("cache", other)),
        }
    }
    Ok(settings)
}

/// A key declared in a table but not applied here: a bug in ucm, reported rather than
/// ignored (the tests set every key).
fn unapplied(table: &str, key: &str) -> Error {
    Error::config(format!("{table}.{key}"), "is declared but not applied; this is a bug in ucm")
}
