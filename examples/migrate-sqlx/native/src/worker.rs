//! The background worker: shares the service's pool and, every tick, marks a bounded batch of queued jobs done, each with its audit row, in one transaction.

use std::time::Duration;

use sqlx::Postgres;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use ucm_sqlx::SqlxPool;

use crate::db;

/// Starts the worker on the current runtime: every `every`, it finishes at most `batch`
/// queued jobs ([`run_once`]). It runs until the returned handle is aborted or the runtime
/// stops; a failed tick is logged and the next one tries again.
pub fn spawn_worker(pool: SqlxPool<Postgres>, every: Duration, batch: i64) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if let Err(e) = run_once(&pool, batch).await {
                tracing::warn!("the worker's tick failed, retrying at the next one: {e}");
            }
        }
    })
}

/// Marks at most `batch` queued jobs done and records a `done` audit row for each, in one
/// transaction; returns how many it finished.
///
/// # Errors
/// The database's error; nothing is changed then.
pub async fn run_once(pool: &SqlxPool<Postgres>, batch: i64) -> Result<usize, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let ids = db::finish_queued(&mut tx, batch).await?;
    for &id in &ids {
        db::insert_event(&mut tx, id, "done", "worker").await?;
    }
    tx.commit().await?;
    Ok(ids.len())
}
