//! SQLite under sqlx (bundled): connect options (WAL, busy timeout, create), result codes, declared and stored types.

use std::str::FromStr;

use sqlx::Database;
use sqlx::error::DatabaseError;
use sqlx::query::Query;
use sqlx::sqlite::{Sqlite, SqliteConnectOptions, SqliteJournalMode};
use ucm_kernel::config::SQLITE_BUSY_TIMEOUT;
use ucm_kernel::{DatabaseKind, DatabaseUrl, Error, ErrorKind, PoolConfiguration, Result};

use crate::convert::neutral_values;
use crate::dialect::{ColumnKind, Dialect};
use ucm_kernel::backend::Classified;

/// SQLite through sqlx, with the library bundled.
#[derive(Debug, Clone, Copy)]
pub struct SqliteDialect;

impl Dialect for SqliteDialect {
    type Db = Sqlite;
    const KIND: DatabaseKind = DatabaseKind::Sqlite;

    fn options(url: &DatabaseUrl, _config: &PoolConfiguration) -> Result<SqliteConnectOptions> {
        let options = SqliteConnectOptions::from_str(&url.expose_url())
            .map_err(|e| Error::config("DATABASE_URL", url.scrub(&e.to_string())))?;
        // A missing file is created unless the URL chose a mode (`?mode=ro`, `?mode=rw`).
        let options =
            if url.param("mode").is_none() { options.create_if_missing(true) } else { options };
        let options =
            if url.is_memory() { options } else { options.journal_mode(SqliteJournalMode::Wal) };
        Ok(options.busy_timeout(SQLITE_BUSY_TIMEOUT).foreign_keys(true))
    }

    fn classify(error: &dyn DatabaseError) -> Option<Classified> {
        let code: i32 = error.code()?.parse().ok()?;
        // Extended result codes carry the primary code in their low byte.
        let kind = match code & 0xff {
            // SQLITE_BUSY, SQLITE_LOCKED: another connection holds the lock; re-running the
            // transaction is the remedy, like a serialization failure.
            5 | 6 => ErrorKind::SerializationFailure,
            // SQLITE_READONLY, which `PRAGMA query_only` raises for writes.
            8 => ErrorKind::ReadOnlyViolation,
            19 => ErrorKind::Constraint,
            _ => return None,
        };
        Some(Classified { kind, connect: None })
    }

    fn column_kind(type_name: &str) -> ColumnKind {
        match type_name {
            "BOOLEAN" => ColumnKind::Bool,
            "INTEGER" | "INT" | "BIGINT" => ColumnKind::Int64,
            "REAL" | "FLOAT" | "DOUBLE" => ColumnKind::Float64,
            "TEXT" => ColumnKind::Text,
            "BLOB" => ColumnKind::Bytes,
            "DATETIME" | "TIMESTAMP" => ColumnKind::Timestamp,
            "DATE" => ColumnKind::Date,
            "TIME" => ColumnKind::Time,
            "UUID" => ColumnKind::Uuid,
            "JSON" => ColumnKind::Json,
            _ => ColumnKind::Other,
        }
    }

    fn bind_null<'q>(
        query: Query<'q, Sqlite, <Sqlite as Database>::Arguments>,
    ) -> Query<'q, Sqlite, <Sqlite as Database>::Arguments> {
        query.bind(Option::<i64>::None)
    }

    fn rollback_error_is_benign(error: &sqlx::Error) -> bool {
        // SQLite, unlike the servers, errors on ROLLBACK outside a transaction.
        error.to_string().contains("no transaction is active")
    }
}

// SQLite columns carry a declared type only when they come from a table; expressions
// (`SELECT 1`) and untyped columns are read by the value's storage class instead.
neutral_values!(SqliteDialect, Sqlite, |row, index| {
    use sqlx::{Column, TypeInfo, ValueRef};
    let declared = row.columns()[index].type_info().name().to_owned();
    if SqliteDialect::column_kind(&declared) == ColumnKind::Other {
        row.try_get_raw(index)?.type_info().name().to_owned()
    } else {
        declared
    }
});

crate::driver::sqlx_database!(sqlx::Sqlite, SqliteDialect, Sqlite);
