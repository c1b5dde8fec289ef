//! The diesel-shaped handles over ucm's manager, so code written for a pool of diesel connections (async `deadpool`/`bb8` pools of `AsyncPgConnection`, or sync r2d2 pools) keeps its diesel DSL queries and gets ucm's routing, breaker, deadlines, classification and telemetry.
//!
//! - [`DieselPool`] (async) is cheap to clone; [`DieselPool::get`] checks out a
//!   [`DieselPoolConnection`], a diesel-async `AsyncConnection` itself, so
//!   `diesel_async::RunQueryDsl` code runs on `&mut conn` and `conn.transaction(..)` works.
//! - [`DieselBlockingPool`] (sync) checks out a [`DieselBlockingConnection`], which derefs
//!   to a [`DieselSyncConnection`], diesel-async's `AsyncConnectionWrapper` over a pool
//!   connection: a sync `diesel::Connection`, so `diesel::RunQueryDsl` code and diesel's
//!   `Connection::transaction` run on `&mut *conn` as on an r2d2 pooled connection. Its
//!   futures run on ucm's runtime for blocking calls (`ucm_kernel::blocking`), from a plain
//!   thread or from inside any tokio runtime.
//! - Both have `transaction`: a typed closure re-run under the manager's retry policy
//!   ([`DieselTransactionError`] finds the diesel error in the application's error).
//!
//! Every statement diesel runs on these connections is observed by the connection's
//! session (in flight, client deadline, span and metrics named after its SQL, breaker,
//! eviction of a lost connection); ucm's diesel `Instrumentation` ([`StatementNamer`])
//! supplies the statement's text. Errors stay `diesel::result::Error`; a failure to get a
//! connection is ucm's error ([`into_diesel_error`] wraps it for `?` into diesel's).

mod blocking;
mod connection;
mod observe;
mod pool;

pub use blocking::{
    BlockingRuntime, DieselBlockingConnection, DieselBlockingPool, DieselSyncConnection,
};
pub use connection::{DieselPoolConnection, ObservedTransactionManager};
pub(crate) use observe::StatementText;
pub use observe::{Observed, StatementNamer};
pub use pool::{DieselPool, DieselTransactionError, into_diesel_error};

use diesel_async::{AsyncConnection, TransactionManager};

use crate::dialect::Dialect;
use crate::manager::{DieselConnection, DieselSession};

/// What diesel's transaction manager keeps per connection of dialect `D`.
pub type TransactionState<D> =
    <<<D as Dialect>::Connection as AsyncConnection>::TransactionManager as TransactionManager<
        <D as Dialect>::Connection,
    >>::TransactionStateData;

/// A database ucm-diesel supports, as the handles need it: which of a
/// [`DieselManager`](crate::DieselManager)'s connections is its.
pub trait DieselDialect: Dialect + Sized {
    /// The session of this database inside a manager's connection; the connection back
    /// when the manager serves another database.
    ///
    /// # Errors
    /// The connection itself, when it is another database's.
    fn session(connection: DieselConnection) -> Result<DieselSession<Self>, DieselConnection>;
}

/// Implements [`DieselDialect`] for a dialect and the variant of `ucm_kernel::Connection`
/// that holds its sessions.
macro_rules! diesel_dialect {
    ($dialect:ty, $variant:ident) => {
        impl DieselDialect for $dialect {
            fn session(
                connection: DieselConnection,
            ) -> Result<DieselSession<Self>, DieselConnection> {
                match connection {
                    ucm_kernel::Connection::$variant(session) => Ok(session),
                    #[allow(unreachable_patterns)] // a build with this database alone
                    other => Err(other),
                }
            }
        }
    };
}

#[cfg(feature = "postgres")]
diesel_dialect!(crate::PgDialect, Postgres);
#[cfg(feature = "mysql")]
diesel_dialect!(crate::MySqlDialect, MySql);
#[cfg(feature = "sqlite")]
diesel_dialect!(crate::SqliteDialect, Sqlite);
