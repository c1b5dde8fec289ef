//! Checkout overhead without I/O: acquire and release an idle connection in a tight loop, one task and 16 contending on a pool of 4.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool::managed::{self, Metrics, RecycleResult};
use sqlx::sqlite::SqlitePoolOptions;
use ucm::{ConnectionMode, ManagerConfig, ManagerMode, PoolConfiguration};
use ucm_kernel::pool::testing::MemoryConnector;
use ucm_kernel::topology::Topology;

/// Connections in each pool: fewer than the 16 contending tasks, so they wait on each other.
const POOL: usize = 4;

/// One contender's cost per checkout.
pub(crate) struct CheckoutResult {
    pub(crate) name: &'static str,
    pub(crate) tasks: usize,
    pub(crate) ns_per_op: f64,
}

/// A deadpool manager whose objects cost nothing: raw deadpool's own overhead.
struct Nothing;

impl managed::Manager for Nothing {
    type Type = ();
    type Error = Infallible;

    async fn create(&self) -> Result<(), Infallible> {
        Ok(())
    }

    async fn recycle(&self, _: &mut (), _: &Metrics) -> RecycleResult<Infallible> {
        Ok(())
    }
}

/// Raw deadpool over [`Nothing`], [`POOL`] objects.
fn raw_deadpool() -> anyhow::Result<managed::Pool<Nothing>> {
    Ok(managed::Pool::builder(Nothing).max_size(POOL).build()?)
}

/// ucm's whole acquire path: closed check, routing, breaker, pool, idle-validation check,
/// read-only state check and metrics; the memory connector does no I/O.
async fn ucm_topology() -> anyhow::Result<Topology<MemoryConnector>> {
    let pool = PoolConfiguration::builder(ManagerMode::AsyncModern)
        .pool_size(POOL)
        .max_overflow(0)
        .build()?;
    let config = ManagerConfig::builder(ManagerMode::AsyncModern)
        .primary("postgres://bench@memory/bench")
        .pool(pool)
        .build()?;
    Ok(Topology::connect(config, |_, _| Ok(MemoryConnector::new())).await?)
}

/// One contender (`ucm` or `deadpool`) alone, `iterations` checkouts on the current task:
/// for instruction counts under `valgrind --tool=callgrind` (`ucm profile-checkout`).
pub(crate) async fn profile(contender: &str, iterations: u64) -> anyhow::Result<()> {
    match contender {
        "deadpool" => {
            let pool = raw_deadpool()?;
            for _ in 0..iterations {
                drop(pool.get().await);
            }
        }
        "ucm" => {
            let topology = ucm_topology().await?;
            for _ in 0..iterations {
                drop(topology.acquire(ConnectionMode::ReadWrite).await);
            }
        }
        other => anyhow::bail!("unknown contender {other:?}: use `ucm` or `deadpool`"),
    }
    Ok(())
}

pub(crate) async fn run(iterations: u64) -> anyhow::Result<Vec<CheckoutResult>> {
    let deadpool = raw_deadpool()?;
    let topology = Arc::new(ucm_topology().await?);
    let sqlx = SqlitePoolOptions::new()
        .max_connections(POOL as u32)
        .min_connections(POOL as u32)
        .test_before_acquire(false)
        .connect("sqlite::memory:")
        .await?;
    let mut results = Vec::new();
    for tasks in [1, 16] {
        // Interleaved twice; the better of the two runs is kept, as noise only adds time.
        let mut best = [f64::MAX; 3];
        for _ in 0..2 {
            let pool = deadpool.clone();
            best[0] = best[0].min(
                measure(tasks, iterations, move || {
                    let pool = pool.clone();
                    async move { drop(pool.get().await) }
                })
                .await,
            );
            let t = Arc::clone(&topology);
            best[1] = best[1].min(
                measure(tasks, iterations, move || {
                    let t = Arc::clone(&t);
                    async move { drop(t.acquire(ConnectionMode::ReadWrite).await) }
                })
                .await,
            );
            let pool = sqlx.clone();
            best[2] = best[2].min(
                measure(tasks, iterations, move || {
                    let pool = pool.clone();
                    async move { drop(pool.acquire().await) }
                })
                .await,
            );
        }
        for (name, ns) in
            ["deadpool (raw)", "ucm pool (breaker, routing, metrics)", "sqlx Pool (no ping)"]
                .into_iter()
                .zip(best)
        {
            results.push(CheckoutResult { name, tasks, ns_per_op: ns });
        }
    }
    sqlx.close().await;
    Ok(results)
}

/// Nanoseconds per checkout: `iterations` in all, spread over `tasks` tasks.
async fn measure<F, Fut>(tasks: usize, iterations: u64, checkout: F) -> f64
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let each = iterations / tasks as u64;
    let started = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let checkout = checkout.clone();
            tokio::spawn(async move {
                for _ in 0..each {
                    checkout().await;
                }
            })
        })
        .collect();
    for handle in handles {
        let _ = handle.await;
    }
    let elapsed: Duration = started.elapsed();
    elapsed.as_nanos() as f64 / (each * tasks as u64) as f64
}
