//! Diesel DSL statements on ucm's pool connections observed as ucm's own: a span per statement named after its SQL (never its bind values), and the pool's operation metrics. Alone in its test binary, so no other test's thread caches ucm's tracing callsites as disabled while this one's subscriber is set.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // Tests.
#![allow(missing_docs)] // diesel's `table!`.

mod common;

use std::sync::{Arc, Mutex};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use ucm_kernel::ConnectionManagerProtocol;

diesel::table! {
    diesel_telemetry_items (id) {
        id -> Int8,
        secret -> Text,
    }
}

use diesel_telemetry_items::dsl as items;

/// Spans, recorded as the fmt subscriber closes them.
#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn operations(manager: &ucm_diesel::DieselManager) -> u64 {
    manager.connection_info().endpoints[0].metrics.operations.count
}

#[test]
fn dsl_statements_get_ucm_spans_and_metrics() {
    let Some(url) = common::url("PG_DATABASE_URL") else { return };
    let sink = Sink::default();
    let writer = sink.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    // The sync handle.
    let pool = common::blocking_pool(&url);
    let mut conn = pool.get().unwrap();
    conn.batch_execute(
        "DROP TABLE IF EXISTS diesel_telemetry_items; \
         CREATE TABLE diesel_telemetry_items (id BIGINT PRIMARY KEY, secret TEXT NOT NULL)",
    )
    .unwrap();
    let before = operations(pool.manager());
    diesel::insert_into(items::diesel_telemetry_items)
        .values((items::id.eq(1), items::secret.eq("hunter2bindvalue")))
        .execute(&mut *conn)
        .unwrap();
    let found: Vec<i64> = items::diesel_telemetry_items
        .filter(items::secret.eq("hunter2bindvalue"))
        .select(items::id)
        .load(&mut *conn)
        .unwrap();
    assert_eq!(found, vec![1]);
    assert_eq!(operations(pool.manager()), before + 2, "both DSL statements were timed");
    drop(conn);

    let logged = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
    assert!(
        logged.contains("db.query.summary=\"INSERT diesel_telemetry_items\""),
        "the insert's span is named after its SQL: {logged}"
    );
    assert!(
        logged.contains("db.query.summary=\"SELECT diesel_telemetry_items\""),
        "the select's span is named after its SQL: {logged}"
    );
    assert!(logged.contains("ucm.api=\"driver\"") || logged.contains("ucm.api=driver"), "{logged}");
    assert!(!logged.contains("hunter2bindvalue"), "bind values never reach a span: {logged}");

    // The async handle, on a runtime of this thread (the subscriber is this thread's).
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let pool = common::async_pool(&url).await;
        let mut conn = pool.get().await.unwrap();
        let before = operations(pool.manager());
        let count: i64 =
            diesel_async::RunQueryDsl::get_result(items::diesel_telemetry_items.count(), &mut conn)
                .await
                .unwrap();
        assert_eq!(count, 1);
        assert_eq!(operations(pool.manager()), before + 1);
    });
    let logged = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
    assert!(
        logged.matches("db.query.summary=\"SELECT diesel_telemetry_items\"").count() >= 2,
        "the async handle's select has its span too: {logged}"
    );

    drop(_guard);

    // The mode's statement timeout reaches DSL statements: the server cancels, the error
    // stays diesel's, and ucm reads it as a timeout.
    let fast = ucm_diesel::DieselBlockingPool::<ucm_diesel::PgDialect>::connect(
        common::config(&url, ucm_kernel::ManagerMode::McpServer),
        ucm_kernel::ConnectionMode::ReadOnly,
    )
    .unwrap();
    let mut conn = fast.get().unwrap();
    let started = std::time::Instant::now();
    let error = diesel::sql_query("SELECT pg_sleep(3)").execute(&mut *conn).unwrap_err();
    assert!(started.elapsed() < std::time::Duration::from_secs(2), "cut short by the mode's limit");
    assert_eq!(fast.classify(error).kind(), ucm_kernel::ErrorKind::Timeout);
}
