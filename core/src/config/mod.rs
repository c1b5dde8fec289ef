//! Configuration: pool presets and overrides, database URLs, and the manager's endpoint set.

mod pool;

pub use pool::{PoolConfiguration, PoolConfigurationBuilder};
