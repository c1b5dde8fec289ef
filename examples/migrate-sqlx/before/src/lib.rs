//! The jobs service: a small axum HTTP API over PostgreSQL, with a background worker.
//!
//! This is the service as it was before moving onto ucm: its pool is sqlx's `PgPool`.

mod db;
mod http;
mod worker;

use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

pub use db::{Job, JobEvent, Stats, migrate};
pub use http::{router, serve};
pub use worker::{run_once, spawn_worker};

/// What the service's setup returns when it fails.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Connects the service's pool to `url`.
///
/// # Errors
/// When the URL is malformed or the database cannot be reached.
pub async fn connect(url: &str) -> Result<PgPool, BoxError> {
    let pool = PgPoolOptions::new().max_connections(5).connect(url).await?;
    Ok(pool)
}
