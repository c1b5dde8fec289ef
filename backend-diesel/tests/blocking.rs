//! `DieselBlockingPool`: r2d2-style sync diesel code on ucm's pool, from a plain thread and from inside multi-thread and current-thread tokio runtimes; diesel's own `transaction()` commits and rolls back; a connection dropped mid-transaction comes back rolled back.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // Tests.
#![allow(missing_docs)] // diesel's `table!`.

mod common;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use ucm_diesel::{DieselBlockingPool, PgDialect};

diesel::table! {
    diesel_blocking_items (id) {
        id -> Int8,
        name -> Text,
    }
}

diesel::table! {
    diesel_blocking_tx (id) {
        id -> Int8,
        name -> Text,
    }
}

use diesel_blocking_items::dsl as items;
use diesel_blocking_tx::dsl as tx;

/// The DSL round trip every context runs: insert, filter, load, count.
fn dsl_round_trip(pool: &DieselBlockingPool<PgDialect>, id: i64) {
    let mut conn = pool.get().unwrap();
    diesel::insert_into(items::diesel_blocking_items)
        .values((items::id.eq(id), items::name.eq(format!("item {id}"))))
        .execute(&mut *conn)
        .unwrap();
    let names: Vec<String> = items::diesel_blocking_items
        .filter(items::id.eq(id))
        .select(items::name)
        .load(&mut *conn)
        .unwrap();
    assert_eq!(names, vec![format!("item {id}")]);
}

fn setup(pool: &DieselBlockingPool<PgDialect>) {
    // Concurrent `CREATE TABLE IF NOT EXISTS` can collide in PostgreSQL's catalog.
    static ONCE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _once = ONCE.lock().unwrap();
    pool.get()
        .unwrap()
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS diesel_blocking_items (id BIGINT PRIMARY KEY, name TEXT NOT NULL)",
        )
        .unwrap();
}

#[test]
fn dsl_from_a_plain_thread() {
    let Some(url) = common::url("PG_DATABASE_URL") else { return };
    let pool = common::blocking_pool(&url);
    setup(&pool);
    pool.get().unwrap().batch_execute("DELETE FROM diesel_blocking_items WHERE id < 100").unwrap();
    dsl_round_trip(&pool, 1);
    // From other plain threads at once, sharing the pool.
    std::thread::scope(|scope| {
        for id in 2..6 {
            let pool = pool.clone();
            scope.spawn(move || dsl_round_trip(&pool, id));
        }
    });
    let mut conn = pool.get().unwrap();
    let count: i64 = items::diesel_blocking_items
        .filter(items::id.lt(100))
        .count()
        .get_result(&mut *conn)
        .unwrap();
    assert_eq!(count, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dsl_from_inside_a_multi_thread_runtime() {
    let Some(url) = common::url("PG_DATABASE_URL") else { return };
    let pool = common::blocking_pool(&url);
    setup(&pool);
    pool.get()
        .unwrap()
        .batch_execute("DELETE FROM diesel_blocking_items WHERE id BETWEEN 100 AND 199")
        .unwrap();
    dsl_round_trip(&pool, 100);
    // From tasks of the runtime too, while other tasks run.
    let ticker = tokio::spawn(async {
        for _ in 0..20 {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    });
    let handles: Vec<_> = (101..104)
        .map(|id| {
            let pool = pool.clone();
            tokio::spawn(async move { dsl_round_trip(&pool, id) })
        })
        .collect();
    for handle in handles {
        handle.await.unwrap();
    }
    ticker.await.unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn dsl_from_inside_a_current_thread_runtime() {
    let Some(url) = common::url("PG_DATABASE_URL") else { return };
    let pool = common::blocking_pool(&url);
    setup(&pool);
    pool.get()
        .unwrap()
        .batch_execute("DELETE FROM diesel_blocking_items WHERE id BETWEEN 200 AND 299")
        .unwrap();
    dsl_round_trip(&pool, 200);
    dsl_round_trip(&pool, 201);
}

#[test]
fn diesel_transactions_commit_and_roll_back_and_a_dropped_one_is_rolled_back() {
    let Some(url) = common::url("PG_DATABASE_URL") else { return };
    let pool = common::blocking_pool(&url);
    let mut conn = pool.get().unwrap();
    conn.batch_execute(
        "DROP TABLE IF EXISTS diesel_blocking_tx; \
         CREATE TABLE diesel_blocking_tx (id BIGINT PRIMARY KEY, name TEXT NOT NULL)",
    )
    .unwrap();
    // Committed.
    conn.transaction(|c| {
        diesel::insert_into(tx::diesel_blocking_tx)
            .values((tx::id.eq(1), tx::name.eq("kept")))
            .execute(c)
    })
    .unwrap();
    // Rolled back by an error, and a nested transaction (a savepoint) rolled back alone.
    let failed: Result<(), diesel::result::Error> = conn.transaction(|c| {
        diesel::insert_into(tx::diesel_blocking_tx)
            .values((tx::id.eq(2), tx::name.eq("outer")))
            .execute(c)?;
        let inner: Result<(), diesel::result::Error> = c.transaction(|c| {
            diesel::insert_into(tx::diesel_blocking_tx)
                .values((tx::id.eq(3), tx::name.eq("inner")))
                .execute(c)?;
            Err(diesel::result::Error::RollbackTransaction)
        });
        assert!(inner.is_err());
        Err(diesel::result::Error::RollbackTransaction)
    });
    assert!(failed.is_err());
    let ids: Vec<i64> =
        tx::diesel_blocking_tx.select(tx::id).order(tx::id).load(&mut *conn).unwrap();
    assert_eq!(ids, vec![1]);
    assert!(!conn.pooled().unwrap().in_transaction());
    // A connection dropped inside a transaction: the pool rolls it back before reuse.
    use diesel::connection::TransactionManager;
    type Tm = <ucm_diesel::DieselSyncConnection<PgDialect> as Connection>::TransactionManager;
    Tm::begin_transaction(&mut *conn).unwrap();
    diesel::insert_into(tx::diesel_blocking_tx)
        .values((tx::id.eq(4), tx::name.eq("abandoned")))
        .execute(&mut *conn)
        .unwrap();
    assert!(conn.pooled().unwrap().in_transaction(), "ucm knows diesel's transaction is open");
    drop(conn);
    let mut conn = pool.get().unwrap();
    let ids: Vec<i64> =
        tx::diesel_blocking_tx.select(tx::id).order(tx::id).load(&mut *conn).unwrap();
    assert_eq!(ids, vec![1], "the abandoned insert was rolled back");
}
