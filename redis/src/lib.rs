//! ucm's Redis side: `RedisManager` (a Redis pool on ucm-kernel's pool: breaker, acquire deadline, validation, lifetimes, metrics; `redis://`, `rediss://`, Sentinel), `QueryCache` (L1 in process, L2 in Redis, single flight, invalidation by table) and `Lease` (a lock with fencing tokens).
//!
//! ```no_run
//! use std::time::Duration;
//! use ucm_redis::{CacheConfig, QueryCache, RedisManager};
//! use ucm_kernel::ManagerMode;
//!
//! # async fn demo() -> ucm_kernel::Result<()> {
//! let redis = RedisManager::connect("redis://127.0.0.1:6379", ManagerMode::McpServer).await?;
//! let cache = QueryCache::new(CacheConfig::for_mode(ManagerMode::McpServer), Some(redis.clone()));
//! let count: i64 = cache
//!     .get_or_compute("rules:count", &["rules"], || async { Ok(42) })
//!     .await?;
//! let lease = redis.lock("nightly-report", Duration::from_secs(30), Duration::from_secs(5)).await?;
//! println!("{count} rules; report lock token {}", lease.fencing_token());
//! lease.release().await?;
//! # Ok(())
//! # }
//! ```

mod cache;
mod connector;
mod lock;
mod manager;
#[cfg(feature = "otel")]
mod otel;
mod url;

pub use cache::{CacheConfig, CacheStats, QueryCache};
pub use connector::RedisConnector;
pub use lock::Lease;
pub use manager::RedisManager;
/// The redis crate ucm-redis is built with, for building commands (`redis::cmd`,
/// `redis::pipe`) of the same version.
pub use redis;
pub use url::RedisUrl;

/// The Redis guide's examples (docs/redis.md), compiled as doctests so they cannot drift.
#[cfg(doctest)]
#[doc = include_str!("../../docs/redis.md")]
struct RedisGuideDoctests;
