//! The process-wide Redis and query cache of each mode (feature `redis`): created once from the configuration file and the environment (`[redis]`, `[cache]`, `REDIS_URL`...), the cache told of every write through the mode's unified managers, both closed by `shutdown_all`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};

use tokio::sync::OnceCell;
use ucm_kernel::{ConfigSources, ManagerMode, Result};
use ucm_redis::{CacheConfig, QueryCache, RedisManager};

use crate::UnifiedManager;

/// A mode's Redis (when one is configured) and query cache, and the managers the cache
/// already listens to.
struct Side {
    redis: Option<RedisManager>,
    cache: QueryCache,
    listened: Mutex<Vec<Weak<UnifiedManager>>>,
}

impl Side {
    /// Makes the cache listen to `manager`'s writes, once per manager.
    fn listen(&self, manager: &Arc<UnifiedManager>) {
        let mut listened = self.listened.lock().unwrap_or_else(PoisonError::into_inner);
        listened.retain(|weak| weak.strong_count() > 0);
        if !listened.iter().any(|weak| weak.as_ptr() == Arc::as_ptr(manager)) {
            self.cache.invalidate_on_writes(manager);
            listened.push(Arc::downgrade(manager));
        }
    }
}

type Slot = Arc<OnceCell<Arc<Side>>>;

fn sides() -> MutexGuard<'static, HashMap<ManagerMode, Slot>> {
    static SIDES: OnceLock<Mutex<HashMap<ManagerMode, Slot>>> = OnceLock::new();
    // Never held across an await or user code.
    SIDES.get_or_init(Mutex::default).lock().unwrap_or_else(PoisonError::into_inner)
}

async fn side(mode: ManagerMode) -> Result<Arc<Side>> {
    let slot = Arc::clone(sides().entry(mode).or_default());
    let side = slot
        .get_or_try_init(|| async {
            let sources = ConfigSources::environment();
            let redis = match sources.redis(mode)? {
                Some(settings) => Some(RedisManager::from_settings(&settings).await?),
                None => None,
            };
            let config = CacheConfig::from_settings(mode, &sources.cache(mode)?);
            let cache = QueryCache::new(config, redis.clone());
            Ok::<_, ucm_kernel::Error>(Arc::new(Side { redis, cache, listened: Mutex::default() }))
        })
        .await;
    match side {
        Ok(side) => Ok(Arc::clone(side)),
        Err(e) => {
            // Not kept: the next call tries again.
            let mut sides = sides();
            if sides.get(&mode).is_some_and(|s| Arc::ptr_eq(s, &slot) && s.get().is_none()) {
                sides.remove(&mode);
            }
            Err(e)
        }
    }
}

/// The process-wide Redis for `mode`, from the configuration file and the environment
/// (`[redis]`, `[modes.<mode>.redis]`, `REDIS_URL`, `UCM_<MODE>_REDIS_URL`, `UCM_REDIS_*`);
/// `None` when no URL is configured. Created once and shared (a clone shares the pool);
/// closed by [`shutdown_all`](crate::shutdown_all).
///
/// # Errors
/// A malformed setting; Redis unreachable or refusing the password at creation (not
/// kept: the next call tries again).
pub async fn get_redis_manager(mode: ManagerMode) -> Result<Option<RedisManager>> {
    Ok(side(mode).await?.redis.clone())
}

/// The process-wide query cache for `mode`: its L2 in the mode's Redis when one is
/// configured (else process memory only), its sizes from `[cache]` and `UCM_CACHE_*` over
/// the mode's defaults, and told of every write through the mode's unified manager
/// ([`get_unified_manager`](crate::get_unified_manager), created now if need be, and any
/// created later for the mode), so what a write makes stale is dropped before the write
/// returns.
///
/// # Errors
/// As [`get_redis_manager`] and [`get_unified_manager`](crate::get_unified_manager).
pub async fn get_query_cache(mode: ManagerMode) -> Result<QueryCache> {
    let side = side(mode).await?;
    let manager = crate::get_unified_manager(mode).await?;
    side.listen(&manager);
    Ok(side.cache.clone())
}

/// Makes the mode's cache, if one was created, listen to a unified manager the registry
/// just created for that mode.
pub(crate) fn created(manager: &Arc<UnifiedManager>) {
    let slot = sides().get(&manager.config().mode()).cloned();
    if let Some(side) = slot.as_ref().and_then(|slot| slot.get()) {
        side.listen(manager);
    }
}

/// Closes every mode's Redis and forgets the caches.
pub(crate) async fn close_all() -> Result<()> {
    let slots: Vec<Slot> = sides().drain().map(|(_, slot)| slot).collect();
    let mut first_error = None;
    for slot in slots {
        if let Some(redis) = slot.get().and_then(|side| side.redis.clone())
            && let Err(e) = redis.close(ucm_kernel::ManagerConfig::DEFAULT_DRAIN_DEADLINE).await
        {
            tracing::warn!("closing a Redis at shutdown: {e}");
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}
