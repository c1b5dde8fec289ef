//! The registry and the test adapter against a real SQLite database: one manager under concurrent first calls, installation refused twice, direct connections outside the pool, one manager closed and replaced, failed creations not kept, shutdown closing everything (creations in flight included).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use ucm::{
    ConnectionManagerProtocol, ConnectionMode, DatabaseTestAdapter, ErrorKind, ManagerConfig,
    ManagerMode, SqlExecutor, UnifiedManager,
};

fn sqlite_url(name: &str) -> String {
    let dir = std::env::temp_dir().join(format!("ucm-registry-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    format!("sqlite://{}", dir.join(name).display())
}

fn config(mode: ManagerMode, url: &str) -> ManagerConfig {
    ManagerConfig::builder(mode).primary(url).build().unwrap()
}

// One test: the registry is process-wide, and `shutdown_all` at the end affects everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_lifecycle() {
    let url = sqlite_url("registry.db");

    // Concurrent first calls create one manager.
    let admin = config(ManagerMode::Admin, &url);
    let calls: Vec<_> =
        (0..16).map(|_| tokio::spawn(ucm::unified_manager_for(admin.clone()))).collect();
    let mut managers = Vec::new();
    for call in calls {
        managers.push(call.await.unwrap().unwrap());
    }
    assert!(managers.iter().all(|m| Arc::ptr_eq(m, &managers[0])), "one manager for one key");
    let shared = Arc::clone(&managers[0]);

    // An installed configuration is what get_unified_manager uses; installing twice, or
    // over a mode that already has a manager, is refused.
    let mcp = config(ManagerMode::McpServer, &url);
    ucm::install_config(mcp.clone()).unwrap();
    let again = ucm::install_config(mcp.clone()).unwrap_err();
    assert_eq!(again.kind(), ErrorKind::Configuration);
    assert!(again.to_string().contains("already installed"), "{again}");
    let from_registry = ucm::get_unified_manager(ManagerMode::McpServer).await.unwrap();
    assert_eq!(from_registry.config().mode(), ManagerMode::McpServer);
    let extra = UnifiedManager::connect(admin.clone()).await.unwrap();
    let refused = ucm::install_manager(extra).await.unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Configuration);

    // The test adapter: production sessions through the shared manager, and a direct
    // connection outside its pool.
    let adapter = DatabaseTestAdapter::for_config(admin.clone()).await.unwrap();
    assert!(Arc::ptr_eq(adapter.manager(), &shared));
    let mut session = adapter.production_database_session().await.unwrap();
    let rows = session.fetch_all("SELECT 41 + 1 AS answer", &[]).await.unwrap();
    assert_eq!(rows[0].try_get::<i64>("answer").unwrap(), 42);
    drop(session);
    let pooled_before = shared.connection_info().endpoints[0].status.size;
    let mut direct = adapter.benchmark_database_connection().await.unwrap();
    let rows = direct.fetch_all("SELECT 41 + 1 AS answer", &[]).await.unwrap();
    assert_eq!(rows[0].try_get::<i64>("answer").unwrap(), 42);
    assert_eq!(shared.connection_info().endpoints[0].status.size, pooled_before);
    drop(direct);

    // One manager closed and removed; the next lookup creates a new one. A manager closed
    // by its own close() is replaced the same way.
    ucm::close_manager(&shared).await.unwrap();
    assert!(shared.is_closed());
    let replaced = ucm::unified_manager_for(admin.clone()).await.unwrap();
    assert!(!Arc::ptr_eq(&replaced, &shared) && !replaced.is_closed());
    replaced.close().await.unwrap();
    let replaced_again = ucm::unified_manager_for(admin.clone()).await.unwrap();
    assert!(!Arc::ptr_eq(&replaced_again, &replaced) && !replaced_again.is_closed());
    let mut session = replaced_again.get_connection(ConnectionMode::ReadOnly).await.unwrap();
    assert_eq!(session.fetch_all("SELECT 1 AS one", &[]).await.unwrap().len(), 1);
    drop(session);
    // The other managers were untouched.
    assert!(!from_registry.is_closed());

    // A failed creation is not kept: it does not block installing a configuration for
    // its mode.
    let missing_dir = std::env::temp_dir().join(format!("ucm-missing-{}", std::process::id()));
    let unreachable =
        config(ManagerMode::SyncHeavy, &format!("sqlite://{}/x.db", missing_dir.display()));
    assert!(ucm::unified_manager_for(unreachable).await.is_err());
    ucm::install_config(config(ManagerMode::SyncHeavy, &url)).unwrap();
    let sync_heavy = ucm::get_unified_manager(ManagerMode::SyncHeavy).await.unwrap();
    assert!(!sync_heavy.is_closed());

    // A creation racing shutdown_all never leaves an orphan, whichever comes first: either
    // the creation was in flight, shutdown_all awaited it and closed it (the next lookup
    // creates anew), or it came after and the registry holds it, open.
    let modern = config(ManagerMode::AsyncModern, &url);
    let creation = tokio::spawn(ucm::unified_manager_for(modern.clone()));
    ucm::shutdown_all().await.unwrap();
    let created = creation.await.unwrap().unwrap();
    let registered = ucm::unified_manager_for(modern).await.unwrap();
    assert!(!registered.is_closed());
    if !created.is_closed() {
        assert!(Arc::ptr_eq(&created, &registered), "an open manager the registry lost");
    }
    assert!(sync_heavy.is_closed() && replaced_again.is_closed());

    ucm::shutdown_all().await.unwrap();
    let closed = shared.get_connection(ConnectionMode::ReadOnly).await.unwrap_err();
    assert_eq!(closed.kind(), ErrorKind::Closed);
    let closed = from_registry.get_connection(ConnectionMode::ReadOnly).await.unwrap_err();
    assert_eq!(closed.kind(), ErrorKind::Closed);
    ucm::install_config(mcp).unwrap();
    let fresh = ucm::get_unified_manager(ManagerMode::McpServer).await.unwrap();
    assert!(!Arc::ptr_eq(&fresh, &from_registry), "a new manager after shutdown");
    ucm::shutdown_all().await.unwrap();
}
