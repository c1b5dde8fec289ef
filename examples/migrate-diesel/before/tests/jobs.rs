//! The job queue's own tests, on real PostgreSQL: each creates a fresh database, runs the embedded migrations on it, and drives the queue through the application's pool.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use migrate_diesel_before::schema::jobs;
use migrate_diesel_before::{
    DbPool, complete, connect, counts, enqueue, fail, fetch_next, migrate, retry,
};

/// The PostgreSQL server to test against: `PG_DATABASE_URL`, else a PostgreSQL
/// `DATABASE_URL`. Missing, the test is skipped with the reason printed, or fails under `CI`.
fn admin_url() -> Option<String> {
    let from_var = std::env::var("PG_DATABASE_URL").ok().filter(|v| !v.is_empty());
    let fallback = std::env::var("DATABASE_URL").ok().filter(|v| v.starts_with("postgres"));
    match from_var.or(fallback) {
        Some(url) => Some(url),
        None => {
            let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false");
            assert!(!ci, "PG_DATABASE_URL is not set and CI is: run `cargo xtask test`");
            eprintln!("skipped: PG_DATABASE_URL is not set (run `cargo xtask test`)");
            None
        }
    }
}

/// `url` with its database replaced by `database` (the query string is kept).
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority = base.find("://").map_or(0, |i| i + 3);
    let server = match base[authority..].find('/') {
        Some(slash) => &base[..authority + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{server}/{database}?{query}"),
        None => format!("{server}/{database}"),
    }
}

/// A fresh database with the queue's migrations run, and the application's pool on it;
/// dropped (with the database) at the end of the test, even on a panic.
struct TestDb {
    admin: String,
    name: String,
    pool: Option<DbPool>,
}

impl TestDb {
    fn new() -> Option<Self> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let admin = admin_url()?;
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().subsec_nanos();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("ucm_diesel_ex_{}_{n}_{nanos}", std::process::id());
        let admin_pool = connect(&admin).unwrap();
        admin_pool.get().unwrap().batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
        let pool = connect(&with_database(&admin, &name)).unwrap();
        migrate(&mut pool.get().unwrap()).unwrap();
        Some(Self { admin, name, pool: Some(pool) })
    }

    fn pool(&self) -> &DbPool {
        self.pool.as_ref().unwrap()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        drop(self.pool.take());
        if let Ok(admin) = connect(&self.admin)
            && let Ok(mut conn) = admin.get()
        {
            let _ =
                conn.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name));
        }
    }
}

#[test]
fn jobs_are_fetched_oldest_first_and_completed() {
    let Some(db) = TestDb::new() else { return };
    let mut conn = db.pool().get().unwrap();
    let first = enqueue(&mut conn, "email", "to: a@example.com", 3).unwrap();
    let second = enqueue(&mut conn, "email", "to: b@example.com", 3).unwrap();
    assert_eq!(first.status, "queued");

    let taken = fetch_next(&mut conn, "worker-1").unwrap().unwrap();
    assert_eq!(taken.id, first.id, "oldest first");
    assert_eq!((taken.status.as_str(), taken.attempts), ("running", 1));
    assert_eq!(taken.locked_by.as_deref(), Some("worker-1"));
    assert!(complete(&mut conn, taken.id).unwrap());
    assert!(!complete(&mut conn, taken.id).unwrap(), "only a running job completes");

    assert_eq!(fetch_next(&mut conn, "worker-1").unwrap().unwrap().id, second.id);
    assert_eq!(fetch_next(&mut conn, "worker-1").unwrap(), None, "the queue is empty");
    let counts = counts(&mut conn).unwrap();
    assert_eq!(counts, vec![("done".to_owned(), 1), ("running".to_owned(), 1)]);
}

#[test]
fn a_job_locked_by_another_worker_is_skipped_not_waited_for() {
    let Some(db) = TestDb::new() else { return };
    let mut conn = db.pool().get().unwrap();
    let first = enqueue(&mut conn, "report", "q1", 3).unwrap();
    let second = enqueue(&mut conn, "report", "q2", 3).unwrap();
    // Another worker is in the middle of taking the first job: its row is locked.
    let mut other = db.pool().get().unwrap();
    other
        .transaction(|other| {
            let locked: i64 =
                jobs::table.find(first.id).select(jobs::id).for_update().first(other)?;
            assert_eq!(locked, first.id);
            let taken = fetch_next(&mut conn, "worker-2").unwrap().unwrap();
            assert_eq!(taken.id, second.id, "the locked job is skipped, without waiting");
            Ok::<_, diesel::result::Error>(())
        })
        .unwrap();
}

#[test]
fn concurrent_workers_take_each_job_exactly_once() {
    let Some(db) = TestDb::new() else { return };
    let pool = db.pool();
    let mut conn = pool.get().unwrap();
    for i in 0..40 {
        enqueue(&mut conn, "resize", &format!("image {i}"), 3).unwrap();
    }
    drop(conn);
    let mut taken: Vec<i64> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..4)
            .map(|w| {
                scope.spawn(move || {
                    let mut mine = Vec::new();
                    let worker = format!("worker-{w}");
                    loop {
                        let mut conn = pool.get().unwrap();
                        let Some(job) = fetch_next(&mut conn, &worker).unwrap() else { break };
                        assert!(complete(&mut conn, job.id).unwrap());
                        mine.push(job.id);
                    }
                    mine
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().unwrap()).collect()
    });
    taken.sort_unstable();
    let before = taken.len();
    taken.dedup();
    assert_eq!((before, taken.len()), (40, 40), "every job once, none twice");
}

#[test]
fn failures_are_retried_until_attempts_run_out_then_requeued_by_hand() {
    let Some(db) = TestDb::new() else { return };
    let mut conn = db.pool().get().unwrap();
    let job = enqueue(&mut conn, "sync", "account 7", 2).unwrap();

    let taken = fetch_next(&mut conn, "worker-1").unwrap().unwrap();
    let after = fail(&mut conn, taken.id, "timeout").unwrap();
    assert_eq!((after.status.as_str(), after.attempts), ("queued", 1), "one attempt left");

    let taken = fetch_next(&mut conn, "worker-1").unwrap().unwrap();
    assert_eq!(taken.attempts, 2);
    let after = fail(&mut conn, taken.id, "timeout again").unwrap();
    assert_eq!(after.status, "failed", "attempts ran out");
    assert_eq!(after.last_error.as_deref(), Some("timeout again"));
    assert_eq!(fetch_next(&mut conn, "worker-1").unwrap(), None);

    assert!(retry(&mut conn, job.id).unwrap());
    assert!(!retry(&mut conn, job.id).unwrap(), "only a failed job is requeued");
    let again = fetch_next(&mut conn, "worker-1").unwrap().unwrap();
    assert_eq!((again.id, again.attempts), (job.id, 1), "attempts were reset");
}

#[test]
fn migrations_run_once() {
    let Some(db) = TestDb::new() else { return };
    let mut conn = db.pool().get().unwrap();
    migrate(&mut conn).unwrap();
    let applied: i64 = diesel::sql_query("SELECT count(*) AS n FROM __diesel_schema_migrations")
        .load::<Applied>(&mut *conn)
        .unwrap()[0]
        .n;
    assert_eq!(applied, 1);
}

/// A count read with `sql_query`.
#[derive(QueryableByName)]
struct Applied {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}
