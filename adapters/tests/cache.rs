//! The process-wide Redis and query cache of a mode (feature `redis`), against Redis (`REDIS_URL`, which `cargo xtask test` exports) and a SQLite database: the cache follows writes through the mode's unified manager, and through the one the registry creates after it was closed; `shutdown_all` closes Redis.

#![cfg(feature = "redis")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ucm::{ConnectionManagerProtocol, ConnectionMode, ManagerConfig, ManagerMode, Row, Value};

fn balance(rows: &[Row]) -> i64 {
    match rows[0].get("balance") {
        Some(Value::Int(n)) => *n,
        other => panic!("balance is {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_modes_cache_follows_its_unified_managers() {
    if std::env::var("REDIS_URL").ok().filter(|v| !v.is_empty()).is_none() {
        assert!(
            std::env::var("CI").is_err(),
            "REDIS_URL is not set and CI is: run `cargo xtask test`"
        );
        eprintln!("skipped: REDIS_URL is not set (run `cargo xtask test`)");
        return;
    }
    let dir = std::env::temp_dir().join(format!("ucm-cache-registry-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}", dir.join("cache.db").display());
    let mode = ManagerMode::AsyncModern;
    ucm::install_config(ManagerConfig::builder(mode).primary(&url).build().unwrap()).unwrap();

    let cache = ucm::get_query_cache(mode).await.unwrap();
    let manager = ucm::get_unified_manager(mode).await.unwrap();
    let write = ConnectionMode::ReadWrite;
    manager
        .execute(write, "CREATE TABLE accounts (id INTEGER PRIMARY KEY, balance INTEGER)", &[])
        .await
        .unwrap();
    manager.execute(write, "INSERT INTO accounts VALUES (1, 100)", &[]).await.unwrap();
    let read = "SELECT balance FROM accounts WHERE id = 1";
    assert_eq!(balance(&cache.fetch_all(&*manager, read, &[]).await.unwrap()), 100);
    assert_eq!(balance(&cache.fetch_all(&*manager, read, &[]).await.unwrap()), 100);
    assert_eq!(cache.stats().l1_hits, 1);

    // A write through the mode's manager drops the entry before it returns.
    manager.execute(write, "UPDATE accounts SET balance = 90 WHERE id = 1", &[]).await.unwrap();
    assert_eq!(balance(&cache.fetch_all(&*manager, read, &[]).await.unwrap()), 90);

    // The mode's Redis is the cache's L2, and is shared.
    let redis = ucm::get_redis_manager(mode).await.unwrap().expect("REDIS_URL names a Redis");
    redis.ping().await.unwrap();

    // A manager the registry creates after the first was closed is listened to as well.
    ucm::close_manager(&manager).await.unwrap();
    let replacement = ucm::get_unified_manager(mode).await.unwrap();
    assert!(!std::sync::Arc::ptr_eq(&manager, &replacement));
    replacement.execute(write, "UPDATE accounts SET balance = 80 WHERE id = 1", &[]).await.unwrap();
    assert_eq!(balance(&cache.fetch_all(&*replacement, read, &[]).await.unwrap()), 80);
    assert_eq!(cache.stats().redis_errors, 0, "{:?}", cache.stats());

    // Shutdown closes Redis too; the next call builds anew.
    ucm::shutdown_all().await.unwrap();
    assert!(redis.ping().await.is_err(), "Redis still open after shutdown_all");
    let _ = std::fs::remove_dir_all(&dir);
}
