//! Sentinel failovers followed under write load (`REDIS_SENTINEL_URL`, the set `cargo xtask services` starts): a coordinated one and a frozen master, with the time to follow, the writes that failed and the acknowledged writes the new master holds printed; and reads sent to the replica, falling back to the master while it is frozen.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ucm_kernel::{ErrorKind, ManagerMode, PoolConfiguration};
use ucm_redis::{RedisManager, RedisUrl};

mod support;

/// One failover at a time: the tests share one Sentinel set.
static SENTINEL_SET: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Waits (up to 20 s) until the master has a replica online and the sentinel lists it as
/// up, so a failover has a replica to promote and reads a replica to go to (an earlier
/// test's old master may still be resynchronising).
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
            if online && sentinel_lists_a_replica_up(url).await {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the Sentinel set's master has no replica online after 20 s");
}

/// Whether the sentinel lists a replica that is up with its link to the master up (what
/// reads from replicas need; after a failover the old master is listed down for a while).
async fn sentinel_lists_a_replica_up(url: &RedisUrl) -> bool {
    let mut sentinel = sentinel_connection(url).await;
    let listed: Vec<std::collections::HashMap<String, String>> = redis::cmd("SENTINEL")
        .arg("replicas")
        .arg(url.service().unwrap())
        .query_async(&mut sentinel)
        .await
        .unwrap_or_default();
    listed.iter().any(|replica| {
        let flags = replica.get("flags").map_or("", String::as_str);
        !flags.contains("down")
            && !flags.contains("disconnected")
            && replica.get("master-link-status").is_some_and(|s| s == "ok")
    })
}

/// A pool of `size` connections whose commands have a 600 ms client deadline (a 300 ms
/// statement timeout), 500 ms to connect and `acquire` to check out: a frozen server costs
/// little.
fn short_deadlines(mode: ManagerMode, size: usize, acquire: Duration) -> PoolConfiguration {
    PoolConfiguration::builder(mode)
        .pool_size(size)
        .max_overflow(0)
        .acquire_timeout(acquire)
        .connect_timeout(Duration::from_millis(500))
        .statement_timeout(Some(Duration::from_millis(300)))
        .build()
        .unwrap()
}

/// The server's process id, from its `INFO server`.
fn process_id(info: &str) -> u32 {
    info.lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .and_then(|p| p.trim().parse::<u32>().ok())
        .expect("no process_id in INFO")
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

/// The Sentinel URL, with the set taken for this test and a replica online; `None` after a
/// skip.
async fn sentinel_set() -> Option<(RedisUrl, tokio::sync::MutexGuard<'static, ()>)> {
    let url = RedisUrl::parse(&support::url_from("REDIS_SENTINEL_URL")?).unwrap();
    let taken = SENTINEL_SET.lock().await;
    wait_for_replica(&url).await;
    Some((url, taken))
}

/// A connection straight to the first sentinel, for the commands the test sends it.
async fn sentinel_connection(url: &RedisUrl) -> redis::aio::MultiplexedConnection {
    let (host, port) = &url.hosts()[0];
    let client = redis::Client::open(format!("redis://{host}:{port}")).unwrap();
    client.get_multiplexed_async_connection().await.unwrap()
}

/// Four tasks `INCR`-ing one key every 5 ms through `redis` until stopped.
struct WriteLoad {
    started: Instant,
    stop: Arc<AtomicBool>,
    acknowledged: Arc<AtomicU64>,
    writers: Vec<tokio::task::JoinHandle<Writer>>,
}

/// What one writer saw.
#[derive(Default)]
struct Writer {
    /// When (since the load started), what kind, and the message.
    failures: Vec<(Duration, ErrorKind, String)>,
    longest: Duration,
    last_succeeded: bool,
}

/// What the whole load saw.
struct Seen {
    failures: Vec<(Duration, ErrorKind, String)>,
    longest: Duration,
    /// Every writer's last write succeeded: the load ended on a working master.
    all_ended_well: bool,
    acknowledged: u64,
}

impl WriteLoad {
    fn start(redis: &RedisManager, key: &str) -> Self {
        let started = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let acknowledged = Arc::new(AtomicU64::new(0));
        let writers = (0..4)
            .map(|_| {
                let (redis, key) = (redis.clone(), key.to_owned());
                let (stop, acknowledged) = (stop.clone(), acknowledged.clone());
                tokio::spawn(async move {
                    let mut seen = Writer::default();
                    while !stop.load(Ordering::Relaxed) {
                        let t = Instant::now();
                        let result = redis.query::<i64>(redis::cmd("INCR").arg(&key)).await;
                        seen.longest = seen.longest.max(t.elapsed());
                        seen.last_succeeded = result.is_ok();
                        match result {
                            Ok(_) => {
                                acknowledged.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => {
                                seen.failures.push((started.elapsed(), e.kind(), e.to_string()))
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    seen
                })
            })
            .collect();
        Self { started, stop, acknowledged, writers }
    }

    fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    async fn finish(self) -> Seen {
        self.stop.store(true, Ordering::Relaxed);
        let mut seen = Seen {
            failures: Vec::new(),
            longest: Duration::ZERO,
            all_ended_well: true,
            acknowledged: 0,
        };
        for writer in self.writers {
            let writer = writer.await.unwrap();
            seen.failures.extend(writer.failures);
            seen.longest = seen.longest.max(writer.longest);
            seen.all_ended_well &= writer.last_succeeded;
        }
        seen.acknowledged = self.acknowledged.load(Ordering::Relaxed);
        seen
    }
}

/// Polls the sentinel (up to 15 s) until it names a master other than `before`.
async fn promoted_after(url: &RedisUrl, before: &(String, u16)) -> (String, u16) {
    for _ in 0..300 {
        let now = master(url).await;
        if now != *before {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    before.clone()
}

/// The kinds a write may fail with while its master goes away: each says what happened.
fn is_a_clear_failure(kind: ErrorKind, text: &str) -> bool {
    matches!(
        kind,
        ErrorKind::Timeout
            | ErrorKind::ConnectionLost
            | ErrorKind::CircuitOpen
            | ErrorKind::ConnectFailed
            | ErrorKind::ReadOnlyViolation
            | ErrorKind::PoolExhausted
    ) && !text.is_empty()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_failover_is_followed_under_load() {
    let Some((url, _taken)) = sentinel_set().await else { return };
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

    let load = WriteLoad::start(&redis, &key);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let failover_at = load.elapsed();
    let _: String = redis::cmd("SENTINEL")
        .arg("FAILOVER")
        .arg(url.service().unwrap())
        .query_async(&mut sentinel_connection(&url).await)
        .await
        .unwrap();
    let after = promoted_after(&url, &before).await;
    let switched_at = load.elapsed();
    // Load goes on until the new master has taken writes for two seconds.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let seen = load.finish().await;
    let stored: i64 = redis.query(redis::cmd("GET").arg(&key)).await.unwrap();
    let role: Vec<redis::Value> = redis.query(&redis::cmd("ROLE")).await.unwrap();
    let last_failure = seen.failures.iter().map(|(at, _, _)| *at).max();
    eprintln!(
        "sentinel failover: {before:?} -> {after:?}, switch seen {:?} after SENTINEL FAILOVER; \
         {} writes failed (last {:?} after the command), {} acknowledged, {stored} stored",
        switched_at - failover_at,
        seen.failures.len(),
        last_failure.map(|at| at.saturating_sub(failover_at)),
        seen.acknowledged,
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
        stored >= i64::try_from(seen.acknowledged).unwrap(),
        "{} acknowledged but {stored} stored",
        seen.acknowledged
    );
    // Failures, if any, say what happened, and the writers ended on the new master.
    assert!(
        seen.failures.iter().all(|(_, kind, text)| is_a_clear_failure(*kind, text)),
        "{:?}",
        seen.failures.first()
    );
    assert!(seen.all_ended_well, "writes still failed at the end: {:?}", seen.failures.last());
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
    let Some((url, _taken)) = sentinel_set().await else { return };
    let pool = short_deadlines(ManagerMode::HighAvailability, 4, Duration::from_secs(2));
    let longest_allowed = pool.client_statement_deadline().unwrap() + pool.acquire_timeout();
    let redis = RedisManager::connect_with(url.clone(), pool).await.unwrap();
    let before = master(&url).await;
    let pid = {
        let client = redis::Client::open(format!("redis://{}:{}", before.0, before.1)).unwrap();
        let mut direct = client.get_multiplexed_async_connection().await.unwrap();
        let info: String = redis::cmd("INFO").arg("server").query_async(&mut direct).await.unwrap();
        process_id(&info)
    };
    let key = format!("ucm:test:frozen:{}", std::process::id());
    let () = redis.query(redis::cmd("SET").arg(&key).arg(0)).await.unwrap();

    let load = WriteLoad::start(&redis, &key);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let frozen_at = load.elapsed();
    let frozen = Frozen::freeze(pid);
    let after = promoted_after(&url, &before).await;
    let switched_at = load.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let seen = load.finish().await;
    drop(frozen);
    let stored: i64 = redis.query(redis::cmd("GET").arg(&key)).await.unwrap();
    let last_failure = seen.failures.iter().map(|(at, _, _)| *at).max();
    let mut kinds: Vec<_> = seen.failures.iter().map(|(_, kind, _)| kind.as_str()).collect();
    kinds.sort_unstable();
    kinds.dedup();
    eprintln!(
        "frozen master: {before:?} -> {after:?}, promotion seen {:?} after SIGSTOP; {} writes \
         failed ({kinds:?}), the last {:?} after SIGSTOP; longest write {:?}; {} acknowledged, \
         {stored} stored on the new master",
        switched_at - frozen_at,
        seen.failures.len(),
        last_failure.map(|at| at.saturating_sub(frozen_at)),
        seen.longest,
        seen.acknowledged,
    );
    let () = redis.query(redis::cmd("DEL").arg(&key)).await.unwrap();

    assert_ne!(after, before, "the sentinel did not promote the replica within 15 s");
    // Nothing hung on the frozen server: no write waited longer than its command deadline
    // plus one acquire.
    assert!(seen.longest <= longest_allowed, "a write took {:?}", seen.longest);
    assert!(
        seen.failures.iter().all(|(_, kind, text)| is_a_clear_failure(*kind, text)),
        "{:?}",
        seen.failures.first()
    );
    // The writers ended on the new master.
    assert!(seen.all_ended_well, "writes still failed at the end: {:?}", seen.failures.last());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_go_to_a_replica_and_fall_back_to_the_master_when_it_freezes() {
    let Some((url, _taken)) = sentinel_set().await else { return };
    let pool = short_deadlines(ManagerMode::McpServer, 2, Duration::from_secs(1));
    let deadline = pool.client_statement_deadline().unwrap();
    let longest_allowed = pool.acquire_timeout() + deadline * 2;
    let redis =
        RedisManager::connect_with(url.clone(), pool).await.unwrap().read_from_replicas().unwrap();
    let key = format!("ucm:test:replica-read:{}", std::process::id());
    let () = redis.query(redis::cmd("SET").arg(&key).arg("written")).await.unwrap();
    // The replica has it once WAIT says so.
    let synced: i64 = redis.query(redis::cmd("WAIT").arg(1).arg(2000)).await.unwrap();
    assert_eq!(synced, 1, "the replica did not acknowledge the write");

    // Reads reach a replica.
    let role: Vec<redis::Value> = redis.read(&redis::cmd("ROLE")).await.unwrap();
    assert!(matches!(role.first(), Some(redis::Value::BulkString(r)) if r == b"slave"), "{role:?}");
    let value: String = redis.read(redis::cmd("GET").arg(&key)).await.unwrap();
    assert_eq!(value, "written");
    let info: String = redis.read(redis::cmd("INFO").arg("server")).await.unwrap();
    let replica_pid = process_id(&info);

    // The replica freezes: every read still gets its answer, from the master.
    let frozen = Frozen::freeze(replica_pid);
    let started = Instant::now();
    let (mut longest, mut reads) = (Duration::ZERO, 0);
    while started.elapsed() < Duration::from_secs(3) {
        let at = Instant::now();
        let value: String = redis.read(redis::cmd("GET").arg(&key)).await.unwrap();
        assert_eq!(value, "written");
        longest = longest.max(at.elapsed());
        reads += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(frozen);
    let replicas = redis.replica_pool().unwrap().metrics().snapshot();
    eprintln!(
        "replica frozen for 3 s: {reads} reads, all answered (by the master), the longest in {longest:?}; \
         replica pool: failed commands {:?}, failed connects {}",
        replicas.operation_errors, replicas.connect_failures
    );
    assert!(longest <= longest_allowed, "a read took {longest:?}");
    let () = redis.query(redis::cmd("DEL").arg(&key)).await.unwrap();
}
