//! PostgreSQL under sqlx: connect options (application name, UTC, TLS), untyped NULLs, type names.

use std::str::FromStr;

use sqlx::error::{BoxDynError, DatabaseError};
use sqlx::postgres::types::Oid;
use sqlx::postgres::{PgArgumentBuffer, PgConnectOptions, PgSslMode, PgTypeInfo, Postgres};
use sqlx::query::Query;
use sqlx::{Database, Encode, Type};
use ucm_kernel::{DatabaseKind, DatabaseUrl, Error, PoolConfiguration, Result, SslMode};

use crate::convert::neutral_values;
use crate::dialect::{ColumnKind, Dialect};
use ucm_kernel::backend::Classified;

/// The URL parameters sqlx's PostgreSQL driver reads (besides `options[NAME]`).
const SQLX_PARAMS: [&str; 17] = [
    "sslmode",
    "ssl-mode",
    "sslrootcert",
    "ssl-root-cert",
    "ssl-ca",
    "sslcert",
    "ssl-cert",
    "sslkey",
    "ssl-key",
    "statement-cache-capacity",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "application_name",
    "options",
];

/// Parameters ucm reads itself: the TLS mode's other spelling, and the pooler mode.
const UCM_PARAMS: [&str; 2] = ["ssl_mode", "pooler"];

/// PostgreSQL through sqlx's pure-Rust driver.
#[derive(Debug, Clone, Copy)]
pub struct PgDialect;

impl Dialect for PgDialect {
    type Db = Postgres;
    const KIND: DatabaseKind = DatabaseKind::Postgres;

    fn options(url: &DatabaseUrl, config: &PoolConfiguration) -> Result<PgConnectOptions> {
        // sqlx logs a parameter it does not know with its value (a `warn` event), which
        // would print `sslpassword=...` and the like: those are left out and named here,
        // without their value.
        let known = url.without_params(|key| {
            let known = SQLX_PARAMS.contains(&key) || key.starts_with("options[");
            if !known && !UCM_PARAMS.contains(&key) {
                tracing::warn!(
                    parameter = key,
                    "the sqlx PostgreSQL driver does not use this URL parameter; it is ignored"
                );
            }
            !known
        });
        let options = PgConnectOptions::from_str(&known.expose_url())
            .map_err(|e| Error::config("DATABASE_URL", url.scrub(&e.to_string())))?;
        let options = options.application_name(config.application_name_for(url));
        // Behind a transaction pooler nothing may rest on the session: no startup options
        // (a pooler refuses or drops them; each transaction's BEGIN carries the settings)
        // and no cache of named statements (they would stay on a server connection that
        // goes to another client after the transaction).
        let options = if config.pooler().is_transaction_pooled(url) {
            options.statement_cache_capacity(0)
        } else {
            options
                .options([("TimeZone", config.time_zone())])
                .options(config.postgres_deadline_settings())
        };
        Ok(options.ssl_mode(match url.ssl_mode() {
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

crate::driver::sqlx_database!(sqlx::Postgres, PgDialect, Postgres);

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use ucm_kernel::ManagerMode;

    use super::*;

    /// Collects every formatted event, fields included, while `f` runs.
    fn logged(f: impl FnOnce()) -> String {
        #[derive(Clone, Default)]
        struct Sink(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Sink {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let sink = Sink::default();
        let writer = sink.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let bytes = sink.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn unknown_parameters_are_named_but_their_values_never_logged() {
        let url = DatabaseUrl::parse(
            "postgres://app:s3cr3t-PW-91@db.example/app?sslpassword=s3cr3t-KEY-92&connect_timeout=5\
             &application_name=billing&options=-c%20search_path%3Dapp&ssl_mode=disable",
        )
        .unwrap();
        let config = PoolConfiguration::for_mode(ManagerMode::AsyncModern);
        let mut options = None;
        let log = logged(|| options = Some(PgDialect::options(&url, &config).unwrap()));
        assert!(!log.contains("s3cr3t"), "{log}");
        assert!(log.contains("sslpassword") && log.contains("connect_timeout"), "{log}");
        assert!(!log.contains("ssl_mode"), "{log}");
        let options = options.unwrap();
        assert_eq!(options.get_application_name(), Some("billing"));
        assert!(options.get_options().is_some_and(|o| o.contains("search_path=app")));
    }
}
