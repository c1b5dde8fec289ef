//! Neutral `Value`s bound as diesel parameters and diesel rows read back as neutral `Row`s, by the type each value carries.

use std::sync::Arc;

use diesel::backend::Backend;
use diesel::deserialize::{self, QueryableByName};
use diesel::query_builder::{BoxedSqlQuery, SqlQuery};
use diesel::row::{Field, NamedRow};
use ucm_kernel::{Row, Value};

/// A diesel backend whose values ucm can bind and read without knowing the query's types.
pub trait NeutralBackend: Backend + Sized {
    /// Binds one parameter by its native SQL type; never by interpolation into the SQL.
    ///
    /// # Errors
    /// For a kind of value this backend does not know how to bind.
    fn bind<'f>(
        query: BoxedSqlQuery<'f, Self, SqlQuery>,
        value: &'f Value,
    ) -> Result<BoxedSqlQuery<'f, Self, SqlQuery>, BoxError>;

    /// Reads one non-NULL value by the type the driver reports for it.
    ///
    /// # Errors
    /// A decode error naming the type, with a hint to cast types without a neutral value.
    fn decode(value: Self::RawValue<'_>) -> deserialize::Result<Value>;
}

/// An error from binding or decoding one value.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// `sql` with every parameter bound, ready to run on any diesel-async connection.
///
/// # Errors
/// `SerializationError` for a value the backend cannot bind.
pub(crate) fn bind_all<'f, DB: NeutralBackend>(
    sql: &str,
    params: &'f [Value],
) -> diesel::QueryResult<BoxedSqlQuery<'f, DB, SqlQuery>> {
    params
        .iter()
        .try_fold(diesel::sql_query(sql).into_boxed(), DB::bind)
        .map_err(diesel::result::Error::SerializationError)
}

/// A neutral statement diesel keeps prepared on its connection, keyed by its SQL text and
/// its parameters' types: diesel marks every `sql_query` unsafe to cache, so each run
/// costs a prepare round trip, and on a connection shared by many tasks the prepare holds
/// diesel-async's statement cache locked, which serializes them. Behind a transaction
/// pooler the connection's statement cache is off (`DieselConnector::connect`), so nothing
/// is kept there; [`KeptStatements`] bounds how many are kept per connection.
#[derive(Debug)]
pub(crate) struct KeptPrepared<Q>(pub(crate) Q);

impl<Q: diesel::query_builder::Query> diesel::query_builder::Query for KeptPrepared<Q> {
    type SqlType = Q::SqlType;
}

impl<Q> diesel::query_builder::QueryId for KeptPrepared<Q> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<DB: Backend, Q: diesel::query_builder::QueryFragment<DB>>
    diesel::query_builder::QueryFragment<DB> for KeptPrepared<Q>
{
    fn walk_ast<'b>(
        &'b self,
        pass: diesel::query_builder::AstPass<'_, 'b, DB>,
    ) -> diesel::QueryResult<()> {
        self.0.walk_ast(pass)
    }

    fn is_safe_to_cache_prepared(&self, _backend: &DB) -> diesel::QueryResult<bool> {
        Ok(true)
    }
}

/// How many distinct neutral statements ucm-diesel keeps prepared on one connection, on
/// the pooled path and the pipelined lane alike (sqlx's default statement cache holds as
/// many): past that, a new text runs prepared and
/// closed again, so SQL built with literals in it cannot grow a server session without
/// bound.
pub const KEPT_STATEMENTS: usize = 100;

/// The neutral statements one connection keeps prepared ([`KeptPrepared`]), by a hash of
/// their text; it travels with the connection when the pipelined lane shares it.
#[derive(Debug, Default)]
pub(crate) struct KeptStatements {
    hashes: std::sync::Mutex<std::collections::HashSet<u64>>,
    /// A kept statement was refused because a table changed under it ([`stale_plan`]):
    /// nothing is kept until the connection's statement cache is emptied.
    stale: std::sync::atomic::AtomicBool,
    /// Behind a transaction pooler: nothing is ever kept.
    disabled: std::sync::atomic::AtomicBool,
}

impl KeptStatements {
    /// Whether `sql` is (now) kept prepared: it already was, or there is room for it (and
    /// the kept statements are not stale).
    pub(crate) fn admit(&self, sql: &str) -> bool {
        if self.is_stale() || self.is_disabled() {
            return false;
        }
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        // One fixed hasher for every thread, so a text has one hash wherever it runs.
        let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(sql);
        let mut hashes = self.hashes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        hashes.contains(&hash) || (hashes.len() < KEPT_STATEMENTS && hashes.insert(hash))
    }
}

impl KeptStatements {
    /// Whether the kept statements wait for the connection's statement cache to be emptied.
    pub(crate) fn is_stale(&self) -> bool {
        self.stale.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether nothing is ever kept (a connection behind a transaction pooler).
    pub(crate) fn is_disabled(&self) -> bool {
        self.disabled.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Keeps nothing from now on.
    pub(crate) fn disable(&self) {
        self.disabled.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Marks the kept statements stale: nothing is kept until [`Self::forget`].
    pub(crate) fn mark_stale(&self) {
        self.stale.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Forgets every kept statement (once the connection's statement cache is emptied).
    pub(crate) fn forget(&self) {
        self.hashes.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
        self.stale.store(false, std::sync::atomic::Ordering::Relaxed);
    }
}

/// PostgreSQL's refusal to run a kept statement whose result columns changed since it was
/// prepared (a table altered under it); the server checks this before running anything, so
/// the statement did not run and may be sent again, unkept.
pub(crate) fn stale_plan(error: &diesel::result::Error) -> bool {
    matches!(error, diesel::result::Error::DatabaseError(_, info)
        if info.message().contains("cached plan must not change result type"))
}

/// One result row as diesel hands it over: its column names and neutral values.
#[derive(Debug)]
pub struct NeutralRow {
    columns: Vec<String>,
    values: Vec<Value>,
}

impl<DB: NeutralBackend> QueryableByName<DB> for NeutralRow {
    fn build<'a>(row: &impl NamedRow<'a, DB>) -> deserialize::Result<Self> {
        let count = row.field_count();
        let mut columns = Vec::with_capacity(count);
        let mut values = Vec::with_capacity(count);
        for index in 0..count {
            let field = diesel::row::Row::get(row, index).ok_or("the row ended early")?;
            let name = field.field_name().unwrap_or("?column?").to_owned();
            let value = match field.value() {
                None => Value::Null,
                Some(raw) => DB::decode(raw).map_err(|e| format!("column {name:?}: {e}"))?,
            };
            columns.push(name);
            values.push(value);
        }
        Ok(Self { columns, values })
    }
}

/// Neutral rows sharing one column list.
pub(crate) fn rows(loaded: Vec<NeutralRow>) -> ucm_kernel::Result<Vec<Row>> {
    let Some(first) = loaded.first() else { return Ok(Vec::new()) };
    let columns: Arc<[String]> = first.columns.iter().cloned().collect();
    loaded.into_iter().map(|row| Row::new(Arc::clone(&columns), row.values)).collect()
}

/// The error for a value whose type has no neutral mapping.
pub(crate) fn unsupported(type_name: impl std::fmt::Display) -> BoxError {
    format!(
        "type {type_name} has no neutral value; cast it in SQL (e.g. col::text, CAST(col AS CHAR))"
    )
    .into()
}

/// The body of `NeutralBackend::bind`: the arms every database shares, with the ones that
/// differ given by the caller. The `portable` form is for databases without native
/// time-zone, UUID and JSON types (MySQL, SQLite): instants go in as their UTC time (every
/// session runs in UTC), UUIDs as their 16 bytes, documents as text.
macro_rules! bind_value {
    ($query:ident, $value:expr, portable, timestamp => $timestamp:ty) => {
        $crate::convert::bind_value!($query, $value, {
            null => $query.bind::<diesel::sql_types::Nullable<diesel::sql_types::Text>, _>(None::<&str>),
            timestamp => $timestamp,
            timestamptz(v) => $query.bind::<$timestamp, _>(v.naive_utc()),
            uuid(v) => $query.bind::<diesel::sql_types::Binary, _>(v.as_bytes().as_slice()),
            json(v) => $query.bind::<diesel::sql_types::Text, _>(v.to_string()),
        })
    };
    ($query:ident, $value:expr, {
        null => $null:expr,
        timestamp => $timestamp:ty,
        timestamptz($tz:ident) => $timestamptz:expr,
        uuid($uuid:ident) => $uuid_bind:expr,
        json($json:ident) => $json_bind:expr $(,)?
    }) => {{
        use diesel::sql_types as t;
        use ucm_kernel::Value;
        Ok(match $value {
            Value::Null => $null,
            Value::Bool(v) => $query.bind::<t::Bool, _>(v),
            Value::Int(v) => $query.bind::<t::BigInt, _>(v),
            Value::Float(v) => $query.bind::<t::Double, _>(v),
            Value::Text(v) => $query.bind::<t::Text, _>(v.as_str()),
            Value::Bytes(v) => $query.bind::<t::Binary, _>(v.as_slice()),
            Value::Timestamp(v) => $query.bind::<$timestamp, _>(v),
            Value::TimestampTz($tz) => $timestamptz,
            Value::Date(v) => $query.bind::<t::Date, _>(v),
            Value::Time(v) => $query.bind::<t::Time, _>(v),
            Value::Uuid($uuid) => $uuid_bind,
            Value::Json($json) => $json_bind,
            other => return Err($crate::convert::unsupported(other.type_name())),
        })
    }};
}
pub(crate) use bind_value;

/// Implements `Dialect::execute` and `Dialect::load` for a concrete connection: diesel's
/// query bounds are per concrete connection type, so they are stated once here.
macro_rules! neutral_statements {
    ($connection:ty) => {
        async fn execute(
            connection: &mut $connection,
            sql: &str,
            params: &[ucm_kernel::Value],
            keep: bool,
        ) -> diesel::QueryResult<usize> {
            let query = $crate::convert::bind_all::<<Self as $crate::dialect::Dialect>::Backend>(
                sql, params,
            )?;
            if keep {
                let query = $crate::convert::KeptPrepared(query);
                diesel_async::RunQueryDsl::execute(query, connection).await
            } else {
                diesel_async::RunQueryDsl::execute(query, connection).await
            }
        }

        async fn load(
            connection: &mut $connection,
            sql: &str,
            params: &[ucm_kernel::Value],
            keep: bool,
        ) -> diesel::QueryResult<Vec<$crate::convert::NeutralRow>> {
            let query = $crate::convert::bind_all::<<Self as $crate::dialect::Dialect>::Backend>(
                sql, params,
            )?;
            if keep {
                let query = $crate::convert::KeptPrepared(query);
                diesel_async::RunQueryDsl::load(query, connection).await
            } else {
                diesel_async::RunQueryDsl::load(query, connection).await
            }
        }
    };
}
pub(crate) use neutral_statements;

/// Implements the `Dialect` sharing items for a driver that cannot pipeline: the
/// connection is never shared, and the pipelined lane falls back to the pooled path.
macro_rules! not_shared {
    () => {
        type Shared = std::convert::Infallible;

        fn into_shared(connection: Self::Connection) -> Result<Self::Shared, Self::Connection> {
            Err(connection)
        }

        fn from_shared(shared: Self::Shared) -> Self::Connection {
            match shared {}
        }

        async fn execute_shared(
            shared: &Self::Shared,
            _: &str,
            _: &[ucm_kernel::Value],
            _: bool,
        ) -> diesel::QueryResult<usize> {
            match *shared {}
        }

        async fn load_shared(
            shared: &Self::Shared,
            _: &str,
            _: &[ucm_kernel::Value],
            _: bool,
        ) -> diesel::QueryResult<Vec<$crate::convert::NeutralRow>> {
            match *shared {}
        }
    };
}
pub(crate) use not_shared;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_statements_stop_at_their_bound_and_keep_the_first() {
        let kept = KeptStatements::default();
        for n in 0..KEPT_STATEMENTS {
            assert!(kept.admit(&format!("SELECT {n}")), "statement {n} fits");
        }
        assert!(!kept.admit("SELECT 'one too many'"), "past the bound nothing new is kept");
        assert!(kept.admit("SELECT 0"), "a kept statement stays kept");
        assert!(!kept.admit("SELECT 'one too many'"), "and the refused one stays refused");
    }
}
