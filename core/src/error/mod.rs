//! One error type for all of ucm, classified by [`ErrorKind`]; retry and the breaker read only the kind.
//!
//! Every message says what went wrong and what to do about it, and never contains a
//! password: endpoints are carried as redacted labels (`host:port/db`), and driver text is
//! scrubbed by the backend (see `DatabaseUrl::scrub`) before it reaches an [`Error`].

use std::fmt;
use std::time::Duration;

/// Shorthand for results whose error is ucm's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A boxed driver error kept as the [`std::error::Error::source`] of an [`Error`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What kind of failure an [`Error`] is; the only thing retry and the circuit breaker look at.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Every connection was in use and none came free within the acquire timeout.
    PoolExhausted,
    /// A new connection could not be opened (refused, DNS, TLS, auth, timeout...).
    ConnectFailed,
    /// The endpoint's circuit breaker is open; the call failed fast without touching the network.
    CircuitOpen,
    /// The manager or pool is closed or draining and accepts no new work.
    Closed,
    /// A write was attempted through a read-only connection or on a read-only server (SQLSTATE 25006).
    ReadOnlyViolation,
    /// The transaction lost a serialization conflict (SQLSTATE 40001); re-running it may succeed.
    SerializationFailure,
    /// The transaction was chosen as a deadlock victim (SQLSTATE 40P01); re-running it may succeed.
    Deadlock,
    /// An integrity constraint was violated (SQLSTATE class 23).
    Constraint,
    /// An established connection broke (SQLSTATE class 08, 57P01-57P03, or an I/O error); it is evicted.
    ConnectionLost,
    /// The connection broke while COMMIT was in flight, or while a write outside a
    /// transaction (its own commit) was in flight: it may or may not have been applied.
    AmbiguousCommit,
    /// An operation exceeded its own deadline (statement timeout, drain deadline).
    Timeout,
    /// The configuration or a URL is incoherent or malformed.
    Configuration,
    /// The database rejected the statement (syntax, missing table, permission...).
    Query,
    /// Anything else.
    Other,
}

impl ErrorKind {
    /// Every kind, in declaration order (for per-kind counters).
    pub const ALL: [Self; 14] = [
        Self::PoolExhausted,
        Self::ConnectFailed,
        Self::CircuitOpen,
        Self::Closed,
        Self::ReadOnlyViolation,
        Self::SerializationFailure,
        Self::Deadlock,
        Self::Constraint,
        Self::ConnectionLost,
        Self::AmbiguousCommit,
        Self::Timeout,
        Self::Configuration,
        Self::Query,
        Self::Other,
    ];

    /// Whether an operation that failed with this kind may succeed if simply tried again.
    ///
    /// Connect failures and lost connections are transient (a new connection may work);
    /// serialization failures and deadlocks are transient (the transaction is re-run).
    /// Pool exhaustion and an open circuit are not: retrying would only stretch a wait the
    /// caller bounded on purpose. An ambiguous commit is never transient by kind; only work
    /// the caller marks idempotent is re-run after one (see `RetryPolicy`).
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            Self::ConnectFailed
                | Self::ConnectionLost
                | Self::SerializationFailure
                | Self::Deadlock
        )
    }

    /// Whether this failure says the endpoint itself is unwell, and so counts toward opening
    /// its circuit breaker. Pool exhaustion and application SQL errors never do.
    pub fn trips_breaker(self) -> bool {
        matches!(self, Self::ConnectFailed | Self::ConnectionLost)
    }

    /// Whether the connection that produced this error must be discarded rather than pooled.
    pub fn evicts_connection(self) -> bool {
        matches!(self, Self::ConnectionLost | Self::AmbiguousCommit)
    }

    /// A short stable name, used as the `error.type` telemetry attribute.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PoolExhausted => "pool_exhausted",
            Self::ConnectFailed => "connect_failed",
            Self::CircuitOpen => "circuit_open",
            Self::Closed => "closed",
            Self::ReadOnlyViolation => "read_only_violation",
            Self::SerializationFailure => "serialization_failure",
            Self::Deadlock => "deadlock",
            Self::Constraint => "constraint",
            Self::ConnectionLost => "connection_lost",
            Self::AmbiguousCommit => "ambiguous_commit",
            Self::Timeout => "timeout",
            Self::Configuration => "configuration",
            Self::Query => "query",
            Self::Other => "other",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a connection could not be opened; decides whether retrying can help.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectFailure {
    /// The host name did not resolve.
    Dns,
    /// Nothing listens at the address, or the network is unreachable.
    Refused,
    /// The server did not answer within the connect timeout.
    Timeout,
    /// The server rejected the credentials (SQLSTATE class 28, MySQL 1045).
    Authentication,
    /// The database named in the URL does not exist (SQLSTATE 3D000, MySQL 1049).
    DatabaseMissing,
    /// The TLS handshake failed or TLS was required and unavailable.
    Tls,
    /// The server refused more connections (SQLSTATE 53300, 57P03).
    TooManyConnections,
    /// Any other connect failure.
    Other,
}

impl ConnectFailure {
    /// Whether trying again later may succeed; a wrong password or a missing database will not fix itself.
    pub fn is_transient(self) -> bool {
        !matches!(self, Self::Authentication | Self::DatabaseMissing | Self::Tls)
    }

    /// What the user should do about it.
    pub fn hint(self) -> &'static str {
        match self {
            Self::Dns => "check the host name in the URL",
            Self::Refused => "check that the server is running and listening on that host and port",
            Self::Timeout => "check the network path and firewall, or raise the connect timeout",
            Self::Authentication => {
                "check the user name and password (percent-encode reserved characters in the URL)"
            }
            Self::DatabaseMissing => "create the database or fix its name in the URL",
            Self::Tls => "check sslmode and the server's TLS configuration",
            Self::TooManyConnections => {
                "the server is at max_connections: lower pool sizes or raise the server limit"
            }
            Self::Other => "see the driver error for details",
        }
    }
}

impl fmt::Display for ConnectFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Dns => "host name did not resolve",
            Self::Refused => "connection refused",
            Self::Timeout => "connect timed out",
            Self::Authentication => "authentication failed",
            Self::DatabaseMissing => "database does not exist",
            Self::Tls => "tls handshake failed",
            Self::TooManyConnections => "server has too many connections",
            Self::Other => "connect failed",
        })
    }
}

/// An error from ucm; [`Error::kind`] classifies it.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Every connection was in use and none came free within the acquire timeout.
    #[error(
        "pool exhausted on {endpoint}: {in_use} of {max} connections in use and {waiting} other \
         tasks waiting; gave up after {}. Hold connections for less time, raise the pool \
         size or overflow, or raise the acquire timeout",
        human(*.waited)
    )]
    PoolExhausted {
        /// The endpoint's redacted label.
        endpoint: String,
        /// Connections checked out when the wait ended.
        in_use: usize,
        /// The pool's maximum (pool size plus overflow).
        max: usize,
        /// Other tasks waiting for a connection when the wait ended.
        waiting: usize,
        /// How long this caller waited.
        waited: Duration,
    },
    /// The pool is suspended ([`Pool::suspend`](crate::backend::Pool::suspend), or the
    /// manager's) and was not resumed within the acquire timeout.
    #[error(
        "pool {endpoint} is suspended and was not resumed within the acquire timeout (waited \
         {}); resume it (Manager::resume) or raise the acquire timeout",
        human(*.waited)
    )]
    Suspended {
        /// The endpoint's redacted label.
        endpoint: String,
        /// How long this caller waited.
        waited: Duration,
    },
    /// A new connection could not be opened.
    #[error("could not connect to {endpoint} ({attempts} attempt(s)): {reason}: {message}; {}", reason.hint())]
    ConnectFailed {
        /// The endpoint's redacted label.
        endpoint: String,
        /// Why, as far as the driver error tells.
        reason: ConnectFailure,
        /// How many attempts were made before giving up.
        attempts: u32,
        /// The last driver error, scrubbed of secrets.
        message: String,
        /// The driver error itself.
        #[source]
        source: Option<BoxError>,
    },
    /// The endpoint's circuit breaker is open.
    #[error(
        "circuit open for {endpoint} after repeated connection failures; failing fast, {}. \
         Check the server's health (ucm health)",
        next_probe(*.retry_after)
    )]
    CircuitOpen {
        /// The endpoint's redacted label.
        endpoint: String,
        /// Time left until the breaker lets a probe through.
        retry_after: Duration,
    },
    /// The manager or pool is closed or draining.
    #[error("{what} is closed or draining and accepts no new work; create a new manager")]
    Closed {
        /// What was closed (a pool label or "manager").
        what: String,
    },
    /// A failure reported by the database for a statement, classified by SQLSTATE.
    #[error("{kind} on {endpoint}{}: {message}{}", sqlstate_suffix(.sqlstate.as_deref()), kind_hint(*.kind))]
    Database {
        /// The classification of the SQLSTATE or driver error.
        kind: ErrorKind,
        /// The endpoint's redacted label.
        endpoint: String,
        /// The five-character SQLSTATE, when the server sent one.
        sqlstate: Option<String>,
        /// The server's message, scrubbed of secrets.
        message: String,
        /// The driver error itself.
        #[source]
        source: Option<BoxError>,
    },
    /// The configuration or a URL is incoherent or malformed.
    #[error("invalid configuration: {field}: {message}")]
    Configuration {
        /// The setting or URL part at fault (e.g. `pool.max_overflow`, `DATABASE_URL`).
        field: String,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// A statement ran past the mode's statement timeout.
    #[error(
        "statement on {endpoint} did not finish within the statement timeout of {}{}; make it \
         cheaper, or raise the limit (UCM_STATEMENT_TIMEOUT, or the configuration's \
         statement_timeout; `off` for none)",
        human(*.limit),
        statement_timeout_outcome(*.server_cancelled, *.outcome_unknown)
    )]
    StatementTimeout {
        /// The endpoint's redacted label.
        endpoint: String,
        /// The statement timeout that passed.
        limit: Duration,
        /// The server cancelled the statement itself (SQLSTATE 57014); otherwise the
        /// client's deadline passed without an answer and the connection was closed.
        server_cancelled: bool,
        /// The statement was a write outside a transaction cut off by the client's
        /// deadline: the server may have committed it. Its kind is then `AmbiguousCommit`.
        outcome_unknown: bool,
    },
    /// An operation exceeded its own deadline.
    #[error("{what} did not finish within {}", human(*.after))]
    Timeout {
        /// What timed out.
        what: String,
        /// The deadline that passed.
        after: Duration,
    },
    /// Anything else.
    #[error("{message}")]
    Other {
        /// What happened, scrubbed of secrets.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },
}

/// A duration for people: `200ms`, `1.5s`, `2m 30s`.
pub(crate) fn human(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1_000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        let tenths = (ms + 50) / 100;
        if tenths.is_multiple_of(10) {
            format!("{}s", tenths / 10)
        } else {
            format!("{}.{}s", tenths / 10, tenths % 10)
        }
    } else {
        let secs = d.as_secs();
        if secs.is_multiple_of(60) {
            format!("{}m", secs / 60)
        } else {
            format!("{}m {}s", secs / 60, secs % 60)
        }
    }
}

fn statement_timeout_outcome(server_cancelled: bool, outcome_unknown: bool) -> &'static str {
    match (server_cancelled, outcome_unknown) {
        (true, _) => " (the server cancelled it)",
        (false, true) => {
            " and the server did not answer in time: the connection was closed, and whether \
             the write was applied is unknown (check before re-running it)"
        }
        (false, false) => {
            " and the server did not answer in time: the connection was closed (the server \
             may be frozen or unreachable)"
        }
    }
}

fn next_probe(retry_after: Duration) -> String {
    if retry_after.is_zero() {
        "a recovery probe is in flight now".to_owned()
    } else {
        format!("next recovery probe allowed in {}", human(retry_after))
    }
}

fn sqlstate_suffix(sqlstate: Option<&str>) -> String {
    sqlstate.map(|s| format!(" (SQLSTATE {s})")).unwrap_or_default()
}

fn kind_hint(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::ReadOnlyViolation => {
            "; writes need ConnectionMode::ReadWrite (or Transactional/Batch) on the primary"
        }
        ErrorKind::SerializationFailure | ErrorKind::Deadlock => {
            "; the transaction was rolled back and is safe to re-run"
        }
        ErrorKind::ConnectionLost => "; the connection was discarded, a new one will be opened",
        ErrorKind::AmbiguousCommit => {
            "; the connection was lost after the write or commit was sent, so whether it was \
             applied is unknown: check before re-running unless the work is idempotent"
        }
        _ => "",
    }
}

impl Error {
    /// The classification that retry, the breaker and metrics act on.
    pub fn kind(&self) -> ErrorKind {
        match self {
            // A suspended pool is a pool with no connection to give: not retried, not the
            // endpoint's fault.
            Self::PoolExhausted { .. } | Self::Suspended { .. } => ErrorKind::PoolExhausted,
            Self::ConnectFailed { .. } => ErrorKind::ConnectFailed,
            Self::CircuitOpen { .. } => ErrorKind::CircuitOpen,
            Self::Closed { .. } => ErrorKind::Closed,
            Self::Database { kind, .. } => *kind,
            Self::Configuration { .. } => ErrorKind::Configuration,
            Self::Timeout { .. } => ErrorKind::Timeout,
            Self::StatementTimeout { outcome_unknown: true, .. } => ErrorKind::AmbiguousCommit,
            Self::StatementTimeout { .. } => ErrorKind::Timeout,
            Self::Other { .. } => ErrorKind::Other,
        }
    }

    /// Whether simply trying again may succeed: the kind's verdict, refined for connect
    /// failures by their reason (a wrong password is not transient).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::ConnectFailed { reason, .. } => reason.is_transient(),
            other => other.kind().is_transient(),
        }
    }

    /// The SQLSTATE the server sent, if any.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            Self::Database { sqlstate, .. } => sqlstate.as_deref(),
            _ => None,
        }
    }

    /// A configuration error naming the field at fault.
    pub fn config(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Configuration { field: field.into(), message: message.into() }
    }

    /// A database error of the given kind, with no driver source.
    pub fn database(
        kind: ErrorKind,
        endpoint: impl Into<String>,
        sqlstate: Option<String>,
        message: impl Into<String>,
    ) -> Self {
        Self::Database {
            kind,
            endpoint: endpoint.into(),
            sqlstate,
            message: message.into(),
            source: None,
        }
    }

    /// An uncategorised error with a message.
    pub fn other(message: impl Into<String>) -> Self {
        Self::Other { message: message.into(), source: None }
    }
}

/// The classification of a SQLSTATE: its kind, and whether the connection must be evicted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SqlStateClass {
    /// The error kind the SQLSTATE maps to.
    pub kind: ErrorKind,
    /// Whether the connection that reported it must be discarded.
    pub evict: bool,
}

/// Maps a five-character SQLSTATE to an [`ErrorKind`], for every backend alike.
///
/// PostgreSQL and MySQL/MariaDB share the standard classes; the PostgreSQL-specific codes
/// that matter (40P01, 57P01-57P03) are listed explicitly. Unknown codes are `Query`.
pub fn classify_sqlstate(sqlstate: &str) -> SqlStateClass {
    let (kind, evict) = match sqlstate {
        "40001" => (ErrorKind::SerializationFailure, false),
        "40P01" => (ErrorKind::Deadlock, false),
        "25006" => (ErrorKind::ReadOnlyViolation, false),
        // admin_shutdown, crash_shutdown, cannot_connect_now: the server is going away.
        "57P01" | "57P02" | "57P03" => (ErrorKind::ConnectionLost, true),
        // query_canceled (PostgreSQL's statement_timeout); MariaDB's max_statement_time.
        "57014" | "70100" => (ErrorKind::Timeout, false),
        s if s.starts_with("08") => (ErrorKind::ConnectionLost, true),
        s if s.starts_with("23") => (ErrorKind::Constraint, false),
        _ => (ErrorKind::Query, false),
    };
    SqlStateClass { kind, evict }
}

/// Maps the SQLSTATE of an error raised while connecting to the reason it gives.
pub fn classify_connect_sqlstate(sqlstate: &str) -> ConnectFailure {
    match sqlstate {
        s if s.starts_with("28") => ConnectFailure::Authentication,
        "3D000" => ConnectFailure::DatabaseMissing,
        "53300" | "57P03" => ConnectFailure::TooManyConnections,
        _ => ConnectFailure::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_classify_as_designed() {
        let table = [
            ("40001", ErrorKind::SerializationFailure, false),
            ("40P01", ErrorKind::Deadlock, false),
            ("25006", ErrorKind::ReadOnlyViolation, false),
            ("57P01", ErrorKind::ConnectionLost, true),
            ("57P02", ErrorKind::ConnectionLost, true),
            ("57P03", ErrorKind::ConnectionLost, true),
            ("08006", ErrorKind::ConnectionLost, true),
            ("08003", ErrorKind::ConnectionLost, true),
            ("23505", ErrorKind::Constraint, false),
            ("23503", ErrorKind::Constraint, false),
            ("57014", ErrorKind::Timeout, false),
            ("70100", ErrorKind::Timeout, false),
            ("42P01", ErrorKind::Query, false),
            ("42601", ErrorKind::Query, false),
        ];
        for (code, kind, evict) in table {
            assert_eq!(classify_sqlstate(code), SqlStateClass { kind, evict }, "{code}");
        }
    }

    #[test]
    fn connect_sqlstates_give_reasons() {
        assert_eq!(classify_connect_sqlstate("28P01"), ConnectFailure::Authentication);
        assert_eq!(classify_connect_sqlstate("28000"), ConnectFailure::Authentication);
        assert_eq!(classify_connect_sqlstate("3D000"), ConnectFailure::DatabaseMissing);
        assert_eq!(classify_connect_sqlstate("53300"), ConnectFailure::TooManyConnections);
        assert_eq!(classify_connect_sqlstate("XX000"), ConnectFailure::Other);
    }

    #[test]
    fn transience_and_breaker_rules() {
        use ErrorKind::*;
        let transient = [ConnectFailed, ConnectionLost, SerializationFailure, Deadlock];
        let trips = [ConnectFailed, ConnectionLost];
        for kind in ErrorKind::ALL {
            assert_eq!(kind.is_transient(), transient.contains(&kind), "{kind}");
            assert_eq!(kind.trips_breaker(), trips.contains(&kind), "{kind}");
        }
    }

    #[test]
    fn auth_failures_are_not_transient() {
        let err = Error::ConnectFailed {
            endpoint: "db:5432/app".into(),
            reason: ConnectFailure::Authentication,
            attempts: 1,
            message: "password authentication failed for user \"app\"".into(),
            source: None,
        };
        assert_eq!(err.kind(), ErrorKind::ConnectFailed);
        assert!(!err.is_transient());
        let text = err.to_string();
        assert!(text.contains("authentication failed"), "{text}");
        assert!(text.contains("check the user name and password"), "{text}");
    }

    #[test]
    fn exhaustion_message_carries_the_numbers() {
        let err = Error::PoolExhausted {
            endpoint: "db:5432/app".into(),
            in_use: 30,
            max: 30,
            waiting: 4,
            waited: Duration::from_millis(200),
        };
        let text = err.to_string();
        for needle in ["30 of 30", "4 other tasks waiting", "after 200ms.", "db:5432/app"] {
            assert!(text.contains(needle), "{needle} missing from {text}");
        }
    }

    #[test]
    fn durations_read_well() {
        for (d, text) in [
            (Duration::from_micros(202_242), "202ms"),
            (Duration::from_millis(1_500), "1.5s"),
            (Duration::from_secs(60), "1m"),
            (Duration::from_secs(150), "2m 30s"),
            (Duration::from_millis(59_960), "60s"),
        ] {
            assert_eq!(human(d), text);
        }
    }

    #[test]
    fn database_errors_show_sqlstate_and_hint() {
        let err = Error::database(
            ErrorKind::ReadOnlyViolation,
            "db:5432/app",
            Some("25006".into()),
            "cannot execute INSERT in a read-only transaction",
        );
        let text = err.to_string();
        assert!(text.starts_with("read_only_violation on db:5432/app (SQLSTATE 25006)"), "{text}");
        assert!(text.contains("ConnectionMode::ReadWrite"), "{text}");
        assert_eq!(err.sqlstate(), Some("25006"));
    }
}
