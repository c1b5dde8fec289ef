//! The diesel handles on MySQL/MariaDB and SQLite: the DSL on the blocking pool (from a plain thread and from inside a runtime), diesel's transaction rolling back, and the retried transaction committing once.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // Tests.
#![allow(missing_docs)] // diesel's `table!`.

mod common;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use ucm_diesel::{DieselBlockingPool, MySqlDialect, SqliteDialect};
use ucm_kernel::{ConnectionMode, ManagerMode};

diesel::table! {
    diesel_other_items (id) {
        id -> BigInt,
        name -> Text,
    }
}

use diesel_other_items::dsl as items;

/// The same checks on any database: written once as a macro, since diesel's DSL is checked
/// per concrete backend.
macro_rules! exercise {
    ($pool:expr) => {{
        let pool = $pool;
        let mut conn = pool.get().unwrap();
        conn.batch_execute(
            "DROP TABLE IF EXISTS diesel_other_items; \
             CREATE TABLE diesel_other_items (id BIGINT PRIMARY KEY, name TEXT NOT NULL)",
        )
        .unwrap();
        diesel::insert_into(items::diesel_other_items)
            .values((items::id.eq(1), items::name.eq("one")))
            .execute(&mut *conn)
            .unwrap();
        // diesel's transaction, rolled back by the error.
        let failed: Result<(), diesel::result::Error> = conn.transaction(|c| {
            diesel::insert_into(items::diesel_other_items)
                .values((items::id.eq(2), items::name.eq("two")))
                .execute(c)?;
            Err(diesel::result::Error::RollbackTransaction)
        });
        assert!(failed.is_err());
        drop(conn);
        // The retried transaction, committed once.
        let mut runs = 0;
        pool.transaction(|c| {
            runs += 1;
            diesel::insert_into(items::diesel_other_items)
                .values((items::id.eq(3), items::name.eq("three")))
                .execute(c)
        })
        .unwrap();
        assert_eq!(runs, 1);
        let mut conn = pool.get().unwrap();
        let ids: Vec<i64> =
            items::diesel_other_items.select(items::id).order(items::id).load(&mut *conn).unwrap();
        assert_eq!(ids, vec![1, 3]);
    }};
}

fn pool<D: ucm_diesel::DieselDialect>(url: &str) -> DieselBlockingPool<D> {
    DieselBlockingPool::connect(
        common::config(url, ManagerMode::AsyncModern),
        ConnectionMode::ReadWrite,
    )
    .unwrap()
}

#[test]
fn mysql_from_a_plain_thread() {
    let Some(url) = common::url("MYSQL_DATABASE_URL") else { return };
    exercise!(&pool::<MySqlDialect>(&url));
}

#[test]
fn sqlite_from_a_plain_thread_and_from_inside_a_runtime() {
    let Some(url) = common::url("SQLITE_DATABASE_URL") else { return };
    let pool = pool::<SqliteDialect>(&url);
    exercise!(&pool);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async { exercise!(&pool) });
}
