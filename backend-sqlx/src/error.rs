//! Maps `sqlx::Error` into ucm's classified `Error`, scrubbed of secrets; databases add their own codes through `Dialect::classify`.

use std::io;

use sqlx::error::DatabaseError;
use ucm_core::{
    ConnectFailure, DatabaseUrl, Error, ErrorKind, classify_connect_sqlstate, classify_sqlstate,
};

/// Where an error happened; decides how a broken connection is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Opening a connection: every failure is a connect failure, with a reason.
    Connect,
    /// Running a statement (or BEGIN/ROLLBACK): a broken connection is `ConnectionLost`.
    Statement,
    /// Running COMMIT: a broken connection makes the outcome unknown (`AmbiguousCommit`).
    Commit,
}

/// A database-specific reading of a server error, before the generic SQLSTATE rules.
#[derive(Debug, Clone, Copy)]
pub struct Classified {
    /// The error kind.
    pub kind: ErrorKind,
    /// For errors while connecting: the reason.
    pub connect: Option<ConnectFailure>,
}

/// The per-database hook: returns `Some` for codes the SQLSTATE alone does not tell
/// (MySQL error numbers, SQLite result codes), `None` to fall back to the SQLSTATE.
pub(crate) type Classifier = fn(&dyn DatabaseError) -> Option<Classified>;

/// Converts a sqlx error into ucm's, with the endpoint's label and every trace of the
/// password scrubbed from the driver's text.
pub(crate) fn map_error(
    error: sqlx::Error,
    url: &DatabaseUrl,
    phase: Phase,
    classify: Classifier,
) -> Error {
    let endpoint = url.label();
    let message = url.scrub(&error.to_string());
    match error {
        sqlx::Error::Database(db) => {
            let sqlstate = db.code().map(|c| c.into_owned());
            let specific = classify(db.as_ref());
            let db_message = url.scrub(db.message());
            if phase == Phase::Connect {
                let reason = specific
                    .and_then(|c| c.connect)
                    .or_else(|| sqlstate.as_deref().map(classify_connect_sqlstate))
                    .unwrap_or(ConnectFailure::Other);
                return Error::ConnectFailed {
                    endpoint,
                    reason,
                    attempts: 1,
                    message: db_message,
                    source: None,
                };
            }
            let mut kind = match specific {
                Some(c) => c.kind,
                None => sqlstate.as_deref().map_or(ErrorKind::Query, |s| classify_sqlstate(s).kind),
            };
            if phase == Phase::Commit && kind == ErrorKind::ConnectionLost {
                kind = ErrorKind::AmbiguousCommit;
            }
            Error::Database { kind, endpoint, sqlstate, message: db_message, source: None }
        }
        sqlx::Error::Io(io_error) => match phase {
            Phase::Connect => Error::ConnectFailed {
                endpoint,
                reason: io_reason(&io_error),
                attempts: 1,
                message,
                source: Some(Box::new(io_error)),
            },
            Phase::Statement => lost(ErrorKind::ConnectionLost, endpoint, message),
            Phase::Commit => lost(ErrorKind::AmbiguousCommit, endpoint, message),
        },
        sqlx::Error::Tls(_) => Error::ConnectFailed {
            endpoint,
            reason: ConnectFailure::Tls,
            attempts: 1,
            message,
            source: None,
        },
        sqlx::Error::Protocol(_) | sqlx::Error::WorkerCrashed => match phase {
            Phase::Connect => Error::ConnectFailed {
                endpoint,
                reason: ConnectFailure::Other,
                attempts: 1,
                message,
                source: None,
            },
            Phase::Statement => lost(ErrorKind::ConnectionLost, endpoint, message),
            Phase::Commit => lost(ErrorKind::AmbiguousCommit, endpoint, message),
        },
        sqlx::Error::Configuration(_) | sqlx::Error::InvalidArgument(_) => {
            Error::config("database url", message)
        }
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::Encode(_)
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnIndexOutOfBounds { .. }
        | sqlx::Error::TypeNotFound { .. }
        | sqlx::Error::RowNotFound => Error::database(ErrorKind::Query, endpoint, None, message),
        _ => Error::Other { message, source: None },
    }
}

fn lost(kind: ErrorKind, endpoint: String, message: String) -> Error {
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

    fn none(_: &dyn DatabaseError) -> Option<Classified> {
        None
    }

    #[test]
    fn io_errors_read_by_phase() {
        let refused = || sqlx::Error::Io(io::Error::from(io::ErrorKind::ConnectionRefused));
        match map_error(refused(), &url(), Phase::Connect, none) {
            Error::ConnectFailed { reason, endpoint, .. } => {
                assert_eq!(reason, ConnectFailure::Refused);
                assert_eq!(endpoint, "db.example:5432/app");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            map_error(refused(), &url(), Phase::Statement, none).kind(),
            ErrorKind::ConnectionLost
        );
        assert_eq!(
            map_error(refused(), &url(), Phase::Commit, none).kind(),
            ErrorKind::AmbiguousCommit
        );
        let dns = sqlx::Error::Io(io::Error::other("failed to lookup address information"));
        match map_error(dns, &url(), Phase::Connect, none) {
            Error::ConnectFailed { reason, .. } => assert_eq!(reason, ConnectFailure::Dns),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn driver_text_is_scrubbed() {
        let leaky = sqlx::Error::Protocol("bad startup for postgres://app:hunter2secret@db".into());
        let text = map_error(leaky, &url(), Phase::Connect, none).to_string();
        assert!(!text.contains("hunter2secret"), "{text}");
        assert!(text.contains("could not connect to db.example:5432/app"), "{text}");
    }

    #[test]
    fn decode_problems_are_query_errors() {
        let err = map_error(sqlx::Error::RowNotFound, &url(), Phase::Statement, none);
        assert_eq!(err.kind(), ErrorKind::Query);
    }
}
