//! Where a legacy manager's connections come from: its own private pool (the legacy behaviour), or, with `unified-v2`, the process-wide unified manager for its database.

use std::sync::Arc;

use ucm::{
    ConnectionManagerProtocol, DatabaseUrl, ManagerConfig, ManagerMode, PoolConfiguration, Result,
    UnifiedManager,
};

/// The mode every legacy manager runs in, sync or async: with `unified-v2`, one mode means
/// one shared manager per database for all legacy call sites.
pub const LEGACY_MODE: ManagerMode = ManagerMode::SyncHeavy;

/// Connections a private legacy pool keeps open, and the most it opens under load.
pub const LEGACY_POOL_SIZE: usize = 2;
/// See [`LEGACY_POOL_SIZE`].
pub const LEGACY_MAX_OVERFLOW: usize = 8;

/// A legacy manager's source of connections.
#[derive(Debug, Clone)]
pub(crate) struct Backing {
    manager: Arc<UnifiedManager>,
    /// Whether the manager is this instance's own (closed with it) or shared.
    private: bool,
}

impl Backing {
    /// Opens the source for `url`: without `unified-v2`, a private pool of its own with no
    /// breaker and no replicas, as the legacy managers had; with it, the process-wide
    /// unified manager for `url` in [`LEGACY_MODE`], created on first use.
    pub(crate) async fn open(url: &DatabaseUrl) -> Result<Self> {
        if cfg!(feature = "unified-v2") {
            let manager = ucm::unified_manager_for(unified_config(url)?).await?;
            Ok(Self { manager, private: false })
        } else {
            let manager = Arc::new(UnifiedManager::connect(private_config(url)?).await?);
            Ok(Self { manager, private: true })
        }
    }

    pub(crate) fn manager(&self) -> &Arc<UnifiedManager> {
        &self.manager
    }

    /// Closes a private pool; a shared manager stays open for its other users (the
    /// application closes it with `ucm::shutdown_all`).
    pub(crate) async fn close(&self) -> Result<()> {
        if self.private { self.manager.close().await } else { Ok(()) }
    }
}

/// The legacy pool: [`LEGACY_POOL_SIZE`] connections kept, no circuit breaker, primary only.
fn private_config(url: &DatabaseUrl) -> Result<ManagerConfig> {
    let pool = PoolConfiguration::builder(LEGACY_MODE)
        .pool_size(LEGACY_POOL_SIZE)
        .max_overflow(LEGACY_MAX_OVERFLOW)
        .circuit_breaker(false)
        .high_availability(false)
        .build()?;
    ManagerConfig::builder(LEGACY_MODE).primary_url(url.clone()).pool(pool).build()
}

/// The unified configuration for `url`: the environment's (replicas from
/// `DATABASE_REPLICA_URLS`, `UCM_*` overrides) when `url` is `DATABASE_URL`'s database,
/// otherwise `url` alone with the mode's preset and the `UCM_*` overrides.
fn unified_config(url: &DatabaseUrl) -> Result<ManagerConfig> {
    if let Ok(from_env) = ManagerConfig::from_env(LEGACY_MODE)
        && from_env.primary() == url
    {
        return Ok(from_env);
    }
    let pool = PoolConfiguration::builder(LEGACY_MODE).from_env()?.build()?;
    ManagerConfig::builder(LEGACY_MODE).primary_url(url.clone()).pool(pool).build()
}
