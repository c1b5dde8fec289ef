//! The jobs service's binary: connects to `DATABASE_URL`, creates the schema, starts the worker and serves HTTP on `BIND_ADDR` (default 127.0.0.1:3000).

use std::time::Duration;

use migrate_sqlx_compat::{BoxError, connect, migrate, serve, spawn_worker};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let url = std::env::var("DATABASE_URL")
        .map_err(|_| "set DATABASE_URL, e.g. postgres://postgres@127.0.0.1:5432/postgres")?;
    let addr = std::env::var("BIND_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".to_owned());

    let pool = connect(&url).await?;
    migrate(&pool).await?;
    let _worker = spawn_worker(pool.clone(), Duration::from_millis(500), 10);

    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("jobs service listening on http://{}", listener.local_addr()?);
    serve(listener, pool).await?;
    Ok(())
}
