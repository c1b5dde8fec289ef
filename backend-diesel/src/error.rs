//! Reads diesel's errors into core's neutral `DriverError`; each dialect reads what diesel leaves `Unknown`.

use diesel::result::{DatabaseErrorKind, Error as DieselError};
use ucm_core::{Classified, DriverError, ErrorKind};

use crate::dialect::Dialect;

/// What diesel reported, without interpretation: core decides the kind by phase.
pub(crate) fn read<D: Dialect>(error: DieselError) -> DriverError {
    match error {
        DieselError::DatabaseError(kind, info) => {
            let message = info.message().to_owned();
            match kind {
                DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand => {
                    DriverError::Broken(message)
                }
                _ => DriverError::Server {
                    sqlstate: D::sqlstate(kind).map(str::to_owned),
                    classified: match kind {
                        DatabaseErrorKind::Unknown => unknown(&message, D::UNKNOWN_ERRORS),
                        _ => by_kind(kind),
                    },
                    message,
                },
            }
        }
        DieselError::RollbackErrorOnCommit { commit_error, .. } => {
            // The rollback after a failed commit failed too: diesel marked the connection's
            // transaction manager broken, so the connection is closed whatever the kind.
            DriverError::Broken(commit_error.to_string())
        }
        DieselError::BrokenTransactionManager => DriverError::Broken(error.to_string()),
        DieselError::DeserializationError(_)
        | DieselError::SerializationError(_)
        | DieselError::QueryBuilderError(_)
        | DieselError::NotFound => DriverError::Data(error.to_string()),
        _ => DriverError::Other(error.to_string()),
    }
}

/// The kinds diesel itself distinguishes.
fn by_kind(kind: DatabaseErrorKind) -> Option<Classified> {
    Some(Classified::kind(match kind {
        DatabaseErrorKind::UniqueViolation
        | DatabaseErrorKind::ForeignKeyViolation
        | DatabaseErrorKind::NotNullViolation
        | DatabaseErrorKind::CheckViolation
        | DatabaseErrorKind::ExclusionViolation
        | DatabaseErrorKind::RestrictViolation => ErrorKind::Constraint,
        DatabaseErrorKind::SerializationFailure => ErrorKind::SerializationFailure,
        DatabaseErrorKind::ReadOnlyTransaction => ErrorKind::ReadOnlyViolation,
        _ => return None,
    }))
}

/// Reads an `Unknown` error's message with a dialect's table.
fn unknown(message: &str, table: &[(&str, ErrorKind)]) -> Option<Classified> {
    table
        .iter()
        .find(|(fragment, _)| message.contains(fragment))
        .map(|(_, kind)| Classified::kind(*kind))
}
