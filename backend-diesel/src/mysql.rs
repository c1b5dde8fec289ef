//! MySQL and MariaDB under diesel-async (`AsyncMysqlConnection` on mysql_async): connect settings, values by column type, error numbers and messages.

use diesel::deserialize::{self, FromSql};
use diesel::mysql::{Mysql, MysqlType, MysqlValue};
use diesel::query_builder::{BoxedSqlQuery, SqlQuery};
use diesel::sql_types::{self, Unsigned};
use diesel_async::AsyncMysqlConnection;
use ucm_kernel::backend::{Classified, DriverError};
use ucm_kernel::{
    ConnectFailure, DatabaseKind, DatabaseUrl, ErrorKind, PoolConfiguration, Result, SslMode, Value,
};

use crate::convert::{
    BoxError, NeutralBackend, bind_value, neutral_statements, not_shared, unsupported,
};
use crate::dialect::Dialect;

/// MySQL and MariaDB through diesel-async's `AsyncMysqlConnection` (mysql_async, pure Rust).
#[derive(Debug, Clone, Copy)]
pub struct MySqlDialect;

impl crate::dialect::sealed::Sealed for MySqlDialect {}

/// mysql_async's connect settings: the first attempt's (with TLS unless `ssl-mode` is
/// `disabled`), and, for `allow` and `prefer`, the plaintext ones to fall back on when the
/// server has no TLS. `Debug` never shows them: they hold the password.
pub struct MysqlOptions {
    first: mysql_async::Opts,
    plain: Option<mysql_async::Opts>,
}

impl std::fmt::Debug for MysqlOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MysqlOptions")
            .field("tls", &self.first.ssl_opts().is_some())
            .field("falls_back_to_plaintext", &self.plain.is_some())
            .finish_non_exhaustive()
    }
}

/// The TLS settings for `url`, with libpq's `sslmode` meanings (see docs/tls.md): `None`
/// for `disabled`; the certificate unchecked for `allow`, `prefer` and `require` unless a
/// CA is given (`sslrootcert` or MySQL's `ssl-ca`); the chain and the host name for
/// `verify-full` (`VERIFY_IDENTITY`). mysql_async 0.36 cannot check the chain without the
/// name (its "skip domain validation" misses rustls 0.23's name error), so a given CA
/// checks both, and `verify-ca` is refused with the ways out. `sslcert`/`ssl-cert` and
/// `sslkey`/`ssl-key` give a client certificate.
///
/// # Errors
/// `Configuration` for `verify-ca`.
fn ssl_opts(url: &DatabaseUrl) -> Result<Option<mysql_async::SslOpts>> {
    let param =
        |names: [&str; 2]| names.into_iter().find_map(|n| url.param(n)).filter(|v| !v.is_empty());
    let ca = param(["sslrootcert", "ssl-ca"]);
    let check = match url.ssl_mode() {
        SslMode::Disable => return Ok(None),
        SslMode::VerifyFull => true,
        SslMode::VerifyCa => {
            return Err(ucm_kernel::Error::config(
                "sslmode",
                "ucm-diesel cannot check a MySQL server's CA without its host name (mysql_async \
                 checks both or neither): use ssl-mode=VERIFY_IDENTITY with a host name the \
                 certificate lists, or the sqlx backend for VERIFY_CA",
            ));
        }
        SslMode::Allow | SslMode::Prefer | SslMode::Require => ca.is_some(),
    };
    let mut opts = mysql_async::SslOpts::default()
        .with_danger_accept_invalid_certs(!check)
        .with_danger_skip_domain_validation(!check);
    if let Some(ca) = ca.filter(|ca| *ca != "system") {
        opts = opts.with_root_certs(vec![std::path::PathBuf::from(ca).into()]);
    }
    if let (Some(cert), Some(key)) = (param(["sslcert", "ssl-cert"]), param(["sslkey", "ssl-key"]))
    {
        opts = opts.with_client_identity(Some(mysql_async::ClientIdentity::new(
            std::path::PathBuf::from(cert).into(),
            std::path::PathBuf::from(key).into(),
        )));
    }
    Ok(Some(opts))
}

impl Dialect for MySqlDialect {
    type Backend = Mysql;
    type Connection = AsyncMysqlConnection;
    type Options = MysqlOptions;
    const KIND: DatabaseKind = DatabaseKind::MySql;
    // MySQL's BOOLEAN is reported as the TINYINT it is.
    const READS_DECLARED_TYPES: bool = false;

    fn options(url: &DatabaseUrl, config: &PoolConfiguration) -> Result<MysqlOptions> {
        let builder = mysql_async::OptsBuilder::default()
            .ip_or_hostname(url.host().unwrap_or("localhost"))
            .tcp_port(url.port().unwrap_or(3306))
            .user(url.user())
            .pass(url.password().map(|p| p.expose()))
            .db_name(url.database())
            .socket(url.param("socket"))
            // mysql_async would otherwise move a TCP connection to a local server onto its
            // Unix socket behind our back: the endpoint, its TLS and the network path
            // (proxies, fault tests) would no longer be the ones the URL names. A socket is
            // used only when the URL asks for one.
            .prefer_socket(false)
            // diesel-async caches statements itself.
            .stmt_cache_size(0)
            // Keepalive idle time in milliseconds (mysql_async sets no interval, count or
            // TCP_USER_TIMEOUT).
            .tcp_keepalive(
                config.tcp_keepalive().map(|d| u32::try_from(d.as_millis()).unwrap_or(u32::MAX)),
            )
            .init(vec![format!("SET time_zone = {}", string_literal(config.mysql_time_zone()))]);
        let tls = ssl_opts(url)?;
        // `allow` and `prefer` try TLS first and fall back to plaintext when the server has
        // none, as libpq does; the other modes insist.
        let plain = match url.ssl_mode() {
            SslMode::Disable => None,
            SslMode::Allow | SslMode::Prefer => Some(builder.clone().into()),
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => None,
        };
        Ok(MysqlOptions { first: builder.ssl_opts(tls).into(), plain })
    }

    async fn connect(options: &MysqlOptions) -> Result<AsyncMysqlConnection, DriverError> {
        let connection = match mysql_async::Conn::new(options.first.clone()).await {
            Ok(connection) => connection,
            Err(mysql_async::Error::Driver(
                mysql_async::DriverError::NoClientSslFlagFromServer,
            )) if options.plain.is_some() => {
                let plain = options.plain.clone().unwrap_or_else(|| options.first.clone());
                mysql_async::Conn::new(plain).await.map_err(read_connect)?
            }
            Err(e) => return Err(read_connect(e)),
        };
        AsyncMysqlConnection::try_from(connection)
            .await
            .map_err(|e| DriverError::Other(e.to_string()))
    }

    neutral_statements!(AsyncMysqlConnection);
    not_shared!();

    fn begin_with<'a>(
        connection: &'a mut AsyncMysqlConnection,
        statement: &'a str,
    ) -> impl Future<Output = diesel::QueryResult<()>> + Send + 'a {
        diesel_async::AnsiTransactionManager::begin_transaction_sql(connection, statement)
    }

    // diesel-async keeps only the server's message of an error it does not map to a
    // kind, and the text of a client-side (I/O, driver) error.
    const UNKNOWN_ERRORS: &'static [(&'static str, ErrorKind)] = &[
        ("Deadlock found", ErrorKind::Deadlock),
        ("Lock wait timeout exceeded", ErrorKind::Timeout),
        ("max_statement_time exceeded", ErrorKind::Timeout),
        ("maximum statement execution time exceeded", ErrorKind::Timeout),
        ("--read-only", ErrorKind::ReadOnlyViolation),
        ("READ ONLY transaction", ErrorKind::ReadOnlyViolation),
        ("Input/output error", ErrorKind::ConnectionLost),
        ("Driver error", ErrorKind::ConnectionLost),
        ("server has gone away", ErrorKind::ConnectionLost),
        ("Lost connection", ErrorKind::ConnectionLost),
    ];
}

/// `value` as a MySQL string literal: backslashes and quotes doubled, which keeps the
/// literal closed whether or not the server runs with `NO_BACKSLASH_ESCAPES`. The
/// configuration refuses such time zones already; this keeps the statement whole whatever
/// reaches it.
fn string_literal(value: &str) -> String {
    format!("'{}'", value.replace('\\', r"\\").replace('\'', "''"))
}

/// Reads a mysql_async error raised while connecting, keeping its error number.
fn read_connect(error: mysql_async::Error) -> DriverError {
    match error {
        mysql_async::Error::Server(server) => DriverError::Server {
            classified: match server.code {
                1045 => Some(Classified::connect(ConnectFailure::Authentication)),
                1049 => Some(Classified::connect(ConnectFailure::DatabaseMissing)),
                1040 => Some(Classified::connect(ConnectFailure::TooManyConnections)),
                _ => None,
            },
            sqlstate: Some(server.state),
            message: server.message,
        },
        mysql_async::Error::Io(mysql_async::IoError::Io(io)) => DriverError::Io(io),
        mysql_async::Error::Url(url) => DriverError::Configuration(url.to_string()),
        other => DriverError::Broken(other.to_string()),
    }
}

impl NeutralBackend for Mysql {
    fn bind<'f>(
        query: BoxedSqlQuery<'f, Mysql, SqlQuery>,
        value: &'f Value,
    ) -> Result<BoxedSqlQuery<'f, Mysql, SqlQuery>, BoxError> {
        bind_value!(query, value, portable, timestamp => diesel::sql_types::Datetime)
    }

    fn decode(value: MysqlValue<'_>) -> deserialize::Result<Value> {
        fn get<T: FromSql<ST, Mysql>, ST>(value: MysqlValue<'_>) -> deserialize::Result<T> {
            T::from_sql(value)
        }
        Ok(match value.value_type() {
            MysqlType::Tiny => Value::Int(get::<i8, sql_types::TinyInt>(value)?.into()),
            MysqlType::Short => Value::Int(get::<i16, sql_types::SmallInt>(value)?.into()),
            MysqlType::Long => Value::Int(get::<i32, sql_types::Integer>(value)?.into()),
            MysqlType::LongLong => Value::Int(get::<i64, sql_types::BigInt>(value)?),
            MysqlType::UnsignedTiny => {
                Value::Int(get::<u8, Unsigned<sql_types::TinyInt>>(value)?.into())
            }
            MysqlType::UnsignedShort => {
                Value::Int(get::<u16, Unsigned<sql_types::SmallInt>>(value)?.into())
            }
            MysqlType::UnsignedLong => {
                Value::Int(get::<u32, Unsigned<sql_types::Integer>>(value)?.into())
            }
            MysqlType::UnsignedLongLong => {
                Value::Int(i64::try_from(get::<u64, Unsigned<sql_types::BigInt>>(value)?)?)
            }
            MysqlType::Float => Value::Float(get::<f32, sql_types::Float>(value)?.into()),
            MysqlType::Double => Value::Float(get::<f64, sql_types::Double>(value)?),
            MysqlType::Numeric => {
                Value::Text(get::<bigdecimal::BigDecimal, sql_types::Numeric>(value)?.to_string())
            }
            MysqlType::Date => Value::Date(get::<_, sql_types::Date>(value)?),
            MysqlType::Time => Value::Time(get::<_, sql_types::Time>(value)?),
            MysqlType::DateTime => Value::Timestamp(get::<_, sql_types::Datetime>(value)?),
            MysqlType::Timestamp => Value::TimestampTz(
                get::<chrono::NaiveDateTime, sql_types::Timestamp>(value)?.and_utc(),
            ),
            MysqlType::String | MysqlType::Enum | MysqlType::Set => {
                Value::Text(get::<String, sql_types::Text>(value)?)
            }
            MysqlType::Blob | MysqlType::Bit => {
                Value::Bytes(get::<Vec<u8>, sql_types::Binary>(value)?)
            }
            other => return Err(unsupported(format_args!("{other:?}"))),
        })
    }
}

#[cfg(test)]
mod tests {
    use ucm_kernel::ManagerMode;

    use super::*;

    #[test]
    fn string_literals_stay_closed() {
        assert_eq!(string_literal("+00:00"), "'+00:00'");
        assert_eq!(string_literal("UTC'; DROP TABLE x; --"), "'UTC''; DROP TABLE x; --'");
        assert_eq!(string_literal(r"UTC\'"), r"'UTC\\'''");
    }

    #[test]
    fn debug_of_the_connector_never_shows_the_password() {
        use ucm_kernel::backend::BackendConnector;
        let url = DatabaseUrl::parse("mysql://app:s3cr3t-UNIT-77@db.example:3306/app").unwrap();
        let config = PoolConfiguration::for_mode(ManagerMode::AsyncModern);
        let connector = crate::DieselConnector::<MySqlDialect>::new(&url, &config).unwrap();
        let debug = format!("{connector:?} {connector:#?}");
        assert!(!debug.contains("s3cr3t-UNIT-77"), "{debug}");
        assert!(debug.contains("db.example:3306/app") && debug.contains("mysql"), "{debug}");
    }
}
