//! The conformance suite on the sqlx backend, against PostgreSQL, MariaDB/MySQL and SQLite, the HA scenarios against the primary/replica pair, the chaos scenarios against PostgreSQL through a fault proxy, and the secrets and injection tests.

use std::sync::Arc;

use ucm_kernel::{ConnectionMode, DatabaseKind, ManagerConfig};
use ucm_sqlx::{SqlxManager, SqlxPool, sqlx};
use ucm_tests::{
    Backend, cache_suite, chaos_suite, conformance_suite, ha_suite, secrets_suite, tls_suite,
};

struct Sqlx;

impl Backend for Sqlx {
    type Manager = SqlxManager;
    type Core = ucm_sqlx::Sqlx;
    const NAME: &'static str = "sqlx";

    async fn connect(config: ManagerConfig) -> ucm_kernel::Result<SqlxManager> {
        SqlxManager::connect(config).await
    }

    fn kernel(manager: &SqlxManager) -> &ucm_kernel::Manager<ucm_sqlx::Sqlx> {
        manager
    }

    fn session(manager: &SqlxManager) -> ucm_kernel::RoutingSession<'_, ucm_sqlx::Sqlx> {
        manager.session()
    }

    async fn driver_execute(
        manager: Arc<SqlxManager>,
        kind: DatabaseKind,
        sql: String,
    ) -> ucm_kernel::Result<()> {
        let failed = |e: sqlx::Error| ucm_kernel::Error::other(format!("sqlx: {e}"));
        match kind {
            DatabaseKind::Postgres => {
                let pool = SqlxPool::<sqlx::Postgres>::new(manager, ConnectionMode::ReadWrite);
                sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&pool).await.map_err(failed)?;
            }
            DatabaseKind::MySql => {
                let pool = SqlxPool::<sqlx::MySql>::new(manager, ConnectionMode::ReadWrite);
                sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&pool).await.map_err(failed)?;
            }
            DatabaseKind::Sqlite => {
                let pool = SqlxPool::<sqlx::Sqlite>::new(manager, ConnectionMode::ReadWrite);
                sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&pool).await.map_err(failed)?;
            }
        }
        Ok(())
    }
}

conformance_suite!(pgbouncer, Sqlx, DatabaseKind::Postgres, ucm_tests::Target::pgbouncer());
conformance_suite!(postgres, Sqlx, DatabaseKind::Postgres);
conformance_suite!(mysql, Sqlx, DatabaseKind::MySql);
conformance_suite!(sqlite, Sqlx, DatabaseKind::Sqlite);
ha_suite!(ha, Sqlx);
chaos_suite!(chaos, Sqlx);
secrets_suite!(secrets, Sqlx);
tls_suite!(tls_postgres, Sqlx, DatabaseKind::Postgres);
tls_suite!(tls_mysql, Sqlx, DatabaseKind::MySql);
ucm_tests::operations_suite!(operations_postgres, Sqlx, DatabaseKind::Postgres);
ucm_tests::operations_suite!(operations_mysql, Sqlx, DatabaseKind::MySql);

/// The deep diagnostics find what is seeded on PostgreSQL (written over the protocol, so
/// one backend suffices).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_diagnostics_find_seeded_problems() -> ucm_tests::Outcome {
    match ucm_tests::Target::find(DatabaseKind::Postgres) {
        Some(target) => ucm_tests::diagnostics::seeded_problems_are_found::<Sqlx>(&target).await,
        None => Ok(()),
    }
}

/// The same on MariaDB/MySQL: a redundant index, a transaction left open, a lock wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_diagnostics_find_seeded_problems_on_mysql() -> ucm_tests::Outcome {
    match ucm_tests::Target::find(DatabaseKind::MySql) {
        Some(target) => {
            ucm_tests::diagnostics::mysql_seeded_problems_are_found::<Sqlx>(&target).await
        }
        None => Ok(()),
    }
}

/// sqlx cannot pipeline: the lane runs each statement on a pooled connection, with the
/// same answers and errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_lane_falls_back_to_the_pool() -> ucm_tests::Outcome {
    let Some(t) = ucm_tests::Target::find(DatabaseKind::Postgres) else { return Ok(()) };
    ucm_tests::pipeline::replies_reach_their_callers_over_few_connections::<Sqlx>(&t, false)
        .await?;
    ucm_tests::pipeline::errors_stay_with_their_statement::<Sqlx>(&t).await
}
cache_suite!(cache_postgres, Sqlx, DatabaseKind::Postgres);
cache_suite!(cache_mysql, Sqlx, DatabaseKind::MySql);
