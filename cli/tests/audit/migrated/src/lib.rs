//! Fixture for `ucm audit`: a codebase already through ucm everywhere (not compiled).

use ucm::{ManagerConfig, ManagerMode, SqlxPool};
use ucm_compat::get_db_manager;

pub async fn start(config: ManagerConfig) -> ucm::Result<()> {
    let manager = ucm::unified_manager_for(config).await?;
    let pool = SqlxPool::new(manager, ucm::ConnectionMode::ReadWrite);
    let legacy = get_db_manager("postgres://app@db/app");
    drop((pool, legacy));
    let _ = ManagerMode::Admin;
    Ok(())
}

/// A pool type under a name of the application's own.
pub type DbPool = ucm::DieselBlockingPool<ucm::ucm_diesel::PgDialect>;

pub fn blocking(config: ManagerConfig) -> ucm::Result<DbPool> {
    DbPool::connect(config, ucm::ConnectionMode::ReadWrite)
}
