//! PostgreSQL under diesel-async (`AsyncPgConnection` on tokio-postgres): connect settings, untyped NULLs, values by type OID, error messages.

use diesel::deserialize::{self, FromSql};
use diesel::pg::{Pg, PgValue};
use diesel::query_builder::{BoxedSqlQuery, SqlQuery};
use diesel::result::DatabaseErrorKind;
use diesel::serialize::{self, IsNull, Output, ToSql};
use diesel::sql_types;
use diesel_async::AsyncPgConnection;
use ucm_kernel::backend::DriverError;
use ucm_kernel::{DatabaseKind, DatabaseUrl, ErrorKind, PoolConfiguration, Result, SslMode, Value};

use crate::convert::{
    BoxError, KeptPrepared, NeutralBackend, bind_value, neutral_statements, unsupported,
};
use crate::dialect::Dialect;

/// tokio-postgres's connect settings, and whether a transaction pooler is in between.
pub struct PgOptions {
    config: tokio_postgres::Config,
    pooled: bool,
    /// `None` for `sslmode=disable`.
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
}

impl std::fmt::Debug for PgOptions {
    /// Never the settings: they hold the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgOptions")
            .field("pooled", &self.pooled)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// PostgreSQL through diesel-async's `AsyncPgConnection` (tokio-postgres, pure Rust).
#[derive(Debug, Clone, Copy)]
pub struct PgDialect;

impl crate::dialect::sealed::Sealed for PgDialect {}

impl Dialect for PgDialect {
    type Backend = Pg;
    type Connection = AsyncPgConnection;
    type Options = PgOptions;
    const KIND: DatabaseKind = DatabaseKind::Postgres;
    const READS_DECLARED_TYPES: bool = true;

    fn options(url: &DatabaseUrl, config: &PoolConfiguration) -> Result<PgOptions> {
        let tls = crate::tls::postgres_tls_config(url)?
            .map(tokio_postgres_rustls::MakeRustlsConnect::new);
        let mut options = tokio_postgres::Config::new();
        options
            .host(url.host().unwrap_or("localhost"))
            .port(url.port().unwrap_or(5432))
            .application_name(config.application_name_for(url))
            // libpq's modes on tokio-postgres's three: `allow` and `prefer` try TLS and fall
            // back to plaintext when the server has none; the rest insist on it. What is
            // checked of the certificate is the TLS configuration's (`crate::tls`).
            .ssl_mode(match url.ssl_mode() {
                SslMode::Disable => tokio_postgres::config::SslMode::Disable,
                SslMode::Allow | SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
                SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                    tokio_postgres::config::SslMode::Require
                }
            });
        // A transaction pooler refuses (or drops) startup options: there the settings go in
        // each transaction's BEGIN instead.
        let pooled = config.pooler().is_transaction_pooled(url);
        if !pooled {
            options.options(startup_options(config));
        }
        match config.tcp_keepalive() {
            Some(idle) => {
                options
                    .keepalives(true)
                    .keepalives_idle(idle)
                    .keepalives_interval(ucm_kernel::config::TCP_KEEPALIVE_INTERVAL)
                    .keepalives_retries(3);
            }
            None => {
                options.keepalives(true);
            }
        }
        if let Some(timeout) = config.tcp_user_timeout() {
            options.tcp_user_timeout(timeout);
        }
        if let Some(user) = url.user() {
            options.user(user);
        }
        if let Some(password) = url.password() {
            options.password(password.expose());
        }
        if let Some(database) = url.database() {
            options.dbname(database);
        }
        Ok(PgOptions { config: options, pooled, tls })
    }

    async fn connect(options: &PgOptions) -> Result<AsyncPgConnection, DriverError> {
        match &options.tls {
            Some(tls) => {
                let (client, connection) =
                    options.config.connect(tls.clone()).await.map_err(read_connect)?;
                finish_connect(client, connection, options.pooled).await
            }
            None => {
                let (client, connection) =
                    options.config.connect(tokio_postgres::NoTls).await.map_err(read_connect)?;
                finish_connect(client, connection, options.pooled).await
            }
        }
    }

    neutral_statements!(AsyncPgConnection);

    // diesel-async runs statements through a shared `&AsyncPgConnection` concurrently:
    // tokio-postgres sends each as soon as it is polled and matches the replies in order.
    type Shared = AsyncPgConnection;

    fn into_shared(connection: AsyncPgConnection) -> Result<AsyncPgConnection, AsyncPgConnection> {
        Ok(connection)
    }

    fn from_shared(shared: AsyncPgConnection) -> AsyncPgConnection {
        shared
    }

    async fn execute_shared(
        shared: &AsyncPgConnection,
        sql: &str,
        params: &[Value],
        keep: bool,
    ) -> diesel::QueryResult<usize> {
        let query = crate::convert::bind_all::<Pg>(sql, params)?;
        let mut shared = shared;
        if keep {
            diesel_async::RunQueryDsl::execute(KeptPrepared(query), &mut shared).await
        } else {
            diesel_async::RunQueryDsl::execute(query, &mut shared).await
        }
    }

    async fn load_shared(
        shared: &AsyncPgConnection,
        sql: &str,
        params: &[Value],
        keep: bool,
    ) -> diesel::QueryResult<Vec<crate::convert::NeutralRow>> {
        let query = crate::convert::bind_all::<Pg>(sql, params)?;
        let mut shared = shared;
        if keep {
            diesel_async::RunQueryDsl::load(KeptPrepared(query), &mut shared).await
        } else {
            diesel_async::RunQueryDsl::load(query, &mut shared).await
        }
    }

    fn begin_with<'a>(
        connection: &'a mut AsyncPgConnection,
        statement: &'a str,
    ) -> impl Future<Output = diesel::QueryResult<()>> + Send + 'a {
        diesel_async::AnsiTransactionManager::begin_transaction_sql(connection, statement)
    }

    // diesel-async keeps the SQLSTATE only as the kind; the rest are read from the
    // server's (English) message.
    const UNKNOWN_ERRORS: &'static [(&'static str, ErrorKind)] = &[
        ("deadlock detected", ErrorKind::Deadlock),
        ("could not serialize access", ErrorKind::SerializationFailure),
        ("canceling statement due to", ErrorKind::Timeout),
        ("terminating connection", ErrorKind::ConnectionLost),
        ("the database system is", ErrorKind::ConnectionLost),
    ];

    fn sqlstate(kind: DatabaseErrorKind) -> Option<&'static str> {
        // diesel-async derives these kinds from exactly these SQLSTATEs.
        Some(match kind {
            DatabaseErrorKind::UniqueViolation => "23505",
            DatabaseErrorKind::ForeignKeyViolation => "23503",
            DatabaseErrorKind::RestrictViolation => "23001",
            DatabaseErrorKind::ExclusionViolation => "23P01",
            DatabaseErrorKind::NotNullViolation => "23502",
            DatabaseErrorKind::CheckViolation => "23514",
            DatabaseErrorKind::SerializationFailure => "40001",
            DatabaseErrorKind::ReadOnlyTransaction => "25006",
            _ => return None,
        })
    }
}

/// `-c name=value` for the startup packet's `options`, which the server splits at spaces:
/// a backslash escapes the next character (libpq's rule), so a value with a space or a
/// backslash stays one setting. The configuration refuses such time zones already; this
/// keeps the option whole whatever reaches it.
fn startup_option(name: &str, value: &str) -> String {
    let mut option = format!("-c {name}=");
    for c in value.chars() {
        if c == ' ' || c == '\\' {
            option.push('\\');
        }
        option.push(c);
    }
    option
}

/// The startup packet's `options`: the time zone and the mode's deadlines, each a
/// `-c name=value` (sqlx builds the same list from `PoolConfiguration` for its backend).
fn startup_options(config: &PoolConfiguration) -> String {
    std::iter::once(startup_option("TimeZone", config.time_zone()))
        .chain(
            config
                .postgres_deadline_settings()
                .into_iter()
                .map(|(name, value)| startup_option(name, &value)),
        )
        .collect::<Vec<_>>()
        .join(" ")
}

/// Hands a connected client to diesel-async. Behind a transaction pooler, diesel-async's
/// setup runs its `SET`s as prepared statements, whose parse and execute round trips the
/// pooler may send to two different servers: in one transaction they stay on one (the
/// client needs its connection driven to send that `BEGIN`, so the connection runs on a
/// task of its own, which ends with the client).
async fn finish_connect<S>(
    client: tokio_postgres::Client,
    connection: tokio_postgres::Connection<tokio_postgres::Socket, S>,
    pooled: bool,
) -> Result<AsyncPgConnection, DriverError>
where
    S: tokio_postgres::tls::TlsStream + Unpin + Send + 'static,
{
    let other = |e: diesel::ConnectionError| DriverError::Other(e.to_string());
    if !pooled {
        return AsyncPgConnection::try_from_client_and_connection(client, connection)
            .await
            .map_err(other);
    }
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("a pooled PostgreSQL connection ended: {e}");
        }
    });
    client.batch_execute("BEGIN").await.map_err(read_connect)?;
    let mut connection = AsyncPgConnection::try_from(client).await.map_err(other)?;
    diesel_async::SimpleAsyncConnection::batch_execute(&mut connection, "COMMIT")
        .await
        .map_err(|e| DriverError::Other(e.to_string()))?;
    Ok(connection)
}

/// Reads a tokio-postgres error raised while connecting, keeping its SQLSTATE and I/O kind.
fn read_connect(error: tokio_postgres::Error) -> DriverError {
    if let Some(db) = error.as_db_error() {
        return DriverError::Server {
            sqlstate: Some(db.code().code().to_owned()),
            classified: None,
            message: db.message().to_owned(),
        };
    }
    let io = std::error::Error::source(&error)
        .and_then(|source| source.downcast_ref::<std::io::Error>())
        .map(|io| std::io::Error::new(io.kind(), io.to_string()));
    match io {
        Some(io) => DriverError::Io(io),
        None => DriverError::Broken(with_sources(&error)),
    }
}

/// The error's text followed by its sources': tokio-postgres says only "error performing
/// TLS handshake" and keeps why (say, "server does not support TLS") in the source.
fn with_sources(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// A parameter type with OID 0 ("unspecified"): the server infers a NULL's type from the
/// statement, as for a literal NULL. A typed NULL (say `Nullable<Text>`) would be refused
/// wherever the column is of another type.
#[derive(diesel::sql_types::SqlType, diesel::query_builder::QueryId)]
#[diesel(postgres_type(oid = 0, array_oid = 0))]
struct Unspecified;

/// The NULL bound as [`Unspecified`].
#[derive(Debug)]
struct Null;

impl ToSql<Unspecified, Pg> for Null {
    fn to_sql<'b>(&'b self, _out: &mut Output<'b, '_, Pg>) -> serialize::Result {
        Ok(IsNull::Yes)
    }
}

impl NeutralBackend for Pg {
    fn bind<'f>(
        query: BoxedSqlQuery<'f, Pg, SqlQuery>,
        value: &'f Value,
    ) -> Result<BoxedSqlQuery<'f, Pg, SqlQuery>, BoxError> {
        bind_value!(query, value, {
            null => query.bind::<Unspecified, _>(Null),
            timestamp => sql_types::Timestamp,
            timestamptz(v) => query.bind::<sql_types::Timestamptz, _>(v),
            uuid(v) => query.bind::<sql_types::Uuid, _>(v),
            json(v) => query.bind::<sql_types::Jsonb, _>(v),
        })
    }

    fn decode(value: PgValue<'_>) -> deserialize::Result<Value> {
        fn get<T: FromSql<ST, Pg>, ST>(value: PgValue<'_>) -> deserialize::Result<T> {
            T::from_sql(value)
        }
        Ok(match value.get_oid().get() {
            16 => Value::Bool(get::<bool, sql_types::Bool>(value)?),
            21 => Value::Int(get::<i16, sql_types::SmallInt>(value)?.into()),
            23 => Value::Int(get::<i32, sql_types::Integer>(value)?.into()),
            20 => Value::Int(get::<i64, sql_types::BigInt>(value)?),
            26 => Value::Int(get::<u32, sql_types::Oid>(value)?.into()),
            700 => Value::Float(get::<f32, sql_types::Float>(value)?.into()),
            701 => Value::Float(get::<f64, sql_types::Double>(value)?),
            // text, varchar, bpchar, name
            25 | 1043 | 1042 | 19 => Value::Text(get::<String, sql_types::Text>(value)?),
            17 => Value::Bytes(get::<Vec<u8>, sql_types::Binary>(value)?),
            1114 => Value::Timestamp(get::<_, sql_types::Timestamp>(value)?),
            1184 => Value::TimestampTz(get::<_, sql_types::Timestamptz>(value)?),
            1082 => Value::Date(get::<_, sql_types::Date>(value)?),
            1083 => Value::Time(get::<_, sql_types::Time>(value)?),
            2950 => Value::Uuid(get::<_, sql_types::Uuid>(value)?),
            114 => Value::Json(get::<_, sql_types::Json>(value)?),
            3802 => Value::Json(get::<_, sql_types::Jsonb>(value)?),
            1700 => {
                Value::Text(get::<bigdecimal::BigDecimal, sql_types::Numeric>(value)?.to_string())
            }
            oid => return Err(unsupported(format_args!("with OID {oid}"))),
        })
    }
}

#[cfg(test)]
mod tests {
    use ucm_kernel::ManagerMode;

    use super::*;

    #[test]
    fn tls_options_follow_sslmode_and_unreadable_files_are_named() {
        let config = PoolConfiguration::for_mode(ManagerMode::AsyncModern);
        let options = |url: &str| PgDialect::options(&DatabaseUrl::parse(url).unwrap(), &config);
        let local = options("postgres://app@127.0.0.1/app").unwrap();
        assert!(local.tls.is_none(), "a local host defaults to disable");
        let remote = options("postgres://app@db.example/app").unwrap();
        assert!(remote.tls.is_some(), "prefer tries TLS first, as libpq does");
        assert_eq!(remote.config.get_ssl_mode(), tokio_postgres::config::SslMode::Prefer);
        let full = options("postgres://app@db.example/app?sslmode=verify-full").unwrap();
        assert_eq!(full.config.get_ssl_mode(), tokio_postgres::config::SslMode::Require);
        let error = options(
            "postgres://app@db.example/app?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
        )
        .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Configuration);
        assert!(error.to_string().contains("/nonexistent/ca.pem"), "{error}");
        let half =
            options("postgres://app@db.example/app?sslmode=require&sslcert=/c.pem").unwrap_err();
        assert!(half.to_string().contains("sslkey"), "{half}");
    }

    #[test]
    fn options_carry_the_session_settings() {
        let url = DatabaseUrl::parse("postgres://app:secret@db.example:6543/app").unwrap();
        let config = PoolConfiguration::for_mode(ManagerMode::McpServer);
        let options = PgDialect::options(&url, &config).unwrap().config;
        assert_eq!(options.get_dbname(), Some("app"));
        assert_eq!(options.get_user(), Some("app"));
        assert_eq!(options.get_ports(), &[6543]);
        assert_eq!(options.get_application_name(), Some(config.application_name()));
        assert!(options.get_options().is_some_and(|o| o.contains("TimeZone=")));
        assert!(options.get_keepalives());
        assert_eq!(options.get_keepalives_idle(), ucm_kernel::config::DEFAULT_TCP_KEEPALIVE);
        assert_eq!(
            options.get_tcp_user_timeout(),
            Some(&ucm_kernel::config::DEFAULT_TCP_USER_TIMEOUT)
        );
        let tuned = PoolConfiguration::builder(ManagerMode::McpServer)
            .tcp_keepalive(Some(std::time::Duration::from_secs(7)))
            .tcp_user_timeout(None)
            .build()
            .unwrap();
        let options = PgDialect::options(&url, &tuned).unwrap().config;
        assert_eq!(options.get_keepalives_idle(), std::time::Duration::from_secs(7));
        assert_eq!(options.get_tcp_user_timeout(), None);
    }

    #[test]
    fn startup_options_stay_one_setting() {
        assert_eq!(startup_option("TimeZone", "UTC"), "-c TimeZone=UTC");
        assert_eq!(
            startup_option("TimeZone", "UTC -c search_path=evil"),
            r"-c TimeZone=UTC\ -c\ search_path=evil"
        );
        assert_eq!(startup_option("TimeZone", r"a\ b"), r"-c TimeZone=a\\\ b");
    }

    #[test]
    fn debug_of_the_connector_never_shows_the_password() {
        use ucm_kernel::backend::BackendConnector;
        let url = DatabaseUrl::parse("postgres://app:s3cr3t-UNIT-78@db.example/app").unwrap();
        let config = PoolConfiguration::for_mode(ManagerMode::AsyncModern);
        let connector = crate::DieselConnector::<PgDialect>::new(&url, &config).unwrap();
        let debug = format!("{connector:?} {connector:#?}");
        assert!(!debug.contains("s3cr3t-UNIT-78"), "{debug}");
        assert!(debug.contains("db.example:5432/app") && debug.contains("postgresql"), "{debug}");
    }
}
