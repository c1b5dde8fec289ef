//! How the diesel handles observe the statements diesel runs: ucm's diesel `Instrumentation` keeps each statement's text, and `Observed` runs the driver's future through core's `PooledSession::observe_start`/`observe_finish` (in flight, client deadline, span, metrics, breaker, eviction).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use diesel::QueryResult;
use diesel::connection::{Instrumentation, InstrumentationEvent};
use ucm_kernel::backend::ObservedStatement;

use super::pool::into_diesel_error;
use crate::dialect::Dialect;
use crate::error::read;
use crate::manager::DieselSession;

/// Where ucm's instrumentation leaves the text of the statement diesel last started on a
/// connection, for the statement's span and metrics. Shared by the connection's
/// instrumentation and whoever observes the statement.
///
/// The text is kept only while an observer waits for it ([`Self::arm`] until
/// [`Self::take`]): the statements nobody observes here (ucm's neutral statements, which
/// core observes with their own text, the pipelined lane's, and diesel code run on the bare
/// driver) are not printed at all.
#[derive(Debug, Clone, Default)]
pub(crate) struct StatementText(Arc<TextSlot>);

#[derive(Debug, Default)]
struct TextSlot {
    /// Set while an observed statement runs: the instrumentation prints its text.
    armed: AtomicBool,
    sql: Mutex<Option<String>>,
}

impl StatementText {
    /// ucm's instrumentation writing into this slot, then handing every event to `next`.
    pub(crate) fn instrumentation(&self, next: Option<Box<dyn Instrumentation>>) -> StatementNamer {
        StatementNamer { text: self.clone(), next }
    }

    /// An observed statement is about to start: forget any earlier text and keep the next.
    pub(crate) fn arm(&self) {
        // Text is kept only while armed and taken when disarmed, so only an observed
        // statement that was dropped before its end (still armed) can have left any.
        if self.0.armed.swap(true, Ordering::AcqRel)
            && let Ok(mut slot) = self.0.sql.lock()
        {
            *slot = None;
        }
    }

    /// The text of the statement started since [`Self::arm`], if any; keeps no more.
    pub(crate) fn take(&self) -> Option<String> {
        self.0.armed.store(false, Ordering::Release);
        self.0.sql.lock().ok().and_then(|mut slot| slot.take())
    }

    fn is_armed(&self) -> bool {
        self.0.armed.load(Ordering::Acquire)
    }

    fn set(&self, sql: String) {
        if let Ok(mut slot) = self.0.sql.lock() {
            *slot = Some(sql);
        }
    }
}

/// ucm's diesel [`Instrumentation`], installed on every connection ucm-diesel opens: it
/// keeps the SQL text of each statement diesel starts (never its bind values) so the
/// statement's span and metrics are named after it, and passes every event on to the
/// instrumentation the application installed (diesel's default one, or one set on the
/// connection), so both see every statement.
pub struct StatementNamer {
    text: StatementText,
    next: Option<Box<dyn Instrumentation>>,
}

impl fmt::Debug for StatementNamer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StatementNamer").field("next", &self.next.is_some()).finish()
    }
}

impl Instrumentation for StatementNamer {
    fn on_connection_event(&mut self, event: InstrumentationEvent<'_>) {
        if let InstrumentationEvent::StartQuery { query, .. } = &event
            && self.text.is_armed()
        {
            self.text.set(sql_of(query));
        }
        if let Some(next) = &mut self.next {
            next.on_connection_event(event);
        }
    }
}

/// diesel prints a query as its SQL, then this, then the bind values.
const BINDS: &str = " -- binds: ";

/// The SQL of a query as diesel prints it, cut before the bind values, which are never
/// formatted (the writer stops diesel's printing there).
fn sql_of(query: &dyn fmt::Display) -> String {
    struct UntilBinds(String);

    impl fmt::Write for UntilBinds {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            // Only the new piece, with the few bytes before it that could start the
            // marker, is searched: a long statement printed in many pieces costs linear
            // time. (The marker is ASCII, so no match starts inside a character.)
            let from = self.0.len().saturating_sub(BINDS.len() - 1);
            self.0.push_str(s);
            let found = self.0.as_bytes()[from..]
                .windows(BINDS.len())
                .position(|window| window == BINDS.as_bytes());
            match found.map(|at| from + at) {
                Some(at) => {
                    self.0.truncate(at);
                    Err(fmt::Error)
                }
                None => Ok(()),
            }
        }
    }

    let mut sql = UntilBinds(String::new());
    // The writer's own error stops the printing at the binds: not a failure.
    let _ = fmt::write(&mut sql, format_args!("{query}"));
    sql.0
}

/// A driver future run as one observed statement of `session`: in flight until it
/// finishes, bounded by the client's statement deadline, inside its span, then settled
/// (breaker, metrics, eviction of a lost connection) with the driver's own result handed
/// back. A hand-written future rather than an `async` block because diesel-async's future
/// types are named per connection and lifetime, and this one must be too.
pub struct Observed<'s, D: Dialect, F> {
    /// `None` when there was no connection to run it on (see `DieselPoolConnection`).
    session: Option<&'s mut DieselSession<D>>,
    text: StatementText,
    statement: Option<ObservedStatement>,
    /// When the wait for an answer ends without one (the client's deadline, or the
    /// endpoint abandoned); its timer starts on the first poll, since the future may be
    /// created outside the runtime that drives it (a sync connection creates it, then
    /// blocks on it).
    expired: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    inner: Option<Pin<Box<F>>>,
}

impl<D: Dialect, F> fmt::Debug for Observed<'_, D, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Observed").field("statement", &self.statement).finish_non_exhaustive()
    }
}

impl<'s, D: Dialect, F> Observed<'s, D, F> {
    /// Starts observing a statement on `session` (as a commit when `commit`), then creates
    /// the driver's future with `start`, which gets the statement's deadline first.
    pub(crate) fn start(
        session: &'s mut DieselSession<D>,
        text: &StatementText,
        commit: bool,
        start: impl FnOnce() -> F,
    ) -> Self {
        text.arm();
        let (statement, expiry) =
            if commit { session.observe_commit_start() } else { session.observe_start() };
        let inner = {
            let _entered = statement.span().map(tracing::Span::enter);
            Box::pin(start())
        };
        Self {
            session: Some(session),
            text: text.clone(),
            statement: Some(statement),
            expired: Some(Box::pin(expiry.expired())),
            inner: Some(inner),
        }
    }

    /// A statement that fails at once: there is no connection to run it on.
    pub(crate) fn without_connection() -> Self {
        Self {
            session: None,
            text: StatementText::default(),
            statement: None,
            expired: None,
            inner: None,
        }
    }
}

impl<D: Dialect, F, T> Future for Observed<'_, D, F>
where
    F: Future<Output = QueryResult<T>>,
{
    type Output = QueryResult<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let (Some(session), Some(inner)) = (&mut this.session, &mut this.inner) else {
            return Poll::Ready(Err(super::connection::lent_out()));
        };
        let Some(statement) = &this.statement else {
            return Poll::Ready(Err(into_diesel_error(ucm_kernel::Error::other(
                "a finished statement was polled again",
            ))));
        };
        let polled = {
            let _entered = statement.span().map(tracing::Span::enter);
            inner.as_mut().poll(cx)
        };
        let outcome = match polled {
            Poll::Ready(result) => Some(result),
            Poll::Pending => match &mut this.expired {
                Some(expired) => match expired.as_mut().poll(cx) {
                    Poll::Ready(()) => None,
                    Poll::Pending => return Poll::Pending,
                },
                None => return Poll::Pending,
            },
        };
        let Some(mut statement) = this.statement.take() else {
            return Poll::Pending;
        };
        if let Some(sql) = this.text.take() {
            statement.set_sql(&sql);
        }
        Poll::Ready(match outcome {
            Some(Ok(value)) => {
                let _ = session.observe_finish(statement, Some(Ok(())));
                Ok(value)
            }
            Some(Err(error)) => {
                let _ = session.observe_finish(statement, Some(Err(read::<D>(&error))));
                Err(error)
            }
            None => {
                let error = session.observe_finish(statement, None).unwrap_or_else(|| {
                    ucm_kernel::Error::other("the client's statement deadline passed")
                });
                Err(into_diesel_error(error))
            }
        })
    }
}

#[cfg(test)]
#[cfg(feature = "postgres")]
mod tests {
    use diesel::connection::StrQueryHelper;

    use super::sql_of;

    #[test]
    fn the_text_stops_before_the_binds() {
        use diesel::sql_types::Text;
        let query = diesel::sql_query("SELECT 1 WHERE a = $1").bind::<Text, _>("hunter2secret");
        let printed = diesel::debug_query::<diesel::pg::Pg, _>(&query);
        assert!(printed.to_string().contains("hunter2secret"), "diesel prints the binds");
        assert_eq!(sql_of(&printed), "SELECT 1 WHERE a = $1");
        assert_eq!(sql_of(&StrQueryHelper::new("BEGIN")), "BEGIN");
    }

    /// A query printed a few bytes at a time, the marker split across pieces.
    struct Pieces(&'static str);

    impl std::fmt::Display for Pieces {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            for piece in self.0.as_bytes().chunks(3) {
                f.write_str(std::str::from_utf8(piece).expect("ASCII"))?;
            }
            Ok(())
        }
    }

    #[test]
    fn the_text_stops_before_binds_printed_in_pieces() {
        assert_eq!(sql_of(&Pieces("SELECT 1 -- binds: [\"hunter2\"]")), "SELECT 1");
        assert_eq!(sql_of(&Pieces("SELECT 12")), "SELECT 12");
    }

    #[test]
    fn only_an_observed_statement_has_its_text_kept() {
        use diesel::connection::{Instrumentation, InstrumentationEvent};
        let text = super::StatementText::default();
        let mut namer = text.instrumentation(None);
        let query = StrQueryHelper::new("SELECT 1");
        namer.on_connection_event(InstrumentationEvent::start_query(&query));
        assert_eq!(text.take(), None, "nobody observes it: not printed");
        text.arm();
        namer.on_connection_event(InstrumentationEvent::start_query(&query));
        assert_eq!(text.take().as_deref(), Some("SELECT 1"));
        namer.on_connection_event(InstrumentationEvent::start_query(&query));
        assert_eq!(text.take(), None, "taken: no longer kept");
        // An observed statement dropped before its end leaves its text; the next one
        // does not inherit it.
        text.arm();
        namer.on_connection_event(InstrumentationEvent::start_query(&query));
        text.arm();
        assert_eq!(text.take(), None, "a dropped statement's text is not the next one's");
    }
}
