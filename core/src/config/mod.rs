//! Configuration: pool presets and overrides, database URLs, the manager's endpoint set, and the TOML file and environment they are read from.

mod credentials;
mod database_kind;
mod manager;
mod permissions;
mod pool;
mod pooler;
mod redis;
mod secret;
mod settings;
mod ssl_mode;
mod url;

pub use credentials::{CredentialProvider, CredentialSource, Credentials};
pub use database_kind::DatabaseKind;
pub use manager::{ManagerConfig, ManagerConfigBuilder};
pub use permissions::{DdlRule, PermissionPolicy};
pub use pool::{
    DEFAULT_TCP_KEEPALIVE, DEFAULT_TCP_USER_TIMEOUT, PoolConfiguration, PoolConfigurationBuilder,
    TCP_KEEPALIVE_INTERVAL,
};
pub use pooler::Pooler;
pub use redis::{CacheSettings, RedisSettings};
pub use secret::Secret;
pub use settings::{ConfigSources, Origin};
pub use ssl_mode::SslMode;
pub use url::DatabaseUrl;

/// How long a SQLite statement waits for another connection's write lock before
/// `SQLITE_BUSY`, on every backend.
pub const SQLITE_BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
