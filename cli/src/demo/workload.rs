//! The demo's workload: many tasks, each a loop of reads (70%), transfers (20%: a transaction of three statements, re-run on conflict) and single-row writes (10%), timed per operation.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use ucm::{ConnectionManagerProtocol, ConnectionMode, Manager, ManagerMode, ProtocolExt, Value};
use ucm_kernel::backend::Backend;
use ucm_kernel::telemetry::metrics::Histogram;

use super::DemoArgs;
use super::schema::Statements;

/// What one mode's run measured.
pub(super) struct Stats {
    pub(super) ops: BTreeMap<&'static str, Histogram>,
    pub(super) errors: BTreeMap<&'static str, AtomicU64>,
    pub(super) retries: AtomicU64,
}

/// Runs the mixed workload for the configured time: 70% reads, 20% transfers (a
/// transaction of three statements, re-run on conflict), 10% single-row writes.
pub(super) async fn run<B: Backend>(
    manager: &Arc<Manager<B>>,
    statements: &Statements,
    args: &DemoArgs,
    mode: ManagerMode,
) -> Arc<Stats> {
    let stats = Arc::new(Stats::default());
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(args.seconds);
    let statements = Arc::new(statements.clone());
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
                            .fetch_all(
                                ConnectionMode::ReadOnly,
                                &statements.read_balance,
                                &[a.into()],
                            )
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
                            .execute(
                                ConnectionMode::ReadWrite,
                                &statements.set_owner,
                                &[owner, a.into()],
                            )
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
    sql: &Arc<Statements>,
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
            tx.execute(&sql.debit, &[amount.into(), a.into()]).await?;
            tx.execute(&sql.credit, &[amount.into(), b.into()]).await?;
            tx.execute(
                &sql.record_transfer,
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
