//! `SqlxPool`'s driver path observed as ucm's own statements: a span per statement, and the mode's statement deadline. Alone in its test binary, so no other test's thread caches ucm's tracing callsites as disabled while this one's subscriber is set.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // Tests.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::Postgres;
use ucm_kernel::{ConnectionMode, ErrorKind, ManagerConfig, ManagerMode, PoolConfiguration};
use ucm_sqlx::{SqlxManager, SqlxPool};

async fn pool_for(
    url: &str,
    mode: ManagerMode,
    connection_mode: ConnectionMode,
) -> SqlxPool<Postgres> {
    let pool = PoolConfiguration::builder(mode).pool_size(1).max_overflow(0).build().unwrap();
    let config = ManagerConfig::builder(mode).primary(url).pool(pool).build().unwrap();
    SqlxPool::new(Arc::new(SqlxManager::connect(config).await.unwrap()), connection_mode)
}

#[tokio::test]
async fn driver_path_statements_get_spans_and_deadlines() {
    let Some(url) = common::url("PG_DATABASE_URL") else { return };
    // Spans, recorded as the fmt subscriber closes them.
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
    let sink = Sink::default();
    let writer = sink.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        // Plain text whatever features other crates turn on (the CLI's `ansi`).
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let pool = pool_for(&url, ManagerMode::AsyncModern, ConnectionMode::ReadWrite).await;
    let one: i32 = sqlx::query_scalar("SELECT 1").fetch_one(&pool).await.unwrap();
    assert_eq!(one, 1);
    let logged = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
    assert!(logged.contains("db.operation"), "{logged}");
    assert!(logged.contains("ucm.api=\"driver\"") || logged.contains("ucm.api=driver"), "{logged}");
    assert!(logged.contains("db.query.summary=\"SELECT\""), "{logged}");
    drop(_guard);
    // The mode's statement timeout reaches the driver path: the server cancels, the error
    // stays sqlx's, and ucm reads it as a timeout.
    let fast = pool_for(&url, ManagerMode::McpServer, ConnectionMode::ReadOnly).await;
    let started = std::time::Instant::now();
    let err = sqlx::query("SELECT pg_sleep(3)").execute(&fast).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2), "cut short by the 150 ms limit");
    assert_eq!(fast.classify(err).kind(), ErrorKind::Timeout);
}
