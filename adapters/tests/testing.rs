//! `ucm::testing` on real servers: many per-test databases with lazy managers stay within a small connection budget, a panicking test's database is dropped, templates are prepared once and copied, a pinned test transaction rolls back.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;

use common::url;
use ucm::testing::{TestDatabase, prepare_template};
use ucm::{ConnectionManagerProtocol, ConnectionMode, SqlExecutor, TransactionalConnection};

/// Connections the server holds on the given databases (names the fixture generated, so
/// they need no quoting).
async fn server_connections(admin: &Arc<ucm::UnifiedManager>, databases: &[TestDatabase]) -> i64 {
    let names: Vec<String> = databases.iter().map(|db| format!("'{}'", db.name())).collect();
    let sql = format!(
        "SELECT count(*) AS n FROM pg_stat_activity WHERE datname IN ({})",
        names.join(", ")
    );
    let rows = admin.fetch_all(ConnectionMode::ReadOnly, &sql, &[]).await.unwrap();
    rows[0].try_get("n").unwrap()
}

async fn database_exists(admin: &Arc<ucm::UnifiedManager>, name: &str) -> bool {
    let rows = admin
        .fetch_all(
            ConnectionMode::ReadOnly,
            "SELECT count(*) AS n FROM pg_database WHERE datname = $1",
            &[name.into()],
        )
        .await
        .unwrap();
    rows[0].try_get::<i64>("n").unwrap() == 1
}

async fn admin(url: &str) -> Arc<ucm::UnifiedManager> {
    let config = ucm::ManagerConfig::builder(ucm::ManagerMode::Admin)
        .primary(url)
        .pool(
            ucm::PoolConfiguration::builder(ucm::ManagerMode::Admin)
                .pool_size(1)
                .min_idle(0)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    Arc::new(ucm::UnifiedManager::connect(config).await.unwrap())
}

/// 25 tests' databases alive at once, each used by concurrent work: the lazy managers
/// hold about one connection per test, far from the 25 × pool size a prefilled manager
/// per test would hold (and from PostgreSQL's default limit of 100).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_five_test_databases_stay_within_thirty_connections() {
    let Some(url) = url("PG_DATABASE_URL") else { return };
    let admin = admin(&url).await;
    let mut databases = Vec::new();
    for _ in 0..25 {
        databases.push(TestDatabase::create(&url).await.unwrap());
    }
    assert_eq!(
        server_connections(&admin, &databases).await,
        0,
        "a lazy manager connects on first use"
    );
    let mut peak = 0;
    for round in 0..3 {
        let work: Vec<_> = databases
            .iter()
            .map(|db| {
                let manager = Arc::clone(db.manager());
                tokio::spawn(async move {
                    manager
                        .execute(
                            ConnectionMode::ReadWrite,
                            "CREATE TABLE IF NOT EXISTS t (id INT8)",
                            &[],
                        )
                        .await
                        .unwrap();
                    manager
                        .execute(ConnectionMode::ReadWrite, "INSERT INTO t VALUES (1)", &[])
                        .await
                        .unwrap();
                })
            })
            .collect();
        for task in work {
            task.await.unwrap();
        }
        let now = server_connections(&admin, &databases).await;
        eprintln!("round {round}: 25 test databases hold {now} server connections");
        peak = peak.max(now);
    }
    assert!(peak <= 30, "25 lazy test databases held {peak} connections");
    let names: Vec<String> = databases.iter().map(|db| db.name().to_owned()).collect();
    for db in databases {
        db.close().await.unwrap();
    }
    for name in names {
        assert!(!database_exists(&admin, &name).await, "{name} was dropped");
    }
    admin.close().await.unwrap();
}

/// A test that panics while it holds its database still drops it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_tests_database_is_dropped() {
    let Some(url) = url("PG_DATABASE_URL") else { return };
    let admin = admin(&url).await;
    let db = TestDatabase::create(&url).await.unwrap();
    let name = db.name().to_owned();
    assert!(database_exists(&admin, &name).await);
    let failed = tokio::spawn(async move {
        db.manager()
            .execute(ConnectionMode::ReadWrite, "CREATE TABLE t (id INT8)", &[])
            .await
            .unwrap();
        panic!("the test fails while its database is in use");
    })
    .await;
    assert!(failed.unwrap_err().is_panic());
    assert!(!database_exists(&admin, &name).await, "dropped on unwind");
    admin.close().await.unwrap();
}

/// A template is prepared once (its setup runs once however many tests ask), copied into
/// each test's database, and left without sessions, so copying it never fails for a
/// connection a pool kept on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn databases_are_copied_from_a_template_prepared_once() {
    let Some(url) = url("PG_DATABASE_URL") else { return };
    let template = format!("ucm_template_{}", std::process::id());
    let setups = Arc::new(std::sync::atomic::AtomicU32::new(0));
    for _ in 0..3 {
        let setups = Arc::clone(&setups);
        prepare_template(&url, &template, move |manager| {
            Box::pin(async move {
                setups.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                manager
                    .execute(ConnectionMode::ReadWrite, "CREATE TABLE seed (id INT8)", &[])
                    .await?;
                manager
                    .execute(ConnectionMode::ReadWrite, "INSERT INTO seed VALUES (7)", &[])
                    .await?;
                Ok(())
            })
        })
        .await
        .unwrap();
    }
    assert_eq!(setups.load(std::sync::atomic::Ordering::SeqCst), 1);
    let (a, b) = (
        TestDatabase::builder(&url).template(&template).create().await.unwrap(),
        TestDatabase::builder(&url).template(&template).create().await.unwrap(),
    );
    for db in [&a, &b] {
        let rows = db
            .manager()
            .fetch_all(ConnectionMode::ReadOnly, "SELECT id FROM seed", &[])
            .await
            .unwrap();
        assert_eq!(rows[0].try_get::<i64>("id").unwrap(), 7);
    }
    // Each copy is its own: a change in one is not in the other.
    a.manager().execute(ConnectionMode::ReadWrite, "DELETE FROM seed", &[]).await.unwrap();
    let rows =
        b.manager().fetch_all(ConnectionMode::ReadOnly, "SELECT id FROM seed", &[]).await.unwrap();
    assert_eq!(rows.len(), 1);
    a.close().await.unwrap();
    b.close().await.unwrap();
    let admin = admin(&url).await;
    admin
        .execute(ConnectionMode::ReadWrite, &format!("DROP DATABASE {template}"), &[])
        .await
        .unwrap();
    admin.close().await.unwrap();
}

/// The pinned test transaction: whatever the test wrote is gone once it is dropped.
#[tokio::test]
async fn a_pinned_test_transaction_rolls_back() {
    for var in ["PG_DATABASE_URL", "SQLITE_DATABASE_URL"] {
        let Some(url) = url(var) else { continue };
        let db = TestDatabase::create(&url).await.unwrap();
        db.manager()
            .execute(ConnectionMode::ReadWrite, "CREATE TABLE t (id INT8)", &[])
            .await
            .unwrap();
        let mut tx = db.transaction().await.unwrap();
        tx.execute("INSERT INTO t VALUES (1)", &[]).await.unwrap();
        let rows = tx.fetch_all("SELECT count(*) AS n FROM t", &[]).await.unwrap();
        assert_eq!(rows[0].try_get::<i64>("n").unwrap(), 1, "{var}: seen inside");
        drop(tx);
        let rows = db
            .manager()
            .fetch_all(ConnectionMode::ReadOnly, "SELECT count(*) AS n FROM t", &[])
            .await
            .unwrap();
        assert_eq!(rows[0].try_get::<i64>("n").unwrap(), 0, "{var}: rolled back");
        let path = db.name().to_owned();
        db.close().await.unwrap();
        if var == "SQLITE_DATABASE_URL" {
            assert!(!std::path::Path::new(&path).exists(), "the SQLite file is removed");
        }
    }
}

/// A committed transaction on the pinned connection is the caller's choice: it stays.
#[tokio::test]
async fn the_pinned_connection_can_still_commit() {
    let Some(url) = url("PG_DATABASE_URL") else { return };
    let db = TestDatabase::create(&url).await.unwrap();
    db.manager().execute(ConnectionMode::ReadWrite, "CREATE TABLE t (id INT8)", &[]).await.unwrap();
    let mut tx = db.transaction().await.unwrap();
    tx.execute("INSERT INTO t VALUES (1)", &[]).await.unwrap();
    tx.commit().await.unwrap();
    drop(tx);
    let rows = db
        .manager()
        .fetch_all(ConnectionMode::ReadOnly, "SELECT count(*) AS n FROM t", &[])
        .await
        .unwrap();
    assert_eq!(rows[0].try_get::<i64>("n").unwrap(), 1);
}
