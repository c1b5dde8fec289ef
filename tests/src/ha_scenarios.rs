//! The high-availability scenarios, run against the real PostgreSQL primary and streaming replica of `cargo xtask services --ha`: routing, a write through ReadOnly, a lagging replica, a replica stopped under load, a primary stopped then a promotion followed.
//!
//! They stop, pause and promote real servers, so they take [`HaCluster::lock`] and begin
//! with [`HaCluster::ensure_pair`], which repairs whatever the previous scenario left.
//! Each prints the figures it measured (`ha figure: ...`); run with `--nocapture` to see them.

// Each scenario holds `HaCluster::lock` (a std mutex) across awaits on purpose: every
// `#[tokio::test]` has its own runtime on its own thread, so a test waiting for the lock
// blocks only itself, and the lock serialises the scenarios that change the shared pair.
#![allow(clippy::await_holding_lock)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ucm_kernel::{
    ConnectionManagerProtocol, ConnectionMode, EndpointRole, EndpointState, ErrorKind,
    ManagerConfig, ManagerMode, PoolConfiguration, Value,
};

use crate::Backend;
use crate::ha::{HaCluster, Node};

/// A HighAvailability manager over `primary` and `replica` with a fast health loop (every
/// 200 ms) and a 1 s lag bound, so that the scenarios run in seconds.
async fn manager<B: Backend>(primary: &Node, replica: &Node, app: &str) -> B::Manager {
    manager_with::<B>(primary, replica, app, |pool| pool).await
}

/// [`manager`] with further pool settings.
async fn manager_with<B: Backend>(
    primary: &Node,
    replica: &Node,
    app: &str,
    tune: impl FnOnce(ucm_kernel::PoolConfigurationBuilder) -> ucm_kernel::PoolConfigurationBuilder,
) -> B::Manager {
    let pool = PoolConfiguration::builder(ManagerMode::HighAvailability)
        .pool_size(4)
        .max_overflow(4)
        .acquire_timeout(Duration::from_secs(2))
        .connect_timeout(Duration::from_secs(2))
        .health_interval(Duration::from_millis(200))
        .max_replica_lag(Duration::from_secs(1))
        .application_name(app);
    let pool = tune(pool).build().unwrap();
    let config = ManagerConfig::builder(ManagerMode::HighAvailability)
        .primary(&primary.url)
        .replica(&replica.url)
        .pool(pool)
        .build()
        .unwrap();
    B::connect(config)
        .await
        .unwrap_or_else(|e| panic!("{}: connecting to the HA pair: {e}", B::NAME))
}

/// Whether the read landed on a standby: `pg_is_in_recovery()` through the connection.
async fn read_lands_on_standby<M: ConnectionManagerProtocol>(m: &M) -> ucm_kernel::Result<bool> {
    let rows =
        m.fetch_all(ConnectionMode::ReadOnly, "SELECT pg_is_in_recovery() AS standby", &[]).await?;
    rows[0].try_get("standby")
}

/// Polls `check` every 50 ms until it holds or `limit` passes; returns how long it took.
/// On failure the message carries the manager's view of its endpoints.
async fn wait_for<M, F, Fut>(m: &M, what: &str, limit: Duration, mut check: F) -> Duration
where
    M: ConnectionManagerProtocol,
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        if started.elapsed() >= limit {
            let endpoints: Vec<String> = m
                .connection_info()
                .endpoints
                .iter()
                .map(|e| {
                    format!(
                        "{} {} {} ({:?}, lag {:?}, breaker {:?})",
                        e.role.as_str(),
                        e.label,
                        e.state,
                        e.state_reason,
                        e.lag,
                        e.breaker.as_ref().map(|b| b.state)
                    )
                })
                .collect();
            panic!("{what}: not within {limit:?}; endpoints: {endpoints:#?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    started.elapsed()
}

/// The replica's state in the manager's cached info.
fn replica_state<M: ConnectionManagerProtocol>(m: &M) -> EndpointState {
    let info = m.connection_info();
    info.endpoints.iter().find(|e| e.role == EndpointRole::Replica).map(|e| e.state).unwrap()
}

/// Reads land on the standby and writes on the primary; a write through `ReadOnly` fails
/// with a read-only violation that says what to do; the health report shows both roles.
pub async fn reads_go_to_the_replica_and_writes_to_the_primary<B: Backend>(cluster: &HaCluster) {
    let _serial = HaCluster::lock();
    let (primary, replica) = cluster.ensure_pair();
    let m = manager::<B>(&primary, &replica, "ucm_t_ha_routing").await;
    for _ in 0..4 {
        assert!(read_lands_on_standby(&m).await.unwrap(), "a read went to the primary");
    }
    let rows = m
        .fetch_all(ConnectionMode::ReadWrite, "SELECT pg_is_in_recovery() AS standby", &[])
        .await
        .unwrap();
    assert_eq!(rows[0].get("standby"), Some(&Value::Bool(false)), "a write went to the standby");
    let err = m
        .execute(ConnectionMode::ReadOnly, "CREATE TABLE ucm_ha_must_not_exist (id INT)", &[])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ReadOnlyViolation, "{err}");
    assert!(err.to_string().contains("ReadWrite"), "the error says what to do: {err}");
    let report = m.health_check().await;
    assert_eq!(report.status, ucm_kernel::HealthStatus::Healthy, "{report:?}");
    let standby = report.components.iter().find(|c| c.role == EndpointRole::Replica).unwrap();
    assert_eq!(standby.in_recovery, Some(true));
    assert!(standby.lag.is_some(), "{standby:?}");
    m.close().await.unwrap();
}

/// A replica whose replay is paused while the primary writes falls behind the lag bound:
/// it is banned and reads go to the primary; resumed, it catches up and is let back.
pub async fn a_lagging_replica_is_skipped<B: Backend>(cluster: &HaCluster) {
    let _serial = HaCluster::lock();
    let (primary, replica) = cluster.ensure_pair();
    let m = manager::<B>(&primary, &replica, "ucm_t_ha_lag").await;
    assert!(read_lands_on_standby(&m).await.unwrap());
    cluster.psql(&replica, "SELECT pg_wal_replay_pause()");
    // Lag is measured from the last replayed commit, so let time pass before the write
    // that the replica will not replay.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let table = crate::unique_table("ha_lag");
    m.execute(ConnectionMode::ReadWrite, &format!("CREATE TABLE {table} (id INT)"), &[])
        .await
        .unwrap();
    let banned = wait_for(&m, "the lagging replica is banned", Duration::from_secs(15), || async {
        replica_state(&m) == EndpointState::Banned
    })
    .await;
    eprintln!(
        "ha figure ({}): lagging replica banned {banned:?} after the unreplayed write",
        B::NAME
    );
    for _ in 0..10 {
        assert!(!read_lands_on_standby(&m).await.unwrap(), "a read went to the lagging replica");
    }
    cluster.psql(&replica, "SELECT pg_wal_replay_resume()");
    wait_for(&m, "the caught-up replica serves reads again", Duration::from_secs(15), || async {
        replica_state(&m) == EndpointState::Healthy
            && read_lands_on_standby(&m).await.unwrap_or(false)
    })
    .await;
    m.execute(ConnectionMode::ReadWrite, &format!("DROP TABLE {table}"), &[]).await.unwrap();
    m.close().await.unwrap();
}

/// Readers run while the replica is stopped: no read fails (they move to the primary),
/// the replica is marked down, and after it is started again it is let back. A restarted
/// standby reports lag until its WAL receiver streams again (it cannot vouch for its
/// freshness before), so "let back" takes seconds here, not the two probes alone.
pub async fn stopping_the_replica_loses_no_read<B: Backend>(cluster: &HaCluster) {
    let _serial = HaCluster::lock();
    let (primary, replica) = cluster.ensure_pair();
    // Room for every reader on the replica (8 + 4 connections for 8 readers): a full
    // replica passes reads to the primary at once, which is not what this scenario counts.
    let m = Arc::new(
        manager_with::<B>(&primary, &replica, "ucm_t_ha_replica_stop", |pool| {
            pool.pool_size(8).max_overflow(4)
        })
        .await,
    );
    let stop = Arc::new(AtomicBool::new(false));
    let (reads, failures) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    // Nanoseconds after `origin` of the first read the primary served, plus one.
    let origin = Instant::now();
    let first_on_primary = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    for _ in 0..8 {
        let (m, stop, reads, failures, first) =
            (m.clone(), stop.clone(), reads.clone(), failures.clone(), first_on_primary.clone());
        readers.push(tokio::spawn(async move {
            let mut errors = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match read_lands_on_standby(&*m).await {
                    Ok(standby) => {
                        reads.fetch_add(1, Ordering::Relaxed);
                        if !standby {
                            let at = u64::try_from(origin.elapsed().as_nanos()).unwrap() + 1;
                            let _ =
                                first.compare_exchange(0, at, Ordering::Relaxed, Ordering::Relaxed);
                        }
                    }
                    Err(e) => {
                        failures.fetch_add(1, Ordering::Relaxed);
                        errors.push(e.to_string());
                    }
                }
            }
            errors
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        first_on_primary.load(Ordering::Relaxed),
        0,
        "reads reached the primary before the stop"
    );
    let stopped_at = origin.elapsed();
    cluster.stop(&replica, "fast");
    let down =
        wait_for(&*m, "the stopped replica is marked down", Duration::from_secs(10), || async {
            replica_state(&*m) == EndpointState::Down
        })
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let first = first_on_primary.load(Ordering::Relaxed);
    assert_ne!(first, 0, "no read was served by the primary after the replica stopped");
    let moved_after = Duration::from_nanos(first - 1).saturating_sub(stopped_at);
    cluster.start(&replica);
    let back = wait_for(
        &*m,
        "the restarted replica serves reads again",
        Duration::from_secs(20),
        || async { replica_state(&*m) == EndpointState::Healthy },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    let mut errors = Vec::new();
    for reader in readers {
        errors.extend(reader.await.unwrap());
    }
    let total = reads.load(Ordering::Relaxed);
    eprintln!(
        "ha figure ({}): replica stopped under 8 readers: first read served by the primary {moved_after:?} \
         after the stop (marked down within {down:?}); {total} reads, {} lost; let back {back:?} after its restart",
        B::NAME,
        failures.load(Ordering::Relaxed)
    );
    assert!(errors.is_empty(), "reads lost: {errors:?}");
    assert!(read_lands_on_standby(&*m).await.unwrap(), "reads did not return to the replica");
    let info = m.connection_info();
    assert!(
        info.endpoints.iter().any(|e| e.role == EndpointRole::Replica && e.bans >= 1),
        "{info:?}"
    );
    m.close().await.unwrap();
}

/// The primary stops: writes fail, then fail fast with `CircuitOpen` once the breaker has
/// seen enough; the replica is promoted (by the test, as an operator would) and the
/// manager follows: writes succeed on the new primary without a restart.
pub async fn the_manager_follows_a_promotion<B: Backend>(cluster: &HaCluster) {
    let _serial = HaCluster::lock();
    let (primary, replica) = cluster.ensure_pair();
    let m = manager::<B>(&primary, &replica, "ucm_t_ha_failover").await;
    let table = crate::unique_table("ha_failover");
    m.execute(
        ConnectionMode::ReadWrite,
        &format!("CREATE TABLE {table} (id INT PRIMARY KEY)"),
        &[],
    )
    .await
    .unwrap();
    m.health_check().await; // The replica is seen as a standby before anything happens.
    cluster.stop(&primary, "fast");
    let insert = format!("INSERT INTO {table} (id) VALUES ($1)");
    let mut kinds = Vec::new();
    let started = Instant::now();
    let mut open_latency = Vec::new();
    for id in 0..200 {
        let attempt = Instant::now();
        let err = m.execute(ConnectionMode::ReadWrite, &insert, &[id.into()]).await.unwrap_err();
        if err.kind() == ErrorKind::CircuitOpen {
            open_latency.push(attempt.elapsed());
            if open_latency.len() == 20 {
                break;
            }
        } else {
            assert!(
                open_latency.is_empty(),
                "the breaker closed again while the primary is down: {err}"
            );
            kinds.push(err.kind());
        }
    }
    assert_eq!(open_latency.len(), 20, "the breaker never opened; errors: {kinds:?}");
    // A write sent on a connection the stop had just terminated may have reached the server
    // before it went: its outcome is unknown (`AmbiguousCommit`), never a plain failure.
    assert!(
        kinds.iter().all(|k| matches!(
            k,
            ErrorKind::ConnectFailed | ErrorKind::ConnectionLost | ErrorKind::AmbiguousCommit
        )),
        "{kinds:?}"
    );
    open_latency.sort();
    eprintln!(
        "ha figure ({}): primary stopped: {} writes failed before the breaker opened ({:?}); \
         then circuit-open writes took p50 {:?}, max {:?}",
        B::NAME,
        kinds.len(),
        started.elapsed() - open_latency.iter().sum::<Duration>(),
        open_latency[open_latency.len() / 2],
        open_latency[open_latency.len() - 1]
    );
    assert_eq!(m.connection_info().failovers, 0, "no failover without a promotion");

    let promoted_at = Instant::now();
    cluster.promote(&replica);
    let promote_took = promoted_at.elapsed();
    let mut id = 1000;
    let first_write =
        wait_for(&m, "a write succeeds on the promoted replica", Duration::from_secs(30), || {
            id += 1;
            let insert = &insert;
            let m = &m;
            async move { m.execute(ConnectionMode::ReadWrite, insert, &[id.into()]).await.is_ok() }
        })
        .await;
    eprintln!(
        "ha figure ({}): promotion followed: first successful write {:?} after `pg_ctl promote` started \
         (the promotion itself took {promote_took:?})",
        B::NAME,
        promoted_at.elapsed().min(first_write + promote_took)
    );
    let info = m.connection_info();
    assert_eq!(info.failovers, 1, "{info:?}");
    assert!(info.primary().unwrap().label.contains(&replica.port.to_string()), "{info:?}");
    let rows = m
        .fetch_all(ConnectionMode::ReadWrite, "SELECT pg_is_in_recovery() AS standby", &[])
        .await
        .unwrap();
    assert_eq!(rows[0].get("standby"), Some(&Value::Bool(false)));
    m.close().await.unwrap();
}

/// A manager built on a runtime that is then dropped (a test's, a library's short-lived
/// one) keeps its health loop: with no caller traffic at all, it sees the primary go and
/// follows the promotion, and writes then go to the new primary.
pub async fn a_manager_follows_a_promotion_after_its_runtime_is_gone<B: Backend>(
    cluster: &HaCluster,
) {
    let _serial = HaCluster::lock();
    let (primary, replica) = cluster.ensure_pair();
    let m = {
        let (primary, replica) = (primary.clone(), replica.clone());
        std::thread::spawn(move || {
            let runtime =
                tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let m = runtime.block_on(async {
                let m = manager::<B>(&primary, &replica, "ucm_t_ha_orphan").await;
                m.health_check().await;
                m
            });
            drop(runtime); // The manager's first runtime is gone.
            m
        })
        .join()
        .unwrap()
    };
    cluster.stop(&primary, "fast");
    let promoted_at = Instant::now();
    cluster.promote(&replica);
    while m.connection_info().failovers == 0 {
        assert!(
            promoted_at.elapsed() < Duration::from_secs(30),
            "the health loop did not follow the promotion after its runtime was dropped: {:?}",
            m.connection_info()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "ha figure ({}): promotion followed by a manager whose runtime was dropped, {:?} after \
         `pg_ctl promote` started, with no caller traffic",
        B::NAME,
        promoted_at.elapsed()
    );
    wait_for(&m, "a write on the promoted replica", Duration::from_secs(10), || {
        let m = &m;
        async move {
            m.fetch_all(ConnectionMode::ReadWrite, "SELECT pg_is_in_recovery() AS standby", &[])
                .await
                .is_ok_and(|rows| rows[0].get("standby") == Some(&Value::Bool(false)))
        }
    })
    .await;
    m.close().await.unwrap();
}

/// The primary freezes (SIGSTOP of all its processes: sockets open, nothing answers), then
/// the standby is promoted: writes resume on it within 3 s of the promotion, no write call
/// waits past the mode's deadlines (acquire, then the client's statement deadline), and
/// every acknowledged write is on the new primary.
pub async fn a_frozen_primary_is_followed_after_a_promotion<B: Backend>(cluster: &HaCluster) {
    let _serial = HaCluster::lock();
    let (primary, replica) = cluster.ensure_pair();
    let m = Arc::new(
        manager_with::<B>(&primary, &replica, "ucm_t_ha_frozen", |pool| {
            pool.statement_timeout(Some(Duration::from_secs(2)))
        })
        .await,
    );
    let pool = m.connection_info().pool;
    let deadline = pool.acquire_timeout()
        + pool.client_statement_deadline().unwrap()
        + Duration::from_millis(500);
    let table = crate::unique_table("ha_frozen");
    m.execute(
        ConnectionMode::ReadWrite,
        &format!("CREATE TABLE {table} (id INT8 PRIMARY KEY)"),
        &[],
    )
    .await
    .unwrap();
    m.health_check().await;
    cluster.wait_caught_up(&primary, &replica);

    let frozen = cluster.freeze(&primary);
    // Writes arrive as requests do, one every 25 ms whatever became of the earlier ones,
    // each without a caller-side timeout: ucm's own deadlines must bound every call.
    let stop = Arc::new(AtomicBool::new(false));
    let arrivals = {
        let (m, stop) = (Arc::clone(&m), Arc::clone(&stop));
        let insert = format!("INSERT INTO {table} (id) VALUES ($1)");
        tokio::spawn(async move {
            let mut calls = Vec::new();
            let mut id = 0_i64;
            while !stop.load(Ordering::Relaxed) {
                id += 1;
                let (m, insert) = (Arc::clone(&m), insert.clone());
                calls.push(tokio::spawn(async move {
                    let started = Instant::now();
                    let result = m.execute(ConnectionMode::ReadWrite, &insert, &[id.into()]).await;
                    (id, result.is_ok(), Instant::now(), started.elapsed())
                }));
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            let mut outcomes = Vec::new();
            for call in calls {
                outcomes.push(call.await.unwrap());
            }
            outcomes
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let promoted_at = Instant::now();
    cluster.promote(&replica);
    let promote_took = promoted_at.elapsed();
    // Writes until 5 s after the promotion, then the verdict.
    tokio::time::sleep(Duration::from_secs(5).saturating_sub(promote_took)).await;
    stop.store(true, Ordering::Relaxed);
    let outcomes = arrivals.await.unwrap();
    let slowest = outcomes.iter().map(|o| o.3).max().unwrap_or_default();
    let acked: Vec<(i64, Instant)> = outcomes.iter().filter(|o| o.1).map(|o| (o.0, o.2)).collect();
    let info = m.connection_info();
    let first = acked.iter().map(|(_, at)| *at).min();
    eprintln!(
        "ha figure ({}): frozen primary, standby promoted: first acknowledged write {:?} after \
         `pg_ctl promote` started (the promotion took {promote_took:?}); {} of {} writes \
         acknowledged; slowest write call {slowest:?} (deadline {deadline:?}); failovers {}",
        B::NAME,
        first.map(|at| at.saturating_duration_since(promoted_at)),
        acked.len(),
        outcomes.len(),
        info.failovers
    );
    let first = first.unwrap_or_else(|| panic!("no write succeeded after the promotion: {info:?}"));
    assert!(
        first.saturating_duration_since(promoted_at) <= Duration::from_secs(3) + promote_took,
        "writes resumed {:?} after the promotion started",
        first.saturating_duration_since(promoted_at)
    );
    assert!(slowest <= deadline, "a write call took {slowest:?}, past the mode's {deadline:?}");
    assert_eq!(info.failovers, 1, "{info:?}");
    // Every acknowledged write is on the new primary.
    let rows = m
        .fetch_all(ConnectionMode::ReadWrite, &format!("SELECT count(*) AS n FROM {table}"), &[])
        .await
        .unwrap();
    let stored: i64 = rows[0].try_get("n").unwrap();
    assert!(stored >= acked.len() as i64, "{} acknowledged, {stored} stored", acked.len());
    for (id, _) in &acked {
        let rows = m
            .fetch_all(
                ConnectionMode::ReadWrite,
                &format!("SELECT 1 AS one FROM {table} WHERE id = $1"),
                &[(*id).into()],
            )
            .await
            .unwrap();
        assert_eq!(rows.len(), 1, "acknowledged write {id} is missing");
    }
    // The old primary must not come back as a second primary: stop it as it thaws.
    drop(frozen);
    cluster.stop(&primary, "immediate");
    m.close().await.unwrap();
}

/// The standby is promoted while the primary still runs (split brain): ucm bans the clone,
/// and a blip of the real primary (a fast restart) does not move the writes to it.
pub async fn a_split_brain_clone_is_never_followed<B: Backend>(cluster: &HaCluster) {
    let _serial = HaCluster::lock();
    let (primary, replica) = cluster.ensure_pair();
    let m = manager::<B>(&primary, &replica, "ucm_t_ha_split").await;
    m.health_check().await;
    cluster.promote(&replica);
    wait_for(&m, "the promoted clone is banned", Duration::from_secs(10), || {
        let banned = replica_state(&m) == EndpointState::Banned;
        async move { banned }
    })
    .await;
    cluster.stop(&primary, "fast");
    // Several probe rounds (every 200 ms) see the primary gone and the clone a primary.
    tokio::time::sleep(Duration::from_millis(800)).await;
    cluster.start(&primary);
    wait_for(&m, "a write on the restarted primary", Duration::from_secs(15), || {
        let m = &m;
        async move { m.execute(ConnectionMode::ReadWrite, "SELECT 1", &[]).await.is_ok() }
    })
    .await;
    let rows = m
        .fetch_all(ConnectionMode::ReadWrite, "SELECT inet_server_port() AS port", &[])
        .await
        .unwrap();
    assert_eq!(rows[0].try_get::<i32>("port").unwrap(), i32::from(primary.port));
    let info = m.connection_info();
    assert_eq!(info.failovers, 0, "the split-brain clone was followed: {info:?}");
    m.close().await.unwrap();
}

/// The standby's WAL receiver stops (its `primary_conninfo` emptied) while the primary
/// takes writes: the standby reports no lag, yet serves ever staler reads; ucm sees its
/// replay stand still behind the primary and bans it within two probe rounds, then lets
/// it back once it streams again.
pub async fn a_replica_whose_wal_receiver_stopped_is_banned<B: Backend>(cluster: &HaCluster) {
    let _serial = HaCluster::lock();
    let (primary, replica) = cluster.ensure_pair();
    let m = manager::<B>(&primary, &replica, "ucm_t_ha_receiver").await;
    let table = crate::unique_table("ha_receiver");
    m.execute(ConnectionMode::ReadWrite, &format!("CREATE TABLE {table} (id INT8)"), &[])
        .await
        .unwrap();
    cluster.wait_caught_up(&primary, &replica);
    m.health_check().await;
    assert_eq!(replica_state(&m), EndpointState::Healthy);
    let conninfo = cluster.psql(&replica, "SHOW primary_conninfo");
    cluster.psql(&replica, "ALTER SYSTEM SET primary_conninfo = ''");
    cluster.psql(&replica, "SELECT pg_reload_conf()");
    let stopped = Instant::now();
    while cluster.psql(&replica, "SELECT count(*) FROM pg_stat_wal_receiver") != "0" {
        assert!(stopped.elapsed() < Duration::from_secs(10), "the WAL receiver did not stop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let insert = format!("INSERT INTO {table} (id) VALUES (1)");
    let started = Instant::now();
    let took = wait_for(&m, "the stalled replica is banned", Duration::from_secs(5), || {
        let (m, insert) = (&m, &insert);
        async move {
            m.execute(ConnectionMode::ReadWrite, insert, &[]).await.unwrap();
            replica_state(m) == EndpointState::Banned
        }
    })
    .await;
    let reason = m.connection_info().endpoints[1].state_reason.clone().unwrap_or_default();
    assert!(reason.contains("stalled"), "{reason}");
    eprintln!(
        "ha figure ({}): WAL receiver stopped: replica banned {took:?} after writes resumed \
         (probe rounds every 200 ms); reason: {reason}",
        B::NAME
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    let quoted = conninfo.replace('\'', "''");
    cluster.psql(&replica, &format!("ALTER SYSTEM SET primary_conninfo = '{quoted}'"));
    cluster.psql(&replica, "SELECT pg_reload_conf()");
    wait_for(&m, "the replica streams and serves reads again", Duration::from_secs(20), || {
        let healthy = replica_state(&m) == EndpointState::Healthy;
        async move { healthy }
    })
    .await;
    m.execute(ConnectionMode::ReadWrite, &format!("DROP TABLE {table}"), &[]).await.unwrap();
    m.close().await.unwrap();
}

/// The replica is blackholed (a fault proxy forwards nothing and keeps the sockets open, as
/// behind a dropped route): `health_check()` still returns within two probe deadlines (a
/// round in flight, then its own), reporting the replica down and the primary healthy.
pub async fn health_check_with_a_blackholed_replica_is_bounded<B: Backend>(cluster: &HaCluster) {
    use crate::fault_proxy::{FaultProxy, url_target};
    let _serial = HaCluster::lock();
    let (primary, replica) = cluster.ensure_pair();
    let proxy = FaultProxy::start(url_target(&replica.url).await.unwrap()).await.unwrap();
    let through = Node { url: proxy.url_through(&replica.url), ..replica.clone() };
    let m = manager::<B>(&primary, &through, "ucm_t_ha_blackhole").await;
    let deadline = m.connection_info().pool.validation_timeout().max(Duration::from_secs(1));
    assert_eq!(m.health_check().await.status, ucm_kernel::HealthStatus::Healthy);
    proxy.blackhole(true);
    let mut slowest = Duration::ZERO;
    for _ in 0..3 {
        let started = Instant::now();
        let report = m.health_check().await;
        slowest = slowest.max(started.elapsed());
        let replica_health =
            report.components.iter().find(|c| c.role == EndpointRole::Replica).map(|c| c.state);
        assert_eq!(replica_health, Some(EndpointState::Down), "{report:?}");
        let primary_health =
            report.components.iter().find(|c| c.role == EndpointRole::Primary).map(|c| c.state);
        assert_eq!(primary_health, Some(EndpointState::Healthy), "{report:?}");
    }
    eprintln!(
        "ha figure ({}): replica blackholed: health_check() took at most {slowest:?} (probe \
         deadline {deadline:?})",
        B::NAME
    );
    assert!(
        slowest <= 2 * deadline + Duration::from_millis(500),
        "health_check() took {slowest:?} with a probe deadline of {deadline:?}"
    );
    proxy.blackhole(false);
    m.close().await.unwrap();
}

/// One read of [`ReadLoad`]: when it started (after the load's origin), how long it took,
/// and whether a standby served it (`None`: it failed).
#[derive(Debug, Clone, Copy)]
struct Read {
    at: Duration,
    took: Duration,
    standby: Option<bool>,
}

/// `readers` tasks reading `pg_is_in_recovery()` through `m` in `ReadOnly` mode, each read
/// timed, until [`ReadLoad::finish`].
struct ReadLoad {
    origin: Instant,
    stop: Arc<AtomicBool>,
    readers: Vec<tokio::task::JoinHandle<(Vec<Read>, Vec<String>)>>,
}

impl ReadLoad {
    fn start<M: ConnectionManagerProtocol + 'static>(m: &Arc<M>, readers: usize) -> Self {
        let origin = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let readers = (0..readers)
            .map(|_| {
                let (m, stop) = (Arc::clone(m), Arc::clone(&stop));
                tokio::spawn(async move {
                    let (mut reads, mut errors) = (Vec::new(), Vec::new());
                    while !stop.load(Ordering::Relaxed) {
                        let at = origin.elapsed();
                        let outcome = read_lands_on_standby(&*m).await;
                        let took = origin.elapsed() - at;
                        if let Err(e) = &outcome {
                            errors.push(e.to_string());
                        }
                        reads.push(Read { at, took, standby: outcome.ok() });
                    }
                    (reads, errors)
                })
            })
            .collect();
        Self { origin, stop, readers }
    }

    /// Stops the readers; every read, and every failure's message.
    async fn finish(self) -> (Vec<Read>, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let (mut reads, mut errors) = (Vec::new(), Vec::new());
        for reader in self.readers {
            let (r, e) = reader.await.unwrap();
            reads.extend(r);
            errors.extend(e);
        }
        reads.sort_by_key(|r| r.at);
        (reads, errors)
    }
}

/// The `q` quantile (0..1) of the reads' durations.
fn quantile(reads: &[Read], q: f64) -> Duration {
    let mut took: Vec<Duration> = reads.iter().map(|r| r.took).collect();
    took.sort();
    let index = ((took.len() as f64 * q).ceil() as usize).clamp(1, took.len().max(1)) - 1;
    took.get(index).copied().unwrap_or_default()
}

/// The reads that started within `from..to` after the load's origin.
fn between(reads: &[Read], from: Duration, to: Duration) -> Vec<Read> {
    reads.iter().filter(|r| r.at >= from && r.at < to).copied().collect()
}

/// The replica is blackholed (through the fault proxy: its sockets stay open, nothing
/// comes back) under 8 readers: no read fails, the reads stuck on it are abandoned once
/// two probes go unanswered and run again on the primary, and the read p99 during the
/// fault stays within twice the p99 before it.
pub async fn a_blackholed_replica_costs_no_read<B: Backend>(cluster: &HaCluster) {
    use crate::fault_proxy::{FaultProxy, url_target};
    let _serial = HaCluster::lock();
    let (primary, replica) = cluster.ensure_pair();
    let proxy = FaultProxy::start(url_target(&replica.url).await.unwrap()).await.unwrap();
    let through = Node { url: proxy.url_through(&replica.url), ..replica.clone() };
    // The primary behind a proxy of its own that injects nothing, so that the reads it
    // takes over travel the same way as the replica's did and their latencies compare.
    let primary_proxy = FaultProxy::start(url_target(&primary.url).await.unwrap()).await.unwrap();
    let primary_through = Node { url: primary_proxy.url_through(&primary.url), ..primary.clone() };
    let m = Arc::new(
        manager_with::<B>(&primary_through, &through, "ucm_t_ha_blackhole_reads", |pool| {
            pool.pool_size(8).max_overflow(4)
        })
        .await,
    );
    let load = ReadLoad::start(&m, 8);
    let origin = load.origin;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let fault_at = origin.elapsed();
    proxy.blackhole(true);
    let down =
        wait_for(&*m, "the blackholed replica is marked down", Duration::from_secs(10), || async {
            replica_state(&*m) == EndpointState::Down
        })
        .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let fault_end = origin.elapsed();
    let (reads, errors) = load.finish().await;
    proxy.blackhole(false);
    // Reads in flight when the fault began count as during it: they are the ones it hits.
    let before: Vec<Read> = between(&reads, Duration::from_millis(500), fault_at)
        .into_iter()
        .filter(|r| r.at + r.took < fault_at)
        .collect();
    let during: Vec<Read> =
        reads.iter().filter(|r| r.at + r.took >= fault_at && r.at < fault_end).copied().collect();
    let (p99_before, p99_during) = (quantile(&before, 0.99), quantile(&during, 0.99));
    let slowest = during.iter().map(|r| r.took).max().unwrap_or_default();
    let on_primary = during.iter().filter(|r| r.standby == Some(false)).count();
    eprintln!(
        "ha figure ({}): replica blackholed under 8 readers: {} reads before (p99 {p99_before:?}), \
         {} during the fault (p99 {p99_during:?}, p50 {:?}, slowest {slowest:?}, {on_primary} \
         served by the primary), {} failed; marked down {down:?} after the fault",
        B::NAME,
        before.len(),
        during.len(),
        quantile(&during, 0.5),
        errors.len()
    );
    assert!(errors.is_empty(), "reads failed: {errors:?}");
    assert!(
        before.iter().all(|r| r.standby == Some(true)),
        "reads left the replica before the fault"
    );
    assert!(on_primary > 0, "the primary served no read during the fault");
    // Only reads already on the replica's connections when it went dark wait for it (a
    // probe deadline and more, until abandoned); every later one goes elsewhere at once, so
    // at most as many as its pool holds wait. (The p99s above are figures, not asserted.)
    let probe_deadline = m.connection_info().pool.validation_timeout().max(Duration::from_secs(1));
    let waited = during.iter().filter(|r| r.took >= probe_deadline).count();
    assert!(
        waited <= 12,
        "{waited} reads waited on the dark replica, more than its 12 connections could hold"
    );
    m.close().await.unwrap();
}

/// The replica gets 200 ms more latency (through the fault proxy): the probes find it
/// slow and reads move to the primary; with the latency gone, they return.
pub async fn a_slow_replica_loses_its_reads<B: Backend>(cluster: &HaCluster) {
    use crate::fault_proxy::{FaultProxy, url_target};
    let _serial = HaCluster::lock();
    let (primary, replica) = cluster.ensure_pair();
    let proxy = FaultProxy::start(url_target(&replica.url).await.unwrap()).await.unwrap();
    let through = Node { url: proxy.url_through(&replica.url), ..replica.clone() };
    let m = Arc::new(manager::<B>(&primary, &through, "ucm_t_ha_slow_replica").await);
    let load = ReadLoad::start(&m, 4);
    let origin = load.origin;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let slowed_at = origin.elapsed();
    proxy.latency(Duration::from_millis(200));
    let found =
        wait_for(&*m, "the slow replica is marked degraded", Duration::from_secs(10), || async {
            replica_state(&*m) == EndpointState::Degraded
        })
        .await;
    let shifted_at = origin.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let slow_end = origin.elapsed();
    proxy.latency(Duration::ZERO);
    let back =
        wait_for(&*m, "the replica, fast again, is healthy", Duration::from_secs(20), || async {
            replica_state(&*m) == EndpointState::Healthy
        })
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let healthy_at = origin.elapsed() - Duration::from_millis(500);
    let (reads, errors) = load.finish().await;
    let share_on_replica = |reads: &[Read]| {
        reads.iter().filter(|r| r.standby == Some(true)).count() as f64 / reads.len().max(1) as f64
    };
    let before = between(&reads, Duration::ZERO, slowed_at);
    let slow = between(&reads, shifted_at + Duration::from_millis(500), slow_end);
    let after = between(&reads, healthy_at, origin.elapsed());
    eprintln!(
        "ha figure ({}): replica +200 ms: found slow {found:?} after the latency began; reads on \
         the replica: {:.0}% before, {:.0}% while slow ({} reads, p50 {:?}), {:.0}% after it was \
         healthy again ({back:?} after the latency ended); {} failed",
        B::NAME,
        100.0 * share_on_replica(&before),
        100.0 * share_on_replica(&slow),
        slow.len(),
        quantile(&slow, 0.5),
        100.0 * share_on_replica(&after),
        errors.len()
    );
    assert!(errors.is_empty(), "reads failed: {errors:?}");
    assert!(share_on_replica(&before) > 0.99, "reads were not on the replica before");
    assert!(share_on_replica(&slow) < 0.05, "reads stayed on the slow replica");
    assert!(share_on_replica(&after) > 0.9, "reads did not return to the replica");
    m.close().await.unwrap();
}

/// The replica's breaker, from the manager's cached info.
fn replica_breaker<M: ConnectionManagerProtocol>(
    m: &M,
) -> ucm_kernel::circuit_breaker::BreakerSnapshot {
    let info = m.connection_info();
    let replica = info.endpoints.iter().find(|e| e.role == EndpointRole::Replica).unwrap();
    replica.breaker.clone().expect("HighAvailability has a breaker")
}

/// The replica flaps (refused and its connections cut, then back, three times) under
/// readers: each time its breaker opens again soon after closing, its recovery timeout
/// grows instead of starting over, and no read fails.
pub async fn a_flapping_replica_is_backed_off_more_each_time<B: Backend>(cluster: &HaCluster) {
    use crate::fault_proxy::{FaultProxy, url_target};
    use ucm_kernel::circuit_breaker::BreakerState;
    let _serial = HaCluster::lock();
    let (primary, replica) = cluster.ensure_pair();
    let proxy = FaultProxy::start(url_target(&replica.url).await.unwrap()).await.unwrap();
    let through = Node { url: proxy.url_through(&replica.url), ..replica.clone() };
    let m = Arc::new(manager::<B>(&primary, &through, "ucm_t_ha_flapping").await);
    let load = ReadLoad::start(&m, 2);
    let mut timeouts = Vec::new();
    for _ in 0..3 {
        let opened = replica_breaker(&*m).times_opened;
        proxy.refuse(true);
        proxy.cut_all();
        wait_for(&*m, "the flapping replica's breaker opens", Duration::from_secs(20), || async {
            replica_breaker(&*m).times_opened > opened
        })
        .await;
        timeouts.push(replica_breaker(&*m).current_recovery_timeout);
        proxy.refuse(false);
        wait_for(&*m, "the replica's breaker closes again", Duration::from_secs(60), || async {
            replica_breaker(&*m).state == BreakerState::Closed
                && replica_state(&*m) == EndpointState::Healthy
        })
        .await;
    }
    let (reads, errors) = load.finish().await;
    eprintln!(
        "ha figure ({}): replica flapping three times: recovery timeouts {timeouts:?}; {} reads, {} failed",
        B::NAME,
        reads.len(),
        errors.len()
    );
    assert!(errors.is_empty(), "reads failed: {errors:?}");
    assert!(
        timeouts.windows(2).all(|w| w[1] > w[0]),
        "the recovery timeout did not grow: {timeouts:?}"
    );
    m.close().await.unwrap();
}

/// A session reads its own writes from the primary within the read-your-writes window,
/// while the replica (its replay paused) does not have them yet and other reads still go
/// there.
pub async fn a_session_reads_its_own_writes<B: Backend>(cluster: &HaCluster) {
    let _serial = HaCluster::lock();
    let (primary, replica) = cluster.ensure_pair();
    let m = manager_with::<B>(&primary, &replica, "ucm_t_ha_ryw", |pool| {
        // A lag bound the paused replica stays within, so only the session moves reads.
        pool.max_replica_lag(Duration::from_secs(600))
            .read_your_writes(Some(Duration::from_secs(30)))
    })
    .await;
    let table = crate::unique_table("ha_ryw");
    m.execute(ConnectionMode::ReadWrite, &format!("CREATE TABLE {table} (id INT)"), &[])
        .await
        .unwrap();
    cluster.wait_caught_up(&primary, &replica);
    cluster.psql(&replica, "SELECT pg_wal_replay_pause()");
    let count = format!("SELECT COUNT(*) AS n, pg_is_in_recovery() AS standby FROM {table}");
    let read = |rows: Vec<ucm_kernel::Row>| -> (i64, bool) {
        (rows[0].try_get("n").unwrap(), rows[0].try_get("standby").unwrap())
    };
    let session = B::session(&m);
    let before = read(session.fetch_all(ConnectionMode::ReadOnly, &count, &[]).await.unwrap());
    assert_eq!(before, (0, true), "before its write, the session reads from the replica");
    session
        .execute(ConnectionMode::ReadWrite, &format!("INSERT INTO {table} (id) VALUES (1)"), &[])
        .await
        .unwrap();
    let own = read(session.fetch_all(ConnectionMode::ReadOnly, &count, &[]).await.unwrap());
    assert_eq!(own, (1, false), "the session reads its write from the primary");
    let other = read(m.fetch_all(ConnectionMode::ReadOnly, &count, &[]).await.unwrap());
    assert_eq!(other, (0, true), "other reads stay on the (paused) replica");
    let fresh =
        read(B::session(&m).fetch_all(ConnectionMode::ReadOnly, &count, &[]).await.unwrap());
    assert_eq!(fresh, (0, true), "a session without writes reads from the replica");
    // The window counts from the write's release, not its checkout: a write that takes
    // longer than a 1 s window is still read back right after it.
    let short = manager_with::<B>(&primary, &replica, "ucm_t_ha_ryw_short", |pool| {
        pool.max_replica_lag(Duration::from_secs(600))
            .read_your_writes(Some(Duration::from_secs(1)))
    })
    .await;
    let session = B::session(&short);
    session
        .execute(
            ConnectionMode::ReadWrite,
            &format!("INSERT INTO {table} (id) SELECT 2 FROM pg_sleep(1.5)"),
            &[],
        )
        .await
        .unwrap();
    let own = read(session.fetch_all(ConnectionMode::ReadOnly, &count, &[]).await.unwrap());
    assert_eq!(own, (2, false), "a slow write is read back from the primary");
    short.close().await.unwrap();
    cluster.psql(&replica, "SELECT pg_wal_replay_resume()");
    m.execute(ConnectionMode::ReadWrite, &format!("DROP TABLE {table}"), &[]).await.unwrap();
    m.close().await.unwrap();
}

/// Generates the HA scenarios as `#[tokio::test]`s for `$backend`; each skips (or fails
/// under `CI`) when the HA pair is not exported.
#[macro_export]
macro_rules! ha_suite {
    ($module:ident, $backend:ty) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;
            $crate::ha_suite!(@tests $backend;
                reads_go_to_the_replica_and_writes_to_the_primary, a_lagging_replica_is_skipped,
                stopping_the_replica_loses_no_read, the_manager_follows_a_promotion,
                a_manager_follows_a_promotion_after_its_runtime_is_gone,
                a_frozen_primary_is_followed_after_a_promotion,
                a_split_brain_clone_is_never_followed,
                a_replica_whose_wal_receiver_stopped_is_banned,
                health_check_with_a_blackholed_replica_is_bounded,
                a_blackholed_replica_costs_no_read, a_slow_replica_loses_its_reads,
                a_flapping_replica_is_backed_off_more_each_time,
                a_session_reads_its_own_writes);
        }
    };
    (@tests $backend:ty; $($scenario:ident),+) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $scenario() {
                if let Some(cluster) = $crate::ha::HaCluster::find() {
                    $crate::ha_scenarios::$scenario::<$backend>(&cluster).await;
                }
            }
        )+
    };
}
