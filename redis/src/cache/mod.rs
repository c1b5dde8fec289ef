//! `QueryCache`: query results cached in two levels (L1 in process, bounded with a TTL; L2 in Redis, serialised, with a TTL), L2 hits promoted to L1, one computation per key at a time, invalidated by the writes a manager runs or by hand, and Redis trouble turned into a bypass, never an error.

mod generations;
mod l2;
mod rows;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use moka::future::Cache;
use moka::notification::RemovalCause;
use serde::Serialize;
use serde::de::DeserializeOwned;
use ucm_kernel::backend::Backend;
use ucm_kernel::{CacheSettings, Error, Manager, ManagerMode, Result, WriteListener};

use self::generations::{Generations, Snapshot};
use self::l2::L2;
use crate::manager::RedisManager;

/// Sizes and lifetimes of a [`QueryCache`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    /// Entries kept in process at most (least recently and frequently used go first).
    pub l1_capacity: u64,
    /// How long an entry stays in process. It bounds how stale another process's L1 can
    /// be after a write made elsewhere (a write reaches this process's L1 at once and
    /// every process's L2 through Redis, but not the other processes' L1).
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

    /// `mode`'s sizes with what `settings` (`[cache]`, `UCM_CACHE_*`) sets.
    pub fn from_settings(mode: ManagerMode, settings: &CacheSettings) -> Self {
        let defaults = Self::for_mode(mode);
        Self {
            l1_capacity: settings.l1_capacity.unwrap_or(defaults.l1_capacity),
            l1_ttl: settings.l1_ttl.unwrap_or(defaults.l1_ttl),
            l2_ttl: settings.l2_ttl.unwrap_or(defaults.l2_ttl),
            namespace: defaults.namespace,
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
    /// Writes that invalidated tables (through a manager or by hand).
    pub invalidations: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    l1_hits: AtomicU64,
    l2_hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
    redis_errors: AtomicU64,
    invalidations: AtomicU64,
}

/// One cached value: its serialised form, and the write counts in this process of the
/// tables it was read from, when it was read (it is current while they stay the same).
#[derive(Debug)]
struct Entry {
    bytes: Vec<u8>,
    snapshot: Snapshot,
}

/// A two-level cache of query results. Values are anything serde can write as JSON (rows
/// read into the application's types, the protocol's [`Row`](ucm_kernel::Row)s through
/// [`Self::fetch_all`], counts, documents). Cloning shares the cache.
///
/// Coherence: each entry is tagged with the tables it was read from. A write to one of
/// them through a manager the cache listens to ([`Self::invalidate_on_writes`]), or
/// [`Self::invalidate_table`], makes every entry read before it stale: in this process at
/// once (before the write's caller gets its result), in Redis, for every process, as soon
/// as one script has run. An entry read while a write was under way is never stored over
/// it (each level keeps the tables' write counts and refuses an entry read under older
/// ones). Another process's L1 keeps its copy until its `l1_ttl`.
///
/// Use it for reads outside transactions: a transaction must see its own writes and the
/// database's snapshot, which a cache cannot give. The cache's own API takes a manager,
/// never a transaction, so nothing it reads comes from one.
#[derive(Clone)]
pub struct QueryCache {
    inner: Arc<Inner>,
}

struct Inner {
    l1: Cache<String, Arc<Entry>>,
    l2: Option<L2>,
    config: CacheConfig,
    counters: Arc<Counters>,
    generations: Generations,
    /// The OpenTelemetry counters reading `counters`.
    #[cfg(feature = "otel")]
    _observed: crate::otel::CacheInstruments,
}

impl std::fmt::Debug for QueryCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryCache")
            .field("config", &self.inner.config)
            .field("l2", &self.inner.l2.as_ref().map(|l2| l2.redis.pool().label().to_owned()))
            .field("stats", &self.stats())
            .finish()
    }
}

/// A table as the cache names it, the way ucm names the tables a statement writes:
/// unquoted, lower case, without its schema.
fn table_name(table: &str) -> String {
    let name = table.rsplit('.').next().unwrap_or(table);
    name.trim_matches(|c| c == '"' || c == '`').to_lowercase()
}

impl QueryCache {
    /// A cache with `config`, its L2 in `redis` (`None`: process memory only).
    pub fn new(config: CacheConfig, redis: Option<RedisManager>) -> Self {
        let counters = Arc::new(Counters::default());
        let evicted = Arc::clone(&counters);
        let l1 = Cache::builder()
            .max_capacity(config.l1_capacity)
            .time_to_live(config.l1_ttl)
            .eviction_listener(move |_key, _value, cause| {
                if cause == RemovalCause::Size {
                    evicted.evictions.fetch_add(1, Ordering::Relaxed);
                }
            })
            .build();
        let l2 = redis.map(|redis| L2 { redis, namespace: config.namespace.clone() });
        #[cfg(feature = "otel")]
        let observed = crate::otel::observe_cache(
            &config.namespace,
            Arc::downgrade(&counters),
            Counters::stats,
        );
        Self {
            inner: Arc::new(Inner {
                l1,
                l2,
                config,
                counters,
                generations: Generations::default(),
                #[cfg(feature = "otel")]
                _observed: observed,
            }),
        }
    }

    /// Makes every write through `manager` (its neutral statements and transactions, its
    /// sqlx and diesel handles, its pipelined lane) invalidate the tables it wrote here,
    /// before the write's caller gets its result (see [`WriteListener`]).
    pub fn invalidate_on_writes<B: Backend>(&self, manager: &Manager<B>) {
        manager.add_write_listener(Arc::new(self.clone()));
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
        let tables: Vec<String> = tables.iter().map(|t| table_name(t)).collect();
        self.get_or_compute_tagged(key, tables, compute).await
    }

    async fn get_or_compute_tagged<T, F, Fut>(
        &self,
        key: &str,
        tables: Vec<String>,
        compute: F,
    ) -> Result<T>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let inner = &self.inner;
        let key = format!("{}:{key}", inner.config.namespace);
        if let Some(entry) = inner.l1.get(&key).await {
            if let Some(value) = self.current::<T>(&entry) {
                inner.counters.l1_hits.fetch_add(1, Ordering::Relaxed);
                return Ok(value);
            }
            inner.l1.invalidate(&key).await;
        }
        let mut compute = Some(compute);
        let mut computed = None;
        let mut loaded_here = false;
        let loaded = inner
            .l1
            .try_get_with(
                key.clone(),
                self.load(&key, &tables, &mut compute, &mut computed, &mut loaded_here),
            )
            .await;
        let entry = match loaded {
            Ok(entry) => entry,
            // Every caller waiting on a failed computation gets its error; the last
            // holder of the shared error takes it whole.
            Err(shared) => {
                return Err(Arc::try_unwrap(shared).unwrap_or_else(|shared| {
                    Error::other(format!("the shared computation failed: {shared}"))
                }));
            }
        };
        if let Some(value) = computed {
            return Ok(value);
        }
        // Read from Redis by this caller, or another caller's load, which this one waited
        // for (counted as a hit in process).
        if let Some(value) = self.current::<T>(&entry) {
            if !loaded_here {
                inner.counters.l1_hits.fetch_add(1, Ordering::Relaxed);
            }
            return Ok(value);
        }
        // It began before a write this caller may have made: read afresh, uncached.
        inner.l1.invalidate(&key).await;
        inner.counters.misses.fetch_add(1, Ordering::Relaxed);
        match compute.take() {
            Some(compute) => compute().await,
            None => Err(Error::other(format!("the cached value for {key:?} is not of this type"))),
        }
    }

    /// The entry's value, when it is still current and of type `T`.
    fn current<T: DeserializeOwned>(&self, entry: &Entry) -> Option<T> {
        if !entry.snapshot.is_current() {
            return None;
        }
        serde_json::from_slice(&entry.bytes).ok()
    }

    /// Fills L1 for `key`: from Redis when it holds a current entry, else by computing.
    async fn load<T, F, Fut>(
        &self,
        key: &str,
        tables: &[String],
        compute: &mut Option<F>,
        computed: &mut Option<T>,
        loaded_here: &mut bool,
    ) -> Result<Arc<Entry>>
    where
        T: Serialize,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        *loaded_here = true;
        let inner = &self.inner;
        let snapshot = inner.generations.snapshot(tables);
        let l2 = inner.l2.as_ref().filter(|_| !snapshot.redis_behind());
        let mut counts = None;
        if let Some(l2) = l2 {
            match l2.get(key, tables).await {
                Ok((Some(bytes), _)) => {
                    inner.counters.l2_hits.fetch_add(1, Ordering::Relaxed);
                    return Ok(Arc::new(Entry { bytes, snapshot }));
                }
                Ok((None, now)) => counts = Some(now),
                Err(e) => self.redis_failed("read", &e),
            }
        }
        inner.counters.misses.fetch_add(1, Ordering::Relaxed);
        let Some(compute) = compute.take() else {
            return Err(Error::other("the cache's computation ran twice"));
        };
        let value = compute().await?;
        let bytes = serde_json::to_vec(&value).map_err(|e| {
            Error::other(format!("the value for {key:?} cannot be cached as JSON: {e}"))
        })?;
        let unchanged = snapshot.is_current() && !snapshot.redis_behind();
        if let (Some(l2), Some(counts), true) = (l2, counts, unchanged)
            && let Err(e) = l2.set(key, tables, &counts, &bytes, self.l2_ttl_ms()).await
        {
            self.redis_failed("write", &e);
        }
        *computed = Some(value);
        Ok(Arc::new(Entry { bytes, snapshot }))
    }

    /// Drops everything cached from `table`, here and in Redis (every process's L2; other
    /// processes' L1 keep their copies until their `l1_ttl`). Returns once Redis has it
    /// (or failed, which is counted).
    pub async fn invalidate_table(&self, table: &str) {
        let tables = [table_name(table)];
        if let Some(l2) = self.written_here(&tables) {
            self.invalidate_in_redis(&l2, &tables).await;
        }
    }

    /// Counts a write to `tables` in this process (L1 entries read before it are stale
    /// from now on); returns the L2 to tell, its invalidation then counted as in flight.
    fn written_here(&self, tables: &[String]) -> Option<L2> {
        let inner = &self.inner;
        inner.counters.invalidations.fetch_add(1, Ordering::Relaxed);
        inner.generations.written(tables, inner.l2.is_some());
        // The stale L1 entries are refused on their next hit (and replaced), or leave with
        // their time to live or for room: dropping them here would cost every write a
        // scan of the cache.
        inner.l2.clone()
    }

    async fn invalidate_in_redis(&self, l2: &L2, tables: &[String]) {
        if let Err(e) = l2.invalidate(tables, self.l2_ttl_ms()).await {
            self.redis_failed("invalidate", &e);
        }
        self.inner.generations.landed(tables);
    }

    /// Drops the entry `key`, here and in Redis.
    pub async fn invalidate(&self, key: &str) {
        let key = format!("{}:{key}", self.inner.config.namespace);
        self.inner.l1.invalidate(&key).await;
        if let Some(l2) = &self.inner.l2
            && let Err(e) = l2.delete(&key).await
        {
            self.redis_failed("invalidate", &e);
        }
    }

    /// Counts so far.
    pub fn stats(&self) -> CacheStats {
        self.inner.counters.stats()
    }

    /// The configuration.
    pub fn config(&self) -> &CacheConfig {
        &self.inner.config
    }

    fn l2_ttl_ms(&self) -> u64 {
        u64::try_from(self.inner.config.l2_ttl.as_millis()).unwrap_or(u64::MAX).max(1)
    }

    fn redis_failed(&self, what: &str, e: &Error) {
        self.inner.counters.redis_errors.fetch_add(1, Ordering::Relaxed);
        tracing::debug!("cache: Redis {what} failed, bypassed: {e}");
    }
}

impl Counters {
    fn stats(&self) -> CacheStats {
        let c = self;
        CacheStats {
            l1_hits: c.l1_hits.load(Ordering::Relaxed),
            l2_hits: c.l2_hits.load(Ordering::Relaxed),
            misses: c.misses.load(Ordering::Relaxed),
            evictions: c.evictions.load(Ordering::Relaxed),
            redis_errors: c.redis_errors.load(Ordering::Relaxed),
            invalidations: c.invalidations.load(Ordering::Relaxed),
        }
    }
}

impl WriteListener for QueryCache {
    /// Makes this process's entries of `tables` stale at once, and sends their Redis
    /// invalidation on a task of its own (the write's caller does not wait for Redis).
    fn tables_written(&self, tables: &[String]) {
        let Some(l2) = self.written_here(tables) else { return };
        let cache = self.clone();
        let owned = tables.to_vec();
        let invalidation = async move { cache.invalidate_in_redis(&l2, &owned).await };
        let runtime = match tokio::runtime::Handle::try_current() {
            Ok(runtime) => Ok(runtime),
            Err(_) => ucm_kernel::blocking::runtime().map(|r| r.handle().clone()),
        };
        match runtime {
            Ok(runtime) => drop(runtime.spawn(invalidation)),
            Err(e) => {
                self.redis_failed("invalidate", &e);
                self.inner.generations.landed(tables);
            }
        }
    }
}
