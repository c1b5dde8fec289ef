//! `SqlxPool` against a real PostgreSQL: sqlx's own queries on ucm's pool, read-only handles refused by the database, owned transactions passed across functions, savepoints, and sqlx and ucm agreeing on transaction depth.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // Tests.

mod common;

use std::sync::Arc;

use sqlx::{Acquire, Postgres};
use ucm_kernel::{
    ConnectionManagerProtocol, ConnectionMode, ErrorKind, ManagerConfig, ManagerMode,
    PoolConfiguration, TransactionalConnection,
};
use ucm_sqlx::{SqlxManager, SqlxPool, SqlxTransaction};

async fn pool(url: &str, app: &str) -> SqlxPool<Postgres> {
    let pool = PoolConfiguration::builder(ManagerMode::AsyncModern)
        .pool_size(2)
        .max_overflow(0)
        .application_name(app)
        .build()
        .unwrap();
    let config =
        ManagerConfig::builder(ManagerMode::AsyncModern).primary(url).pool(pool).build().unwrap();
    let manager = Arc::new(SqlxManager::connect(config).await.unwrap());
    SqlxPool::new(manager, ConnectionMode::ReadWrite)
}

fn table(prefix: &str) -> String {
    format!("ucm_sqlxpool_{prefix}_{}_{}", std::process::id(), rand_suffix())
}

fn rand_suffix() -> u32 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos()
}

async fn count(pool: &SqlxPool<Postgres>, table: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn sqlx_queries_run_on_ucms_pool() {
    let Some(url) = common::url("PG_DATABASE_URL") else { return };
    let pool = pool(&url, "ucm_t_sqlxpool").await;
    let t = table("q");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE TABLE {t} (id INT8 PRIMARY KEY, name TEXT)")))
        .execute(&pool)
        .await
        .unwrap();
    let inserted = sqlx::query(sqlx::AssertSqlSafe(format!("INSERT INTO {t} VALUES ($1, $2)")))
        .bind(1_i64)
        .bind("one")
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(inserted.rows_affected(), 1);
    let row: (i64, String) =
        sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT id, name FROM {t} WHERE id = $1")))
            .bind(1_i64)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(row, (1, "one".to_owned()));
    let none: Option<(i64,)> =
        sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT id FROM {t} WHERE id = 2")))
            .fetch_optional(&pool)
            .await
            .unwrap();
    assert!(none.is_none());
    // A checked-out connection: both of sqlx's idioms, `&mut conn` and `&mut *conn`, run
    // observed statements; `&mut **conn` is the bare driver connection.
    let operations =
        || pool.manager().connection_info().primary().unwrap().metrics.operations.count;
    let before = operations();
    let mut conn = pool.acquire().await.unwrap();
    let n: i64 = sqlx::query_scalar("SELECT 41::int8 + 1").fetch_one(&mut conn).await.unwrap();
    let m: i64 = sqlx::query_scalar("SELECT 2::int8 * 21").fetch_one(&mut *conn).await.unwrap();
    let bare: i64 = sqlx::query_scalar("SELECT 42::int8").fetch_one(&mut **conn).await.unwrap();
    assert_eq!((n, m, bare), (42, 42, 42));
    drop(conn);
    assert_eq!(operations() - before, 2, "the two observed statements reached ucm's metrics");
    // A SQL error stays sqlx's, and ucm classifies it.
    let err = sqlx::query(sqlx::AssertSqlSafe(format!("INSERT INTO {t} VALUES (1, 'dup')")))
        .execute(&pool)
        .await
        .unwrap_err();
    assert!(matches!(&err, sqlx::Error::Database(db) if db.code().as_deref() == Some("23505")));
    assert_eq!(pool.classify(err).kind(), ErrorKind::Constraint);
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE {t}"))).execute(&pool).await.unwrap();
}

#[tokio::test]
async fn a_read_only_handles_write_is_refused_by_the_database() {
    let Some(url) = common::url("PG_DATABASE_URL") else { return };
    let pool = pool(&url, "ucm_t_sqlxpool_ro").await;
    let t = table("ro");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE TABLE {t} (id INT8)")))
        .execute(&pool)
        .await
        .unwrap();
    let reads = pool.with_mode(ConnectionMode::ReadOnly);
    let err = sqlx::query(sqlx::AssertSqlSafe(format!("INSERT INTO {t} VALUES (1)")))
        .execute(&reads)
        .await
        .unwrap_err();
    assert!(matches!(&err, sqlx::Error::Database(db) if db.code().as_deref() == Some("25006")));
    assert_eq!(pool.classify(err).kind(), ErrorKind::ReadOnlyViolation);
    assert_eq!(count(&reads, &t).await, 0, "reads still work");
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE {t}"))).execute(&pool).await.unwrap();
}

/// A function of the application that takes the transaction, as sqlx code passes
/// `&mut Transaction<'static, Postgres>` around.
async fn insert(tx: &mut SqlxTransaction<Postgres>, t: &str, id: i64) -> Result<(), sqlx::Error> {
    sqlx::query(sqlx::AssertSqlSafe(format!("INSERT INTO {t} VALUES ($1)")))
        .bind(id)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

#[tokio::test]
async fn owned_transactions_pass_across_functions_nest_as_savepoints_and_roll_back_on_drop() {
    let Some(url) = common::url("PG_DATABASE_URL") else { return };
    let pool = pool(&url, "ucm_t_sqlxpool_tx").await;
    let t = table("tx");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE TABLE {t} (id INT8 PRIMARY KEY)")))
        .execute(&pool)
        .await
        .unwrap();
    // Committed, across functions and a task.
    let mut tx = pool.begin().await.unwrap();
    insert(&mut tx, &t, 1).await.unwrap();
    let mut tx = tokio::spawn({
        let t = t.clone();
        async move {
            insert(&mut tx, &t, 2).await.unwrap();
            tx
        }
    })
    .await
    .unwrap();
    // A nested begin is a savepoint: rolling it back keeps the outer work.
    {
        let mut savepoint = (&mut tx).begin().await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("INSERT INTO {t} VALUES (3)")))
            .execute(&mut *savepoint)
            .await
            .unwrap();
        savepoint.rollback().await.unwrap();
    }
    tx.commit().await.unwrap();
    assert_eq!(count(&pool, &t).await, 2);
    // Dropped uncommitted: rolled back, and the connection comes back clean (the next
    // transaction is a real one, whose commit lands, not a savepoint of a stale one).
    let mut dropped = pool.begin().await.unwrap();
    insert(&mut dropped, &t, 4).await.unwrap();
    drop(dropped);
    let mut next = pool.begin().await.unwrap();
    insert(&mut next, &t, 5).await.unwrap();
    next.commit().await.unwrap();
    let ids: Vec<i64> =
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT id FROM {t} ORDER BY id")))
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(ids, [1, 2, 5]);
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE {t}"))).execute(&pool).await.unwrap();
}

#[tokio::test]
async fn sqlx_and_ucm_agree_on_a_transactions_depth() {
    let Some(url) = common::url("PG_DATABASE_URL") else { return };
    let pool = pool(&url, "ucm_t_sqlxpool_depth").await;
    let t = table("depth");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE TABLE {t} (id INT8)")))
        .execute(&pool)
        .await
        .unwrap();
    // ucm's neutral transaction, and sqlx's `begin` inside it on the same connection: a
    // savepoint, whose commit releases it without ending ucm's transaction.
    let mut connection = pool.manager().get_connection(ConnectionMode::ReadWrite).await.unwrap();
    connection.begin(ConnectionMode::ReadWrite).await.unwrap();
    let ucm_kernel::Connection::Postgres(session) = &mut connection else { panic!("postgres") };
    let mut inner = sqlx::Connection::begin(&mut **session).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("INSERT INTO {t} VALUES (1)")))
        .execute(&mut *inner)
        .await
        .unwrap();
    inner.commit().await.unwrap();
    connection.rollback().await.unwrap();
    drop(connection);
    assert_eq!(count(&pool, &t).await, 0, "sqlx's commit did not end ucm's transaction");
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE {t}"))).execute(&pool).await.unwrap();
}

/// An application's error type, as a service defines it.
#[derive(Debug, thiserror::Error)]
enum AppError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("{0} is not a valid amount")]
    Refused(i64),
}

impl ucm_sqlx::SqlxTransactionError for AppError {}

#[tokio::test]
async fn typed_transactions_are_rerun_on_conflicts_and_lost_connections_and_borrow_the_callers_data()
 {
    use scoped_futures::ScopedFutureExt;
    use std::sync::atomic::{AtomicU32, Ordering};

    let Some(url) = common::url("PG_DATABASE_URL") else { return };
    let pool = pool(&url, "ucm_t_sqlxpool_retry").await;
    let t = table("retry");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE TABLE {t} (id INT8 PRIMARY KEY, n INT8)")))
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("INSERT INTO {t} VALUES (1, 0)")))
        .execute(&pool)
        .await
        .unwrap();
    // A real serialization failure: on the first attempt another session updates the row
    // after this transaction's snapshot, so its own update fails with 40001 and is re-run.
    let attempts = AtomicU32::new(0);
    let (select, update) = (
        format!("SELECT n FROM {t} WHERE id = 1"),
        format!("UPDATE {t} SET n = n + 1 WHERE id = 1"),
    );
    let (select, update, attempts_ref, other) = (&select, &update, &attempts, &pool);
    let n: i64 = pool
        .transaction(|tx| {
            async move {
                let attempt = attempts_ref.fetch_add(1, Ordering::SeqCst) + 1;
                sqlx::query("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE")
                    .execute(&mut *tx)
                    .await?;
                let _: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(select.clone()))
                    .fetch_one(&mut *tx)
                    .await?;
                if attempt == 1 {
                    sqlx::query(sqlx::AssertSqlSafe(update.clone())).execute(other).await?;
                }
                sqlx::query(sqlx::AssertSqlSafe(update.clone())).execute(&mut *tx).await?;
                sqlx::query_scalar(sqlx::AssertSqlSafe(select.clone())).fetch_one(&mut *tx).await
            }
            .scope_boxed()
        })
        .await
        .unwrap();
    assert_eq!(attempts.load(Ordering::SeqCst), 2, "re-run once after the 40001");
    assert_eq!(n, 2, "the other session's update and the re-run's");
    // A connection lost before COMMIT, under the application's own error type: the server
    // rolled the transaction back, so it is re-run on a fresh connection, and its insert
    // lands once.
    let attempts = AtomicU32::new(0);
    let insert = format!("INSERT INTO {t} VALUES (2, 0)");
    let (insert, attempts_ref) = (&insert, &attempts);
    pool.transaction(|tx| {
        async move {
            let attempt = attempts_ref.fetch_add(1, Ordering::SeqCst) + 1;
            sqlx::query(sqlx::AssertSqlSafe(insert.clone())).execute(&mut *tx).await?;
            if attempt == 1 {
                sqlx::query("SELECT pg_terminate_backend(pg_backend_pid())")
                    .execute(&mut *tx)
                    .await?;
            }
            Ok::<_, AppError>(())
        }
        .scope_boxed()
    })
    .await
    .unwrap();
    assert_eq!(attempts.load(Ordering::SeqCst), 2);
    assert_eq!(count(&pool, &t).await, 2, "row 2 inserted once");
    // The application's own refusal is final: run once, rolled back, returned as it is.
    let attempts = AtomicU32::new(0);
    let (attempts_ref, t_ref) = (&attempts, &t);
    let refused = pool
        .transaction(|tx| {
            async move {
                attempts_ref.fetch_add(1, Ordering::SeqCst);
                let insert = format!("INSERT INTO {t_ref} VALUES (3, -5)");
                sqlx::query(sqlx::AssertSqlSafe(insert)).execute(&mut *tx).await?;
                Err::<(), _>(AppError::Refused(-5))
            }
            .scope_boxed()
        })
        .await
        .unwrap_err();
    assert!(matches!(refused, AppError::Refused(-5)), "{refused}");
    assert_eq!(attempts.load(Ordering::SeqCst), 1);
    assert_eq!(count(&pool, &t).await, 2, "the refused transaction was rolled back");
    // A constraint violation is the application's: not re-run, and the error stays sqlx's.
    let attempts = AtomicU32::new(0);
    let attempts_ref = &attempts;
    let err = pool
        .transaction(|tx| {
            async move {
                attempts_ref.fetch_add(1, Ordering::SeqCst);
                sqlx::query(sqlx::AssertSqlSafe(insert.clone())).execute(&mut *tx).await?;
                Ok::<_, sqlx::Error>(())
            }
            .scope_boxed()
        })
        .await
        .unwrap_err();
    assert!(matches!(&err, sqlx::Error::Database(db) if db.code().as_deref() == Some("23505")));
    assert_eq!(attempts.load(Ordering::SeqCst), 1);
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE {t}"))).execute(&pool).await.unwrap();
}
