//! The connection handles of a `SqlxPool`: `ObservedConnection` (the sqlx connection of a ucm session, whose `&mut` is an observed executor), the checked-out `SqlxPoolConnection` and the owned `SqlxTransaction`.

use std::fmt;
use std::ops::{Deref, DerefMut};

use sqlx::{Database, SqlSafeStr};
use sqlx_core::transaction::TransactionManager;

use super::SqlxDatabase;
use super::observe::finish;
use crate::manager::{SqlxConnection, SqlxSession};

/// The sqlx connection of a ucm session. Derefs to sqlx's connection (`&mut **conn` is a
/// `&mut PgConnection`, and `&mut *tx` coerces to one where a function takes it), while
/// `&mut` of it is an executor whose statements ucm observes: marked in flight, bounded by
/// the client's deadline, timed, given a span, fed to the breaker, read by their phase.
/// Both of sqlx's idioms, `.execute(&mut *tx)` and `.execute(&mut tx)`, therefore run
/// observed statements.
pub struct ObservedConnection<DB: SqlxDatabase> {
    pub(super) session: SqlxSession<DB::Dialect>,
}

impl<DB: SqlxDatabase> ObservedConnection<DB> {
    /// The sqlx connection of a connection from a [`SqlxManager`](crate::SqlxManager) (the
    /// native protocol's `get_connection`, a legacy session's), observed as a
    /// [`SqlxPool`](super::SqlxPool)'s are; [`Self::into_connection`] gives it back.
    ///
    /// # Errors
    /// The connection itself, when it is another database's than `DB`.
    pub fn from_connection(connection: SqlxConnection) -> Result<Self, SqlxConnection> {
        DB::session(connection).map(|session| Self { session })
    }

    /// The manager's connection, for ucm's neutral API or to return it to its pool.
    pub fn into_connection(self) -> SqlxConnection {
        DB::connection(self.session)
    }

    /// The ucm session underneath (its pooled connection's state, ucm's neutral SQL API).
    pub fn session(&mut self) -> &mut SqlxSession<DB::Dialect> {
        &mut self.session
    }
}

impl<DB: SqlxDatabase> Deref for ObservedConnection<DB> {
    type Target = DB::Connection;

    fn deref(&self) -> &DB::Connection {
        &self.session
    }
}

impl<DB: SqlxDatabase> DerefMut for ObservedConnection<DB> {
    fn deref_mut(&mut self) -> &mut DB::Connection {
        &mut self.session
    }
}

impl<DB: SqlxDatabase> fmt::Debug for ObservedConnection<DB> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObservedConnection").field("session", &self.session).finish()
    }
}

/// A connection checked out of a [`SqlxPool`](super::SqlxPool), as sqlx's `PoolConnection`:
/// goes back to ucm's pool when dropped; `&mut conn` and `&mut *conn` are executors
/// observed by ucm (see [`ObservedConnection`]).
pub struct SqlxPoolConnection<DB: SqlxDatabase> {
    pub(super) connection: ObservedConnection<DB>,
}

impl<DB: SqlxDatabase> SqlxPoolConnection<DB> {
    /// Begins a transaction through sqlx's transaction manager and hands the connection to
    /// it.
    pub(super) async fn into_transaction(
        mut self,
        mode: ucm_kernel::ConnectionMode,
    ) -> Result<SqlxTransaction<DB>, sqlx::Error> {
        let session = &mut self.connection.session;
        // Marked first: a transaction dropped mid-`BEGIN` is rolled back before reuse.
        session.mark_transaction_open();
        // Behind a transaction pooler the BEGIN carries the mode and the deadlines.
        let statement = match session.pooled().pooled_begin() {
            Some(begin) => Some(sqlx::AssertSqlSafe(begin.to_string()).into_sql_str()),
            None => crate::connector::begin_statement::<DB::Dialect>(mode),
        };
        DB::TransactionManager::begin(session, statement).await?;
        Ok(SqlxTransaction { connection: Some(self.connection) })
    }
}

impl<DB: SqlxDatabase> Deref for SqlxPoolConnection<DB> {
    type Target = ObservedConnection<DB>;

    fn deref(&self) -> &ObservedConnection<DB> {
        &self.connection
    }
}

impl<DB: SqlxDatabase> DerefMut for SqlxPoolConnection<DB> {
    fn deref_mut(&mut self) -> &mut ObservedConnection<DB> {
        &mut self.connection
    }
}

impl<DB: SqlxDatabase> fmt::Debug for SqlxPoolConnection<DB> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlxPoolConnection").field("connection", &self.connection).finish()
    }
}

/// A transaction on a connection of a [`SqlxPool`](super::SqlxPool), owned (`'static`):
/// pass it by value or `&mut` across functions and tasks, where sqlx code passed
/// `Transaction<'static, _>`. `&mut tx` and `&mut *tx` are observed executors; `&mut tx` is
/// also an `Acquire` whose `begin` opens a savepoint. Rolled back if dropped before
/// [`Self::commit`].
pub struct SqlxTransaction<DB: SqlxDatabase> {
    /// Taken by `commit` and `rollback`; `None` only after them.
    connection: Option<ObservedConnection<DB>>,
}

impl<DB: SqlxDatabase> SqlxTransaction<DB> {
    /// Commits, and returns the connection to its pool.
    ///
    /// # Errors
    /// `COMMIT`'s error; ucm reads a connection lost during it as an ambiguous commit
    /// ([`SqlxPool::classify`](super::SqlxPool::classify)).
    pub async fn commit(mut self) -> Result<(), sqlx::Error> {
        let Some(mut connection) = self.connection.take() else { return Ok(()) };
        let session = &mut connection.session;
        let (statement, expiry) = session.observe_commit_start();
        let outcome = expiry.bound(DB::TransactionManager::commit(session)).await;
        finish(session, statement, outcome)?;
        session.mark_transaction_closed();
        Ok(())
    }

    /// Rolls back, and returns the connection to its pool.
    ///
    /// # Errors
    /// `ROLLBACK`'s error.
    pub async fn rollback(mut self) -> Result<(), sqlx::Error> {
        let Some(mut connection) = self.connection.take() else { return Ok(()) };
        DB::TransactionManager::rollback(&mut connection.session).await?;
        connection.session.mark_transaction_closed();
        Ok(())
    }

    pub(super) fn connection(&mut self) -> &mut ObservedConnection<DB> {
        match self.connection.as_mut() {
            Some(connection) => connection,
            None => unreachable_transaction(),
        }
    }
}

#[allow(clippy::panic)] // Unreachable: `commit` and `rollback` consume the transaction.
fn unreachable_transaction() -> ! {
    panic!("ucm: SqlxTransaction used after commit or rollback")
}

impl<DB: SqlxDatabase> Drop for SqlxTransaction<DB> {
    fn drop(&mut self) {
        if let Some(connection) = self.connection.as_mut() {
            // As sqlx's own `Transaction`: queue the rollback, which the driver sends before
            // anything else on this connection. The pooled connection stays marked
            // in-transaction, so the pool also resets it before anyone else gets it.
            DB::TransactionManager::start_rollback(&mut connection.session);
        }
    }
}

impl<DB: SqlxDatabase> Deref for SqlxTransaction<DB> {
    type Target = ObservedConnection<DB>;

    fn deref(&self) -> &ObservedConnection<DB> {
        match self.connection.as_ref() {
            Some(connection) => connection,
            None => unreachable_transaction(),
        }
    }
}

impl<DB: SqlxDatabase> DerefMut for SqlxTransaction<DB> {
    fn deref_mut(&mut self) -> &mut ObservedConnection<DB> {
        self.connection()
    }
}

impl<DB: SqlxDatabase> fmt::Debug for SqlxTransaction<DB> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlxTransaction").field("connection", &self.connection).finish()
    }
}

/// `Acquire` on the handles: the sqlx connection itself, and sqlx's own `Transaction` on it
/// (a savepoint inside a transaction).
macro_rules! session_acquire {
    ($handle:ty, |$this:ident| $connection:expr) => {
        impl<'c, DB: SqlxDatabase> sqlx::Acquire<'c> for &'c mut $handle {
            type Database = DB;
            type Connection = &'c mut <DB as Database>::Connection;

            fn acquire(
                self,
            ) -> futures_core::future::BoxFuture<'c, Result<Self::Connection, sqlx::Error>> {
                let $this = self;
                let connection: &'c mut <DB as Database>::Connection = $connection;
                Box::pin(async move { Ok(connection) })
            }

            fn begin(
                self,
            ) -> futures_core::future::BoxFuture<'c, Result<sqlx::Transaction<'c, DB>, sqlx::Error>>
            {
                let $this = self;
                let connection: &'c mut <DB as Database>::Connection = $connection;
                sqlx::Transaction::begin(connection, None)
            }
        }
    };
}

session_acquire!(ObservedConnection<DB>, |this| &mut this.session);
session_acquire!(SqlxPoolConnection<DB>, |this| &mut this.connection.session);
session_acquire!(SqlxTransaction<DB>, |this| &mut this.connection().session);
