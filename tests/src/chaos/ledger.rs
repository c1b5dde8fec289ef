//! The ledger chaos scenario: serializable transfers between accounts while the pool's backends are killed again and again and the server restarts; the money adds up, every acknowledged transfer is there and no failed one is.
//!
//! It restarts a real server, so it runs on the primary of the HA pair (the one server
//! that no other test uses while it holds [`HaCluster::lock`]), not on the shared
//! PostgreSQL of the other scenarios.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use ucm_kernel::{
    ConnectionManagerProtocol, ConnectionMode, DatabaseKind, ErrorKind, ManagerMode,
    PoolConfiguration, ProtocolExt, TransactionOptions,
};

use crate::fault_proxy::url_target;
use crate::ha::HaCluster;
use crate::{Backend, Target, unique_table};

/// Accounts in the bank.
const ACCOUNTS: i64 = 20;
/// Each account's opening balance.
const OPENING: i64 = 1000;
/// Tasks making transfers at once.
const WORKERS: u64 = 16;
/// The ledger's pool: fewer connections than workers, so checkouts queue as in a service.
const POOL_SIZE: usize = 8;
/// How often the chaos task kills every backend of the ledger's pool, and for how long.
const KILL_EVERY: Duration = Duration::from_millis(30);
const KILL_FOR: Duration = Duration::from_secs(6);
/// The promise: service is back this soon after the restarted server accepts
/// connections again.
const BACK_WITHIN: Duration = Duration::from_secs(2);
/// How long to wait for the first acknowledged transfer after the restart before giving up
/// (the assertion above then fails with the timeline).
const GIVE_UP_AFTER: Duration = Duration::from_secs(15);
/// How long the load keeps running once service is back.
const STEADY: Duration = Duration::from_secs(1);
/// How long a worker pauses after a failed call, as a client would, so that fast failures
/// (`CircuitOpen`) do not spin both cores.
const PAUSE_AFTER_ERROR: Duration = Duration::from_millis(5);

/// What one transfer call returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// `Ok`: the transfer is acknowledged, so it must be in the ledger.
    Acked,
    /// `AmbiguousCommit`: the connection was lost during `COMMIT`; it may be either.
    Ambiguous,
    /// Any other error: reported as failed, so it must not be in the ledger.
    Failed(ErrorKind),
}

/// One transfer call: its client-chosen id, when it returned, and how.
#[derive(Debug)]
struct Call {
    id: String,
    /// Since the scenario's origin.
    returned: Duration,
    outcome: Outcome,
}

/// The ledger's statements, shared by the workers.
#[derive(Debug)]
struct Statements {
    debit: String,
    credit: String,
    record: String,
}

/// A tiny xorshift generator: the scenario needs spread, not quality, and no dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// 16 tasks make serializable transfers (debit, credit, and a row in `transfers` under an id
/// the client chose) while a chaos task kills every backend of the ledger's pool every 30 ms
/// for 6 s, then the server restarts (`pg_ctl stop -m fast`, then start). Afterwards the sum
/// of the balances is unchanged, every account's balance is what the `transfers` rows say,
/// every acknowledged transfer is there, no transfer reported failed is, and an ambiguous one
/// may be either. Service must be back (a transfer acknowledged) within 2 s of the
/// restarted server accepting connections.
// The guard of `HaCluster::lock` (a std mutex) is held across awaits on purpose, as in the
// HA scenarios: each `#[tokio::test]` has its own runtime on its own thread, so a test
// waiting for it blocks only itself, and it keeps every other test off the server we restart.
#[allow(clippy::await_holding_lock)]
pub async fn ledger_survives_killed_backends_and_a_restart<B: Backend>(cluster: &HaCluster) {
    let _serial = HaCluster::lock();
    let (primary, _standby) = cluster.ensure_pair();
    let t = Target { kind: DatabaseKind::Postgres, url: primary.url.clone() };
    let server = url_target(&t.url).await.unwrap();
    let app = format!("ucm_t_ledger_{}", std::process::id());
    let accounts = unique_table("ledger_accounts");
    let transfers = unique_table("ledger_transfers");

    // The chaos task's own manager: another application name, so it never kills itself, and
    // no breaker, so its kills never stop for a breaker of its own.
    let admin =
        B::connect(t.config(ManagerMode::AsyncModern, pool(1, "ucm_t_ledger_chaos", false)))
            .await
            .unwrap_or_else(|e| panic!("{}: connecting to the HA primary: {e}", B::NAME));
    for ddl in [
        format!("CREATE TABLE {accounts} (id BIGINT PRIMARY KEY, balance BIGINT NOT NULL)"),
        format!(
            "CREATE TABLE {transfers} (id TEXT PRIMARY KEY, from_id BIGINT NOT NULL, \
             to_id BIGINT NOT NULL, amount BIGINT NOT NULL)"
        ),
        format!(
            "INSERT INTO {accounts} (id, balance) \
             SELECT g, {OPENING} FROM generate_series(1, {ACCOUNTS}) g"
        ),
    ] {
        admin.execute(ConnectionMode::ReadWrite, &ddl, &[]).await.unwrap();
    }

    let ledger = Arc::new(
        B::connect(t.config(ManagerMode::AsyncModern, pool(POOL_SIZE, &app, true)))
            .await
            .unwrap_or_else(|e| panic!("{}: connecting the ledger: {e}", B::NAME)),
    );
    let statements = Arc::new(Statements {
        debit: format!("UPDATE {accounts} SET balance = balance - $1 WHERE id = $2"),
        credit: format!("UPDATE {accounts} SET balance = balance + $1 WHERE id = $2"),
        record: format!(
            "INSERT INTO {transfers} (id, from_id, to_id, amount) VALUES ($1, $2, $3, $4)"
        ),
    });
    let origin = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    // Nanoseconds after `origin` of the latest acknowledged transfer, plus one (0: none yet).
    let last_ack = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..WORKERS)
        .map(|worker| {
            let (ledger, statements, stop, last_ack) =
                (ledger.clone(), statements.clone(), stop.clone(), last_ack.clone());
            tokio::spawn(async move {
                transfer_loop(&*ledger, &statements, worker, origin, &stop, &last_ack).await
            })
        })
        .collect();

    let (killed, kill_errors) = kill_backends(&admin, &app, origin).await;
    let _ = admin.close().await;
    let acked_before_restart = last_ack.load(Ordering::Relaxed) != 0;

    // Until service is back, sample the ledger's view of its endpoint each time it changes,
    // to explain a slow recovery.
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (ledger, sampling) = (ledger.clone(), sampling.clone());
        tokio::spawn(async move {
            let mut timeline: Vec<(Instant, String)> = Vec::new();
            while sampling.load(Ordering::Relaxed) {
                let view = endpoint_view(&*ledger);
                if timeline.last().is_none_or(|(_, last)| *last != view) {
                    timeline.push((Instant::now(), view));
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            timeline
        })
    };

    let Restart { began: stop_began, stopped, started, accepting } =
        restart(cluster, &primary, server).await;
    let since_origin = |at: Instant| at.duration_since(origin);
    let stopped_nanos = u64::try_from(since_origin(stopped).as_nanos()).unwrap();
    while last_ack.load(Ordering::Relaxed) <= stopped_nanos && accepting.elapsed() < GIVE_UP_AFTER {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    sampling.store(false, Ordering::Relaxed);
    let timeline: Vec<String> = sampler
        .await
        .unwrap()
        .into_iter()
        .map(|(at, view)| {
            let (sign, offset) = match at.checked_duration_since(accepting) {
                Some(after) => ("+", after),
                None => ("-", accepting - at),
            };
            format!("  {sign}{:>4} ms: {view}", offset.as_millis())
        })
        .collect();
    eprintln!(
        "ledger ({}): the ledger's endpoint around the restart (ms from the server accepting \
         again):\n{}",
        B::NAME,
        timeline.join("\n")
    );
    tokio::time::sleep(STEADY).await;
    stop.store(true, Ordering::Relaxed);
    let mut calls = Vec::new();
    for worker in workers {
        calls.extend(worker.await.unwrap());
    }
    let _ = ledger.close().await;

    // The verdict, from a fresh manager.
    let check =
        B::connect(t.config(ManagerMode::AsyncModern, pool(1, "ucm_t_ledger_check", false)))
            .await
            .unwrap_or_else(|e| panic!("{}: reconnecting to check the ledger: {e}", B::NAME));
    let Ledger { total, drift, present } = read_ledger(&check, &accounts, &transfers).await;
    for table in [&transfers, &accounts] {
        let drop = format!("DROP TABLE {table}");
        check.execute(ConnectionMode::ReadWrite, &drop, &[]).await.unwrap();
    }
    let _ = check.close().await;

    let acked: Vec<&Call> = calls.iter().filter(|c| c.outcome == Outcome::Acked).collect();
    let ambiguous: Vec<&Call> = calls.iter().filter(|c| c.outcome == Outcome::Ambiguous).collect();
    let mut failed: BTreeMap<&str, u64> = BTreeMap::new();
    for call in &calls {
        if let Outcome::Failed(kind) = call.outcome {
            *failed.entry(kind.as_str()).or_default() += 1;
        }
    }
    let ambiguous_present = ambiguous.iter().filter(|c| present.contains(&c.id)).count();
    let first_ack_after = acked
        .iter()
        .map(|c| c.returned)
        .filter(|&at| at > since_origin(stopped))
        .min()
        .map(|at| at.saturating_sub(since_origin(accepting)));
    let after_accepting: Vec<&Call> =
        calls.iter().filter(|c| c.returned > since_origin(accepting)).collect();
    let mut errors_after_accepting: BTreeMap<&str, (u64, Duration, Duration)> = BTreeMap::new();
    for call in &after_accepting {
        if let Outcome::Failed(kind) = call.outcome {
            let at = call.returned - since_origin(accepting);
            let entry = errors_after_accepting.entry(kind.as_str()).or_insert((0, at, at));
            entry.0 += 1;
            entry.2 = at;
        }
    }
    eprintln!(
        "chaos figure: {} ledger: {} transfers acknowledged, failed by kind {failed:?}, \
         ambiguous {} \
         ({ambiguous_present} present, {} absent), backends killed {killed} ({kill_errors} kill \
         queries failed), restart took {:?} (stop {:?}, start returned {:?} after the stop, \
         accepting {:?} after the stop), first acknowledged transfer {first_ack_after:?} after \
         the server accepted again, failed with CircuitOpen {}",
        B::NAME,
        acked.len(),
        ambiguous.len(),
        ambiguous.len() - ambiguous_present,
        accepting - stop_began,
        stopped - stop_began,
        started - stopped,
        accepting - stopped,
        failed.get("circuit_open").copied().unwrap_or(0),
    );

    assert!(acked_before_restart, "{}: no transfer was acknowledged under the kills", B::NAME);
    assert_eq!(total, ACCOUNTS * OPENING, "{}: money was created or destroyed", B::NAME);
    assert!(
        drift.is_empty(),
        "{}: balances (id, balance, expected) disagree with the transfers: {drift:?}",
        B::NAME
    );
    let missing: Vec<&str> =
        acked.iter().filter(|c| !present.contains(&c.id)).map(|c| c.id.as_str()).collect();
    assert!(missing.is_empty(), "{}: acknowledged transfers missing: {missing:?}", B::NAME);
    let applied: Vec<(&str, Outcome)> = calls
        .iter()
        .filter(|c| matches!(c.outcome, Outcome::Failed(_)) && present.contains(&c.id))
        .map(|c| (c.id.as_str(), c.outcome))
        .collect();
    assert!(applied.is_empty(), "{}: transfers reported failed were applied: {applied:?}", B::NAME);
    let back = first_ack_after.unwrap_or_else(|| {
        panic!(
            "{}: no transfer acknowledged within {GIVE_UP_AFTER:?} of the restarted server \
             accepting connections; errors since (kind: count, first, last): \
             {errors_after_accepting:?}; the ledger's endpoint over time:\n{}",
            B::NAME,
            timeline.join("\n")
        )
    });
    assert!(
        back <= BACK_WITHIN,
        "{}: service came back {back:?} after the restarted server accepted connections, not \
         within {BACK_WITHIN:?}; errors since (kind: count, first, last): \
         {errors_after_accepting:?}; the ledger's endpoint over time:\n{}",
        B::NAME,
        timeline.join("\n")
    );
}

/// The chaos task: every [`KILL_EVERY`] until [`KILL_FOR`] after `origin`, terminates every
/// backend whose application name is `app`, through `admin`. Returns the backends killed
/// and the kill queries that failed.
async fn kill_backends<M: ConnectionManagerProtocol>(
    admin: &M,
    app: &str,
    origin: Instant,
) -> (u64, u64) {
    let terminate = "SELECT pg_terminate_backend(pid) AS killed FROM pg_stat_activity \
                     WHERE application_name = $1 AND pid <> pg_backend_pid()";
    let (mut killed, mut failed) = (0, 0);
    let mut tick = tokio::time::interval(KILL_EVERY);
    while origin.elapsed() < KILL_FOR {
        tick.tick().await;
        match admin.fetch_all(ConnectionMode::ReadWrite, terminate, &[app.into()]).await {
            Ok(rows) => {
                let hits = rows.iter().filter(|r| r.try_get::<bool>("killed").unwrap()).count();
                killed += u64::try_from(hits).unwrap();
            }
            Err(_) => failed += 1,
        }
    }
    (killed, failed)
}

/// When each step of a restart happened.
struct Restart {
    /// `pg_ctl stop` was started.
    began: Instant,
    /// `pg_ctl stop` returned: the server is down.
    stopped: Instant,
    /// `pg_ctl start` returned.
    started: Instant,
    /// The server first accepted a connection and answered a query.
    accepting: Instant,
}

/// Restarts `node` (`pg_ctl stop -m fast`, then `pg_ctl start`, both waiting) and polls
/// `server` every 5 ms from the stop on, to time the first moment it answers again, which
/// may come before `pg_ctl start` notices.
async fn restart(cluster: &HaCluster, node: &crate::ha::Node, server: SocketAddr) -> Restart {
    let began = Instant::now();
    let (owned, stopping) = (cluster.clone(), node.clone());
    tokio::task::spawn_blocking(move || owned.stop(&stopping, "fast")).await.unwrap();
    let stopped = Instant::now();
    let (owned, starting) = (cluster.clone(), node.clone());
    let start = tokio::task::spawn_blocking(move || {
        owned.start(&starting);
        Instant::now()
    });
    let accepting = loop {
        if answers(server).await {
            break Instant::now();
        }
        assert!(stopped.elapsed() < GIVE_UP_AFTER, "the restarted server never answered");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let started = start.await.unwrap();
    Restart { began, stopped, started, accepting }
}

/// What the ledger holds after the run.
struct Ledger {
    /// The sum of the balances.
    total: i64,
    /// Accounts (id, balance, expected) whose balance is not the opening balance plus what
    /// the `transfers` rows say it received, minus what they say it sent.
    drift: Vec<(i64, i64, i64)>,
    /// The ids in `transfers`.
    present: HashSet<String>,
}

async fn read_ledger<M: ConnectionManagerProtocol>(
    m: &M,
    accounts: &str,
    transfers: &str,
) -> Ledger {
    let query = |sql: String| async move {
        m.fetch_all(ConnectionMode::ReadWrite, &sql, &[]).await.unwrap()
    };
    let sum = query(format!("SELECT SUM(balance)::BIGINT AS total FROM {accounts}")).await;
    let total = sum[0].try_get("total").unwrap();
    let drift = query(format!(
        "SELECT a.id, a.balance, ({OPENING} \
            - COALESCE((SELECT SUM(amount) FROM {transfers} WHERE from_id = a.id), 0) \
            + COALESCE((SELECT SUM(amount) FROM {transfers} WHERE to_id = a.id), 0))::BIGINT \
            AS expected \
         FROM {accounts} a"
    ))
    .await
    .iter()
    .map(|r| {
        let field = |name: &str| r.try_get::<i64>(name).unwrap();
        (field("id"), field("balance"), field("expected"))
    })
    .filter(|(_, balance, expected)| balance != expected)
    .collect();
    let present = query(format!("SELECT id FROM {transfers}"))
        .await
        .iter()
        .map(|r| r.try_get("id").unwrap())
        .collect();
    Ledger { total, drift, present }
}

/// A pool of `size` (no overflow) named `app`, quick to give up on a checkout or a connect,
/// with or without its breaker.
fn pool(size: usize, app: &str, breaker: bool) -> PoolConfiguration {
    PoolConfiguration::builder(ManagerMode::AsyncModern)
        .pool_size(size)
        .max_overflow(0)
        .acquire_timeout(Duration::from_secs(2))
        .connect_timeout(Duration::from_secs(1))
        .circuit_breaker(breaker)
        .application_name(app)
        .build()
        .unwrap()
}

/// One worker: serializable transfers between two random accounts until `stop`, each call
/// recorded with how it ended.
async fn transfer_loop<M: ConnectionManagerProtocol>(
    ledger: &M,
    statements: &Arc<Statements>,
    worker: u64,
    origin: Instant,
    stop: &AtomicBool,
    last_ack: &AtomicU64,
) -> Vec<Call> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (worker + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9));
    let mut calls = Vec::new();
    let mut seq = 0_u64;
    while !stop.load(Ordering::Relaxed) {
        seq += 1;
        let id = format!("w{worker}-{seq}");
        let from = 1 + i64::try_from(rng.below(ACCOUNTS as u64)).unwrap();
        let to = 1 + (from + i64::try_from(rng.below(ACCOUNTS as u64 - 1)).unwrap()) % ACCOUNTS;
        let amount = 1 + i64::try_from(rng.below(50)).unwrap();
        let result = ledger
            .transaction_with(ConnectionMode::Transactional, TransactionOptions::default(), |tx| {
                let (statements, id) = (statements.clone(), id.clone());
                Box::pin(async move {
                    tx.execute("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", &[]).await?;
                    tx.execute(&statements.debit, &[amount.into(), from.into()]).await?;
                    tx.execute(&statements.credit, &[amount.into(), to.into()]).await?;
                    let params = [id.into(), from.into(), to.into(), amount.into()];
                    tx.execute(&statements.record, &params).await?;
                    Ok(())
                })
            })
            .await;
        let returned = origin.elapsed();
        let outcome = match result {
            Ok(()) => {
                let at = u64::try_from(returned.as_nanos()).unwrap() + 1;
                last_ack.fetch_max(at, Ordering::Relaxed);
                Outcome::Acked
            }
            Err(e) if e.kind() == ErrorKind::AmbiguousCommit => Outcome::Ambiguous,
            Err(e) => Outcome::Failed(e.kind()),
        };
        calls.push(Call { id, returned, outcome });
        if outcome != Outcome::Acked {
            tokio::time::sleep(PAUSE_AFTER_ERROR).await;
        }
    }
    calls
}

/// The ledger's endpoint as `connection_info` shows it: breaker, pool and health state.
fn endpoint_view<M: ConnectionManagerProtocol>(m: &M) -> String {
    let info = m.connection_info();
    let Some(e) = info.endpoints.first() else { return "no endpoint".to_owned() };
    // The breaker's time left while open is left out: it changes at every sample.
    let breaker = e.breaker.as_ref().map_or_else(
        || "none".to_owned(),
        |b| {
            format!(
                "{} (failures {}, opened {} times, recovery timeout {:?})",
                b.state.as_str(),
                b.consecutive_failures,
                b.times_opened,
                b.current_recovery_timeout
            )
        },
    );
    format!(
        "breaker {breaker}; pool size {} idle {} in use {} waiting {}; endpoint {}{}",
        e.status.size,
        e.status.idle,
        e.status.in_use,
        e.status.waiting,
        e.state,
        e.state_reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default()
    )
}

/// Whether the PostgreSQL server at `addr` accepts a connection and answers a query, as
/// `postgres` on database `test` (trust authentication, as the HA pair is set up): a startup
/// message, then `SELECT 1`, on a plain socket, so nothing of ucm's (pool, breaker,
/// backoff) delays the moment we call "accepting again".
async fn answers(addr: SocketAddr) -> bool {
    let attempt = async {
        let mut socket = TcpStream::connect(addr).await.ok()?;
        let params = b"user\0postgres\0database\0test\0\0";
        let mut startup = Vec::with_capacity(8 + params.len());
        startup.extend_from_slice(&u32::try_from(8 + params.len()).ok()?.to_be_bytes());
        startup.extend_from_slice(&196_608_u32.to_be_bytes()); // Protocol 3.0.
        startup.extend_from_slice(params);
        socket.write_all(&startup).await.ok()?;
        let mut queried = false;
        loop {
            let mut header = [0_u8; 5];
            socket.read_exact(&mut header).await.ok()?;
            let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
            let mut body = vec![0_u8; usize::try_from(len).ok()?.checked_sub(4)?];
            socket.read_exact(&mut body).await.ok()?;
            match header[0] {
                // An error: "the database system is starting up", or anything else.
                b'E' => return None,
                // An authentication request other than "ok": not what the pair is set up for.
                b'R' if body.get(..4) != Some(&[0, 0, 0, 0]) => return None,
                b'Z' if !queried => {
                    socket.write_all(b"Q\0\0\0\x0dSELECT 1\0").await.ok()?;
                    queried = true;
                }
                b'Z' => {
                    let _ = socket.write_all(b"X\0\0\0\x04").await;
                    return Some(());
                }
                _ => {}
            }
        }
    };
    matches!(tokio::time::timeout(Duration::from_millis(500), attempt).await, Ok(Some(())))
}
