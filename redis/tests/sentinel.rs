//! A Sentinel failover followed under load (`REDIS_SENTINEL_URL`, the set `cargo xtask services` starts): writes go on against the new master, with the time it took and the writes that failed measured and printed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ucm_kernel::{ManagerMode, PoolConfiguration};
use ucm_redis::{RedisManager, RedisUrl};

/// One failover at a time: the tests share one Sentinel set.
static SENTINEL_SET: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Waits (up to 20 s) until the master has a replica online with the sentinel's blessing,
/// so a failover has a replica to promote (an earlier test's old master may still be
/// resynchronising).
async fn wait_for_replica(url: &RedisUrl) {
    for _ in 0..200 {
        let (host, port) = master(url).await;
        let client = redis::Client::open(format!("redis://{host}:{port}")).unwrap();
        if let Ok(mut direct) = client.get_multiplexed_async_connection().await {
            let info: String = redis::cmd("INFO")
                .arg("replication")
                .query_async(&mut direct)
                .await
                .unwrap_or_default();
            let online = info.contains("role:master")
                && info.lines().any(|l| l.starts_with("slave0:") && l.contains("state=online"));
            if online {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the Sentinel set's master has no replica online after 20 s");
}

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
    let _one_at_a_time = SENTINEL_SET.lock().await;
    wait_for_replica(&url).await;
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

/// Sends `SIGCONT` to a process frozen with `SIGSTOP` when dropped, whatever happens.
struct Frozen(u32);

impl Frozen {
    fn freeze(pid: u32) -> Self {
        let status =
            std::process::Command::new("kill").args(["-STOP", &pid.to_string()]).status().unwrap();
        assert!(status.success(), "could not SIGSTOP {pid}");
        Self(pid)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill").args(["-CONT", &self.0.to_string()]).status();
    }
}

/// The master freezes (`SIGSTOP`: its sockets stay open, nothing answers) under write load:
/// writes fail within the command deadline with a clear error instead of hanging, the
/// sentinel promotes the replica, ucm follows it, and the figures (time to follow, writes
/// failed, acknowledged writes the failover lost) are printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_master_is_replaced_and_followed() {
    let Some(raw) = std::env::var("REDIS_SENTINEL_URL").ok().filter(|v| !v.is_empty()) else {
        let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false");
        assert!(
            !ci,
            "REDIS_SENTINEL_URL is not set and CI is: run the tests through `cargo xtask test`"
        );
        return;
    };
    let url = RedisUrl::parse(&raw).unwrap();
    let _one_at_a_time = SENTINEL_SET.lock().await;
    wait_for_replica(&url).await;
    // 300 ms statement timeout: each command's client deadline is 600 ms.
    let pool = PoolConfiguration::builder(ManagerMode::HighAvailability)
        .pool_size(4)
        .max_overflow(0)
        .acquire_timeout(Duration::from_secs(2))
        .connect_timeout(Duration::from_millis(500))
        .statement_timeout(Some(Duration::from_millis(300)))
        .build()
        .unwrap();
    let redis = RedisManager::connect_with(url.clone(), pool).await.unwrap();
    let before = master(&url).await;
    let pid = {
        let client = redis::Client::open(format!("redis://{}:{}", before.0, before.1)).unwrap();
        let mut direct = client.get_multiplexed_async_connection().await.unwrap();
        let info: String = redis::cmd("INFO").arg("server").query_async(&mut direct).await.unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix("process_id:"))
            .and_then(|p| p.trim().parse::<u32>().ok())
            .expect("no process_id in INFO")
    };
    let key = format!("ucm:test:frozen:{}", std::process::id());
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
            let mut longest = Duration::ZERO;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                match redis.query::<i64>(redis::cmd("INCR").arg(&key)).await {
                    Ok(_) => {
                        acknowledged.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => failures.push((started.elapsed(), e.kind(), e.to_string())),
                }
                longest = longest.max(t.elapsed());
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (failures, longest)
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let frozen_at = started.elapsed();
    let frozen = Frozen::freeze(pid);
    let mut after = before.clone();
    for _ in 0..300 {
        after = master(&url).await;
        if after != before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let switched_at = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let mut failures = Vec::new();
    let mut longest = Duration::ZERO;
    for writer in writers {
        let (f, l) = writer.await.unwrap();
        failures.extend(f);
        longest = longest.max(l);
    }
    drop(frozen);
    let acknowledged = acknowledged.load(Ordering::Relaxed);
    let stored: i64 = redis.query(redis::cmd("GET").arg(&key)).await.unwrap();
    let last_failure = failures.iter().map(|(at, _, _)| *at).max();
    let mut kinds: Vec<_> = failures.iter().map(|(_, kind, _)| kind.as_str()).collect();
    kinds.sort_unstable();
    kinds.dedup();
    eprintln!(
        "frozen master: {before:?} -> {after:?}, promotion seen {:?} after SIGSTOP; {} writes failed \
         ({kinds:?}), the last {:?} after SIGSTOP; longest write {longest:?}; {acknowledged} acknowledged, \
         {stored} stored on the new master",
        switched_at - frozen_at,
        failures.len(),
        last_failure.map(|at| at.saturating_sub(frozen_at)),
    );
    let () = redis.query(redis::cmd("DEL").arg(&key)).await.unwrap();

    assert_ne!(after, before, "the sentinel did not promote the replica within 15 s");
    // No write waited much beyond its deadline plus an acquire: nothing hung on the frozen server.
    assert!(longest < Duration::from_secs(3), "a write took {longest:?}");
    // Every failure is one of the kinds that say what happened, with a message.
    assert!(
        failures.iter().all(|(_, kind, text)| matches!(
            kind.as_str(),
            "timeout"
                | "connection_lost"
                | "circuit_open"
                | "connect_failed"
                | "read_only_violation"
                | "pool_exhausted"
        ) && !text.is_empty()),
        "{:?}",
        failures.first()
    );
    // Writes go through again soon after the promotion.
    if let Some(last) = last_failure {
        assert!(
            last < switched_at + Duration::from_secs(2),
            "writes still failed {last:?} in: {:?}",
            failures.last()
        );
    }
}
