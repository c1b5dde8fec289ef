//! The compat suite, unchanged under both feature states (`cargo test -p ucm-compat` and `--features unified-v2`) and on both backends (the diesel run: `--no-default-features --features diesel,postgres`), on PostgreSQL and SQLite; plus the consolidation test counting connections in `pg_stat_activity`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use ucm::{
    ConnectionManagerProtocol, ConnectionMode, DatabaseKind, DatabaseUrl, Error, ErrorKind,
    ManagerConfig, ManagerMode, UnifiedManager, Value,
};
use ucm_compat::{DatabaseManager, DatabaseSessionManager, LEGACY_POOL_SIZE, UNIFIED_V2};

/// The database URL from `var`, or `None` (skipped) locally; under `CI` a missing database
/// fails, as in the conformance suite.
fn url(var: &str) -> Option<String> {
    match std::env::var(var).ok().filter(|v| !v.is_empty()) {
        Some(url) => Some(url),
        None => {
            let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false");
            assert!(!ci, "{var} is not set and CI is: run the tests through `cargo xtask test`");
            eprintln!("skipped: {var} is not set (run `cargo xtask test`)");
            None
        }
    }
}

fn table(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!("ucm_compat_{prefix}_{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Placeholders: `$n` for PostgreSQL, `?` for SQLite.
fn p(url: &str, n: usize) -> String {
    if url.starts_with("postgres") { format!("${n}") } else { "?".to_owned() }
}

fn count(db: &DatabaseManager, table: &str) -> i64 {
    let rows = db.execute_query(&format!("SELECT count(*) AS n FROM {table}"), &[]).unwrap();
    rows[0].try_get("n").unwrap()
}

/// Session scopes commit on `Ok`, roll back on `Err` and on panic, and the pool gets every
/// connection back.
fn scopes(url: &str) {
    let db = DatabaseManager::new(url, true).unwrap();
    let t = table("scope");
    db.execute_update(&format!("CREATE TABLE {t} (id BIGINT PRIMARY KEY)"), &[]).unwrap();
    let insert = format!("INSERT INTO {t} (id) VALUES ({})", p(url, 1));
    db.session_scope(|s| s.execute(&insert, &[1.into()])).unwrap();
    let failed: ucm::Result<()> = db.session_scope(|s| {
        s.execute(&insert, &[2.into()])?;
        Err(Error::other("the work failed"))
    });
    assert!(failed.is_err());
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        db.session_scope(|s| -> ucm::Result<()> {
            s.execute(&insert, &[3.into()]).unwrap();
            panic!("the work panicked");
        })
    }));
    assert!(panicked.is_err());
    assert_eq!(count(&db, &t), 1, "only the committed scope's row remains");
    // Every connection came back to a private pool (a unified one is shared with the
    // other tests running meanwhile, so its in-use count says nothing about this one).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !UNIFIED_V2 && db.manager().connection_info().endpoints[0].status.in_use > 0 {
        assert!(std::time::Instant::now() < deadline, "a connection was not returned");
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut session = db.get_session().unwrap();
    session.execute(&insert, &[4.into()]).unwrap();
    assert!(session.in_transaction());
    session.rollback().unwrap();
    drop(session);
    db.execute_update(&format!("DROP TABLE {t}"), &[]).unwrap();
    db.close().unwrap();
}

/// One-shot statements, health and retry.
fn statements_health_and_retry(url: &str) {
    let db = DatabaseManager::new(url, false).unwrap();
    let t = table("oneshot");
    db.execute_update(&format!("CREATE TABLE {t} (id BIGINT PRIMARY KEY, n BIGINT)"), &[]).unwrap();
    let insert = format!("INSERT INTO {t} (id, n) VALUES ({}, {})", p(url, 1), p(url, 2));
    assert_eq!(db.execute_insert(&insert, &[1.into(), 10.into()]).unwrap(), 1);
    assert_eq!(db.execute_insert(&insert, &[2.into(), 20.into()]).unwrap(), 1);
    let update = format!("UPDATE {t} SET n = n + 1 WHERE n > {}", p(url, 1));
    assert_eq!(db.execute_update(&update, &[Value::Int(0)]).unwrap(), 2);
    let duplicate = db.execute_insert(&insert, &[1.into(), 0.into()]).unwrap_err();
    assert_eq!(duplicate.kind(), ErrorKind::Constraint, "{duplicate}");
    assert!(db.health_check());

    // Transient errors are retried with growing delays; others are returned at once.
    let attempts = AtomicU32::new(0);
    let value = db
        .with_retry(
            || {
                if attempts.fetch_add(1, Ordering::SeqCst) < 2 {
                    Err(Error::database(
                        ErrorKind::SerializationFailure,
                        "db",
                        Some("40001".into()),
                        "conflict",
                    ))
                } else {
                    Ok(count(&db, &t))
                }
            },
            3,
            Duration::from_millis(1),
        )
        .unwrap();
    assert_eq!((value, attempts.load(Ordering::SeqCst)), (2, 3));
    let attempts = AtomicU32::new(0);
    let error = db
        .with_retry(
            || -> ucm::Result<()> {
                attempts.fetch_add(1, Ordering::SeqCst);
                db.execute_insert(&insert, &[1.into(), 0.into()]).map(|_| ())
            },
            3,
            Duration::from_millis(1),
        )
        .unwrap_err();
    assert_eq!((error.kind(), attempts.load(Ordering::SeqCst)), (ErrorKind::Constraint, 1));
    db.execute_update(&format!("DROP TABLE {t}"), &[]).unwrap();
    db.close().unwrap();
}

/// The async manager: scopes commit and roll back; sessions autobegin.
async fn async_sessions(url: &str) {
    let sessions = DatabaseSessionManager::new(url, false).unwrap();
    let t = table("async");
    let create = format!("CREATE TABLE {t} (id BIGINT PRIMARY KEY)");
    sessions
        .session_scope(|s| Box::pin(async move { s.execute(&create, &[]).await }))
        .await
        .unwrap();
    let insert = format!("INSERT INTO {t} (id) VALUES ({})", p(url, 1));
    let i = insert.clone();
    sessions
        .session_scope(|s| Box::pin(async move { s.execute(&i, &[1.into()]).await }))
        .await
        .unwrap();
    let i = insert.clone();
    let failed: ucm::Result<u64> = sessions
        .session_scope(|s| {
            Box::pin(async move {
                s.execute(&i, &[2.into()]).await?;
                Err(Error::other("the work failed"))
            })
        })
        .await;
    assert!(failed.is_err());
    let mut session = sessions.session().await.unwrap();
    let rows = session.query(&format!("SELECT count(*) AS n FROM {t}"), &[]).await.unwrap();
    assert_eq!(rows[0].try_get::<i64>("n").unwrap(), 1);
    assert!(session.in_transaction());
    session.execute(&format!("DROP TABLE {t}"), &[]).await.unwrap();
    session.commit().await.unwrap();
    drop(session);
    sessions.close().await.unwrap();
}

macro_rules! suite {
    ($module:ident, $var:literal) => {
        mod $module {
            use super::*;

            #[test]
            fn session_scopes_commit_roll_back_and_return_connections() {
                if let Some(url) = url($var) {
                    scopes(&url);
                }
            }

            #[test]
            fn one_shot_statements_health_and_retry() {
                if let Some(url) = url($var) {
                    statements_health_and_retry(&url);
                }
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn async_sessions_commit_and_roll_back() {
                if let Some(url) = url($var) {
                    async_sessions(&url).await;
                }
            }

            // The sync adapter from inside runtimes: no "cannot start a runtime from within
            // a runtime" panic, no deadlock.
            #[tokio::test(flavor = "current_thread")]
            async fn sync_calls_work_inside_a_current_thread_runtime() {
                if let Some(url) = url($var) {
                    let db = DatabaseManager::new(&url, false).unwrap();
                    assert!(db.health_check());
                    assert_eq!(db.execute_query("SELECT 1 AS one", &[]).unwrap().len(), 1);
                    db.close().unwrap();
                }
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sync_calls_work_inside_a_multi_thread_runtime() {
                if let Some(url) = url($var) {
                    let db = Arc::new(DatabaseManager::new(&url, false).unwrap());
                    let tasks: Vec<_> = (0..4)
                        .map(|_| {
                            let db = Arc::clone(&db);
                            tokio::spawn(async move {
                                db.session_scope(|s| s.query("SELECT 1 AS one", &[])).unwrap().len()
                            })
                        })
                        .collect();
                    for task in tasks {
                        assert_eq!(task.await.unwrap(), 1);
                    }
                    db.close().unwrap();
                }
            }
        }
    };
}

#[cfg(feature = "postgres")]
suite!(postgres, "PG_DATABASE_URL");
#[cfg(feature = "sqlite")]
suite!(sqlite, "SQLITE_DATABASE_URL");

#[test]
fn a_bad_url_or_unreachable_host_says_why() {
    let malformed = DatabaseManager::new("postgres://user:p@ss@host/db", false).unwrap_err();
    assert_eq!(malformed.kind(), ErrorKind::Configuration, "{malformed}");
    assert!(!malformed.to_string().contains("p@ss"), "{malformed}");
    let refused = DatabaseManager::new("postgres://app:secret@127.0.0.1:1/app", false).unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::ConnectFailed, "{refused}");
    assert!(!refused.to_string().contains("secret"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_session_context_uses_database_url() {
    if let Some(url) = url("DATABASE_URL") {
        let mut session = ucm_compat::get_session_context().await.unwrap();
        let rows = session.query("SELECT 1 AS one", &[]).await.unwrap();
        assert_eq!(rows[0].try_get::<i64>("one").unwrap(), 1);
        session.rollback().await.unwrap();
        let db = ucm_compat::get_db_manager().unwrap();
        assert!(Arc::ptr_eq(&db, &ucm_compat::get_db_manager().unwrap()));
        assert!(db.health_check(), "{url}");
        ucm_compat::close_db_manager().unwrap();
    }
}

/// Ten sync and ten async legacy managers on one URL: without `unified-v2` each opens a
/// pool of its own; with it they all share the unified manager's one pool. Counted by the
/// server, in `pg_stat_activity`, by the application name the URL sets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consolidation_counts_connections_at_the_server() {
    let Some(base) = url("PG_DATABASE_URL") else { return };
    let name = format!("ucm_consolidation_{}_{}", std::process::id(), u8::from(UNIFIED_V2));
    let separator = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{separator}application_name={name}");

    let sync_managers: Vec<DatabaseManager> = tokio::task::spawn_blocking({
        let url = url.clone();
        move || (0..10).map(|_| DatabaseManager::new(&url, false).unwrap()).collect()
    })
    .await
    .unwrap();
    let mut async_managers = Vec::new();
    for _ in 0..10 {
        let manager = DatabaseSessionManager::new(&url, false).unwrap();
        drop(manager.session().await.unwrap()); // connects it (lazily created)
        async_managers.push(manager);
    }

    let admin = UnifiedManager::connect(
        ManagerConfig::builder(ManagerMode::Admin).primary(&base).build().unwrap(),
    )
    .await
    .unwrap();
    let rows = admin
        .fetch_all(
            ConnectionMode::ReadOnly,
            "SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = $1",
            &[name.clone().into()],
        )
        .await
        .unwrap();
    let connections: i64 = rows[0].try_get("n").unwrap();
    let unified_pool = sync_managers[0].manager().connection_info().endpoints[0].status.size;
    eprintln!(
        "consolidation: unified-v2 {}: 20 legacy managers hold {connections} connections",
        if UNIFIED_V2 { "on" } else { "off" }
    );
    if UNIFIED_V2 {
        let first = sync_managers[0].manager();
        assert!(sync_managers.iter().all(|m| Arc::ptr_eq(m.manager(), first)));
        for manager in &async_managers {
            assert!(Arc::ptr_eq(&manager.manager().await.unwrap(), first));
        }
        assert_eq!(connections, unified_pool as i64, "only the unified pool's connections");
    } else {
        assert_eq!(connections, 20 * LEGACY_POOL_SIZE as i64, "one private pool per manager");
    }

    for manager in &sync_managers {
        manager.close().unwrap();
    }
    for manager in &async_managers {
        manager.close().await.unwrap();
    }
    if UNIFIED_V2 {
        sync_managers[0].manager().close().await.unwrap();
    }
    admin.close().await.unwrap();
    assert_eq!(DatabaseUrl::parse(&url).unwrap().kind(), DatabaseKind::Postgres);
}

/// sqlx call sites keep their queries: the legacy managers hand out a sqlx-shaped pool over
/// their backing (a private pool, or with `unified-v2` the unified manager), usable from any
/// runtime, even after the runtime that first used it is gone.
#[cfg(feature = "sqlx")]
#[test]
fn sqlx_call_sites_run_on_the_legacy_managers_pool() {
    use ucm::ucm_sqlx::sqlx;
    let Some(url) = url("PG_DATABASE_URL") else { return };
    let db = DatabaseManager::new(&url, false).unwrap();
    let t = table("sqlx");
    let run = |pool: ucm::ucm_sqlx::SqlxPool<sqlx::Postgres>, t: String| {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(
            async move {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "CREATE TABLE IF NOT EXISTS {t} (id INT8)"
                )))
                .execute(&pool)
                .await
                .unwrap();
                let mut tx = pool.begin().await.unwrap();
                sqlx::query(sqlx::AssertSqlSafe(format!("INSERT INTO {t} VALUES ($1)")))
                    .bind(1_i64)
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
                sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(format!(
                    "SELECT count(*) FROM {t}"
                )))
                .fetch_one(&pool)
                .await
                .unwrap()
            },
        )
    };
    // Two runtimes one after the other, as two `#[tokio::test]`s would: the connections the
    // first opened still serve the second.
    assert_eq!(run(db.sqlx_pool(), t.clone()), 1);
    assert_eq!(run(db.sqlx_pool(), t.clone()), 2);
    // The same pool as the manager's own API: its rows are visible there.
    assert_eq!(count(&db, &t), 2);
    let other = DatabaseManager::new(&url, false).unwrap();
    assert_eq!(
        Arc::ptr_eq(
            db.sqlx_pool::<sqlx::Postgres>().manager(),
            other.sqlx_pool::<sqlx::Postgres>().manager()
        ),
        UNIFIED_V2,
        "with unified-v2 every legacy manager's sqlx pool is the one unified manager"
    );
    db.execute_update(&format!("DROP TABLE {t}"), &[]).unwrap();
}

/// A legacy async session runs sqlx code inside its own transaction: the neutral statement
/// and the sqlx one commit together or roll back together; the async manager's one-shot
/// statements run in their own transactions.
#[cfg(feature = "sqlx")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_legacy_session_runs_sqlx_code_in_its_transaction() {
    use ucm::ucm_sqlx::scoped_futures::ScopedFutureExt;
    use ucm::ucm_sqlx::sqlx;
    let Some(url) = url("PG_DATABASE_URL") else { return };
    let manager = DatabaseSessionManager::new(&url, false).unwrap();
    let t = table("session_sqlx");
    manager.execute_update(&format!("CREATE TABLE {t} (id INT8 PRIMARY KEY)"), &[]).await.unwrap();
    let insert = format!("INSERT INTO {t} VALUES ($1)");
    for commit in [false, true] {
        let mut session = manager.session().await.unwrap();
        session.execute(&insert, &[Value::Int(if commit { 1 } else { 10 })]).await.unwrap();
        let (insert_ref, t_ref) = (&insert, &t);
        let in_session: i64 = session
            .sqlx::<sqlx::Postgres, _, sqlx::Error, _>(|conn| {
                async move {
                    sqlx::query(sqlx::AssertSqlSafe(insert_ref.clone()))
                        .bind(if commit { 2_i64 } else { 20 })
                        .execute(&mut **conn)
                        .await?;
                    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {t_ref}")))
                        .fetch_one(&mut **conn)
                        .await
                }
                .scope_boxed()
            })
            .await
            .unwrap();
        assert!(session.in_transaction());
        assert_eq!(in_session, 2, "both rows, in one transaction");
        if commit {
            session.commit().await.unwrap();
        } else {
            session.rollback().await.unwrap();
        }
        // The same session goes on with the neutral API after its sqlx code.
        let rows = session.query("SELECT 1 AS one", &[]).await.unwrap();
        assert_eq!(rows[0].try_get::<i64>("one").unwrap(), 1);
        drop(session);
    }
    let rows =
        manager.execute_query(&format!("SELECT id FROM {t} ORDER BY id"), &[]).await.unwrap();
    let ids: Vec<i64> = rows.iter().map(|r| r.try_get::<i64>("id").unwrap()).collect();
    assert_eq!(ids, [1, 2], "the rolled-back pair left nothing, the committed pair both rows");
    // A session on PostgreSQL refuses sqlx code written for another database, and goes on.
    let mut session = manager.session().await.unwrap();
    let err = session
        .sqlx::<sqlx::Sqlite, (), sqlx::Error, _>(|_| async move { Ok(()) }.scope_boxed())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("sqlx::Postgres for a postgres:// URL"), "{err}");
    assert_eq!(session.query("SELECT 1 AS one", &[]).await.unwrap().len(), 1);
    drop(session);
    manager.execute_update(&format!("DROP TABLE {t}"), &[]).await.unwrap();
    manager.close().await.unwrap();
}

/// compat follows the application's features: sqlx when on, else diesel.
#[test]
fn the_legacy_managers_run_on_the_backend_the_features_pick() {
    let Some(url) = url("PG_DATABASE_URL") else { return };
    let db = DatabaseManager::new(&url, false).unwrap();
    let expected = if cfg!(feature = "sqlx") { "sqlx" } else { "diesel" };
    assert_eq!(db.manager().backend(), expected);
    db.close().unwrap();
}
