//! Reads a `sqlx::Error` into core's neutral `DriverError`; databases add their own codes through `Dialect::classify`.

use sqlx::error::DatabaseError;
use ucm_kernel::backend::{Classified, DriverError, Phase};
use ucm_kernel::{DatabaseUrl, Error};

/// The per-database hook: returns `Some` for codes the SQLSTATE alone does not tell
/// (MySQL error numbers, SQLite result codes), `None` to fall back to the SQLSTATE.
pub(crate) type Classifier = fn(&dyn DatabaseError) -> Option<Classified>;

/// What sqlx reported, without interpretation: core decides the kind by phase.
pub(crate) fn read(error: sqlx::Error, classify: Classifier) -> DriverError {
    match error {
        // Owned, so the I/O error itself (with its source) is kept.
        sqlx::Error::Io(io_error) => DriverError::Io(io_error),
        other => read_with(&other, classify),
    }
}

/// [`read`] for an error the caller keeps (the driver path returns sqlx's own errors):
/// the same reading, from a copy of what it needs.
pub(crate) fn read_ref<D: crate::dialect::Dialect>(error: &sqlx::Error) -> DriverError {
    read_with(error, D::classify)
}

fn read_with(error: &sqlx::Error, classify: Classifier) -> DriverError {
    match error {
        sqlx::Error::Database(db) => DriverError::Server {
            sqlstate: db.code().map(|c| c.into_owned()),
            classified: classify(db.as_ref()),
            message: db.message().to_owned(),
        },
        sqlx::Error::Io(io_error) => {
            DriverError::Io(std::io::Error::new(io_error.kind(), io_error.to_string()))
        }
        sqlx::Error::Tls(_) => DriverError::Tls(error.to_string()),
        sqlx::Error::Protocol(_) | sqlx::Error::WorkerCrashed => {
            DriverError::Broken(error.to_string())
        }
        sqlx::Error::Configuration(_) | sqlx::Error::InvalidArgument(_) => {
            DriverError::Configuration(error.to_string())
        }
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::Encode(_)
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnIndexOutOfBounds { .. }
        | sqlx::Error::TypeNotFound { .. }
        | sqlx::Error::RowNotFound => DriverError::Data(error.to_string()),
        _ => DriverError::Other(error.to_string()),
    }
}

/// Converts a sqlx error into ucm's for an operation on `url` during `phase`.
pub(crate) fn map_error(
    error: sqlx::Error,
    url: &DatabaseUrl,
    phase: Phase,
    classify: Classifier,
) -> Error {
    read(error, classify).into_error(url, phase)
}

#[cfg(test)]
mod tests {
    use std::io;

    use ucm_kernel::{ConnectFailure, ErrorKind};

    use super::*;

    fn url() -> DatabaseUrl {
        DatabaseUrl::parse("postgres://app:hunter2secret@db.example:5432/app").unwrap()
    }

    fn none(_: &dyn DatabaseError) -> Option<Classified> {
        None
    }

    #[test]
    fn sqlx_errors_are_read_into_core_kinds() {
        let refused = sqlx::Error::Io(io::Error::from(io::ErrorKind::ConnectionRefused));
        match map_error(refused, &url(), Phase::Connect, none) {
            Error::ConnectFailed { reason, .. } => assert_eq!(reason, ConnectFailure::Refused),
            other => panic!("{other:?}"),
        }
        let crashed = map_error(sqlx::Error::WorkerCrashed, &url(), Phase::Commit, none);
        assert_eq!(crashed.kind(), ErrorKind::AmbiguousCommit);
        let missing = map_error(sqlx::Error::RowNotFound, &url(), Phase::Statement, none);
        assert_eq!(missing.kind(), ErrorKind::Query);
    }

    #[test]
    fn driver_text_is_scrubbed() {
        let leaky = sqlx::Error::Protocol("bad startup for postgres://app:hunter2secret@db".into());
        let text = map_error(leaky, &url(), Phase::Connect, none).to_string();
        assert!(!text.contains("hunter2secret"), "{text}");
    }
}
