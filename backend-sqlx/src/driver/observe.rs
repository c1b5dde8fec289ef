//! How the handles observe a statement sqlx runs: the query's text captured when sqlx takes it, the client deadline, the span, and the settling through core's `PooledSession::observe_finish`; and the executor implementations built on that.

use std::sync::Arc;

use futures_core::future::BoxFuture;
use futures_core::stream::BoxStream;
use futures_util::TryStreamExt;
use sqlx::{Database, Describe, Either, Execute, Executor, SqlStr};
use ucm_kernel::backend::ObservedStatement;

use super::pool::into_sqlx_error;
use super::{ObservedConnection, SqlxDatabase, SqlxPoolConnection, SqlxTransaction};
use crate::convert::NeutralValues;
use crate::error::read_ref;
use crate::manager::SqlxSession;

/// Settles an observed statement and hands the driver's own result back.
pub(super) fn finish<D: NeutralValues, T>(
    session: &mut SqlxSession<D>,
    statement: ObservedStatement,
    outcome: Option<Result<T, sqlx::Error>>,
) -> Result<T, sqlx::Error> {
    match outcome {
        Some(Ok(value)) => {
            let _ = session.observe_finish(statement, Some(Ok(())));
            Ok(value)
        }
        Some(Err(error)) => {
            let _ = session.observe_finish(statement, Some(Err(read_ref::<D>(&error))));
            Err(error)
        }
        None => {
            let ucm = session.observe_finish(statement, None);
            Err(sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                ucm.map_or_else(|| "statement deadline passed".to_owned(), |e| e.to_string()),
            )))
        }
    }
}

/// A query whose text is copied out when the driver takes it (sqlx hands the text over
/// only by consuming the query), for the statement's span and metrics.
struct Captured<E> {
    inner: E,
    sql: Arc<std::sync::Mutex<Option<SqlStr>>>,
}

impl<'q, DB: Database, E: Execute<'q, DB>> Execute<'q, DB> for Captured<E> {
    fn sql(self) -> SqlStr {
        let sql = self.inner.sql();
        if let Ok(mut slot) = self.sql.lock() {
            *slot = Some(sql.clone());
        }
        sql
    }

    fn statement(&self) -> Option<&DB::Statement> {
        self.inner.statement()
    }

    fn take_arguments(
        &mut self,
    ) -> Result<Option<<DB as Database>::Arguments>, sqlx::error::BoxDynError> {
        self.inner.take_arguments()
    }

    fn persistent(&self) -> bool {
        self.inner.persistent()
    }
}

/// Wraps `query` so its text lands in `statement` once the driver takes it.
fn capture<E>(query: E) -> (Captured<E>, Arc<std::sync::Mutex<Option<SqlStr>>>) {
    let sql = Arc::new(std::sync::Mutex::new(None));
    (Captured { inner: query, sql: Arc::clone(&sql) }, sql)
}

fn name(statement: &mut ObservedStatement, sql: &std::sync::Mutex<Option<SqlStr>>) {
    if let Ok(slot) = sql.lock()
        && let Some(sql) = slot.as_ref()
    {
        statement.set_sql(sql.as_str());
    }
}

/// What `fetch_many` yields: results and rows, as sqlx's executors do.
pub(super) type Items<'e, DB> = BoxStream<
    'e,
    Result<Either<<DB as Database>::QueryResult, <DB as Database>::Row>, sqlx::Error>,
>;

/// `fetch_many` on a session, observed: the stream's items are the driver's; its deadline is
/// the client's statement deadline for the whole stream.
fn observed_stream<'e, 'q: 'e, D, E>(session: &'e mut SqlxSession<D>, query: E) -> Items<'e, D::Db>
where
    D: NeutralValues,
    E: 'q + Execute<'q, D::Db>,
    for<'c> &'c mut <D::Db as Database>::Connection: Executor<'c, Database = D::Db>,
{
    Box::pin(async_stream::try_stream! {
        let pooled = session.open_pooled_autocommit().await.map_err(into_sqlx_error)?;
        let (mut statement, expiry) = session.observe_start();
        let (query, sql) = capture(query);
        let expired = expiry.expired();
        tokio::pin!(expired);
        let mut failure = None;
        {
            let mut items = (&mut **session).fetch_many(query);
            loop {
                let next = tokio::select! {
                    biased;
                    next = items.try_next() => Some(next),
                    () = &mut expired => None,
                };
                match next {
                    Some(Ok(Some(item))) => yield item,
                    Some(Ok(None)) => break,
                    Some(Err(error)) => {
                        failure = Some(Some(error));
                        break;
                    }
                    None => {
                        failure = Some(None);
                        break;
                    }
                }
            }
        }
        name(&mut statement, &sql);
        let ok = failure.is_none();
        let finished = match failure {
            None => finish::<D, ()>(session, statement, Some(Ok(()))),
            Some(Some(error)) => finish::<D, ()>(session, statement, Some(Err(error))),
            Some(None) => finish::<D, ()>(session, statement, None),
        };
        session.close_pooled_autocommit(pooled, ok).await.map_err(into_sqlx_error)?;
        finished?;
    })
}

/// `fetch_optional` on a session, observed.
async fn observed_optional<'q, D, E>(
    session: &mut SqlxSession<D>,
    query: E,
) -> Result<Option<<D::Db as Database>::Row>, sqlx::Error>
where
    D: NeutralValues,
    E: 'q + Execute<'q, D::Db>,
    for<'c> &'c mut <D::Db as Database>::Connection: Executor<'c, Database = D::Db>,
{
    let pooled = session.open_pooled_autocommit().await.map_err(into_sqlx_error)?;
    let (mut statement, expiry) = session.observe_start();
    let (query, sql) = capture(query);
    let span = statement.span().cloned();
    let run = (&mut **session).fetch_optional(query);
    let run = async move {
        match span {
            Some(span) => tracing::Instrument::instrument(run, span).await,
            None => run.await,
        }
    };
    let outcome = expiry.bound(run).await;
    name(&mut statement, &sql);
    let finished = finish(session, statement, outcome);
    session.close_pooled_autocommit(pooled, finished.is_ok()).await.map_err(into_sqlx_error)?;
    finished
}

/// The executor methods every handle shares: `$this` turns `self` into the session to run on
/// (after a checkout, for the pool).
macro_rules! session_executor {
    ($handle:ty, |$self_:ident| $session:expr) => {
        impl<'c, DB: SqlxDatabase> Executor<'c> for &'c mut $handle
        where
            for<'e> &'e mut DB::Connection: Executor<'e, Database = DB>,
        {
            type Database = DB;

            fn fetch_many<'e, 'q: 'e, E>(self, query: E) -> Items<'e, DB>
            where
                'c: 'e,
                E: 'q + Execute<'q, DB>,
            {
                let $self_ = self;
                observed_stream::<DB::Dialect, E>($session, query)
            }

            fn fetch_optional<'e, 'q: 'e, E>(
                self,
                query: E,
            ) -> BoxFuture<'e, Result<Option<DB::Row>, sqlx::Error>>
            where
                'c: 'e,
                E: 'q + Execute<'q, DB>,
            {
                let $self_ = self;
                Box::pin(observed_optional::<DB::Dialect, E>($session, query))
            }

            fn prepare_with<'e>(
                self,
                sql: SqlStr,
                parameters: &'e [DB::TypeInfo],
            ) -> BoxFuture<'e, Result<DB::Statement, sqlx::Error>>
            where
                'c: 'e,
            {
                let $self_ = self;
                (&mut **$session).prepare_with(sql, parameters)
            }

            fn describe<'e>(self, sql: SqlStr) -> BoxFuture<'e, Result<Describe<DB>, sqlx::Error>>
            where
                'c: 'e,
            {
                let $self_ = self;
                (&mut **$session).describe(sql)
            }
        }
    };
}

session_executor!(ObservedConnection<DB>, |this| &mut this.session);
session_executor!(SqlxPoolConnection<DB>, |this| &mut this.connection.session);
session_executor!(SqlxTransaction<DB>, |this| &mut this.connection().session);
