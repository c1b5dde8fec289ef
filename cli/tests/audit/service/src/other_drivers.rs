//! Fixture for `ucm audit`: the other drivers and pools, one site each, and calls inside macros (not compiled).

use deadpool_postgres::{Config, Runtime};
use rusqlite::Connection as Sqlite;
use tokio_postgres::NoTls;

pub async fn drivers(url: &str) {
    let cfg = Config::new();
    let pool = cfg.create_pool(Some(Runtime::Tokio1), NoTls).unwrap();
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
    let local = Sqlite::open("cache.db").unwrap();
    let mysql = mysql_async::Pool::new(url);
    assert!(Sqlite::open_in_memory().is_ok());
    drop((pool, client, connection, local, mysql));
}
