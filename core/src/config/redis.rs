//! `RedisSettings` and `CacheSettings`: the Redis beside the database and the query cache as the configuration file and the environment give them (`[redis]`, `[cache]`, `REDIS_URL`, `UCM_REDIS_*`, `UCM_CACHE_*`), for ucm-redis to build from.

use std::fmt;
use std::time::Duration;

use crate::config::{PoolConfiguration, Secret};

/// A mode's Redis: its URL (kept as a secret: it may hold a password) and its pool, from
/// [`ConfigSources::redis`](crate::ConfigSources::redis).
#[derive(Clone)]
pub struct RedisSettings {
    pub(crate) url: Secret,
    pub(crate) url_origin: String,
    pub(crate) pool: PoolConfiguration,
    pub(crate) command_timeout: Option<Duration>,
    pub(crate) read_from_replicas: bool,
}

impl RedisSettings {
    /// The URL with its password, for the Redis client only: never print it.
    pub fn expose_url(&self) -> &str {
        self.url.expose()
    }

    /// Where the URL came from (the variable, such as `REDIS_URL`, or the file's key), to
    /// name it in an error without its text.
    pub fn url_origin(&self) -> &str {
        &self.url_origin
    }

    /// The Redis pool: the mode's preset with `[redis]`'s sizes, timeouts and breaker.
    pub fn pool(&self) -> &PoolConfiguration {
        &self.pool
    }

    /// How long one command may take (`[redis] command_timeout`); `None`: the pool's
    /// client statement deadline.
    pub fn command_timeout(&self) -> Option<Duration> {
        self.command_timeout
    }

    /// Whether reads may go to a Sentinel service's replicas (`[redis]
    /// read_from_replicas`).
    pub fn read_from_replicas(&self) -> bool {
        self.read_from_replicas
    }
}

impl fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSettings")
            .field("url", &format_args!("({})", self.url_origin))
            .field("pool", &self.pool)
            .field("command_timeout", &self.command_timeout)
            .field("read_from_replicas", &self.read_from_replicas)
            .finish()
    }
}

/// A mode's query cache settings (`[cache]`, `UCM_CACHE_*`); what is unset keeps the
/// cache's per-mode default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheSettings {
    /// Entries kept in process at most.
    pub l1_capacity: Option<u64>,
    /// How long an entry stays in process.
    pub l1_ttl: Option<Duration>,
    /// How long an entry stays in Redis.
    pub l2_ttl: Option<Duration>,
}
