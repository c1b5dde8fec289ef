//! `ucm demo`: a concurrent mixed workload through the unified manager in three modes, with a progress bar and a summary.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::Notify;

use crate::backend::BackendChoice;
use ucm::{
    ConnectionManagerProtocol, ConnectionMode, DatabaseKind, DatabaseUrl, Error, Manager,
    ManagerConfig, ManagerMode, ProtocolExt, Value,
};
use ucm_kernel::backend::Backend;
use ucm_kernel::telemetry::metrics::Histogram;

/// `ucm demo` options.
#[derive(Debug, clap::Args)]
pub(crate) struct DemoArgs {
    /// Run against this database instead of a throwaway SQLite file (postgres://, mysql://,
    /// sqlite://). Deliberately not read from $DATABASE_URL: the demo creates and fills
    /// tables, which it should do only where it is pointed explicitly.
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
    /// How long each mode's workload runs, in seconds.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// How many tasks run the workload concurrently.
    #[arg(long, default_value_t = 16)]
    tasks: usize,
    /// How many accounts the demo schema holds.
    #[arg(long, default_value_t = 100)]
    accounts: i64,
    /// Which backend drives the connections.
    #[arg(long, value_enum, default_value_t = BackendChoice::Sqlx)]
    backend: BackendChoice,
}

/// The modes the demo runs, in order.
const MODES: [ManagerMode; 3] =
    [ManagerMode::AsyncModern, ManagerMode::McpServer, ManagerMode::HighAvailability];

/// The demo's schema: two tables whose names are unique to this run.
struct Schema {
    accounts: String,
    transfers: String,
    kind: DatabaseKind,
}

/// What one mode's run measured.
struct Stats {
    ops: BTreeMap<&'static str, Histogram>,
    errors: BTreeMap<&'static str, AtomicU64>,
    retries: AtomicU64,
}

pub(crate) async fn run(args: &DemoArgs) -> anyhow::Result<()> {
    match args.backend {
        BackendChoice::Sqlx => run_on::<ucm_sqlx::Sqlx>(args).await,
        BackendChoice::Diesel => run_on::<ucm_diesel::Diesel>(args).await,
    }
}

async fn run_on<B: Backend>(args: &DemoArgs) -> anyhow::Result<()> {
    if args.seconds <= 0.0 || args.tasks == 0 || args.accounts < 2 {
        bail!("--seconds must be positive, --tasks at least 1 and --accounts at least 2");
    }
    let (url, scratch) = match &args.database_url {
        Some(url) => {
            crate::url_arg::warn_if_password(url);
            (url.clone(), None)
        }
        None => {
            let path = std::env::temp_dir().join(format!("ucm-demo-{}.db", std::process::id()));
            (format!("sqlite://{}", path.display()), Some(path))
        }
    };
    let parsed = DatabaseUrl::parse(&url)?;
    println!(
        "ucm demo: {} tasks for {:.1}s per mode on {parsed} ({}, {} backend)",
        args.tasks,
        args.seconds,
        parsed.kind(),
        B::NAME
    );
    if scratch.is_some() {
        println!(
            "(a throwaway SQLite file; pass --database-url to run against PostgreSQL or MariaDB)"
        );
    }
    let schema = Schema {
        accounts: format!("ucm_demo_accounts_{}", std::process::id()),
        transfers: format!("ucm_demo_transfers_{}", std::process::id()),
        kind: parsed.kind(),
    };
    let admin = Manager::<B>::connect(config(&url, ManagerMode::Admin)?).await?;
    let result = demo(&url, &admin, &schema, args).await;
    // Clean up whatever happened, then report the demo's own outcome.
    for table in [&schema.transfers, &schema.accounts] {
        let _ = admin
            .execute(ConnectionMode::ReadWrite, &format!("DROP TABLE IF EXISTS {table}"), &[])
            .await;
    }
    admin.close().await?;
    if let Some(path) = scratch {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }
    result
}

fn config(url: &str, mode: ManagerMode) -> anyhow::Result<ManagerConfig> {
    Ok(ManagerConfig::builder(mode).primary(url).build()?)
}

async fn demo<B: Backend>(
    url: &str,
    admin: &Manager<B>,
    schema: &Schema,
    args: &DemoArgs,
) -> anyhow::Result<()> {
    create_schema(admin, schema, args.accounts).await.context("creating the demo schema")?;
    let expected_total = args.accounts * 1_000;
    for mode in MODES {
        let manager = Arc::new(Manager::<B>::connect(config(url, mode)?).await?);
        let stats = workload(&manager, schema, args, mode).await;
        print_mode(mode, &stats, &manager, args.seconds).await;
        // With --otel, the pool gauges are exported while this mode's pool still exists.
        crate::telemetry::flush_metrics();
        manager.close().await?;
    }
    conflict(admin, schema).await?;
    let total = total_balance(admin, schema).await?;
    println!(
        "\nmoney conserved across every transfer and retry: {} (total {total}, expected {expected_total})",
        if total == expected_total { "yes" } else { "NO" }
    );
    if total != expected_total {
        bail!("the balances no longer add up: {total} instead of {expected_total}");
    }
    Ok(())
}

async fn create_schema<B: Backend>(
    m: &Manager<B>,
    s: &Schema,
    accounts: i64,
) -> anyhow::Result<()> {
    let timestamp = if s.kind == DatabaseKind::Postgres { "TIMESTAMPTZ" } else { "TIMESTAMP" };
    m.execute(
        ConnectionMode::ReadWrite,
        &format!("CREATE TABLE {} (id BIGINT PRIMARY KEY, owner VARCHAR(64) NOT NULL, balance BIGINT NOT NULL)", s.accounts),
        &[],
    )
    .await?;
    m.execute(
        ConnectionMode::ReadWrite,
        &format!("CREATE TABLE {} (from_id BIGINT NOT NULL, to_id BIGINT NOT NULL, amount BIGINT NOT NULL, at {timestamp} NOT NULL)", s.transfers),
        &[],
    )
    .await?;
    let insert = format!(
        "INSERT INTO {} (id, owner, balance) VALUES ({}, {}, {})",
        s.accounts,
        p(s, 1),
        p(s, 2),
        p(s, 3)
    );
    m.transaction(ConnectionMode::Batch, |tx| {
        let insert = insert.clone();
        Box::pin(async move {
            for id in 1..=accounts {
                tx.execute(&insert, &[id.into(), format!("owner {id}").into(), 1_000_i64.into()])
                    .await?;
            }
            Ok(())
        })
    })
    .await?;
    Ok(())
}

/// The `n`th placeholder for the schema's database.
fn p(s: &Schema, n: usize) -> String {
    if s.kind == DatabaseKind::Postgres { format!("${n}") } else { "?".to_owned() }
}

/// Runs the mixed workload for the configured time: 70% reads, 20% transfers (a
/// transaction of three statements, re-run on conflict), 10% single-row writes.
async fn workload<B: Backend>(
    manager: &Arc<Manager<B>>,
    s: &Schema,
    args: &DemoArgs,
    mode: ManagerMode,
) -> Arc<Stats> {
    let stats = Arc::new(Stats::default());
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(args.seconds);
    let read = format!("SELECT balance FROM {} WHERE id = {}", s.accounts, p(s, 1));
    let write = format!("UPDATE {} SET owner = {} WHERE id = {}", s.accounts, p(s, 1), p(s, 2));
    let debit =
        format!("UPDATE {} SET balance = balance - {} WHERE id = {}", s.accounts, p(s, 1), p(s, 2));
    let credit =
        format!("UPDATE {} SET balance = balance + {} WHERE id = {}", s.accounts, p(s, 1), p(s, 2));
    let record = format!(
        "INSERT INTO {} (from_id, to_id, amount, at) VALUES ({}, {}, {}, {})",
        s.transfers,
        p(s, 1),
        p(s, 2),
        p(s, 3),
        p(s, 4)
    );
    let statements = Arc::new([read, write, debit, credit, record]);
    let bar = progress_bar(mode, args.seconds);
    let mut tasks = Vec::with_capacity(args.tasks);
    for task in 0..args.tasks {
        let (manager, stats, done, statements) =
            (Arc::clone(manager), Arc::clone(&stats), Arc::clone(&done), Arc::clone(&statements));
        let accounts = args.accounts;
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(task as u64);
            while Instant::now() < deadline {
                let roll: u32 = rng.random_range(0..100);
                let a: i64 = rng.random_range(1..=accounts);
                let b: i64 = (a % accounts) + 1;
                let amount: i64 = rng.random_range(1..=10);
                let started = Instant::now();
                let (name, result) = if roll < 70 {
                    (
                        "read",
                        manager
                            .fetch_all(ConnectionMode::ReadOnly, &statements[0], &[a.into()])
                            .await
                            .map(|_| ()),
                    )
                } else if roll < 90 {
                    ("transfer", transfer(&manager, &statements, &stats, a, b, amount).await)
                } else {
                    let owner =
                        Value::Text(format!("owner {a} (seen {})", rng.random_range(0..1000)));
                    (
                        "write",
                        manager
                            .execute(ConnectionMode::ReadWrite, &statements[1], &[owner, a.into()])
                            .await
                            .map(|_| ()),
                    )
                };
                match result {
                    Ok(()) => {
                        if let Some(h) = stats.ops.get(name) {
                            h.record(started.elapsed());
                        }
                    }
                    Err(e) => {
                        if let Some(counter) = stats.errors.get(e.kind().as_str()) {
                            counter.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let ticker = {
        let (bar, done) = (bar.clone(), Arc::clone(&done));
        tokio::spawn(async move {
            let start = Instant::now();
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let elapsed = start.elapsed();
                bar.set_position(elapsed.as_millis() as u64);
                let ops = done.load(Ordering::Relaxed);
                bar.set_message(format!("{ops} ops, {:.0}/s", ops as f64 / elapsed.as_secs_f64()));
            }
        })
    };
    for task in tasks {
        let _ = task.await;
    }
    ticker.abort();
    bar.finish_and_clear();
    stats
}

/// One transfer: debit, credit and a record, as one transaction.
async fn transfer<B: Backend>(
    m: &Manager<B>,
    sql: &Arc<[String; 5]>,
    stats: &Arc<Stats>,
    a: i64,
    b: i64,
    amount: i64,
) -> ucm::Result<()> {
    let mut attempt = 0;
    m.transaction(ConnectionMode::Transactional, |tx| {
        attempt += 1;
        if attempt > 1 {
            stats.retries.fetch_add(1, Ordering::Relaxed);
        }
        let sql = Arc::clone(sql);
        Box::pin(async move {
            tx.execute(&sql[2], &[amount.into(), a.into()]).await?;
            tx.execute(&sql[3], &[amount.into(), b.into()]).await?;
            tx.execute(
                &sql[4],
                &[a.into(), b.into(), amount.into(), Value::TimestampTz(ucm::chrono::Utc::now())],
            )
            .await?;
            Ok(())
        })
    })
    .await
}

fn progress_bar(mode: ManagerMode, seconds: f64) -> ProgressBar {
    let bar = ProgressBar::new((seconds * 1000.0) as u64);
    let style = ProgressStyle::with_template("{prefix:>18} [{bar:32}] {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(mode.as_str());
    bar
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            ops: ["read", "transfer", "write"]
                .into_iter()
                .map(|n| (n, Histogram::default()))
                .collect(),
            errors: ucm::ErrorKind::ALL.iter().map(|k| (k.as_str(), AtomicU64::new(0))).collect(),
            retries: AtomicU64::new(0),
        }
    }
}

async fn print_mode<B: Backend>(
    mode: ManagerMode,
    stats: &Stats,
    manager: &Manager<B>,
    seconds: f64,
) {
    let info = manager.connection_info();
    let health = manager.health_check().await;
    let total: u64 = stats.ops.values().map(|h| h.snapshot().count).sum();
    println!("\n== {mode}: {total} operations, {:.0}/s ==", total as f64 / seconds);
    println!(
        "  {:<9} {:>8} {:>9} {:>9} {:>9} {:>9}",
        "operation", "count", "p50", "p95", "p99", "max"
    );
    for (name, histogram) in &stats.ops {
        let s = histogram.snapshot();
        println!(
            "  {name:<9} {:>8} {:>9} {:>9} {:>9} {:>9}",
            s.count,
            ms(s.quantile(0.50)),
            ms(s.quantile(0.95)),
            ms(s.quantile(0.99)),
            ms(s.max)
        );
    }
    let errors: Vec<String> = stats
        .errors
        .iter()
        .map(|(k, n)| (k, n.load(Ordering::Relaxed)))
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    println!(
        "  errors by kind: {}",
        if errors.is_empty() { "none".to_owned() } else { errors.join(", ") }
    );
    println!("  transactions re-run after a conflict: {}", stats.retries.load(Ordering::Relaxed));
    if let Some(primary) = info.primary() {
        let st = primary.status;
        let m = &primary.metrics;
        println!(
            "  pool: {} open ({} idle, {} in use) of {} kept + {} overflow; {} acquires, wait p99 {}, {} opened",
            st.size,
            st.idle,
            st.in_use,
            st.pool_size,
            st.max_size - st.pool_size,
            m.acquires,
            ms(m.wait_time.quantile(0.99)),
            m.connections_created
        );
        if let Some(breaker) = &primary.breaker {
            println!("  breaker: {}", breaker.state);
        }
    }
    let components: Vec<String> = health
        .components
        .iter()
        .map(|c| {
            format!("{} {} {}", c.role.as_str(), c.status, c.latency.map(ms).unwrap_or_default())
        })
        .collect();
    println!("  health: {} ({})", health.status, components.join("; "));
}

fn ms(d: Duration) -> String {
    format!("{:.2}ms", d.as_secs_f64() * 1000.0)
}

/// Two transfers that touch the same two accounts in opposite orders, started so that
/// they overlap. PostgreSQL and MariaDB abort one (serialization failure or deadlock) and
/// ucm re-runs it; SQLite serializes writers, so the second simply waits its turn.
async fn conflict<B: Backend>(m: &Manager<B>, s: &Schema) -> anyhow::Result<()> {
    println!("\n== a deliberate conflict ==");
    let (debit, credit) = (
        format!("UPDATE {} SET balance = balance - 5 WHERE id = {}", s.accounts, p(s, 1)),
        format!("UPDATE {} SET balance = balance + 5 WHERE id = {}", s.accounts, p(s, 1)),
    );
    let holds = [Arc::new(Notify::new()), Arc::new(Notify::new())];
    let attempts = Arc::new(AtomicU64::new(0));
    let run = |from: i64, to: i64, me: usize| {
        let (debit, credit, attempts) = (debit.clone(), credit.clone(), Arc::clone(&attempts));
        let (mine, theirs) = (Arc::clone(&holds[me]), Arc::clone(&holds[1 - me]));
        let mut first = true;
        m.transaction(ConnectionMode::Transactional, move |tx| {
            attempts.fetch_add(1, Ordering::SeqCst);
            let wait = std::mem::take(&mut first);
            let (debit, credit, mine, theirs) =
                (debit.clone(), credit.clone(), Arc::clone(&mine), Arc::clone(&theirs));
            Box::pin(async move {
                tx.execute(&debit, &[from.into()]).await?;
                if wait {
                    // Hold the first row until the other side holds its own, so that the
                    // two overlap; bounded, because on SQLite the other side cannot get
                    // its row before this one commits.
                    mine.notify_one();
                    let _ = tokio::time::timeout(Duration::from_secs(1), theirs.notified()).await;
                }
                tx.execute(&credit, &[to.into()]).await?;
                Ok(())
            })
        })
    };
    let (first, second) = tokio::join!(run(1, 2, 0), run(2, 1, 1));
    let outcome = |r: Result<(), Error>| {
        r.map_or_else(|e| format!("failed: {e}"), |()| "committed".to_owned())
    };
    let attempts = attempts.load(Ordering::SeqCst);
    println!("  transfer 1 -> 2: {}", outcome(first));
    println!("  transfer 2 -> 1: {}", outcome(second));
    println!(
        "  attempts: {attempts} for 2 transfers ({})",
        match (s.kind, attempts) {
            (DatabaseKind::Sqlite, _) => "SQLite takes the write lock at BEGIN IMMEDIATE, so the second waited instead of conflicting".to_owned(),
            (_, n) if n > 2 => format!("the database aborted one with a conflict and ucm re-ran it {} time(s)", n - 2),
            _ => "the database resolved the overlap without aborting either".to_owned(),
        }
    );
    Ok(())
}

async fn total_balance<B: Backend>(m: &Manager<B>, s: &Schema) -> anyhow::Result<i64> {
    let rows = m
        .fetch_all(ConnectionMode::ReadOnly, &format!("SELECT balance FROM {}", s.accounts), &[])
        .await?;
    Ok(rows.iter().map(|r| r.try_get::<i64>("balance")).sum::<Result<i64, _>>()?)
}
