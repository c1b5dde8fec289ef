//! The jobs service: a small axum HTTP API over PostgreSQL, with a background worker.
//!
//! This is the service after step 1 of the migration: its pool is ucm-compat's sqlx-shaped
//! `SqlxPool`; every statement is as before.

mod db;
mod http;
mod worker;

use sqlx::Postgres;
use ucm_compat::DatabaseSessionManager;
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
    let pool = DatabaseSessionManager::new(url, false)?.sqlx_pool::<Postgres>().await?;
    Ok(pool)
}
