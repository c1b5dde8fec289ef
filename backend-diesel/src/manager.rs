//! `Diesel`: the diesel backend's connectors per database; `DieselManager` is core's `Manager` over them.

use ucm_kernel::backend::{Backend, PooledSession};
use ucm_kernel::{Connection, Manager};

use crate::connector::DieselConnector;
#[cfg(feature = "mysql")]
use crate::mysql::MySqlDialect;
#[cfg(feature = "postgres")]
use crate::postgres::PgDialect;
#[cfg(feature = "sqlite")]
use crate::sqlite::SqliteDialect;

/// The diesel backend: diesel-async connections for the databases whose features are on.
#[derive(Debug, Clone, Copy)]
pub struct Diesel;

impl Backend for Diesel {
    const NAME: &'static str = "diesel";
    #[cfg(feature = "postgres")]
    type Postgres = DieselConnector<PgDialect>;
    #[cfg(not(feature = "postgres"))]
    type Postgres = ucm_kernel::backend::Disabled;
    #[cfg(feature = "mysql")]
    type MySql = DieselConnector<MySqlDialect>;
    #[cfg(not(feature = "mysql"))]
    type MySql = ucm_kernel::backend::Disabled;
    #[cfg(feature = "sqlite")]
    type Sqlite = DieselConnector<SqliteDialect>;
    #[cfg(not(feature = "sqlite"))]
    type Sqlite = ucm_kernel::backend::Disabled;
}

/// The connection manager on diesel-async: one pool per endpoint (core's pool), breaker,
/// retry, health and metrics from core; diesel only opens and drives the connections.
pub type DieselManager = Manager<Diesel>;

/// A connection from a [`DieselManager`], for whichever database the URL named.
pub type DieselConnection = Connection<Diesel>;

/// A checked-out diesel connection of dialect `D`; `&mut **session` is the diesel-async
/// connection, for the diesel DSL.
pub type DieselSession<D> = PooledSession<DieselConnector<D>>;
