//! `QueryCache`: query results cached in two levels (L1 in-process, bounded with a TTL; L2 in Redis, serialised, with a TTL), L2 hits promoted to L1, one computation per key at a time, invalidation by table, and Redis trouble turned into a bypass, never an error.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use moka::future::Cache;
use moka::notification::RemovalCause;
use redis::Script;
use serde::Serialize;
use serde::de::DeserializeOwned;
use ucm_kernel::{Error, ManagerMode, Result};

use crate::manager::RedisManager;

/// Deletes every L2 key tagged with a table, and the tag set.
const INVALIDATE: &str = r"
local keys = redis.call('SMEMBERS', KEYS[1])
for _, key in ipairs(keys) do redis.call('DEL', key) end
redis.call('DEL', KEYS[1])
return #keys";

/// Sizes and lifetimes of a [`QueryCache`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    /// Entries kept in process at most (least recently and frequently used go first).
    pub l1_capacity: u64,
    /// How long an entry stays in process. It bounds how stale another process's cache
    /// can be after a write here (invalidations reach Redis and this process only).
    pub l1_ttl: Duration,
    /// How long an entry stays in Redis.
    pub l2_ttl: Duration,
    /// The prefix of every key this cache writes in Redis.
    pub namespace: String,
}

impl CacheConfig {
    /// `mode`'s sizes: interactive modes keep entries briefly, training and batch modes
    /// longer, `Admin` hardly at all (it mostly writes).
    pub fn for_mode(mode: ManagerMode) -> Self {
        let (l1_capacity, l1_secs, l2_secs) = match mode {
            ManagerMode::McpServer => (1_000, 5, 60),
            ManagerMode::MlTraining => (10_000, 60, 600),
            ManagerMode::Admin => (100, 1, 10),
            ManagerMode::SyncHeavy | ManagerMode::AsyncModern => (5_000, 10, 120),
            _ => (5_000, 5, 60),
        };
        Self {
            l1_capacity,
            l1_ttl: Duration::from_secs(l1_secs),
            l2_ttl: Duration::from_secs(l2_secs),
            namespace: format!("ucm:cache:{}", mode.as_str()),
        }
    }
}

/// What a cache has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheStats {
    /// Answers from process memory.
    pub l1_hits: u64,
    /// Answers from Redis (then kept in process too).
    pub l2_hits: u64,
    /// Computations (neither level had the entry).
    pub misses: u64,
    /// Entries L1 dropped for room.
    pub evictions: u64,
    /// Redis calls that failed and were bypassed.
    pub redis_errors: u64,
}

#[derive(Debug, Default)]
struct Counters {
    l1_hits: AtomicU64,
    l2_hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
    redis_errors: AtomicU64,
}

/// One cached value: its serialised form and the tables it was read from.
#[derive(Debug)]
struct Entry {
    bytes: Vec<u8>,
    tables: Vec<String>,
}

/// A two-level cache of query results. Values are anything serde can write as JSON (rows
/// read into the application's types, counts, documents). Cloning shares the cache.
///
/// Use it for reads outside transactions: a transaction must see its own writes and the
/// database's snapshot, which a cache cannot give.
#[derive(Clone)]
pub struct QueryCache {
    l1: Cache<String, Arc<Entry>>,
    redis: Option<RedisManager>,
    config: CacheConfig,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for QueryCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryCache")
            .field("config", &self.config)
            .field("l2", &self.redis.as_ref().map(|r| r.pool().label().to_owned()))
            .field("stats", &self.stats())
            .finish()
    }
}

impl QueryCache {
    /// A cache with `config`, its L2 in `redis` (`None`: process memory only).
    pub fn new(config: CacheConfig, redis: Option<RedisManager>) -> Self {
        let counters = Arc::new(Counters::default());
        let evicted = Arc::clone(&counters);
        let l1 = Cache::builder()
            .max_capacity(config.l1_capacity)
            .time_to_live(config.l1_ttl)
            .support_invalidation_closures()
            .eviction_listener(move |_key, _value, cause| {
                if cause == RemovalCause::Size {
                    evicted.evictions.fetch_add(1, Ordering::Relaxed);
                }
            })
            .build();
        Self { l1, redis, config, counters }
    }

    /// The value cached under `key`, else the one `compute` gives (then cached, tagged
    /// with `tables`). Concurrent callers for one key in this process wait for a single
    /// computation. Redis errors are counted and bypassed; `compute`'s error is returned
    /// and nothing is cached.
    ///
    /// # Errors
    /// `compute`'s error; a value that cannot be serialised as JSON (`Other`).
    pub async fn get_or_compute<T, F, Fut>(
        &self,
        key: &str,
        tables: &[&str],
        compute: F,
    ) -> Result<T>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let key = format!("{}:{key}", self.config.namespace);
        if let Some(entry) = self.l1.get(&key).await
            && let Ok(value) = serde_json::from_slice(&entry.bytes)
        {
            self.counters.l1_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(value);
        }
        let tables: Vec<String> = tables.iter().map(|t| (*t).to_owned()).collect();
        let mut computed = None;
        let loaded = self
            .l1
            .try_get_with(key.clone(), async {
                if let Some(bytes) = self.l2_get(&key).await {
                    self.counters.l2_hits.fetch_add(1, Ordering::Relaxed);
                    return Ok(Arc::new(Entry { bytes, tables: tables.clone() }));
                }
                self.counters.misses.fetch_add(1, Ordering::Relaxed);
                let value = compute().await?;
                let bytes = serde_json::to_vec(&value).map_err(|e| {
                    Error::other(format!("the value for {key:?} cannot be cached as JSON: {e}"))
                })?;
                self.l2_set(&key, &bytes, &tables).await;
                computed = Some(value);
                Ok::<_, Error>(Arc::new(Entry { bytes, tables: tables.clone() }))
            })
            .await;
        match loaded {
            Ok(entry) => match computed {
                Some(value) => Ok(value),
                None => serde_json::from_slice(&entry.bytes).map_err(|e| {
                    Error::other(format!("the cached value for {key:?} is not of this type: {e}"))
                }),
            },
            // Every caller waiting on a failed computation gets its error; the last
            // holder of the shared error takes it whole.
            Err(shared) => Err(Arc::try_unwrap(shared).unwrap_or_else(|shared| {
                Error::other(format!("the shared computation failed: {shared}"))
            })),
        }
    }

    /// Drops everything cached from `table`, here and in Redis. Another process's L1
    /// keeps its copy until its `l1_ttl`.
    pub async fn invalidate_table(&self, table: &str) {
        let owned = table.to_owned();
        if let Err(e) = self.l1.invalidate_entries_if(move |_, entry| entry.tables.contains(&owned))
        {
            tracing::warn!("cache: invalidating table {table} in process failed: {e}");
        }
        if let Some(redis) = &self.redis {
            let tag = self.tag(table);
            let result: Result<i64> = redis.script(&Script::new(INVALIDATE), &[&tag], &[]).await;
            if let Err(e) = result {
                self.redis_failed("invalidate", &e);
            }
        }
    }

    /// Drops the entry `key`, here and in Redis.
    pub async fn invalidate(&self, key: &str) {
        let key = format!("{}:{key}", self.config.namespace);
        self.l1.invalidate(&key).await;
        if let Some(redis) = &self.redis
            && let Err(e) = redis.query::<i64>(redis::cmd("DEL").arg(&key)).await
        {
            self.redis_failed("invalidate", &e);
        }
    }

    /// Counts so far.
    pub fn stats(&self) -> CacheStats {
        let c = &self.counters;
        CacheStats {
            l1_hits: c.l1_hits.load(Ordering::Relaxed),
            l2_hits: c.l2_hits.load(Ordering::Relaxed),
            misses: c.misses.load(Ordering::Relaxed),
            evictions: c.evictions.load(Ordering::Relaxed),
            redis_errors: c.redis_errors.load(Ordering::Relaxed),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &CacheConfig {
        &self.config
    }

    fn tag(&self, table: &str) -> String {
        format!("{}:tag:{table}", self.config.namespace)
    }

    async fn l2_get(&self, key: &str) -> Option<Vec<u8>> {
        let redis = self.redis.as_ref()?;
        match redis.query::<Option<Vec<u8>>>(redis::cmd("GET").arg(key)).await {
            Ok(found) => found,
            Err(e) => {
                self.redis_failed("read", &e);
                None
            }
        }
    }

    async fn l2_set(&self, key: &str, bytes: &[u8], tables: &[String]) {
        let Some(redis) = &self.redis else { return };
        let ttl = u64::try_from(self.config.l2_ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut pipe = redis::pipe();
        pipe.atomic().cmd("SET").arg(key).arg(bytes).arg("PX").arg(ttl).ignore();
        for table in tables {
            let tag = self.tag(table);
            // The tag set outlives the entries it names, so an invalidation finds them all.
            pipe.cmd("SADD").arg(&tag).arg(key).ignore();
            pipe.cmd("PEXPIRE").arg(&tag).arg(ttl.saturating_mul(2)).ignore();
        }
        if let Err(e) = redis.pipeline::<()>(&pipe).await {
            self.redis_failed("write", &e);
        }
    }

    fn redis_failed(&self, what: &str, e: &Error) {
        self.counters.redis_errors.fetch_add(1, Ordering::Relaxed);
        tracing::debug!("cache: Redis {what} failed, bypassed: {e}");
    }
}
