//! The query cache in front of a real database and a real Redis: rows cached through `QueryCache::fetch_all` stay coherent while writers change them through the manager (autocommit, transactions, the backend's own driver handle), in this process at once and in another through Redis; `cache_suite!` instantiates it per backend and database.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use ucm_kernel::{
    ConnectionManagerProtocol, ConnectionMode, Error, ManagerMode, PoolConfiguration, ProtocolExt,
    Row, Value,
};
use ucm_redis::{CacheConfig, QueryCache, RedisManager};

use crate::{Backend, Outcome, Target, unique_table};

/// Writers, each owning one row it sets to 1, 2, 3...
const WRITERS: i64 = 4;
/// Writes per writer.
const WRITES: i64 = 40;

/// `REDIS_URL`, or `None` (the test passes vacuously) when unset, a failure under `CI`.
fn redis_url() -> Option<String> {
    match std::env::var("REDIS_URL").ok().filter(|v| !v.is_empty()) {
        Some(url) => Some(url),
        None => crate::skip_unless_ci("REDIS_URL"),
    }
}

fn int(row: &Row, column: &str) -> i64 {
    match row.get(column) {
        Some(Value::Int(n)) => *n,
        other => panic!("{column} is {other:?}, not an integer"),
    }
}

/// Each row's `n` by `id`, as the rows give them.
fn by_id(rows: &[Row]) -> Vec<(i64, i64)> {
    rows.iter().map(|row| (int(row, "id"), int(row, "n"))).collect()
}

/// Writers change their rows through the manager in turn by autocommit statement,
/// transaction and the backend's driver handle, and after each acknowledged write read
/// their row through the cache: they must see their write (this process's entries are
/// stale before the write returns). Readers read all rows through the cache meanwhile:
/// a read that starts after a write returned must see it (an entry read before the
/// write, served or stored after it, would not).
/// Then a second cache (another process: its own manager and L1, the same Redis) must
/// read exactly what the database holds, and the counters must show hits, misses and
/// invalidations.
///
/// # Errors
/// A statement that fails.
pub async fn a_cache_follows_writes_through_the_manager<B: Backend>(target: &Target) -> Outcome {
    let Some(redis_url) = redis_url() else { return Ok(()) };
    let pool = PoolConfiguration::builder(ManagerMode::AsyncModern).pool_size(6).build()?;
    let manager =
        Arc::new(B::connect(target.config(ManagerMode::AsyncModern, pool.clone())).await?);
    let table = unique_table("cache");
    manager
        .execute(
            ConnectionMode::ReadWrite,
            &format!("CREATE TABLE {table} (id INT PRIMARY KEY, n INT NOT NULL)"),
            &[],
        )
        .await?;
    for id in 0..WRITERS {
        manager
            .execute(
                ConnectionMode::ReadWrite,
                &format!("INSERT INTO {table} (id, n) VALUES ({id}, 0)"),
                &[],
            )
            .await?;
    }
    let redis = RedisManager::connect(&redis_url, ManagerMode::AsyncModern).await?;
    let config = CacheConfig {
        namespace: unique_table("ucm:test:rows"),
        ..CacheConfig::for_mode(ManagerMode::AsyncModern)
    };
    let cache = QueryCache::new(config.clone(), Some(redis.clone()));
    cache.invalidate_on_writes(B::kernel(&manager));
    let one = format!("SELECT id, n FROM {table} WHERE id = {}", target.p(1));
    let all = format!("SELECT id, n FROM {table} ORDER BY id");

    let done = Arc::new(AtomicBool::new(false));
    // Each writer's last acknowledged value: a read that starts after a write returned
    // must see it (or a later one).
    let acknowledged: Arc<Vec<AtomicI64>> =
        Arc::new((0..WRITERS).map(|_| AtomicI64::new(0)).collect());
    let mut readers = Vec::new();
    for _ in 0..3 {
        let (manager, cache, all, done, acknowledged) = (
            Arc::clone(&manager),
            cache.clone(),
            all.clone(),
            Arc::clone(&done),
            Arc::clone(&acknowledged),
        );
        readers.push(tokio::spawn(async move {
            let mut reads = 0_u64;
            while !done.load(Ordering::Relaxed) {
                let before: Vec<i64> = acknowledged.iter().map(|a| a.load(Ordering::SeqCst)).collect();
                let rows = cache.fetch_all(&*manager, &all, &[]).await?;
                for (id, n) in by_id(&rows) {
                    let floor = before[usize::try_from(id).unwrap_or_default()];
                    assert!(n >= floor, "row {id} read as {n} after the write of {floor} returned: a stale entry was served");
                }
                reads += 1;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Ok::<u64, Error>(reads)
        }));
    }
    let mut writers = Vec::new();
    for id in 0..WRITERS {
        let (manager, cache, table, one, acknowledged) = (
            Arc::clone(&manager),
            cache.clone(),
            table.clone(),
            one.clone(),
            Arc::clone(&acknowledged),
        );
        let (p1, p2) = (target.p(1), target.p(2));
        let kind = target.kind;
        writers.push(tokio::spawn(async move {
            for n in 1..=WRITES {
                let update = format!("UPDATE {table} SET n = {p1} WHERE id = {p2}");
                match n % 3 {
                    0 => {
                        manager
                            .execute(
                                ConnectionMode::ReadWrite,
                                &update,
                                &[Value::Int(n), Value::Int(id)],
                            )
                            .await?;
                    }
                    1 => {
                        manager
                            .transaction(ConnectionMode::Transactional, |tx| {
                                let update = update.clone();
                                Box::pin(async move {
                                    tx.execute(&update, &[Value::Int(n), Value::Int(id)]).await?;
                                    // Read in the transaction, so a cached copy taken now
                                    // (before the COMMIT) must be dropped at the COMMIT.
                                    tx.fetch_all("SELECT 1", &[]).await?;
                                    Ok(())
                                })
                            })
                            .await?;
                    }
                    _ => {
                        let literal = format!("UPDATE {table} SET n = {n} WHERE id = {id}");
                        B::driver_execute(Arc::clone(&manager), kind, literal).await?;
                    }
                }
                acknowledged[usize::try_from(id).unwrap_or_default()].store(n, Ordering::SeqCst);
                let rows = cache.fetch_all(&*manager, &one, &[Value::Int(id)]).await?;
                assert_eq!(
                    by_id(&rows),
                    [(id, n)],
                    "writer {id} did not read its own write {n} through the cache"
                );
            }
            Ok::<(), Error>(())
        }));
    }
    for writer in writers {
        writer.await.map_err(|e| Error::other(format!("a writer panicked: {e}")))??;
    }
    done.store(true, Ordering::Relaxed);
    let mut reads = 0;
    for reader in readers {
        reads += reader.await.map_err(|e| Error::other(format!("a reader panicked: {e}")))??;
    }

    let truth = by_id(&manager.fetch_all(ConnectionMode::ReadWrite, &all, &[]).await?);
    let expected: Vec<(i64, i64)> = (0..WRITERS).map(|id| (id, WRITES)).collect();
    assert_eq!(truth, expected);
    assert_eq!(by_id(&cache.fetch_all(&*manager, &all, &[]).await?), expected);
    let stats = cache.stats();
    println!(
        "{} on {:?}: {reads} reads by 3 readers beside {} writes; {stats:?}",
        B::NAME,
        target.kind,
        WRITERS * WRITES
    );
    assert!(stats.l1_hits > 0 && stats.misses > 0, "{stats:?}");
    assert!(stats.invalidations >= (WRITERS * WRITES) as u64, "{stats:?}");
    assert_eq!(stats.redis_errors, 0, "{stats:?}");

    // Another process: its own manager and cache (empty L1), the same Redis. Redis's
    // invalidations have landed (the writers' spawned scripts run in well under the
    // time the checks above took; wait until the last is seen to be sure).
    let elsewhere = B::connect(target.config(ManagerMode::AsyncModern, pool)).await?;
    let there = QueryCache::new(config, Some(redis.clone()));
    there.invalidate_on_writes(B::kernel(&elsewhere));
    let mut seen = Vec::new();
    for _ in 0..50 {
        seen = by_id(&there.fetch_all(&elsewhere, &all, &[]).await?);
        if seen == expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(seen, expected, "another process read a stale entry from Redis");
    // A write there reaches every process's L2 through Redis: a cache with an empty L1
    // here (as after its `l1_ttl`) reads the new value once the invalidation has landed.
    elsewhere
        .execute(ConnectionMode::ReadWrite, &format!("UPDATE {table} SET n = 0 WHERE id = 0"), &[])
        .await?;
    let started = std::time::Instant::now();
    let mut reads = 0;
    loop {
        let fresh = QueryCache::new(cache.config().clone(), Some(redis.clone()));
        reads += 1;
        if by_id(&fresh.fetch_all(&*manager, &one, &[Value::Int(0)]).await?) == [(0, 0)] {
            break;
        }
        assert!(reads < 100, "another process's write never reached this process through Redis");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!(
        "another process's write seen through Redis after {:?} ({reads} reads)",
        started.elapsed()
    );
    manager.execute(ConnectionMode::ReadWrite, &format!("DROP TABLE {table}"), &[]).await?;
    Ok(())
}

/// Generates the cache test for `$backend` on `$kind`.
#[macro_export]
macro_rules! cache_suite {
    ($module:ident, $backend:ty, $kind:expr) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_cache_follows_writes_through_the_manager() -> $crate::Outcome {
                match $crate::Target::find($kind) {
                    Some(t) => {
                        $crate::cache::a_cache_follows_writes_through_the_manager::<$backend>(&t)
                            .await
                    }
                    None => Ok(()),
                }
            }
        }
    };
}
