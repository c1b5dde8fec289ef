//! MySQL and MariaDB under sqlx: connect options (UTC, TLS), error numbers, type names.

use std::str::FromStr;

use sqlx::Database;
use sqlx::error::DatabaseError;
use sqlx::mysql::{MySql, MySqlConnectOptions, MySqlDatabaseError, MySqlRow, MySqlSslMode};
use sqlx::query::Query;
use ucm_kernel::{
    ConnectFailure, DatabaseKind, DatabaseUrl, Error, ErrorKind, PoolConfiguration, Result, SslMode,
};

use crate::convert::neutral_values;
use crate::dialect::{ColumnKind, Dialect};
use ucm_kernel::backend::Classified;

/// MySQL and MariaDB through sqlx's pure-Rust driver.
#[derive(Debug, Clone, Copy)]
pub struct MySqlDialect;

impl Dialect for MySqlDialect {
    type Db = MySql;
    const KIND: DatabaseKind = DatabaseKind::MySql;

    fn options(url: &DatabaseUrl, config: &PoolConfiguration) -> Result<MySqlConnectOptions> {
        // sqlx writes these into `SET NAMES {charset} COLLATE {collation}` as they are.
        for key in ["charset", "collation"] {
            if url.param(key).is_some_and(|name| !is_sql_name(name)) {
                return Err(Error::config(
                    "DATABASE_URL",
                    format!(
                        "the `{key}` parameter must be a MySQL {key} name (letters, digits and \
                         '_'), such as utf8mb4 or utf8mb4_unicode_ci"
                    ),
                ));
            }
        }
        let options = MySqlConnectOptions::from_str(&url.expose_url())
            .map_err(|e| Error::config("DATABASE_URL", url.scrub(&e.to_string())))?;
        // sqlx writes the time zone into `SET time_zone='{}'` as it is: escaped here.
        Ok(options.timezone(Some(literal_body(config.mysql_time_zone()))).ssl_mode(
            match url.ssl_mode() {
                SslMode::Disable => MySqlSslMode::Disabled,
                SslMode::Allow | SslMode::Prefer => MySqlSslMode::Preferred,
                SslMode::Require => MySqlSslMode::Required,
                SslMode::VerifyCa => MySqlSslMode::VerifyCa,
                SslMode::VerifyFull => MySqlSslMode::VerifyIdentity,
            },
        ))
    }

    fn classify(error: &dyn DatabaseError) -> Option<Classified> {
        let number = error.try_downcast_ref::<MySqlDatabaseError>()?.number();
        let (kind, connect) = match number {
            1045 => (ErrorKind::ConnectFailed, Some(ConnectFailure::Authentication)),
            1049 => (ErrorKind::ConnectFailed, Some(ConnectFailure::DatabaseMissing)),
            1040 => (ErrorKind::ConnectFailed, Some(ConnectFailure::TooManyConnections)),
            1213 => (ErrorKind::Deadlock, None),
            // Lock wait timeout; MariaDB's max_statement_time; MySQL's max_execution_time.
            1205 | 1969 | 3024 => (ErrorKind::Timeout, None),
            // 1792: write in a READ ONLY transaction; 1290: server started with --read-only.
            1792 | 1290 => (ErrorKind::ReadOnlyViolation, None),
            // Server gone away / lost connection during query.
            2006 | 2013 => (ErrorKind::ConnectionLost, None),
            _ => return None,
        };
        Some(Classified { kind, connect })
    }

    fn column_kind(type_name: &str) -> ColumnKind {
        match type_name {
            "BOOLEAN" => ColumnKind::Bool,
            "TINYINT" | "SMALLINT" | "MEDIUMINT" | "INT" | "BIGINT" | "YEAR" => ColumnKind::Int64,
            "TINYINT UNSIGNED" | "SMALLINT UNSIGNED" | "MEDIUMINT UNSIGNED" | "INT UNSIGNED"
            | "BIGINT UNSIGNED" => ColumnKind::UnsignedInt,
            "FLOAT" => ColumnKind::Float32,
            "DOUBLE" => ColumnKind::Float64,
            "CHAR" | "VARCHAR" | "TEXT" | "TINYTEXT" | "MEDIUMTEXT" | "LONGTEXT" | "ENUM" => {
                ColumnKind::Text
            }
            "BINARY" | "VARBINARY" | "BLOB" | "TINYBLOB" | "MEDIUMBLOB" | "LONGBLOB" => {
                ColumnKind::Bytes
            }
            "DATETIME" => ColumnKind::Timestamp,
            "TIMESTAMP" => ColumnKind::TimestampTz,
            "DATE" => ColumnKind::Date,
            "TIME" => ColumnKind::Time,
            "JSON" => ColumnKind::Json,
            "DECIMAL" => ColumnKind::Decimal,
            _ => ColumnKind::Other,
        }
    }

    fn decode_unsigned(row: &MySqlRow, index: usize) -> std::result::Result<i64, sqlx::Error> {
        use sqlx::Row;
        let value: u64 = row.try_get(index)?;
        i64::try_from(value).map_err(|e| sqlx::Error::ColumnDecode {
            index: index.to_string(),
            source: Box::new(e),
        })
    }

    fn decode_decimal(row: &MySqlRow, index: usize) -> std::result::Result<String, sqlx::Error> {
        crate::convert::decimal_text(row, index)
    }

    fn bind_null<'q>(
        query: Query<'q, MySql, <MySql as Database>::Arguments>,
    ) -> Query<'q, MySql, <MySql as Database>::Arguments> {
        query.bind(Option::<String>::None)
    }
}

/// Whether `name` is a bare SQL name (a character set or collation): letters, digits, `_`.
fn is_sql_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `value` escaped for the inside of a single-quoted MySQL literal: backslashes and quotes
/// doubled, which keeps the literal closed whether or not the server runs with
/// `NO_BACKSLASH_ESCAPES`. The configuration refuses such time zones already; this keeps
/// the statement whole whatever reaches it.
fn literal_body(value: &str) -> String {
    value.replace('\\', r"\\").replace('\'', "''")
}

neutral_values!(MySqlDialect, MySql, |row, index| {
    use sqlx::{Column, TypeInfo};
    row.columns()[index].type_info().name().to_owned()
});

crate::driver::sqlx_database!(sqlx::MySql, MySqlDialect, MySql);

#[cfg(test)]
mod tests {
    use ucm_kernel::ManagerMode;

    use super::*;

    #[test]
    fn literal_bodies_keep_the_literal_closed() {
        assert_eq!(literal_body("+00:00"), "+00:00");
        assert_eq!(literal_body("UTC'; DROP TABLE x; --"), "UTC''; DROP TABLE x; --");
        assert_eq!(literal_body(r"UTC\'"), r"UTC\\''");
    }

    #[test]
    fn charset_and_collation_must_be_names() {
        let config = PoolConfiguration::for_mode(ManagerMode::AsyncModern);
        for query in ["charset=utf8mb4", "collation=utf8mb4_unicode_ci", "charset=latin1"] {
            let url = DatabaseUrl::parse(&format!("mysql://app@db.example/app?{query}")).unwrap();
            assert!(MySqlDialect::options(&url, &config).is_ok(), "{query}");
        }
        for query in [
            "charset=utf8mb4%3B%20DROP%20TABLE%20x",
            "collation=utf8mb4_bin%2C%20time_zone%3D'x'",
            "charset=",
        ] {
            let url = DatabaseUrl::parse(&format!("mysql://app@db.example/app?{query}")).unwrap();
            let err = MySqlDialect::options(&url, &config).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Configuration, "{query}");
            assert!(err.to_string().contains("utf8mb4"), "{err}");
        }
    }
}
