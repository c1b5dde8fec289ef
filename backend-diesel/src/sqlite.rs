//! SQLite under diesel-async's `SyncConnectionWrapper` (bundled): connect settings (WAL, busy timeout, foreign keys), `BEGIN IMMEDIATE`, values by storage class.

use diesel::deserialize::{self, FromSql};
use diesel::query_builder::{BoxedSqlQuery, SqlQuery};
use diesel::sql_types;
use diesel::sqlite::{Sqlite, SqliteConnection, SqliteType, SqliteValue};
use diesel::{ConnectionError, QueryResult};
use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
use diesel_async::{AsyncConnection, SimpleAsyncConnection};
use ucm_kernel::backend::DriverError;
use ucm_kernel::config::SQLITE_BUSY_TIMEOUT;
use ucm_kernel::{
    ConnectionMode, DatabaseKind, DatabaseUrl, Error, ErrorKind, PoolConfiguration, Result, Value,
};

use crate::convert::{
    BoxError, NeutralBackend, bind_value, neutral_statements, not_shared, unsupported,
};
use crate::dialect::Dialect;

/// The diesel-async SQLite connection: diesel's `SqliteConnection` run on blocking threads.
pub type AsyncSqliteConnection = SyncConnectionWrapper<SqliteConnection>;

/// SQLite through diesel-async's `SyncConnectionWrapper`, with the library bundled.
#[derive(Debug, Clone, Copy)]
pub struct SqliteDialect;

impl crate::dialect::sealed::Sealed for SqliteDialect {}

/// Where to open the database and how to set up each connection.
#[derive(Debug)]
pub struct SqliteOptions {
    target: String,
    setup: String,
}

impl Dialect for SqliteDialect {
    type Backend = Sqlite;
    type Connection = AsyncSqliteConnection;
    type Options = SqliteOptions;
    const KIND: DatabaseKind = DatabaseKind::Sqlite;
    // SQLite values come by storage class (integer, real, text, blob).
    const READS_DECLARED_TYPES: bool = false;

    fn options(url: &DatabaseUrl, _config: &PoolConfiguration) -> Result<SqliteOptions> {
        let target = match (url.sqlite_path(), url.param("mode")) {
            (None, _) => ":memory:".to_owned(),
            // A file is created when missing unless the URL chose a mode (`?mode=ro`).
            (Some(path), None) => path.to_owned(),
            (Some(path), Some(mode)) => format!("file:{path}?mode={mode}"),
        };
        if target.is_empty() {
            return Err(Error::config("DATABASE_URL", "the SQLite URL names no file"));
        }
        let journal = if url.is_memory() { "" } else { "PRAGMA journal_mode = WAL; " };
        // The busy timeout first: switching the journal mode takes a lock, and without the
        // timeout a connection opened while another one writes fails at once with
        // "database is locked" instead of waiting its turn.
        let setup = format!(
            "PRAGMA busy_timeout = {}; {journal}PRAGMA foreign_keys = ON;",
            SQLITE_BUSY_TIMEOUT.as_millis()
        );
        Ok(SqliteOptions { target, setup })
    }

    async fn connect(options: &SqliteOptions) -> Result<AsyncSqliteConnection, DriverError> {
        let mut connection =
            AsyncSqliteConnection::establish(&options.target).await.map_err(read_connect)?;
        connection
            .batch_execute(&options.setup)
            .await
            .map_err(|e| DriverError::Other(e.to_string()))?;
        Ok(connection)
    }

    neutral_statements!(AsyncSqliteConnection);
    not_shared!();

    async fn begin(
        connection: &mut AsyncSqliteConnection,
        mode: ConnectionMode,
    ) -> QueryResult<()> {
        // SQLite's own BEGIN for the mode (IMMEDIATE for writers), through diesel's
        // transaction manager so the DSL agrees on the connection's state.
        let begin = DatabaseKind::Sqlite.begin_statement(mode);
        connection
            .spawn_blocking(|c| {
                diesel::connection::AnsiTransactionManager::begin_transaction_sql(c, begin)
            })
            .await
    }

    async fn begin_with(
        connection: &mut AsyncSqliteConnection,
        statement: &str,
    ) -> QueryResult<()> {
        let statement = statement.to_owned();
        connection
            .spawn_blocking(move |c| {
                diesel::connection::AnsiTransactionManager::begin_transaction_sql(c, &statement)
            })
            .await
    }

    const UNKNOWN_ERRORS: &'static [(&'static str, ErrorKind)] = &[
        // SQLITE_BUSY, SQLITE_LOCKED: another connection holds the lock; re-running
        // the transaction is the remedy, like a serialization failure.
        ("database is locked", ErrorKind::SerializationFailure),
        ("database table is locked", ErrorKind::SerializationFailure),
        // SQLITE_READONLY, which `PRAGMA query_only` raises for writes.
        ("readonly database", ErrorKind::ReadOnlyViolation),
    ];
}

fn read_connect(error: ConnectionError) -> DriverError {
    match error {
        ConnectionError::InvalidConnectionUrl(message) => DriverError::Configuration(message),
        ConnectionError::CouldntSetupConfiguration(e) => DriverError::Other(e.to_string()),
        other => DriverError::Broken(other.to_string()),
    }
}

impl NeutralBackend for Sqlite {
    fn bind<'f>(
        query: BoxedSqlQuery<'f, Sqlite, SqlQuery>,
        value: &'f Value,
    ) -> Result<BoxedSqlQuery<'f, Sqlite, SqlQuery>, BoxError> {
        bind_value!(query, value, portable, timestamp => diesel::sql_types::Timestamp)
    }

    fn decode(value: SqliteValue<'_, '_, '_>) -> deserialize::Result<Value> {
        fn get<T: FromSql<ST, Sqlite>, ST>(
            value: SqliteValue<'_, '_, '_>,
        ) -> deserialize::Result<T> {
            T::from_sql(value)
        }
        // diesel exposes no declared column types, so values are read by storage class:
        // a BOOLEAN reads as an integer, a DATETIME as its text.
        Ok(match value.value_type() {
            Some(SqliteType::Text) => Value::Text(get::<String, sql_types::Text>(value)?),
            Some(SqliteType::Binary) => Value::Bytes(get::<Vec<u8>, sql_types::Binary>(value)?),
            Some(SqliteType::Double | SqliteType::Float) => {
                Value::Float(get::<f64, sql_types::Double>(value)?)
            }
            Some(SqliteType::Long | SqliteType::Integer | SqliteType::SmallInt) => {
                Value::Int(get::<i64, sql_types::BigInt>(value)?)
            }
            None => return Err(unsupported("unknown")),
        })
    }
}
