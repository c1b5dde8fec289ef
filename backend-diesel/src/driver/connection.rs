//! `DieselPoolConnection<D>`: a connection checked out of ucm's pool that is itself a diesel-async `AsyncConnection`, every statement and transaction step observed by its session; and `ObservedTransactionManager`, diesel's transaction manager on it.

use std::fmt;

use diesel::connection::{CacheSize, Instrumentation, TransactionManagerStatus};
use diesel::query_builder::{AsQuery, QueryFragment, QueryId};
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::{ConnectionResult, QueryResult};
use diesel_async::{
    AsyncConnection, AsyncConnectionCore, SimpleAsyncConnection, TransactionManager,
};

use super::DieselDialect;
use super::TransactionState as TmState;
use super::observe::{Observed, StatementText};
use crate::manager::{DieselConnection, DieselSession};

/// The driver's connection type of dialect `D`.
type Driver<D> = <D as crate::dialect::Dialect>::Connection;

/// The transaction manager of dialect `D`'s driver connection.
type DriverTm<D> = <Driver<D> as AsyncConnection>::TransactionManager;

/// A connection checked out of ucm's pool for the diesel DSL: it is a diesel-async
/// [`AsyncConnection`] itself, so `diesel_async::RunQueryDsl` code runs on `&mut conn` as
/// on a `deadpool`/`bb8` pooled `AsyncPgConnection`, and diesel's own
/// `conn.transaction(..)` works. Every statement goes through its session: in flight
/// (a dropped future closes the connection), bounded by the mode's client deadline,
/// spanned and timed under its SQL text, fed to the breaker; a lost connection is evicted.
///
/// Returned to the pool on drop, rolled back first if a transaction was left open.
///
/// It does not deref to the driver's connection: a `DerefMut` to an `AsyncConnection`
/// would make it one through diesel-async's blanket impl for pooled connections, whose
/// statements nobody observes. A function taking `&mut AsyncPgConnection` takes
/// `&mut DieselPoolConnection<PgDialect>` instead (its body stays the same).
pub struct DieselPoolConnection<D: DieselDialect> {
    /// `None` only if the session had no connection to lend (every call then fails).
    lent: Option<Lent<D>>,
    text: StatementText,
    /// What the reference-returning methods hand out when there is no connection.
    stand_in: StandIn<D>,
}

/// A session and its driver connection, lent by the session for the checkout (see
/// `TrackedConnection::lend`) so that statements run on the one while the other settles
/// them; given back on drop.
struct Lent<D: DieselDialect> {
    session: DieselSession<D>,
    connection: Driver<D>,
}

/// Stand-ins for a connection that is not there (only when the session had none to lend).
struct StandIn<D: DieselDialect> {
    state: TmState<D>,
    status: TransactionManagerStatus,
    instrumentation: Option<Box<dyn Instrumentation>>,
}

impl<D: DieselDialect> DieselPoolConnection<D> {
    /// Takes a manager's connection for the diesel DSL.
    ///
    /// # Errors
    /// The connection itself, when it is another database's.
    pub fn from_connection(connection: DieselConnection) -> Result<Self, DieselConnection> {
        let mut session = D::session(connection)?;
        let tracked = session.driver();
        let text = tracked.statement_text().clone();
        let lent = tracked.lend().map(|connection| Lent { session, connection });
        Ok(Self {
            lent,
            text,
            stand_in: StandIn {
                state: TmState::<D>::default(),
                status: TransactionManagerStatus::default(),
                instrumentation: None,
            },
        })
    }

    /// The pooled connection underneath, for its state (`in_transaction`, `held_for`...).
    pub fn pooled(
        &self,
    ) -> Option<&ucm_kernel::backend::PooledConnection<crate::DieselConnector<D>>> {
        self.lent.as_ref().map(|lent| lent.session.pooled())
    }

    /// Runs one step of diesel's transaction manager on the driver's connection as an
    /// observed statement, keeping the session's record of an open transaction in step
    /// with diesel's (so the pool rolls back a transaction left open, and a connection lost
    /// inside one is read as such).
    async fn transaction_step(&mut self, step: Step) -> QueryResult<()> {
        let Self { lent: Some(Lent { session, connection }), text, .. } = self else {
            return Err(lent_out());
        };
        let result = match step {
            Step::Begin => {
                // Behind a transaction pooler the outermost BEGIN carries the mode and the
                // deadlines; nested ones are savepoints as usual.
                let pooled =
                    session.pooled().pooled_begin().filter(|_| !session.pooled().in_transaction());
                // Marked first: if this future is dropped mid-BEGIN, the pool still rolls back.
                session.mark_transaction_open();
                match pooled {
                    Some(begin) => {
                        Observed::start(session, text, false, || {
                            D::begin_with(&mut *connection, &begin)
                        })
                        .await
                    }
                    None => {
                        Observed::start(session, text, false, || {
                            DriverTm::<D>::begin_transaction(connection)
                        })
                        .await
                    }
                }
            }
            Step::Commit => {
                Observed::start(session, text, true, || {
                    DriverTm::<D>::commit_transaction(connection)
                })
                .await
            }
            Step::Rollback => {
                Observed::start(session, text, false, || {
                    DriverTm::<D>::rollback_transaction(connection)
                })
                .await
            }
        };
        if transaction_depth::<D>(connection) == 0 {
            session.mark_transaction_closed();
        }
        result
    }
}

/// Which transaction step runs.
#[derive(Clone, Copy)]
enum Step {
    Begin,
    Commit,
    Rollback,
}

/// How many transactions (the outer one and savepoints) diesel has open on `driver`.
fn transaction_depth<D: DieselDialect>(driver: &mut Driver<D>) -> u32 {
    match DriverTm::<D>::transaction_manager_status_mut(driver).transaction_depth() {
        Ok(Some(depth)) => depth.get(),
        Ok(None) => 0,
        // A broken transaction manager: the pool closes the connection anyway.
        Err(_) => 1,
    }
}

/// The error of a call on a pool connection that has no driver connection.
pub(crate) fn lent_out() -> DieselError {
    DieselError::DatabaseError(
        DatabaseErrorKind::ClosedConnection,
        Box::new("the pooled connection has no driver connection".to_owned()),
    )
}

impl<D: DieselDialect> Drop for DieselPoolConnection<D> {
    fn drop(&mut self) {
        let Some(Lent { mut session, connection }) = self.lent.take() else { return };
        session.driver().restore(connection);
        // The pool rolls back a transaction left open on a task of the current runtime;
        // dropped outside any (a sync caller), that task goes to ucm's runtime for blocking
        // calls, so the connection is rolled back and reused rather than closed.
        let _context = match tokio::runtime::Handle::try_current() {
            Ok(_) => None,
            Err(_) => ucm_kernel::blocking::runtime().ok().map(|runtime| runtime.enter()),
        };
        drop(session);
    }
}

impl<D: DieselDialect> fmt::Debug for DieselPoolConnection<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DieselPoolConnection")
            .field("system", &D::KIND.as_str())
            .field("pooled", &self.pooled())
            .finish_non_exhaustive()
    }
}

impl<D: DieselDialect> SimpleAsyncConnection for DieselPoolConnection<D> {
    async fn batch_execute(&mut self, query: &str) -> QueryResult<()> {
        let Self { lent: Some(Lent { session, connection }), text, .. } = self else {
            return Err(lent_out());
        };
        Observed::start(session, text, false, || connection.batch_execute(query)).await
    }
}

impl<D: DieselDialect> AsyncConnectionCore for DieselPoolConnection<D> {
    type ExecuteFuture<'conn, 'query> =
        Observed<'conn, D, <Driver<D> as AsyncConnectionCore>::ExecuteFuture<'conn, 'query>>;
    type LoadFuture<'conn, 'query> =
        Observed<'conn, D, <Driver<D> as AsyncConnectionCore>::LoadFuture<'conn, 'query>>;
    type Stream<'conn, 'query> = <Driver<D> as AsyncConnectionCore>::Stream<'conn, 'query>;
    type Row<'conn, 'query> = <Driver<D> as AsyncConnectionCore>::Row<'conn, 'query>;
    type Backend = D::Backend;

    /// The statement is settled when the driver has run it and hands back its rows (for
    /// PostgreSQL and SQLite, all of them; MySQL streams the rest as they are read).
    fn load<'conn, 'query, T>(&'conn mut self, source: T) -> Self::LoadFuture<'conn, 'query>
    where
        T: AsQuery + 'query,
        T::Query: QueryFragment<Self::Backend> + QueryId + 'query,
    {
        match self {
            Self { lent: Some(Lent { session, connection }), text, .. } => {
                Observed::start(session, text, false, || connection.load(source))
            }
            Self { lent: None, .. } => Observed::without_connection(),
        }
    }

    fn execute_returning_count<'conn, 'query, T>(
        &'conn mut self,
        source: T,
    ) -> Self::ExecuteFuture<'conn, 'query>
    where
        T: QueryFragment<Self::Backend> + QueryId + 'query,
    {
        match self {
            Self { lent: Some(Lent { session, connection }), text, .. } => {
                Observed::start(session, text, false, || connection.execute_returning_count(source))
            }
            Self { lent: None, .. } => Observed::without_connection(),
        }
    }
}

impl<D: DieselDialect> AsyncConnection for DieselPoolConnection<D> {
    type TransactionManager = ObservedTransactionManager;

    /// A pool connection comes from a pool handle, never from a URL.
    async fn establish(_database_url: &str) -> ConnectionResult<Self> {
        Err(diesel::result::ConnectionError::BadConnection(
            "a ucm pool connection comes from DieselPool::get, not from a URL".to_owned(),
        ))
    }

    fn transaction_state(&mut self) -> &mut TmState<D> {
        match &mut self.lent {
            Some(lent) => lent.connection.transaction_state(),
            None => &mut self.stand_in.state,
        }
    }

    fn instrumentation(&mut self) -> &mut dyn Instrumentation {
        match &mut self.lent {
            Some(lent) => lent.connection.instrumentation(),
            None => &mut self.stand_in.instrumentation,
        }
    }

    /// Installs `instrumentation` behind ucm's own, which keeps naming the statements.
    fn set_instrumentation(&mut self, instrumentation: impl Instrumentation) {
        if let Some(lent) = &mut self.lent {
            let instrumentation = self.text.instrumentation(Some(Box::new(instrumentation)));
            lent.connection.set_instrumentation(instrumentation);
        }
    }

    fn set_prepared_statement_cache_size(&mut self, size: CacheSize) {
        if let Some(lent) = &mut self.lent {
            lent.connection.set_prepared_statement_cache_size(size);
        }
    }
}

/// diesel-async's transaction manager for a [`DieselPoolConnection`]: the driver
/// connection's own manager (so diesel, the DSL and ucm agree on the transaction's depth;
/// nested transactions are savepoints), each step an observed statement, `COMMIT` read as
/// a commit (a connection lost under it is an `AmbiguousCommit`), and the session told
/// when a transaction opens and when the last one closes.
#[derive(Debug)]
pub struct ObservedTransactionManager;

impl<D: DieselDialect> TransactionManager<DieselPoolConnection<D>> for ObservedTransactionManager {
    type TransactionStateData = TmState<D>;

    async fn begin_transaction(conn: &mut DieselPoolConnection<D>) -> QueryResult<()> {
        conn.transaction_step(Step::Begin).await
    }

    async fn rollback_transaction(conn: &mut DieselPoolConnection<D>) -> QueryResult<()> {
        conn.transaction_step(Step::Rollback).await
    }

    async fn commit_transaction(conn: &mut DieselPoolConnection<D>) -> QueryResult<()> {
        conn.transaction_step(Step::Commit).await
    }

    fn transaction_manager_status_mut(
        conn: &mut DieselPoolConnection<D>,
    ) -> &mut TransactionManagerStatus {
        match &mut conn.lent {
            Some(lent) => DriverTm::<D>::transaction_manager_status_mut(&mut lent.connection),
            None => &mut conn.stand_in.status,
        }
    }

    fn is_broken_transaction_manager(conn: &mut DieselPoolConnection<D>) -> bool {
        match &mut conn.lent {
            Some(lent) => DriverTm::<D>::is_broken_transaction_manager(&mut lent.connection),
            None => true,
        }
    }
}
