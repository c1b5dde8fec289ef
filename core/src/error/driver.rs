//! `DriverError`: a backend's neutral reading of a driver error, turned into ucm's `Error` by one set of rules (phase, scrubbing, connect reasons).
//!
//! Each backend only says what its driver reported (a server error with its SQLSTATE or
//! code, an I/O failure, a broken connection...). How that becomes an [`Error`] — which
//! kind, whether it is a connect failure and why, an ambiguous commit, what the message
//! says with the password scrubbed — is decided here, once for every backend.

use std::io;

use super::{ConnectFailure, Error, ErrorKind, classify_connect_sqlstate, classify_sqlstate};
use crate::config::DatabaseUrl;

/// Where an error happened; decides how a broken connection is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Opening a connection: every failure is a connect failure, with a reason.
    Connect,
    /// Running a statement (or `BEGIN`/`ROLLBACK`): a broken connection is `ConnectionLost`.
    Statement,
    /// Running `COMMIT`: a broken connection makes the outcome unknown (`AmbiguousCommit`).
    Commit,
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
#[derive(Debug)]
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
                        .unwrap_or(ConnectFailure::Other);
                    return connect_failed(endpoint, reason, message, None);
                }
                let mut kind = match classified {
                    Some(c) => c.kind,
                    None => {
                        sqlstate.as_deref().map_or(ErrorKind::Query, |s| classify_sqlstate(s).kind)
                    }
                };
                if phase == Phase::Commit && kind == ErrorKind::ConnectionLost {
                    kind = ErrorKind::AmbiguousCommit;
                }
                Error::Database { kind, endpoint, sqlstate, message, source: None }
            }
            Self::Io(error) => {
                let message = url.scrub(&error.to_string());
                match phase {
                    Phase::Connect => {
                        connect_failed(endpoint, io_reason(&error), message, Some(Box::new(error)))
                    }
                    _ => lost(phase, endpoint, message),
                }
            }
            Self::Tls(message) => {
                connect_failed(endpoint, ConnectFailure::Tls, url.scrub(&message), None)
            }
            Self::Broken(message) => {
                let message = url.scrub(&message);
                match phase {
                    Phase::Connect => {
                        connect_failed(endpoint, ConnectFailure::Other, message, None)
                    }
                    _ => lost(phase, endpoint, message),
                }
            }
            Self::Configuration(message) => Error::config("DATABASE_URL", url.scrub(&message)),
            Self::Data(message) => {
                Error::database(ErrorKind::Query, endpoint, None, url.scrub(&message))
            }
            Self::Other(message) => match phase {
                Phase::Connect => {
                    connect_failed(endpoint, ConnectFailure::Other, url.scrub(&message), None)
                }
                _ => Error::Other { message: url.scrub(&message), source: None },
            },
        }
    }
}

fn connect_failed(
    endpoint: String,
    reason: ConnectFailure,
    message: String,
    source: Option<super::BoxError>,
) -> Error {
    Error::ConnectFailed { endpoint, reason, attempts: 1, message, source }
}

/// A connection that broke under a statement (`ConnectionLost`) or a commit (the commit's
/// outcome is unknown: `AmbiguousCommit`).
fn lost(phase: Phase, endpoint: String, message: String) -> Error {
    let kind =
        if phase == Phase::Commit { ErrorKind::AmbiguousCommit } else { ErrorKind::ConnectionLost };
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
    fn data_problems_are_query_errors() {
        let err = DriverError::Data("no rows".into()).into_error(&url(), Phase::Statement);
        assert_eq!(err.kind(), ErrorKind::Query);
    }
}
