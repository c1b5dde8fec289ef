//! The jobs service: a small axum HTTP API over PostgreSQL, with a background worker.
//!
//! This is the service after step 3 of the migration: its pool is ucm's `SqlxPool` over a
//! `SqlxManager` of its own, and its reads declare themselves `ReadOnly`; every statement is
//! as before.

mod db;
mod http;
mod worker;

use std::sync::Arc;

use sqlx::Postgres;
use ucm::{ConnectionMode, ManagerConfig, ManagerMode, SqlxManager};
use ucm_sqlx::SqlxPool;

pub use db::{Job, JobEvent, Stats, migrate};
pub use http::{router, serve};
pub use worker::{run_once, spawn_worker};

/// What the service's setup returns when it fails.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Connects the service's pool to `url`.
///
/// # Errors
/// When the URL is malformed or the database cannot be reached.
pub async fn connect(url: &str) -> Result<SqlxPool<Postgres>, BoxError> {
    let config = ManagerConfig::builder(ManagerMode::AsyncModern).primary(url).build()?;
    let manager = SqlxManager::connect(config).await?;
    let pool = SqlxPool::new(Arc::new(manager), ConnectionMode::ReadWrite);
    Ok(pool)
}
