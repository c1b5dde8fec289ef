//! A Sentinel failover followed under load (`REDIS_SENTINEL_URL`, the set `cargo xtask services` starts): writes go on against the new master, with the time it took and the writes that failed measured and printed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ucm_kernel::{ManagerMode, PoolConfiguration};
use ucm_redis::{RedisManager, RedisUrl};

/// The master the sentinel names now.
async fn master(url: &RedisUrl) -> (String, u16) {
    let (host, port) = &url.hosts()[0];
    let client = redis::Client::open(format!("redis://{host}:{port}")).unwrap();
    let mut sentinel = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("SENTINEL")
        .arg("get-master-addr-by-name")
        .arg(url.service().unwrap())
        .query_async(&mut sentinel)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_failover_is_followed_under_load() {
    let Some(raw) = std::env::var("REDIS_SENTINEL_URL").ok().filter(|v| !v.is_empty()) else {
        let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false");
        assert!(
            !ci,
            "REDIS_SENTINEL_URL is not set and CI is: run the tests through `cargo xtask test`"
        );
        eprintln!("skipped: REDIS_SENTINEL_URL is not set (run `cargo xtask test`)");
        return;
    };
    let url = RedisUrl::parse(&raw).unwrap();
    let pool = PoolConfiguration::builder(ManagerMode::HighAvailability)
        .pool_size(4)
        .max_overflow(0)
        .acquire_timeout(Duration::from_secs(2))
        .connect_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let redis = RedisManager::connect_with(url.clone(), pool).await.unwrap();
    let before = master(&url).await;
    let key = format!("ucm:test:failover:{}", std::process::id());
    let () = redis.query(redis::cmd("SET").arg(&key).arg(0)).await.unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut writers = Vec::new();
    for _ in 0..4 {
        let (redis, key, stop, acknowledged) =
            (redis.clone(), key.clone(), stop.clone(), acknowledged.clone());
        writers.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match redis.query::<i64>(redis::cmd("INCR").arg(&key)).await {
                    Ok(_) => {
                        acknowledged.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => failures.push((started.elapsed(), e.to_string())),
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            failures
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (host, port) = &url.hosts()[0];
    let client = redis::Client::open(format!("redis://{host}:{port}")).unwrap();
    let mut sentinel = client.get_multiplexed_async_connection().await.unwrap();
    let failover_at = started.elapsed();
    let _: String = redis::cmd("SENTINEL")
        .arg("FAILOVER")
        .arg(url.service().unwrap())
        .query_async(&mut sentinel)
        .await
        .unwrap();
    let mut after = before.clone();
    for _ in 0..150 {
        after = master(&url).await;
        if after != before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let switched_at = started.elapsed();
    // Load goes on until the new master has taken writes for two seconds.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let mut failures = Vec::new();
    for writer in writers {
        failures.extend(writer.await.unwrap());
    }
    let acknowledged = acknowledged.load(Ordering::Relaxed);
    let stored: i64 = redis.query(redis::cmd("GET").arg(&key)).await.unwrap();
    let role: Vec<redis::Value> = redis.query(&redis::cmd("ROLE")).await.unwrap();
    let last_failure = failures.iter().map(|(at, _)| *at).max();
    eprintln!(
        "sentinel failover: {before:?} -> {after:?}, switch seen {:?} after SENTINEL FAILOVER; \
         {} writes failed (last {:?} after the command), {acknowledged} acknowledged, {stored} stored",
        switched_at - failover_at,
        failures.len(),
        last_failure.map(|at| at.saturating_sub(failover_at)),
    );
    let () = redis.query(redis::cmd("DEL").arg(&key)).await.unwrap();

    assert_ne!(after, before, "the sentinel did not switch masters within 15 s");
    assert!(
        matches!(role.first(), Some(redis::Value::BulkString(r)) if r == b"master"),
        "ucm still talks to a replica: {role:?}"
    );
    // Writes acknowledged by the old master after it stopped taking them are impossible
    // (it answers READONLY); every acknowledged write is stored.
    assert!(
        stored >= i64::try_from(acknowledged).unwrap(),
        "{acknowledged} acknowledged but {stored} stored"
    );
    // Failures, if any, are confined to the switch itself.
    if let Some(last) = last_failure {
        assert!(
            last < switched_at + Duration::from_secs(1),
            "writes still failed {last:?} in: {:?}",
            failures.last()
        );
    }
}
