//! The contenders, each running a prepared `SELECT 1` and decoding its value: raw sqlx `PgPool`, raw deadpool-postgres, ucm-sqlx; and pgbench as the C baseline.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{ManagerConfig, RecyclingMethod};
use sqlx::postgres::PgPoolOptions;
use ucm::{ConnectionManagerProtocol, ConnectionMode, ManagerMode, PoolConfiguration};
use ucm_sqlx::{SqlxConnection, SqlxManager};

use super::load::Op;

/// Every contender's pool holds at most this many connections.
pub(crate) const POOL_MAX: usize = 20;

/// A pool under test and the operation it runs.
pub(crate) struct Contender {
    pub(crate) name: &'static str,
    pub(crate) op: Op,
    close: Box<dyn FnOnce() -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> + Send>,
}

impl Contender {
    pub(crate) async fn close(self) {
        (self.close)().await;
    }
}

/// Builds every contender against `url`, each with a pool of [`POOL_MAX`].
pub(crate) async fn all(url: &str) -> anyhow::Result<Vec<Contender>> {
    Ok(vec![
        sqlx_pool(url, true).await?,
        sqlx_pool(url, false).await?,
        deadpool(url)?,
        ucm(url, false).await?,
        ucm(url, true).await?,
    ])
}

/// sqlx's own `PgPool`; `ping` is its default `test_before_acquire` (a round trip per checkout).
async fn sqlx_pool(url: &str, ping: bool) -> anyhow::Result<Contender> {
    let pool = PgPoolOptions::new()
        .max_connections(POOL_MAX as u32)
        .min_connections(POOL_MAX as u32)
        .test_before_acquire(ping)
        .connect(url)
        .await?;
    let op_pool = pool.clone();
    Ok(Contender {
        name: if ping { "sqlx PgPool (default)" } else { "sqlx PgPool (no ping)" },
        op: Arc::new(move || {
            let pool = op_pool.clone();
            Box::pin(async move {
                let one: i32 = sqlx::query_scalar("SELECT 1").fetch_one(&pool).await?;
                anyhow::ensure!(one == 1, "SELECT 1 returned {one}");
                Ok(())
            })
        }),
        close: Box::new(move || Box::pin(async move { pool.close().await })),
    })
}

/// deadpool-postgres with its fast recycling and a cached prepared statement.
fn deadpool(url: &str) -> anyhow::Result<Contender> {
    let mut config = deadpool_postgres::Config::new();
    config.url = Some(url.to_owned());
    config.manager = Some(ManagerConfig { recycling_method: RecyclingMethod::Fast });
    config.pool = Some(deadpool_postgres::PoolConfig::new(POOL_MAX));
    let pool = config.create_pool(
        Some(deadpool_postgres::Runtime::Tokio1),
        deadpool_postgres::tokio_postgres::NoTls,
    )?;
    let op_pool = pool.clone();
    Ok(Contender {
        name: "deadpool-postgres",
        op: Arc::new(move || {
            let pool = op_pool.clone();
            Box::pin(async move {
                let client = pool.get().await?;
                let statement = client.prepare_cached("SELECT 1").await?;
                let one: i32 = client.query_one(&statement, &[]).await?.get(0);
                anyhow::ensure!(one == 1, "SELECT 1 returned {one}");
                Ok(())
            })
        }),
        close: Box::new(move || Box::pin(async move { pool.close() })),
    })
}

/// ucm-sqlx: through the neutral API (`fetch_all`, rows as `Value`s, retry policy), or
/// natively (a checkout from ucm's pool, then sqlx's own query on the connection).
async fn ucm(url: &str, native: bool) -> anyhow::Result<Contender> {
    let pool = PoolConfiguration::builder(ManagerMode::AsyncModern)
        .pool_size(POOL_MAX)
        .max_overflow(0)
        .acquire_timeout(Duration::from_secs(10))
        .application_name("ucm_bench")
        .build()?;
    let config =
        ucm::ManagerConfig::builder(ManagerMode::AsyncModern).primary(url).pool(pool).build()?;
    let manager = Arc::new(SqlxManager::connect(config).await?);
    let op_manager = Arc::clone(&manager);
    let op: Op = if native {
        Arc::new(move || {
            let manager = Arc::clone(&op_manager);
            Box::pin(async move {
                let mut connection = manager.get_connection(ConnectionMode::ReadWrite).await?;
                let SqlxConnection::Postgres(session) = &mut connection else {
                    anyhow::bail!("not a PostgreSQL connection");
                };
                let one: i32 = sqlx::query_scalar("SELECT 1").fetch_one(session.as_sqlx()).await?;
                anyhow::ensure!(one == 1, "SELECT 1 returned {one}");
                Ok(())
            })
        })
    } else {
        Arc::new(move || {
            let manager = Arc::clone(&op_manager);
            Box::pin(async move {
                let rows =
                    manager.fetch_all(ConnectionMode::ReadWrite, "SELECT 1 AS one", &[]).await?;
                let one: i64 =
                    rows.first().map(|r| r.try_get("one")).transpose()?.unwrap_or_default();
                anyhow::ensure!(one == 1, "SELECT 1 returned {one}");
                Ok(())
            })
        })
    };
    Ok(Contender {
        name: if native { "ucm-sqlx (native)" } else { "ucm-sqlx (neutral)" },
        op,
        close: Box::new(move || {
            Box::pin(async move {
                let _ = manager.close().await;
            })
        }),
    })
}

/// pgbench's transactions per second for a prepared `SELECT 1` at `clients`, or `None`
/// (with the reason printed) when pgbench is not available or fails.
pub(crate) fn pgbench(
    binary: Option<&Path>,
    url: &str,
    clients: usize,
    duration: Duration,
) -> Option<f64> {
    let binary = binary.map(Path::to_path_buf).or_else(find_pgbench)?;
    let script = std::env::temp_dir().join("ucm-bench-select1.sql");
    std::fs::write(&script, "SELECT 1;\n").ok()?;
    let output = Command::new(&binary)
        .args(["-n", "-M", "prepared", "-f"])
        .arg(&script)
        .args(["-c", &clients.to_string(), "-j", &clients.min(2).to_string()])
        .args(["-T", &duration.as_secs().max(1).to_string(), url])
        .output()
        .ok()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let tps =
        stdout.lines().find(|l| l.starts_with("tps = "))?.split_whitespace().nth(2)?.parse().ok();
    if tps.is_none() {
        eprintln!(
            "pgbench gave no tps: {}",
            String::from_utf8_lossy(&output.stderr).lines().next().unwrap_or("")
        );
    }
    tps
}

fn find_pgbench() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("pgbench"))
        .find(|p| p.is_file());
    on_path.or_else(|| {
        let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|entry| entry.ok().map(|e| e.path().join("bin/pgbench")))
            .filter(|p| p.is_file())
            .collect();
        found.sort();
        found.pop()
    })
}
