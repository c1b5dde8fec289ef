//! Configuration: pool presets and overrides, database URLs, and the manager's endpoint set.

mod manager;
mod pool;
mod pooler;
mod url;

pub use manager::{ManagerConfig, ManagerConfigBuilder};
pub use pool::{
    DEFAULT_TCP_KEEPALIVE, DEFAULT_TCP_USER_TIMEOUT, PoolConfiguration, PoolConfigurationBuilder,
    TCP_KEEPALIVE_INTERVAL,
};
pub use pooler::Pooler;
pub use url::{DatabaseKind, DatabaseUrl, Secret, SslMode};

/// How long a SQLite statement waits for another connection's write lock before
/// `SQLITE_BUSY`, on every backend.
pub const SQLITE_BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
