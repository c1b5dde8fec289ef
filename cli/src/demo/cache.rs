//! The demo's cache phase (with `--redis-url` or `REDIS_URL`): tasks read the ten richest accounts through `QueryCache::fetch_all` while one task moves money through the manager; the report shows hits by level, misses and invalidations, and checks the last cached read against the database.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use ucm::{
    CacheConfig, ConnectionManagerProtocol, ConnectionMode, Manager, ManagerMode, ProtocolExt,
    QueryCache, RedisManager,
};
use ucm_kernel::backend::Backend;

use super::schema::Schema;

/// The cache phase: `tasks` readers for `seconds` beside one writer, on `url`'s database
/// through `manager` and on Redis at `redis_url`.
pub(super) async fn run<B: Backend>(
    manager: &Arc<Manager<B>>,
    schema: &Schema,
    redis_url: &str,
    tasks: usize,
    seconds: f64,
) -> anyhow::Result<()> {
    let mode = ManagerMode::McpServer;
    let redis = RedisManager::connect(redis_url, mode).await?;
    let config = CacheConfig {
        namespace: format!("ucm:demo:{}", std::process::id()),
        ..CacheConfig::for_mode(mode)
    };
    let cache = QueryCache::new(config, Some(redis.clone()));
    cache.invalidate_on_writes(manager);
    let top = schema.top_accounts();
    let statements = Arc::new(schema.statements());
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut readers = Vec::new();
    for _ in 0..tasks {
        let (manager, cache, top, stop, reads) = (
            Arc::clone(manager),
            cache.clone(),
            top.clone(),
            Arc::clone(&stop),
            Arc::clone(&reads),
        );
        readers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                cache.fetch_all(&*manager, &top, &[]).await?;
                reads.fetch_add(1, Ordering::Relaxed);
                tokio::task::yield_now().await;
            }
            Ok::<(), ucm::Error>(())
        }));
    }
    // One writer: 1 moves from account 1 to 2 and back, every 100 ms; each commit
    // invalidates the cached ranking.
    let mut writes = 0_u64;
    let deadline = started + Duration::from_secs_f64(seconds);
    while Instant::now() < deadline {
        for (from, to) in [(1_i64, 2_i64), (2, 1)] {
            let sql = Arc::clone(&statements);
            manager
                .transaction(ConnectionMode::Transactional, move |tx| {
                    let sql = Arc::clone(&sql);
                    Box::pin(async move {
                        tx.execute(&sql.debit, &[1_i64.into(), from.into()]).await?;
                        tx.execute(&sql.credit, &[1_i64.into(), to.into()]).await?;
                        Ok(())
                    })
                })
                .await?;
            writes += 1;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for reader in readers {
        reader.await??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cached = cache.fetch_all(&**manager, &top, &[]).await?;
    let fresh = manager.fetch_all(ConnectionMode::ReadWrite, &top, &[]).await?;
    let s = cache.stats();
    let reads = reads.load(Ordering::Relaxed);
    println!("\n== query cache (L1 in process, L2 in Redis at {}) ==", redis.pool().label());
    println!(
        "  {reads} reads of the ten richest accounts by {tasks} tasks in {elapsed:.1}s ({:.0}/s) beside {writes} transfers",
        reads as f64 / elapsed
    );
    println!(
        "  hits: {} in process, {} from Redis; misses (read from the database): {}; invalidations: {}; Redis errors: {}",
        s.l1_hits, s.l2_hits, s.misses, s.invalidations, s.redis_errors
    );
    let coherent = cached == fresh;
    println!("  the last cached read equals the database: {}", if coherent { "yes" } else { "NO" });
    redis.close(Duration::from_secs(5)).await?;
    if !coherent {
        bail!("the cache served rows the database no longer holds");
    }
    Ok(())
}
