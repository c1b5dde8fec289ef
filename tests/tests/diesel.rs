//! The conformance suite on the diesel backend, against PostgreSQL, MariaDB/MySQL and SQLite, the HA scenarios against the primary/replica pair, the chaos scenarios against PostgreSQL through a fault proxy, and the secrets and injection tests.

use std::sync::Arc;

use ucm_diesel::{DieselManager, DieselPool, MySqlDialect, PgDialect};
use ucm_kernel::{ConnectionMode, DatabaseKind, ManagerConfig};
use ucm_tests::{
    Backend, cache_suite, chaos_suite, conformance_suite, ha_suite, secrets_suite, tls_suite,
};

struct Diesel;

impl Backend for Diesel {
    type Manager = DieselManager;
    type Core = ucm_diesel::Diesel;
    const NAME: &'static str = "diesel";

    async fn connect(config: ManagerConfig) -> ucm_kernel::Result<DieselManager> {
        DieselManager::connect(config).await
    }

    fn kernel(manager: &DieselManager) -> &ucm_kernel::Manager<ucm_diesel::Diesel> {
        manager
    }

    fn session(manager: &DieselManager) -> ucm_kernel::RoutingSession<'_, ucm_diesel::Diesel> {
        manager.session()
    }

    async fn driver_execute(
        manager: Arc<DieselManager>,
        kind: DatabaseKind,
        sql: String,
    ) -> ucm_kernel::Result<()> {
        use diesel_async::RunQueryDsl;
        let failed = |e: diesel::result::Error| ucm_kernel::Error::other(format!("diesel: {e}"));
        match kind {
            DatabaseKind::Postgres => {
                let pool = DieselPool::<PgDialect>::new(manager, ConnectionMode::ReadWrite);
                let mut connection = pool.get().await?;
                diesel::sql_query(sql).execute(&mut connection).await.map_err(failed)?;
            }
            DatabaseKind::MySql => {
                let pool = DieselPool::<MySqlDialect>::new(manager, ConnectionMode::ReadWrite);
                let mut connection = pool.get().await?;
                diesel::sql_query(sql).execute(&mut connection).await.map_err(failed)?;
            }
            DatabaseKind::Sqlite => {
                return Err(ucm_kernel::Error::other("the cache suite does not run on SQLite"));
            }
        }
        Ok(())
    }
}

conformance_suite!(pgbouncer, Diesel, DatabaseKind::Postgres, ucm_tests::Target::pgbouncer());
conformance_suite!(postgres, Diesel, DatabaseKind::Postgres);
conformance_suite!(mysql, Diesel, DatabaseKind::MySql);
conformance_suite!(sqlite, Diesel, DatabaseKind::Sqlite);
ha_suite!(ha, Diesel);
chaos_suite!(chaos, Diesel);
secrets_suite!(secrets, Diesel);
tls_suite!(tls_postgres, Diesel, DatabaseKind::Postgres);
tls_suite!(tls_mysql, Diesel, DatabaseKind::MySql);
ucm_tests::operations_suite!(operations_postgres, Diesel, DatabaseKind::Postgres);
ucm_tests::operations_suite!(operations_mysql, Diesel, DatabaseKind::MySql);

/// The PostgreSQL target of the pipelined-lane scenarios, when one is configured.
fn postgres() -> Option<ucm_tests::Target> {
    ucm_tests::Target::find(DatabaseKind::Postgres)
}

/// diesel-async pipelines on PostgreSQL: 64 tasks on two shared sessions per mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_replies_reach_their_callers() -> ucm_tests::Outcome {
    let Some(t) = postgres() else { return Ok(()) };
    ucm_tests::pipeline::replies_reach_their_callers_over_few_connections::<Diesel>(&t, true).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_statements_stay_prepared_within_a_bound() -> ucm_tests::Outcome {
    let Some(t) = postgres() else { return Ok(()) };
    let bound = ucm_diesel::KEPT_STATEMENTS as i64;
    ucm_tests::pipeline::statements_kept_prepared_stay_bounded::<Diesel>(&t, bound).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_altered_under_a_kept_statement_is_read_anew() -> ucm_tests::Outcome {
    let Some(t) = postgres() else { return Ok(()) };
    ucm_tests::pipeline::a_table_altered_under_a_kept_statement_is_read_anew::<Diesel>(&t).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_errors_stay_with_their_statement() -> ucm_tests::Outcome {
    let Some(t) = postgres() else { return Ok(()) };
    ucm_tests::pipeline::errors_stay_with_their_statement::<Diesel>(&t).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_deadline_fails_only_its_statement() -> ucm_tests::Outcome {
    let Some(t) = postgres() else { return Ok(()) };
    ucm_tests::pipeline::a_deadline_fails_only_its_statement::<Diesel>(&t).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_killed_connection_is_replaced() -> ucm_tests::Outcome {
    let Some(t) = postgres() else { return Ok(()) };
    ucm_tests::pipeline::a_killed_connection_is_replaced::<Diesel>(&t).await
}
cache_suite!(cache_postgres, Diesel, DatabaseKind::Postgres);
cache_suite!(cache_mysql, Diesel, DatabaseKind::MySql);
