//! `DatabaseTestAdapter`: the production path (a session from the unified manager) and a direct, unpooled connection side by side, so tests can compare them.

use std::sync::Arc;

use ucm_kernel::{
    ConnectionManagerProtocol, ConnectionMode, DirectConnection, ManagerConfig, ManagerMode, Result,
};

use crate::registry::{get_unified_manager, unified_manager_for};
use crate::{SelectedBackend, UnifiedConnection, UnifiedManager};

/// What a test needs to exercise database code as production runs it, and to measure it.
#[derive(Debug, Clone)]
pub struct DatabaseTestAdapter {
    manager: Arc<UnifiedManager>,
}

impl DatabaseTestAdapter {
    /// An adapter on the process-wide manager for `mode` (see [`get_unified_manager`]).
    ///
    /// # Errors
    /// As [`get_unified_manager`].
    pub async fn new(mode: ManagerMode) -> Result<Self> {
        Ok(Self { manager: get_unified_manager(mode).await? })
    }

    /// An adapter on the process-wide manager for `config`'s mode and database.
    ///
    /// # Errors
    /// As [`unified_manager_for`].
    pub async fn for_config(config: ManagerConfig) -> Result<Self> {
        Ok(Self { manager: unified_manager_for(config).await? })
    }

    /// The unified manager behind the production sessions.
    pub fn manager(&self) -> &Arc<UnifiedManager> {
        &self.manager
    }

    /// A read-write session through the unified manager: pool, breaker, routing and
    /// metrics, exactly as production code gets it.
    ///
    /// # Errors
    /// As [`ConnectionManagerProtocol::get_connection`].
    pub async fn production_database_session(&self) -> Result<UnifiedConnection> {
        self.manager.get_connection(ConnectionMode::ReadWrite).await
    }

    /// A direct connection to the primary, outside the pool (same session settings, no
    /// breaker, retry or metrics), as the baseline for measuring what the manager adds.
    /// Closed when dropped.
    ///
    /// # Errors
    /// `ConnectFailed` when the primary cannot be reached.
    pub async fn benchmark_database_connection(&self) -> Result<DirectConnection<SelectedBackend>> {
        self.manager.direct_connection().await
    }
}
