//! PostgreSQL under sqlx: connect options (application name, UTC, TLS), untyped NULLs, type names.

use std::str::FromStr;

use sqlx::error::{BoxDynError, DatabaseError};
use sqlx::postgres::types::Oid;
use sqlx::postgres::{PgArgumentBuffer, PgConnectOptions, PgSslMode, PgTypeInfo, Postgres};
use sqlx::query::Query;
use sqlx::{Database, Encode, Type};
use ucm_core::{DatabaseKind, DatabaseUrl, Error, PoolConfiguration, Result, SslMode};

use crate::convert::neutral_values;
use crate::dialect::{ColumnKind, Dialect};
use ucm_core::Classified;

/// PostgreSQL through sqlx's pure-Rust driver.
#[derive(Debug, Clone, Copy)]
pub struct PgDialect;

impl Dialect for PgDialect {
    type Db = Postgres;
    const KIND: DatabaseKind = DatabaseKind::Postgres;

    fn options(url: &DatabaseUrl, config: &PoolConfiguration) -> Result<PgConnectOptions> {
        let options = PgConnectOptions::from_str(&url.expose_url())
            .map_err(|e| Error::config("DATABASE_URL", url.scrub(&e.to_string())))?;
        Ok(options
            .application_name(config.application_name_for(url))
            .options([("TimeZone", config.time_zone())])
            .ssl_mode(match url.ssl_mode() {
                SslMode::Disable => PgSslMode::Disable,
                SslMode::Allow => PgSslMode::Allow,
                SslMode::Prefer => PgSslMode::Prefer,
                SslMode::Require => PgSslMode::Require,
                SslMode::VerifyCa => PgSslMode::VerifyCa,
                SslMode::VerifyFull => PgSslMode::VerifyFull,
            }))
    }

    fn classify(_error: &dyn DatabaseError) -> Option<Classified> {
        // PostgreSQL's SQLSTATEs say everything; core's table reads them.
        None
    }

    fn column_kind(type_name: &str) -> ColumnKind {
        match type_name {
            "BOOL" => ColumnKind::Bool,
            "\"CHAR\"" => ColumnKind::Int8,
            "INT2" => ColumnKind::Int16,
            "INT4" => ColumnKind::Int32,
            "INT8" => ColumnKind::Int64,
            "FLOAT4" => ColumnKind::Float32,
            "FLOAT8" => ColumnKind::Float64,
            "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" | "CITEXT" => ColumnKind::Text,
            "BYTEA" => ColumnKind::Bytes,
            "TIMESTAMP" => ColumnKind::Timestamp,
            "TIMESTAMPTZ" => ColumnKind::TimestampTz,
            "DATE" => ColumnKind::Date,
            "TIME" => ColumnKind::Time,
            "UUID" => ColumnKind::Uuid,
            "JSON" | "JSONB" => ColumnKind::Json,
            "NUMERIC" => ColumnKind::Decimal,
            _ => ColumnKind::Other,
        }
    }

    fn decode_decimal(
        row: &sqlx::postgres::PgRow,
        index: usize,
    ) -> std::result::Result<String, sqlx::Error> {
        crate::convert::decimal_text(row, index)
    }

    fn bind_null<'q>(
        query: Query<'q, Postgres, <Postgres as Database>::Arguments>,
    ) -> Query<'q, Postgres, <Postgres as Database>::Arguments> {
        query.bind(UntypedNull)
    }
}

neutral_values!(PgDialect, Postgres, |row, index| {
    use sqlx::{Column, TypeInfo};
    row.columns()[index].type_info().name().to_owned()
});

/// A NULL parameter with type OID 0 ("unspecified"), so the server infers its type from
/// the statement, as it does for a literal NULL. A typed NULL (say `Option::<i64>::None`)
/// would make PostgreSQL refuse it wherever the column is of another type.
struct UntypedNull;

impl Type<Postgres> for UntypedNull {
    fn type_info() -> PgTypeInfo {
        PgTypeInfo::with_oid(Oid(0))
    }
}

impl Encode<'_, Postgres> for UntypedNull {
    fn encode_by_ref(
        &self,
        _buf: &mut PgArgumentBuffer,
    ) -> Result<sqlx::encode::IsNull, BoxDynError> {
        Ok(sqlx::encode::IsNull::Yes)
    }
}
