//! `Layer`: one level of settings as the file and the environment give them (every field optional, unknown keys refused), and `Scalar`, a setting's text before it is read.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

/// One setting's value as given: a TOML string, number or boolean, or an environment
/// variable's text. It is read (as a count, a duration, a flag...) when applied, so every
/// source accepts the same spellings (`250ms`, `5s`, `0.2`, `off`, `true`, `1`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Scalar(pub(crate) String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Text;
        impl Visitor<'_> for Text {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, a number or a boolean")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_owned()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
        }
        deserializer.deserialize_any(Text)
    }
}

/// Replica URLs: a TOML array, or one comma-separated string (as `DATABASE_REPLICA_URLS`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub(crate) enum UrlList {
    /// `["postgres://r1/app", "postgres://r2/app"]`.
    List(Vec<String>),
    /// `"postgres://r1/app,postgres://r2/app"`: a ',' inside a URL must be written %2C.
    CommaSeparated(String),
}

impl UrlList {
    /// The URLs, trimmed, blanks skipped; and whether they came comma-separated.
    pub(crate) fn urls(&self) -> (Vec<String>, bool) {
        match self {
            Self::List(urls) => (urls.iter().map(|u| u.trim().to_owned()).collect(), false),
            Self::CommaSeparated(list) => (
                list.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect(),
                true,
            ),
        }
    }
}

/// Declares a table of scalar settings: the struct (unknown keys refused), its key names,
/// lookup by name, and the overlay of a more specific table on a general one.
macro_rules! settings_table {
    ($(#[$meta:meta])* $name:ident { $($field:ident),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Default, Clone, PartialEq, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub(crate) struct $name {
            $(pub(crate) $field: Option<Scalar>,)*
        }

        impl $name {
            /// Every key of the table, in declaration order.
            pub(crate) const KEYS: &'static [&'static str] = &[$(stringify!($field)),*];

            /// The value set for `key`, if any.
            pub(crate) fn get(&self, key: &str) -> Option<&Scalar> {
                match key {
                    $(stringify!($field) => self.$field.as_ref(),)*
                    _ => None,
                }
            }

            /// `self` with every key `over` sets replaced by `over`'s value.
            fn overlaid(&self, over: &Self) -> Self {
                Self { $($field: over.$field.clone().or_else(|| self.$field.clone()),)* }
            }
        }
    };
}

settings_table!(
    /// `[pool]`: the pool and its hygiene, deadlines and health (see `PoolConfiguration`).
    PoolLayer {
        pool_size, min_idle, max_overflow, acquire_timeout, connect_timeout,
        validation_timeout, validate_after_idle, max_lifetime, lifetime_jitter,
        overflow_idle_timeout, health_interval, max_replica_lag, sla_target,
        high_availability, circuit_breaker, application_name, time_zone, pooler,
        read_your_writes, statement_timeout, lock_timeout, idle_in_transaction_timeout,
        leak_detection_threshold, tcp_keepalive, tcp_user_timeout,
    }
);

settings_table!(
    /// `[breaker]`: the circuit breaker's thresholds (see `CircuitBreakerConfig`).
    BreakerLayer {
        failure_threshold, recovery_timeout, backoff_multiplier, max_recovery_timeout,
        half_open_max_probes, success_threshold,
    }
);

settings_table!(
    /// `[retry]`: attempts, backoff and the retry budget (see `RetryPolicy`).
    RetryLayer { max_attempts, backoff_base, backoff_max, budget_ttl, budget_min_per_sec, budget_ratio }
);

settings_table!(
    /// `[redis]`: the Redis beside the database (ucm-redis): its URL (`redis://`,
    /// `rediss://`, `redis+sentinel://`) and its pool.
    RedisLayer {
        url, pool_size, max_overflow, acquire_timeout, connect_timeout, command_timeout,
        circuit_breaker, read_from_replicas,
    }
);

settings_table!(
    /// `[cache]`: the query cache's sizes and lifetimes (ucm-redis's `CacheConfig`).
    CacheLayer { l1_capacity, l1_ttl, l2_ttl }
);

/// `[permissions]`: what the mode's role must and must not be able to do (see
/// `PermissionPolicy`).
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PermissionsLayer {
    pub(crate) read: Option<Vec<String>>,
    pub(crate) write: Option<Vec<String>>,
    pub(crate) deny_read: Option<Vec<String>>,
    pub(crate) deny_write: Option<Vec<String>>,
    pub(crate) ddl: Option<Scalar>,
}

impl PermissionsLayer {
    /// Every key of the table.
    pub(crate) const KEYS: &'static [&'static str] =
        &["read", "write", "deny_read", "deny_write", "ddl"];

    /// Whether `key` is set.
    pub(crate) fn is_set(&self, key: &str) -> bool {
        match key {
            "read" => self.read.is_some(),
            "write" => self.write.is_some(),
            "deny_read" => self.deny_read.is_some(),
            "deny_write" => self.deny_write.is_some(),
            "ddl" => self.ddl.is_some(),
            _ => false,
        }
    }

    fn overlaid(&self, over: &Self) -> Self {
        Self {
            read: over.read.clone().or_else(|| self.read.clone()),
            write: over.write.clone().or_else(|| self.write.clone()),
            deny_read: over.deny_read.clone().or_else(|| self.deny_read.clone()),
            deny_write: over.deny_write.clone().or_else(|| self.deny_write.clone()),
            ddl: over.ddl.clone().or_else(|| self.ddl.clone()),
        }
    }
}

/// One level of settings: the file's top level, or one `[modes.<mode>]` section (which may
/// not hold `modes` itself).
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Layer {
    pub(crate) primary: Option<String>,
    pub(crate) replicas: Option<UrlList>,
    /// How long `close()` waits for checked-out connections.
    pub(crate) drain_deadline: Option<Scalar>,
    /// The role new connections log in as, instead of the URL's.
    pub(crate) user: Option<String>,
    /// A file whose content (trimmed) is the password, read again for each new connection.
    pub(crate) password_file: Option<String>,
    /// An environment variable holding the password, read again for each new connection.
    pub(crate) password_env: Option<String>,
    #[serde(default)]
    pub(crate) pool: PoolLayer,
    #[serde(default)]
    pub(crate) breaker: BreakerLayer,
    #[serde(default)]
    pub(crate) retry: RetryLayer,
    #[serde(default)]
    pub(crate) permissions: PermissionsLayer,
    #[serde(default)]
    pub(crate) redis: RedisLayer,
    #[serde(default)]
    pub(crate) cache: CacheLayer,
    #[serde(default)]
    pub(crate) modes: BTreeMap<String, Layer>,
}

impl Layer {
    /// `self` with every setting `over` (a mode's section) makes replaced by it.
    pub(crate) fn overlaid(&self, over: &Self) -> Self {
        Self {
            primary: over.primary.clone().or_else(|| self.primary.clone()),
            replicas: over.replicas.clone().or_else(|| self.replicas.clone()),
            drain_deadline: over.drain_deadline.clone().or_else(|| self.drain_deadline.clone()),
            user: over.user.clone().or_else(|| self.user.clone()),
            password_file: over.password_file.clone().or_else(|| self.password_file.clone()),
            password_env: over.password_env.clone().or_else(|| self.password_env.clone()),
            pool: self.pool.overlaid(&over.pool),
            breaker: self.breaker.overlaid(&over.breaker),
            retry: self.retry.overlaid(&over.retry),
            permissions: self.permissions.overlaid(&over.permissions),
            redis: self.redis.overlaid(&over.redis),
            cache: self.cache.overlaid(&over.cache),
            modes: BTreeMap::new(),
        }
    }
}
