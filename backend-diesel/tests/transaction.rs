//! Retried transactions with typed closures, sync and async, on PostgreSQL: re-run on a real serialization failure (40001) and on a connection killed before `COMMIT`, never on the application's own error; the closure borrows the caller's data.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // Tests.
#![allow(missing_docs)] // diesel's `table!`.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use ucm_diesel::DieselTransactionError;
use ucm_kernel::ErrorKind;

diesel::table! {
    diesel_retry_counters (id) {
        id -> Int8,
        n -> Int8,
    }
}

use diesel_retry_counters::dsl as counters;

/// The application's error, carrying diesel's through `#[from]`.
#[derive(Debug, thiserror::Error)]
enum AppError {
    #[error("database: {0}")]
    Database(#[from] diesel::result::Error),
    #[error("the counter may not reach {0}")]
    TooHigh(i64),
}

impl DieselTransactionError for AppError {}

/// Creates the table once, whichever test comes first: concurrent `CREATE TABLE IF NOT
/// EXISTS` can collide in PostgreSQL's catalog, so it waits for an advisory lock.
const CREATE: &str = "BEGIN; SELECT pg_advisory_xact_lock(7411); \
    CREATE TABLE IF NOT EXISTS diesel_retry_counters (id BIGINT PRIMARY KEY, n BIGINT NOT NULL); \
    COMMIT;";

/// One counter row per test, so the tests run in parallel.
fn reset(conn: &mut impl SimpleConnection, id: i64) {
    conn.batch_execute(&format!(
        "{CREATE} DELETE FROM diesel_retry_counters WHERE id = {id}; \
         INSERT INTO diesel_retry_counters VALUES ({id}, 0)"
    ))
    .unwrap();
}

#[test]
fn sync_reruns_a_serialization_failure_and_a_killed_connection_but_not_an_app_error() {
    let Some(url) = common::url("PG_DATABASE_URL") else { return };
    let pool = common::blocking_pool(&url);
    reset(&mut *pool.get().unwrap(), 1);
    let step = 1_i64; // Borrowed by the closure.

    // A real 40001: after this transaction's snapshot, another SERIALIZABLE transaction
    // commits a change to the row this one then updates.
    let attempts = AtomicU32::new(0);
    let n = pool
        .transaction(|conn| {
            let attempt = attempts.fetch_add(1, Ordering::SeqCst) + 1;
            conn.batch_execute("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE")?;
            let n: i64 = counters::diesel_retry_counters.find(1).select(counters::n).first(conn)?;
            if attempt == 1 {
                let mut other = pool.get().unwrap();
                other
                    .transaction(|o| {
                        o.batch_execute("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE")?;
                        diesel::update(counters::diesel_retry_counters.find(1))
                            .set(counters::n.eq(counters::n + 10))
                            .execute(o)
                    })
                    .unwrap();
            }
            diesel::update(counters::diesel_retry_counters.find(1))
                .set(counters::n.eq(n + step))
                .execute(conn)?;
            Ok::<_, AppError>(n + step)
        })
        .unwrap();
    assert_eq!(attempts.load(Ordering::SeqCst), 2, "re-run once after the 40001");
    assert_eq!(n, 11, "the second attempt saw the other transaction's commit");

    // A connection killed before COMMIT: nothing was applied, so the work is re-run.
    let attempts = AtomicU32::new(0);
    pool.transaction(|conn| {
        let attempt = attempts.fetch_add(1, Ordering::SeqCst) + 1;
        diesel::update(counters::diesel_retry_counters.find(1))
            .set(counters::n.eq(counters::n + step))
            .execute(conn)?;
        if attempt == 1 {
            diesel::sql_query("SELECT pg_terminate_backend(pg_backend_pid())").execute(conn)?;
        }
        Ok::<_, diesel::result::Error>(())
    })
    .unwrap();
    assert_eq!(attempts.load(Ordering::SeqCst), 2, "re-run once after the killed connection");
    let mut conn = pool.get().unwrap();
    let n: i64 =
        counters::diesel_retry_counters.find(1).select(counters::n).first(&mut *conn).unwrap();
    assert_eq!(n, 12, "applied exactly once");

    // The application's own error: rolled back, returned at once, never re-run.
    let attempts = AtomicU32::new(0);
    let result = pool.transaction(|conn| {
        attempts.fetch_add(1, Ordering::SeqCst);
        diesel::update(counters::diesel_retry_counters.find(1))
            .set(counters::n.eq(counters::n + 100))
            .execute(conn)?;
        Err::<(), _>(AppError::TooHigh(112))
    });
    assert!(matches!(result, Err(AppError::TooHigh(112))), "{result:?}");
    assert_eq!(attempts.load(Ordering::SeqCst), 1);
    let n: i64 =
        counters::diesel_retry_counters.find(1).select(counters::n).first(&mut *conn).unwrap();
    assert_eq!(n, 12, "rolled back");
}

/// How many attempts ran (a function: in the async module, `diesel_async::RunQueryDsl::load`
/// would shadow the atomic's own `load`).
fn runs(attempts: &AtomicU32) -> u32 {
    attempts.load(Ordering::SeqCst)
}

/// The async handle, in a module of its own: `diesel_async::RunQueryDsl`, not diesel's.
mod async_handle {
    use std::sync::atomic::{AtomicU32, Ordering};

    use diesel::{ExpressionMethods, QueryDsl};
    use diesel_async::{RunQueryDsl, SimpleAsyncConnection};
    use scoped_futures::ScopedFutureExt;

    use ucm_diesel::{DieselPool, PgDialect};

    use super::{AppError, CREATE, counters};
    use crate::common;

    /// Another SERIALIZABLE transaction, on another connection, adding 10 to counter `id`.
    async fn concurrent_bump(pool: &DieselPool<PgDialect>, id: i64) -> diesel::QueryResult<usize> {
        pool.transaction(|o| {
            async move {
                o.batch_execute("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE").await?;
                diesel::update(counters::diesel_retry_counters.find(id))
                    .set(counters::n.eq(counters::n + 10))
                    .execute(o)
                    .await
            }
            .scope_boxed()
        })
        .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn async_reruns_a_serialization_failure_and_a_killed_connection_but_not_an_app_error() {
        let Some(url) = common::url("PG_DATABASE_URL") else { return };
        let pool = common::async_pool(&url).await;
        {
            let mut conn = pool.get().await.unwrap();
            conn.batch_execute(&format!(
                "{CREATE} DELETE FROM diesel_retry_counters WHERE id = 2; \
                 INSERT INTO diesel_retry_counters VALUES (2, 0)"
            ))
            .await
            .unwrap();
        }
        let step = 1_i64;

        let attempts = AtomicU32::new(0);
        let n = pool
            .transaction(|conn| {
                async {
                    let attempt = attempts.fetch_add(1, Ordering::SeqCst) + 1;
                    conn.batch_execute("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE").await?;
                    let n: i64 = counters::diesel_retry_counters
                        .find(2)
                        .select(counters::n)
                        .first(conn)
                        .await?;
                    if attempt == 1 {
                        concurrent_bump(&pool, 2).await.unwrap();
                    }
                    diesel::update(counters::diesel_retry_counters.find(2))
                        .set(counters::n.eq(n + step))
                        .execute(conn)
                        .await?;
                    Ok::<_, AppError>(n + step)
                }
                .scope_boxed()
            })
            .await
            .unwrap();
        assert_eq!(super::runs(&attempts), 2, "re-run once after the 40001");
        assert_eq!(n, 11);

        let attempts = AtomicU32::new(0);
        pool.transaction(|conn| {
            async {
                let attempt = attempts.fetch_add(1, Ordering::SeqCst) + 1;
                diesel::update(counters::diesel_retry_counters.find(2))
                    .set(counters::n.eq(counters::n + step))
                    .execute(conn)
                    .await?;
                if attempt == 1 {
                    diesel::sql_query("SELECT pg_terminate_backend(pg_backend_pid())")
                        .execute(conn)
                        .await?;
                }
                Ok::<_, diesel::result::Error>(())
            }
            .scope_boxed()
        })
        .await
        .unwrap();
        assert_eq!(super::runs(&attempts), 2, "re-run once after the killed connection");

        let attempts = AtomicU32::new(0);
        let result = pool
            .transaction(|conn| {
                async {
                    attempts.fetch_add(1, Ordering::SeqCst);
                    diesel::update(counters::diesel_retry_counters.find(2))
                        .set(counters::n.eq(counters::n + 100))
                        .execute(conn)
                        .await?;
                    Err::<(), _>(AppError::TooHigh(112))
                }
                .scope_boxed()
            })
            .await;
        assert!(matches!(result, Err(AppError::TooHigh(112))), "{result:?}");
        assert_eq!(super::runs(&attempts), 1);
        let mut conn = pool.get().await.unwrap();
        let n: i64 = counters::diesel_retry_counters
            .find(2)
            .select(counters::n)
            .first(&mut conn)
            .await
            .unwrap();
        assert_eq!(n, 12, "the killed attempt applied nothing and the app error rolled back");
    }
}

#[test]
fn a_failed_checkout_is_classified_by_ucm() {
    // A closed manager refuses checkouts with its own kind, which the retry loop returns
    // (not retried) and `classify` gives back.
    let Some(url) = common::url("PG_DATABASE_URL") else { return };
    let pool = common::blocking_pool(&url);
    ucm_kernel::blocking::block_on(ucm_kernel::ConnectionManagerProtocol::close(&**pool.manager()))
        .unwrap()
        .unwrap();
    let error = pool.transaction(|_| Ok::<_, diesel::result::Error>(())).unwrap_err();
    assert_eq!(pool.classify(error).kind(), ErrorKind::Closed);
}
