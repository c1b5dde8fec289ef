//! `SqlxPool` on MariaDB/MySQL and SQLite: sqlx's queries on ucm's pool, owned transactions with savepoints and rollback on drop, and a read-only handle refused by the database.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // Tests.

mod common;

use std::sync::Arc;

use sqlx::Acquire;
use ucm_kernel::{ConnectionMode, ErrorKind, ManagerConfig, ManagerMode, PoolConfiguration};
use ucm_sqlx::{SqlxDatabase, SqlxManager, SqlxPool};

async fn pool<DB: SqlxDatabase>(url: &str) -> SqlxPool<DB> {
    let pool = PoolConfiguration::builder(ManagerMode::AsyncModern)
        .pool_size(2)
        .max_overflow(0)
        .build()
        .unwrap();
    let config =
        ManagerConfig::builder(ManagerMode::AsyncModern).primary(url).pool(pool).build().unwrap();
    SqlxPool::new(Arc::new(SqlxManager::connect(config).await.unwrap()), ConnectionMode::ReadWrite)
}

fn table(prefix: &str) -> String {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("ucm_sqlxpool_{prefix}_{}_{nanos}", std::process::id())
}

/// The same scenario on any database: `insert` takes one `?` parameter.
macro_rules! scenario {
    ($db:ty, $pool:expr, $t:expr) => {{
        let pool: SqlxPool<$db> = $pool;
        let t: String = $t;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE TABLE {t} (id BIGINT PRIMARY KEY)")))
            .execute(&pool)
            .await
            .unwrap();
        let insert = format!("INSERT INTO {t} (id) VALUES (?)");
        let mut tx = pool.begin().await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(insert.clone()))
            .bind(1_i64)
            .execute(&mut *tx)
            .await
            .unwrap();
        {
            let mut savepoint = (&mut tx).begin().await.unwrap();
            sqlx::query(sqlx::AssertSqlSafe(insert.clone()))
                .bind(2_i64)
                .execute(&mut *savepoint)
                .await
                .unwrap();
            savepoint.rollback().await.unwrap();
        }
        tx.commit().await.unwrap();
        let mut dropped = pool.begin().await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(insert.clone()))
            .bind(3_i64)
            .execute(&mut *dropped)
            .await
            .unwrap();
        drop(dropped);
        let ids: Vec<i64> =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT id FROM {t} ORDER BY id")))
                .fetch_all(&pool)
                .await
                .unwrap();
        assert_eq!(ids, [1], "the savepoint and the dropped transaction were rolled back");
        let reads = pool.with_mode(ConnectionMode::ReadOnly);
        let err = sqlx::query(sqlx::AssertSqlSafe(insert.clone()))
            .bind(4_i64)
            .execute(&reads)
            .await
            .unwrap_err();
        assert_eq!(pool.classify(err).kind(), ErrorKind::ReadOnlyViolation);
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE {t}"))).execute(&pool).await.unwrap();
        pool
    }};
}

/// The handle's database must be the manager's: a clear error otherwise.
async fn wrong_database_says_so<DB: SqlxDatabase>(pool: &SqlxPool<DB>) {
    let err = pool.acquire().await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("build the pool for the manager's database"), "{text}");
}

#[tokio::test]
async fn mysql() {
    let Some(url) = common::url("MYSQL_DATABASE_URL") else { return };
    let pool = scenario!(sqlx::MySql, pool::<sqlx::MySql>(&url).await, table("my"));
    let wrong: SqlxPool<sqlx::Sqlite> =
        SqlxPool::new(Arc::clone(pool.manager()), ConnectionMode::ReadWrite);
    wrong_database_says_so(&wrong).await;
}

#[tokio::test]
async fn sqlite() {
    let Some(url) = common::url("SQLITE_DATABASE_URL") else { return };
    scenario!(sqlx::Sqlite, pool::<sqlx::Sqlite>(&url).await, table("lite"));
}
