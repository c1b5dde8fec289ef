//! What the diesel handle tests share: finding PostgreSQL's URL (skipping locally and failing under `CI` when it is missing) and building pools on it.

#![allow(dead_code)] // Each test binary uses its own part.

use ucm_kernel::{ManagerConfig, ManagerMode, PoolConfiguration};
#[cfg(feature = "postgres")]
use {
    std::sync::Arc,
    ucm_diesel::{DieselBlockingPool, DieselManager, DieselPool, PgDialect},
    ucm_kernel::ConnectionMode,
};

/// The URL in `var`, or `None` (the test then passes vacuously, printing why) unless `CI` is
/// set, where a missing database fails.
pub(crate) fn url(var: &str) -> Option<String> {
    let url = std::env::var(var).ok().filter(|v| !v.is_empty());
    if url.is_none() {
        let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false");
        assert!(!ci, "{var} is not set and CI is: run `cargo xtask test`");
        eprintln!("skipped: {var} is not set (run `cargo xtask test`)");
    }
    url
}

/// A small pool's manager configuration for `url`.
pub(crate) fn config(url: &str, mode: ManagerMode) -> ManagerConfig {
    let pool = PoolConfiguration::builder(mode).pool_size(3).max_overflow(0).build().unwrap();
    ManagerConfig::builder(mode).primary(url).pool(pool).build().unwrap()
}

#[cfg(feature = "postgres")]
/// A blocking pool on PostgreSQL (its manager built on ucm's runtime for blocking calls).
pub(crate) fn blocking_pool(url: &str) -> DieselBlockingPool<PgDialect> {
    DieselBlockingPool::connect(config(url, ManagerMode::AsyncModern), ConnectionMode::ReadWrite)
        .unwrap()
}

#[cfg(feature = "postgres")]
/// An async pool on PostgreSQL.
pub(crate) async fn async_pool(url: &str) -> DieselPool<PgDialect> {
    let manager = DieselManager::connect(config(url, ManagerMode::AsyncModern)).await.unwrap();
    DieselPool::new(Arc::new(manager), ConnectionMode::ReadWrite)
}
