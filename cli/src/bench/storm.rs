//! The connection storm (HikariCP's spike test): 1000 tasks arrive at once on a pool of 20.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::postgres::PgPoolOptions;
use tokio::sync::watch;
use ucm::{
    ConnectionManagerProtocol, ConnectionMode, ErrorKind, ManagerConfig, ManagerMode,
    PoolConfiguration,
};
use ucm_sqlx::SqlxManager;

use super::contenders::POOL_MAX;
use super::load::new_histogram;

const TASKS: usize = 1_000;
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// What one storm showed.
pub(crate) struct StormResult {
    pub(crate) name: &'static str,
    pub(crate) completed: usize,
    pub(crate) timeouts: usize,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) opened: u64,
}

pub(crate) async fn run(url: &str) -> anyhow::Result<Vec<StormResult>> {
    let pool = PoolConfiguration::builder(ManagerMode::AsyncModern)
        .pool_size(POOL_MAX)
        .max_overflow(0)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .application_name("ucm_bench_storm")
        .build()?;
    let config =
        ManagerConfig::builder(ManagerMode::AsyncModern).primary(url).pool(pool).build()?;
    let manager = Arc::new(SqlxManager::connect(config).await?);
    let before = created(&manager);
    let ucm = storm("ucm-sqlx", {
        let manager = Arc::clone(&manager);
        move || {
            let manager = Arc::clone(&manager);
            async move {
                match manager.fetch_all(ConnectionMode::ReadWrite, "SELECT 1", &[]).await {
                    Ok(_) => Ok(()),
                    Err(e) => Err(e.kind() == ErrorKind::PoolExhausted),
                }
            }
        }
    })
    .await;
    let ucm = StormResult { opened: created(&manager) - before, ..ucm };
    manager.close().await?;

    let sqlx = PgPoolOptions::new()
        .max_connections(POOL_MAX as u32)
        .min_connections(POOL_MAX as u32)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect(url)
        .await?;
    let raw = storm("sqlx PgPool (default)", {
        let sqlx = sqlx.clone();
        move || {
            let sqlx = sqlx.clone();
            async move {
                match sqlx::query("SELECT 1").execute(&sqlx).await {
                    Ok(_) => Ok(()),
                    Err(e) => Err(matches!(e, sqlx::Error::PoolTimedOut)),
                }
            }
        }
    })
    .await;
    sqlx.close().await;
    Ok(vec![ucm, raw])
}

fn created(manager: &SqlxManager) -> u64 {
    manager.connection_info().primary().map_or(0, |p| p.metrics.connections_created)
}

/// Starts [`TASKS`] tasks held at a gate, opens it, and times each task's one query.
/// The operation returns `Err(true)` for a timeout, `Err(false)` for any other failure.
async fn storm<F, Fut>(name: &'static str, op: F) -> StormResult
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<(), bool>> + Send,
{
    let (gate, opened) = watch::channel(false);
    let handles: Vec<_> = (0..TASKS)
        .map(|_| {
            let (op, mut opened) = (op.clone(), opened.clone());
            tokio::spawn(async move {
                let _ = opened.wait_for(|open| *open).await;
                (op().await, Instant::now())
            })
        })
        .collect();
    // Latency counts from the moment the gate opens: all 1000 arrive at once, and a task
    // the scheduler wakes late has been waiting all along.
    let opened_at = Instant::now();
    let _ = gate.send(true);
    let mut latency = new_histogram();
    let (mut completed, mut timeouts) = (0, 0);
    for handle in handles {
        match handle.await {
            Ok((Ok(()), done)) => {
                completed += 1;
                let _ = latency.record(done.duration_since(opened_at).as_nanos().max(1) as u64);
            }
            Ok((Err(true), _)) => timeouts += 1,
            _ => {}
        }
    }
    let ms = |q: f64| latency.value_at_quantile(q) as f64 / 1e6;
    StormResult { name, completed, timeouts, p50_ms: ms(0.5), p99_ms: ms(0.99), opened: 0 }
}
