//! Reads diesel's errors into core's neutral `DriverError`; each dialect reads what diesel leaves `Unknown`.

use diesel::result::{DatabaseErrorKind, Error as DieselError};
use ucm_kernel::ErrorKind;
use ucm_kernel::backend::{Classified, DriverError};

use crate::dialect::Dialect;

/// What diesel reported, without interpretation: core decides the kind by phase.
pub(crate) fn read<D: Dialect>(error: &DieselError) -> DriverError {
    match error {
        DieselError::DatabaseError(kind, info) => {
            let kind = *kind;
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

#[cfg(test)]
#[cfg(all(feature = "postgres", feature = "mysql", feature = "sqlite"))]
mod tests {
    use diesel::result::{DatabaseErrorKind as K, Error as DieselError};
    use ucm_kernel::backend::Phase;
    use ucm_kernel::{DatabaseUrl, Error, ErrorKind};

    use super::read;
    use crate::{MySqlDialect, PgDialect, SqliteDialect};

    fn url() -> DatabaseUrl {
        DatabaseUrl::parse("postgres://app:hunter2secret@db.example:5432/app").unwrap()
    }

    fn db(kind: K, message: &str) -> DieselError {
        DieselError::DatabaseError(kind, Box::new(message.to_owned()))
    }

    fn kind_of<D: crate::dialect::Dialect>(error: DieselError, phase: Phase) -> ErrorKind {
        read::<D>(&error).into_error(&url(), phase).kind()
    }

    #[test]
    fn diesel_kinds_map_to_core_kinds() {
        let statement = Phase::Statement;
        assert_eq!(
            kind_of::<PgDialect>(db(K::UniqueViolation, "dup"), statement),
            ErrorKind::Constraint
        );
        assert_eq!(
            kind_of::<PgDialect>(db(K::SerializationFailure, "x"), statement),
            ErrorKind::SerializationFailure
        );
        assert_eq!(
            kind_of::<MySqlDialect>(db(K::ReadOnlyTransaction, "x"), statement),
            ErrorKind::ReadOnlyViolation
        );
        assert_eq!(
            kind_of::<PgDialect>(db(K::Unknown, "syntax error"), statement),
            ErrorKind::Query
        );
    }

    #[test]
    fn unknown_errors_are_read_from_the_message_per_database() {
        let statement = Phase::Statement;
        assert_eq!(
            kind_of::<PgDialect>(db(K::Unknown, "deadlock detected"), statement),
            ErrorKind::Deadlock
        );
        assert_eq!(
            kind_of::<MySqlDialect>(
                db(
                    K::Unknown,
                    "Deadlock found when trying to get lock; try restarting transaction"
                ),
                statement
            ),
            ErrorKind::Deadlock
        );
        assert_eq!(
            kind_of::<MySqlDialect>(
                db(K::Unknown, "Input/output error: broken pipe"),
                Phase::Commit
            ),
            ErrorKind::AmbiguousCommit
        );
        assert_eq!(
            kind_of::<SqliteDialect>(db(K::Unknown, "database is locked"), statement),
            ErrorKind::SerializationFailure
        );
        assert_eq!(
            kind_of::<SqliteDialect>(
                db(K::Unknown, "attempt to write a readonly database"),
                statement
            ),
            ErrorKind::ReadOnlyViolation
        );
        // A table is per database: PostgreSQL's does not read SQLite's messages.
        assert_eq!(
            kind_of::<PgDialect>(db(K::Unknown, "database is locked"), statement),
            ErrorKind::Query
        );
    }

    #[test]
    fn a_closed_connection_is_lost_and_ambiguous_during_commit() {
        assert_eq!(
            kind_of::<PgDialect>(db(K::ClosedConnection, "closed"), Phase::Statement),
            ErrorKind::ConnectionLost
        );
        assert_eq!(
            kind_of::<PgDialect>(db(K::UnableToSendCommand, "io"), Phase::Commit),
            ErrorKind::AmbiguousCommit
        );
        assert_eq!(
            kind_of::<SqliteDialect>(DieselError::BrokenTransactionManager, Phase::Statement),
            ErrorKind::ConnectionLost
        );
    }

    #[test]
    fn postgres_errors_carry_the_sqlstate_their_kind_stands_for() {
        let error = read::<PgDialect>(&db(K::SerializationFailure, "could not serialize"))
            .into_error(&url(), Phase::Statement);
        assert_eq!(error.sqlstate(), Some("40001"));
        let error = read::<MySqlDialect>(&db(K::UniqueViolation, "Duplicate entry"))
            .into_error(&url(), Phase::Statement);
        assert_eq!(error.sqlstate(), None, "MySQL's kinds come from error numbers, not SQLSTATEs");
    }

    #[test]
    fn messages_are_scrubbed() {
        let error = read::<PgDialect>(&db(K::Unknown, "password hunter2secret was wrong"))
            .into_error(&url(), Phase::Statement);
        assert!(matches!(error, Error::Database { .. }));
        assert!(!error.to_string().contains("hunter2secret"), "{error}");
    }
}
