//! `Sqlx`: the sqlx backend's connectors per database; `SqlxManager` is core's `Manager` over them.

use ucm_kernel::backend::{Backend, PooledSession};
use ucm_kernel::{Connection, Manager};

use crate::connector::SqlxConnector;
#[cfg(feature = "mysql")]
use crate::mysql::MySqlDialect;
#[cfg(feature = "postgres")]
use crate::postgres::PgDialect;
#[cfg(feature = "sqlite")]
use crate::sqlite::SqliteDialect;

/// The sqlx backend: sqlx's pure-Rust drivers for the databases whose features are on.
#[derive(Debug, Clone, Copy)]
pub struct Sqlx;

impl Backend for Sqlx {
    const NAME: &'static str = "sqlx";
    #[cfg(feature = "postgres")]
    type Postgres = SqlxConnector<PgDialect>;
    #[cfg(not(feature = "postgres"))]
    type Postgres = ucm_kernel::backend::Disabled;
    #[cfg(feature = "mysql")]
    type MySql = SqlxConnector<MySqlDialect>;
    #[cfg(not(feature = "mysql"))]
    type MySql = ucm_kernel::backend::Disabled;
    #[cfg(feature = "sqlite")]
    type Sqlite = SqlxConnector<SqliteDialect>;
    #[cfg(not(feature = "sqlite"))]
    type Sqlite = ucm_kernel::backend::Disabled;
}

/// The connection manager on sqlx: one pool per endpoint (core's pool), breaker, retry,
/// health and metrics from core; sqlx only opens and drives the connections.
pub type SqlxManager = Manager<Sqlx>;

/// A connection from a [`SqlxManager`], for whichever database the URL named.
pub type SqlxConnection = Connection<Sqlx>;

/// A checked-out sqlx connection of dialect `D`; derefs to the sqlx connection, for sqlx's
/// own executors and types.
pub type SqlxSession<D> = PooledSession<SqlxConnector<D>>;
