//! `Dialect`: what differs between PostgreSQL, MySQL and SQLite under sqlx, so everything else is written once.
//!
//! The traits are public because they appear in public types (`SqlxSession<PgDialect>`),
//! and sealed: only this crate's three dialects implement them.

use sqlx::Database;
use sqlx::error::DatabaseError;
use sqlx::query::Query;
use ucm_kernel::{DatabaseKind, DatabaseUrl, PoolConfiguration};

pub use crate::convert::NeutralValues;
pub use ucm_kernel::backend::Classified;

/// The neutral value a column decodes to, chosen from its type name.
#[allow(missing_docs)] // Each variant is the `Value` variant (or width) of the same name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnKind {
    Bool,
    // Integers by width: sqlx decodes each column type only into its own width.
    Int8,
    Int16,
    Int32,
    Int64,
    /// An unsigned 64-bit column (MySQL `BIGINT UNSIGNED`), checked into `i64`.
    UnsignedInt,
    /// An exact decimal (`NUMERIC`, `DECIMAL`): read exactly, as its text.
    Decimal,
    Float32,
    Float64,
    Text,
    Bytes,
    Timestamp,
    TimestampTz,
    Date,
    Time,
    Uuid,
    Json,
    /// A type with no neutral mapping (decimal, interval, arrays...): read as text when the
    /// driver can, otherwise refused with a hint to cast it.
    Other,
}

/// One database under sqlx: its connect options, error codes, read-only switch and types.
pub trait Dialect: sealed::Sealed + Send + Sync + 'static {
    /// The sqlx database.
    type Db: Database;

    /// Which database: its read-only switch and `BEGIN` come from core.
    const KIND: DatabaseKind;

    /// Builds connect options from the URL and the preset: application name, UTC, TLS.
    fn options(
        url: &DatabaseUrl,
        config: &PoolConfiguration,
    ) -> ucm_kernel::Result<<<Self::Db as Database>::Connection as sqlx::Connection>::Options>;

    /// Reads database-specific error codes; `None` falls back to the SQLSTATE.
    fn classify(error: &dyn DatabaseError) -> Option<Classified>;

    /// Maps a column's (or, for SQLite, a value's) type name to the neutral kind.
    fn column_kind(type_name: &str) -> ColumnKind;

    /// Binds SQL NULL. PostgreSQL needs an untyped NULL so the server infers the type.
    fn bind_null<'q>(
        query: Query<'q, Self::Db, <Self::Db as Database>::Arguments>,
    ) -> Query<'q, Self::Db, <Self::Db as Database>::Arguments>;

    /// Decodes an unsigned 64-bit column into `i64`; only MySQL has such columns.
    ///
    /// # Errors
    /// `ColumnDecode` when the value exceeds `i64::MAX`, or for databases without them.
    fn decode_unsigned(
        row: &<Self::Db as Database>::Row,
        index: usize,
    ) -> Result<i64, sqlx::Error> {
        let _ = row;
        Err(crate::convert::unsupported(index, "unsigned integer"))
    }

    /// Decodes an exact decimal column into its exact text; SQLite has none.
    ///
    /// # Errors
    /// `ColumnDecode` for databases without decimals.
    fn decode_decimal(
        row: &<Self::Db as Database>::Row,
        index: usize,
    ) -> Result<String, sqlx::Error> {
        let _ = row;
        Err(crate::convert::unsupported(index, "decimal"))
    }

    /// Whether a failed `ROLLBACK` only means no transaction was open (SQLite errors then).
    fn rollback_error_is_benign(error: &sqlx::Error) -> bool {
        let _ = error;
        false
    }
}

pub(crate) mod sealed {
    /// Keeps [`Dialect`](super::Dialect) implementable only inside this crate.
    pub trait Sealed {}
    #[cfg(feature = "mysql")]
    impl Sealed for crate::MySqlDialect {}
    #[cfg(feature = "postgres")]
    impl Sealed for crate::PgDialect {}
    #[cfg(feature = "sqlite")]
    impl Sealed for crate::SqliteDialect {}
}
