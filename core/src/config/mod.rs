//! Configuration: pool presets and overrides, database URLs, and the manager's endpoint set.

mod manager;
mod pool;
mod url;

pub use manager::{ManagerConfig, ManagerConfigBuilder};
pub use pool::{PoolConfiguration, PoolConfigurationBuilder};
pub use url::{DatabaseKind, DatabaseUrl, Secret, SslMode};
