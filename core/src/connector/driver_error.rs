//! `DriverError`: a backend's neutral reading of a driver error, turned into ucm's `Error` by one set of rules (phase, scrubbing, connect reasons).
//!
//! Each backend only says what its driver reported (a server error with its SQLSTATE or
//! code, an I/O failure, a broken connection...). How that becomes an [`Error`] — which
//! kind, whether it is a connect failure and why, an ambiguous commit, what the message
//! says with the password scrubbed — is decided here, once for every backend.

use std::{fmt, io};

use crate::config::DatabaseUrl;
use crate::error::{
    ConnectFailure, Error, ErrorKind, classify_connect_sqlstate, classify_sqlstate,
};

/// Where an error happened; decides how a broken connection is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Opening a connection: every failure is a connect failure, with a reason.
    Connect,
    /// Running a statement (or `BEGIN`/`ROLLBACK`): a broken connection is `ConnectionLost`.
    Statement,
    /// Running `COMMIT`: a broken connection makes the outcome unknown (`AmbiguousCommit`).
    Commit,
    /// Running a statement outside a transaction on a session that may write: the statement
    /// commits on its own, so a broken connection makes its outcome unknown
    /// (`AmbiguousCommit`), exactly as for `COMMIT`.
    Autocommit,
}

impl Phase {
    /// Whether a connection lost in this phase leaves the outcome unknown: the server may
    /// have committed and the reply been lost.
    pub fn commits(self) -> bool {
        matches!(self, Self::Commit | Self::Autocommit)
    }
}

/// A database-specific reading of a server error, for codes the SQLSTATE alone does not
/// tell (MySQL error numbers, SQLite result codes, a driver's own error kinds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Classified {
    /// The error kind.
    pub kind: ErrorKind,
    /// For errors while connecting: the reason.
    pub connect: Option<ConnectFailure>,
}

impl Classified {
    /// A statement error of `kind`.
    pub fn kind(kind: ErrorKind) -> Self {
        Self { kind, connect: None }
    }

    /// A connect failure for `reason`.
    pub fn connect(reason: ConnectFailure) -> Self {
        Self { kind: ErrorKind::ConnectFailed, connect: Some(reason) }
    }
}

/// What a driver reported, read by the backend without interpretation.
///
/// `Debug` shows the variant, the SQLSTATE and classification, and only the length of the
/// driver's text: that text is not yet scrubbed, and a driver may quote its connection
/// string in it. [`DriverError::into_error`] gives the scrubbed message.
#[non_exhaustive]
pub enum DriverError {
    /// The server answered with an error.
    Server {
        /// The five-character SQLSTATE, when the driver exposes it.
        sqlstate: Option<String>,
        /// The backend's own reading, which wins over the SQLSTATE when present.
        classified: Option<Classified>,
        /// The server's message (scrubbed before it reaches an [`Error`]).
        message: String,
    },
    /// Socket I/O failed.
    Io(io::Error),
    /// TLS negotiation failed.
    Tls(String),
    /// The connection is unusable: a protocol error, its worker stopped, it was closed.
    Broken(String),
    /// The URL or connect options are invalid for the driver.
    Configuration(String),
    /// A value could not be encoded or decoded, or a column was missing.
    Data(String),
    /// Anything else.
    Other(String),
}

impl DriverError {
    /// Converts the driver's report into ucm's [`Error`] for an operation on `url` during
    /// `phase`, with every trace of the password scrubbed from the driver's text.
    pub fn into_error(self, url: &DatabaseUrl, phase: Phase) -> Error {
        let endpoint = url.label();
        match self {
            Self::Server { sqlstate, classified, message } => {
                let message = url.scrub(&message);
                if phase == Phase::Connect {
                    let reason = classified
                        .and_then(|c| c.connect)
                        .or_else(|| sqlstate.as_deref().map(classify_connect_sqlstate))
                        .filter(|reason| *reason != ConnectFailure::Other)
                        .or_else(|| connect_failure_in_message(&message))
                        .unwrap_or(ConnectFailure::Other);
                    return connect_failed(endpoint, reason, message, None);
                }
                let mut kind = match classified {
                    Some(c) => c.kind,
                    None => {
                        sqlstate.as_deref().map_or(ErrorKind::Query, |s| classify_sqlstate(s).kind)
                    }
                };
                if phase.commits() && kind == ErrorKind::ConnectionLost {
                    kind = ErrorKind::AmbiguousCommit;
                }
                Error::Database { kind, endpoint, sqlstate, message, source: None }
            }
            Self::Io(error) => {
                let message = url.scrub(&error.to_string());
                match phase {
                    Phase::Connect => {
                        // The source keeps the I/O kind but carries the scrubbed text: the
                        // error's `Debug` and any report walking `source()` print it.
                        let source = io::Error::new(error.kind(), message.clone());
                        if let Some(advised) = tls_failure(&message) {
                            return connect_failed(endpoint, ConnectFailure::Tls, advised, None);
                        }
                        connect_failed(endpoint, io_reason(&error), message, Some(Box::new(source)))
                    }
                    _ => lost(phase, endpoint, message),
                }
            }
            Self::Tls(message) => {
                let message = url.scrub(&message);
                let message = tls_failure(&message).unwrap_or(message);
                connect_failed(endpoint, ConnectFailure::Tls, message, None)
            }
            Self::Broken(message) => {
                let message = url.scrub(&message);
                match phase {
                    Phase::Connect => match tls_failure(&message) {
                        Some(advised) => {
                            connect_failed(endpoint, ConnectFailure::Tls, advised, None)
                        }
                        None => connect_failed(endpoint, ConnectFailure::Other, message, None),
                    },
                    _ => lost(phase, endpoint, message),
                }
            }
            Self::Configuration(message) => Error::config("DATABASE_URL", url.scrub(&message)),
            Self::Data(message) => {
                Error::database(ErrorKind::Query, endpoint, None, url.scrub(&message))
            }
            Self::Other(message) => match phase {
                Phase::Connect => {
                    let message = url.scrub(&message);
                    match tls_failure(&message) {
                        Some(advised) => {
                            connect_failed(endpoint, ConnectFailure::Tls, advised, None)
                        }
                        None => connect_failed(endpoint, ConnectFailure::Other, message, None),
                    }
                }
                _ => Error::Other { message: url.scrub(&message), source: None },
            },
        }
    }
}

impl fmt::Debug for DriverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (variant, text) = match self {
            Self::Server { sqlstate, classified, message } => {
                return f
                    .debug_struct("Server")
                    .field("sqlstate", sqlstate)
                    .field("classified", classified)
                    .field("message", &Redacted(message.len()))
                    .finish();
            }
            Self::Io(error) => {
                return f
                    .debug_struct("Io")
                    .field("kind", &error.kind())
                    .field("message", &Redacted(error.to_string().len()))
                    .finish();
            }
            Self::Tls(text) => ("Tls", text),
            Self::Broken(text) => ("Broken", text),
            Self::Configuration(text) => ("Configuration", text),
            Self::Data(text) => ("Data", text),
            Self::Other(text) => ("Other", text),
        };
        f.debug_tuple(variant).field(&Redacted(text.len())).finish()
    }
}

/// Stands for driver text in `Debug`: its length only.
struct Redacted(usize);

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} bytes of driver text, redacted>", self.0)
    }
}

fn connect_failed(
    endpoint: String,
    reason: ConnectFailure,
    message: String,
    source: Option<crate::error::BoxError>,
) -> Error {
    Error::ConnectFailed { endpoint, reason, attempts: 1, message, source }
}

/// A connection that broke under a statement in a transaction or a read-only session
/// (`ConnectionLost`: nothing was applied), or under a commit or an autocommit write (the
/// outcome is unknown: `AmbiguousCommit`).
fn lost(phase: Phase, endpoint: String, message: String) -> Error {
    let kind = if phase.commits() { ErrorKind::AmbiguousCommit } else { ErrorKind::ConnectionLost };
    Error::Database { kind, endpoint, sqlstate: None, message, source: None }
}

/// Reads an I/O error raised while connecting.
fn io_reason(error: &io::Error) -> ConnectFailure {
    match error.kind() {
        io::ErrorKind::ConnectionRefused
        | io::ErrorKind::HostUnreachable
        | io::ErrorKind::NetworkUnreachable
        | io::ErrorKind::AddrNotAvailable
        | io::ErrorKind::NotFound => ConnectFailure::Refused,
        io::ErrorKind::TimedOut => ConnectFailure::Timeout,
        _ => {
            // tokio reports a failed name lookup as an `Other` I/O error whose text is the
            // resolver's; there is no dedicated kind to match on.
            let text = error.to_string().to_ascii_lowercase();
            if text.contains("lookup")
                || text.contains("resolve")
                || text.contains("name or service")
            {
                ConnectFailure::Dns
            } else {
                ConnectFailure::Other
            }
        }
    }
}

/// A driver's TLS failure, told in its words and followed by what to change: `None` when
/// `message` is not about TLS. The drivers (rustls through sqlx and tokio-postgres, the
/// servers' own refusals) word these differently; each pattern below is one of theirs.
fn tls_failure(message: &str) -> Option<String> {
    let lower = message.to_ascii_lowercase();
    let advice = if lower.contains("unknownissuer") || lower.contains("unknown issuer") {
        "the server's certificate is not signed by a CA this client trusts: give the CA's \
         certificate with sslrootcert=/path/to/ca.pem (or sslmode=require to encrypt without \
         checking the certificate)"
    } else if lower.contains("notvalidforname") || lower.contains("not valid for name") {
        "the server's certificate does not name the host in the URL: connect by a name the \
         certificate lists, or use sslmode=verify-ca to check the CA alone"
    } else if lower.contains("expired") && lower.contains("certificate") {
        "the server's certificate has expired: renew it on the server"
    } else if lower.contains("does not support tls")
        || lower.contains("does not support ssl")
        || lower.contains("server does not support")
        || (lower.contains("asked for ssl") && lower.contains("does not have this capability"))
    {
        "the server does not accept TLS: turn ssl on at the server, or use sslmode=prefer (TLS \
         when the server offers it) or sslmode=disable on a trusted network"
    } else if lower.contains("tls") || lower.contains("certificate") || lower.contains("handshake")
    {
        "check sslmode, sslrootcert and the server's TLS configuration"
    } else {
        return None;
    };
    Some(format!("{message} ({advice})"))
}

/// The reason a connect failure's message gives where its SQLSTATE does not say: PgBouncer
/// answers a wrong password with SQLSTATE 08P01 and PostgreSQL's own words.
fn connect_failure_in_message(message: &str) -> Option<ConnectFailure> {
    let message = message.to_ascii_lowercase();
    (message.contains("password authentication failed") || message.contains("auth failed"))
        .then_some(ConnectFailure::Authentication)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url() -> DatabaseUrl {
        DatabaseUrl::parse("postgres://app:hunter2secret@db.example:5432/app").unwrap()
    }

    fn io(kind: io::ErrorKind) -> DriverError {
        DriverError::Io(io::Error::from(kind))
    }

    #[test]
    fn io_errors_read_by_phase() {
        match io(io::ErrorKind::ConnectionRefused).into_error(&url(), Phase::Connect) {
            Error::ConnectFailed { reason, endpoint, .. } => {
                assert_eq!(reason, ConnectFailure::Refused);
                assert_eq!(endpoint, "db.example:5432/app");
            }
            other => panic!("{other:?}"),
        }
        let statement = io(io::ErrorKind::ConnectionReset).into_error(&url(), Phase::Statement);
        assert_eq!(statement.kind(), ErrorKind::ConnectionLost);
        let commit = io(io::ErrorKind::ConnectionReset).into_error(&url(), Phase::Commit);
        assert_eq!(commit.kind(), ErrorKind::AmbiguousCommit);
        let dns = DriverError::Io(io::Error::other("failed to lookup address information"));
        match dns.into_error(&url(), Phase::Connect) {
            Error::ConnectFailed { reason, .. } => assert_eq!(reason, ConnectFailure::Dns),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn server_errors_read_by_sqlstate_unless_classified() {
        let server = |sqlstate: &str, classified| DriverError::Server {
            sqlstate: Some(sqlstate.to_owned()),
            classified,
            message: "m".into(),
        };
        assert_eq!(
            server("40001", None).into_error(&url(), Phase::Statement).kind(),
            ErrorKind::SerializationFailure
        );
        assert_eq!(
            server("40001", None).into_error(&url(), Phase::Statement).sqlstate(),
            Some("40001")
        );
        let deadlock = Some(Classified::kind(ErrorKind::Deadlock));
        assert_eq!(
            server("HY000", deadlock).into_error(&url(), Phase::Statement).kind(),
            ErrorKind::Deadlock
        );
        match server("28P01", None).into_error(&url(), Phase::Connect) {
            Error::ConnectFailed { reason, .. } => {
                assert_eq!(reason, ConnectFailure::Authentication);
            }
            other => panic!("{other:?}"),
        }
        let lost = Some(Classified::kind(ErrorKind::ConnectionLost));
        assert_eq!(
            server("08006", lost).into_error(&url(), Phase::Commit).kind(),
            ErrorKind::AmbiguousCommit
        );
    }

    #[test]
    fn broken_connections_read_by_phase() {
        let broken = || DriverError::Broken("worker stopped".into());
        assert_eq!(broken().into_error(&url(), Phase::Connect).kind(), ErrorKind::ConnectFailed);
        assert_eq!(broken().into_error(&url(), Phase::Statement).kind(), ErrorKind::ConnectionLost);
        assert_eq!(broken().into_error(&url(), Phase::Commit).kind(), ErrorKind::AmbiguousCommit);
        assert_eq!(
            broken().into_error(&url(), Phase::Autocommit).kind(),
            ErrorKind::AmbiguousCommit
        );
        let terminated = DriverError::Server {
            sqlstate: Some("57P01".into()),
            classified: None,
            message: "terminating connection due to administrator command".into(),
        };
        assert_eq!(
            terminated.into_error(&url(), Phase::Autocommit).kind(),
            ErrorKind::AmbiguousCommit
        );
    }

    #[test]
    fn driver_text_is_scrubbed() {
        let leaky = DriverError::Broken("bad startup for postgres://app:hunter2secret@db".into());
        let text = leaky.into_error(&url(), Phase::Connect).to_string();
        assert!(!text.contains("hunter2secret"), "{text}");
        assert!(text.contains("could not connect to db.example:5432/app"), "{text}");
        let server = DriverError::Server {
            sqlstate: None,
            classified: None,
            message: "password hunter2secret rejected".into(),
        };
        let text = server.into_error(&url(), Phase::Statement).to_string();
        assert!(!text.contains("hunter2secret"), "{text}");
    }

    #[test]
    fn debug_never_shows_the_driver_text() {
        let leaky = "connect to postgres://app:hunter2secret@db failed";
        let every_variant = [
            DriverError::Server {
                sqlstate: Some("28P01".into()),
                classified: Some(Classified::connect(ConnectFailure::Authentication)),
                message: leaky.into(),
            },
            DriverError::Io(io::Error::other(leaky)),
            DriverError::Tls(leaky.into()),
            DriverError::Broken(leaky.into()),
            DriverError::Configuration(leaky.into()),
            DriverError::Data(leaky.into()),
            DriverError::Other(leaky.into()),
        ];
        for error in every_variant {
            let debug = format!("{error:?}");
            assert!(!debug.contains("hunter2secret"), "{debug}");
            assert!(debug.contains(&format!("<{} bytes", leaky.len())), "{debug}");
            let pretty = format!("{error:#?}");
            assert!(!pretty.contains("hunter2secret"), "{pretty}");
        }
        let server = DriverError::Server {
            sqlstate: Some("28P01".into()),
            classified: None,
            message: leaky.into(),
        };
        assert!(format!("{server:?}").contains("28P01"));
    }

    #[test]
    fn a_connect_errors_source_is_scrubbed_too() {
        let io = DriverError::Io(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            "refused for app:hunter2secret",
        ));
        let error = io.into_error(&url(), Phase::Connect);
        let debug = format!("{error:?}");
        assert!(!debug.contains("hunter2secret"), "{debug}");
        let source = std::error::Error::source(&error).map(ToString::to_string);
        assert_eq!(source.as_deref(), Some("refused for app:***"));
        match error {
            Error::ConnectFailed { reason, .. } => assert_eq!(reason, ConnectFailure::Refused),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn data_problems_are_query_errors() {
        let err = DriverError::Data("no rows".into()).into_error(&url(), Phase::Statement);
        assert_eq!(err.kind(), ErrorKind::Query);
    }
}
