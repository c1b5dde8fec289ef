//! Fixture for `ucm audit`: a service's database module with one site of each sqlx and diesel kind (not compiled).

use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, Pool};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Connection, MySqlPool};

pub async fn pools(url: &str) -> Result<(), sqlx::Error> {
    let pg = PgPool::connect(url).await?;
    let tuned = PgPoolOptions::new().max_connections(5).connect(url).await?;
    let mysql = MySqlPool::connect_lazy(url)?;
    let one = sqlx::PgConnection::connect(url).await?;
    drop((pg, tuned, mysql, one));
    Ok(())
}

pub fn sync_pool(url: &str) -> Pool<ConnectionManager<PgConnection>> {
    let manager = ConnectionManager::<PgConnection>::new(url);
    Pool::builder().max_size(4).build(manager).expect("pool")
}

pub fn one_off(url: &str) -> PgConnection {
    PgConnection::establish(url).expect("connection")
}
