//! The sqlx-shaped handles over ucm's manager (`SqlxPool<DB>` and its connections and transactions), so code written for sqlx's `Pool` (`query!` on `&pool`, `acquire()`, `begin()`, transactions passed across functions) keeps its queries and gets ucm's routing, breaker, deadlines, classification and telemetry.
//!
//! The three handles mirror sqlx's:
//! - [`SqlxPool`] is cheap to clone; `&pool` is a [`sqlx::Executor`] (each statement checks
//!   a connection out for the pool's [`ConnectionMode`], so a `ReadOnly` pool reads from a
//!   replica, read-only at the database).
//! - [`SqlxPoolConnection`] (from [`SqlxPool::acquire`]) derefs to an [`ObservedConnection`],
//!   which derefs to the driver's connection; `&mut conn` and `&mut *conn` are executors
//!   ucm observes, and `Acquire`s.
//! - [`SqlxTransaction`] (from [`SqlxPool::begin`]) is owned (`'static`), goes through sqlx's
//!   own transaction manager (so a nested `begin` is a savepoint and sqlx and ucm agree on
//!   the transaction's depth), and rolls back when dropped uncommitted.
//!
//! Errors stay `sqlx::Error`, so `?` and an application's `From<sqlx::Error>` keep working;
//! [`SqlxPool::classify`] turns one into ucm's classified [`ucm_kernel::Error`]. A failure to
//! get a connection carries ucm's error as its source (an I/O error of kind `Other`, or
//! `PoolTimedOut`/`PoolClosed` for exhaustion and a closed manager).

mod connection;
mod observe;
mod pool;

pub use connection::{ObservedConnection, SqlxPoolConnection, SqlxTransaction};
pub use pool::{SqlxPool, SqlxTransactionError, into_sqlx_error};

use sqlx::Database;

use crate::convert::NeutralValues;
use crate::manager::{SqlxConnection, SqlxSession};

/// A database sqlx and ucm both support: which of a [`SqlxManager`](crate::SqlxManager)'s connections is its.
pub trait SqlxDatabase: Database {
    /// ucm's dialect for it.
    type Dialect: NeutralValues<Db = Self>;

    /// The session of this database inside a manager's connection; the connection back
    /// when the manager serves another database.
    ///
    /// # Errors
    /// The connection itself, when it is another database's.
    fn session(connection: SqlxConnection) -> Result<SqlxSession<Self::Dialect>, SqlxConnection>;

    /// The manager's connection around a session of this database.
    fn connection(session: SqlxSession<Self::Dialect>) -> SqlxConnection;
}

/// Implements [`SqlxDatabase`] for a sqlx database, its ucm dialect and the variant of
/// `ucm_kernel::Connection` that holds its sessions.
macro_rules! sqlx_database {
    ($database:ty, $dialect:ty, $variant:ident) => {
        impl $crate::driver::SqlxDatabase for $database {
            type Dialect = $dialect;

            fn session(
                connection: $crate::SqlxConnection,
            ) -> Result<$crate::SqlxSession<$dialect>, $crate::SqlxConnection> {
                match connection {
                    ucm_kernel::Connection::$variant(session) => Ok(session),
                    #[allow(unreachable_patterns)] // a build with this database alone
                    other => Err(other),
                }
            }

            fn connection(session: $crate::SqlxSession<$dialect>) -> $crate::SqlxConnection {
                ucm_kernel::Connection::$variant(session)
            }
        }
    };
}
pub(crate) use sqlx_database;
