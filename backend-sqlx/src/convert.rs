//! Neutral `Value`s to sqlx binds and sqlx rows to neutral `Row`s; one macro instantiated per database, so the logic exists once.

use std::sync::Arc;

use sqlx::Database;
use sqlx::query::Query;
use ucm_kernel::{BoxFuture, Row, Value};

use crate::dialect::Dialect;

/// Statements with neutral values for one dialect; implemented by the `neutral_values!` macro
/// for each database, because sqlx's executor and encode/decode bounds are per concrete
/// type and cannot be stated once for generic code.
pub trait NeutralValues: Dialect {
    /// Binds one parameter by its native type; never by interpolation into the SQL.
    fn bind<'q>(
        query: Query<'q, Self::Db, <Self::Db as Database>::Arguments>,
        value: &Value,
    ) -> Query<'q, Self::Db, <Self::Db as Database>::Arguments>;

    /// Runs a statement with bound parameters; returns the rows affected.
    fn execute<'c>(
        connection: &'c mut <Self::Db as Database>::Connection,
        sql: &'c str,
        params: &'c [Value],
    ) -> BoxFuture<'c, Result<u64, sqlx::Error>>;

    /// Runs a query with bound parameters; returns every row, decoded.
    fn fetch_all<'c>(
        connection: &'c mut <Self::Db as Database>::Connection,
        sql: &'c str,
        params: &'c [Value],
    ) -> BoxFuture<'c, Result<Vec<Row>, sqlx::Error>>;

    /// Runs a fixed statement without parameters (BEGIN, COMMIT, SET...), unprepared.
    fn raw<'c>(
        connection: &'c mut <Self::Db as Database>::Connection,
        sql: &'static str,
    ) -> BoxFuture<'c, Result<(), sqlx::Error>>;

    /// Decodes every row of a result into neutral rows sharing one column list.
    ///
    /// # Errors
    /// `sqlx::Error::ColumnDecode` naming the column, with a hint to cast types that
    /// have no neutral mapping.
    fn decode_rows(rows: &[<Self::Db as Database>::Row]) -> Result<Vec<Row>, sqlx::Error>;
}

/// The column names of a result, shared by all its rows.
pub(crate) fn column_names<R: sqlx::Row>(row: &R) -> Arc<[String]> {
    use sqlx::Column;
    row.columns().iter().map(|c| c.name().to_owned()).collect()
}

/// Reads an exact decimal as its text, without trailing-zero noise beyond the scale.
pub(crate) fn decimal_text<R>(row: &R, index: usize) -> Result<String, sqlx::Error>
where
    R: sqlx::Row,
    sqlx::types::BigDecimal: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    usize: sqlx::ColumnIndex<R>,
{
    Ok(row.try_get::<sqlx::types::BigDecimal, _>(index)?.to_string())
}

/// The error for a column whose type has no neutral mapping.
pub(crate) fn unsupported(index: usize, type_name: &str) -> sqlx::Error {
    sqlx::Error::ColumnDecode {
        index: index.to_string(),
        source: format!(
            "column type {type_name} has no neutral value; cast it in SQL (e.g. col::text, CAST(col AS CHAR))"
        )
        .into(),
    }
}

/// Implements [`NeutralValues`] for `$dialect` over `$db`. `$type_name` is an expression
/// of `row` and `index` giving the type name to map with `Dialect::column_kind`.
macro_rules! neutral_values {
    ($dialect:ty, $db:ty, |$row:ident, $index:ident| $type_name:expr) => {
        impl $crate::convert::NeutralValues for $dialect {
            fn bind<'q>(
                query: sqlx::query::Query<'q, $db, <$db as sqlx::Database>::Arguments>,
                value: &ucm_kernel::Value,
            ) -> sqlx::query::Query<'q, $db, <$db as sqlx::Database>::Arguments> {
                use ucm_kernel::Value;
                match value {
                    Value::Null => <$dialect as $crate::dialect::Dialect>::bind_null(query),
                    Value::Bool(v) => query.bind(*v),
                    Value::Int(v) => query.bind(*v),
                    Value::Float(v) => query.bind(*v),
                    Value::Text(v) => query.bind(v.as_str()),
                    Value::Bytes(v) => query.bind(v.as_slice()),
                    Value::Timestamp(v) => query.bind(*v),
                    Value::TimestampTz(v) => query.bind(*v),
                    Value::Date(v) => query.bind(*v),
                    Value::Time(v) => query.bind(*v),
                    Value::Uuid(v) => query.bind(*v),
                    Value::Json(v) => query.bind(sqlx::types::Json(v)),
                    // `Value` is non-exhaustive; a variant added later is bound as its text.
                    other => query.bind(other.to_string()),
                }
            }

            fn execute<'c>(
                connection: &'c mut <$db as sqlx::Database>::Connection,
                sql: &'c str,
                params: &'c [ucm_kernel::Value],
            ) -> ucm_kernel::BoxFuture<'c, Result<u64, sqlx::Error>> {
                Box::pin(async move {
                    let query = $crate::convert::bind_all::<$dialect>(
                        sqlx::query(sqlx::AssertSqlSafe(sql)),
                        params,
                    );
                    Ok(query.execute(connection).await?.rows_affected())
                })
            }

            fn fetch_all<'c>(
                connection: &'c mut <$db as sqlx::Database>::Connection,
                sql: &'c str,
                params: &'c [ucm_kernel::Value],
            ) -> ucm_kernel::BoxFuture<'c, Result<Vec<ucm_kernel::Row>, sqlx::Error>> {
                Box::pin(async move {
                    let query = $crate::convert::bind_all::<$dialect>(
                        sqlx::query(sqlx::AssertSqlSafe(sql)),
                        params,
                    );
                    let rows = query.fetch_all(connection).await?;
                    Self::decode_rows(&rows)
                })
            }

            fn raw<'c>(
                connection: &'c mut <$db as sqlx::Database>::Connection,
                sql: &'static str,
            ) -> ucm_kernel::BoxFuture<'c, Result<(), sqlx::Error>> {
                Box::pin(async move {
                    use sqlx::Executor as _;
                    connection.execute(sqlx::raw_sql(sql)).await.map(|_| ())
                })
            }

            fn decode_rows(
                rows: &[<$db as sqlx::Database>::Row],
            ) -> Result<Vec<ucm_kernel::Row>, sqlx::Error> {
                use sqlx::{Row as _, ValueRef as _};
                use $crate::dialect::{ColumnKind, Dialect};
                let Some(first) = rows.first() else { return Ok(Vec::new()) };
                let columns = $crate::convert::column_names(first);
                let mut out = Vec::with_capacity(rows.len());
                for $row in rows {
                    let mut values = Vec::with_capacity(columns.len());
                    for $index in 0..columns.len() {
                        if $row.try_get_raw($index)?.is_null() {
                            values.push(ucm_kernel::Value::Null);
                            continue;
                        }
                        let type_name: String = $type_name;
                        let value = match <$dialect as Dialect>::column_kind(&type_name) {
                            ColumnKind::Bool => ucm_kernel::Value::Bool($row.try_get($index)?),
                            ColumnKind::Int8 => {
                                ucm_kernel::Value::Int($row.try_get::<i8, _>($index)?.into())
                            }
                            ColumnKind::Int16 => {
                                ucm_kernel::Value::Int($row.try_get::<i16, _>($index)?.into())
                            }
                            ColumnKind::Int32 => {
                                ucm_kernel::Value::Int($row.try_get::<i32, _>($index)?.into())
                            }
                            ColumnKind::Int64 => {
                                ucm_kernel::Value::Int($row.try_get::<i64, _>($index)?)
                            }
                            ColumnKind::Decimal => ucm_kernel::Value::Text(
                                <$dialect as Dialect>::decode_decimal($row, $index)?,
                            ),
                            ColumnKind::UnsignedInt => ucm_kernel::Value::Int(
                                <$dialect as Dialect>::decode_unsigned($row, $index)?,
                            ),
                            ColumnKind::Float32 => {
                                ucm_kernel::Value::Float($row.try_get::<f32, _>($index)?.into())
                            }
                            ColumnKind::Float64 => {
                                ucm_kernel::Value::Float($row.try_get::<f64, _>($index)?)
                            }
                            ColumnKind::Text => ucm_kernel::Value::Text($row.try_get($index)?),
                            ColumnKind::Bytes => ucm_kernel::Value::Bytes($row.try_get($index)?),
                            ColumnKind::Timestamp => {
                                ucm_kernel::Value::Timestamp($row.try_get($index)?)
                            }
                            ColumnKind::TimestampTz => {
                                ucm_kernel::Value::TimestampTz($row.try_get($index)?)
                            }
                            ColumnKind::Date => ucm_kernel::Value::Date($row.try_get($index)?),
                            ColumnKind::Time => ucm_kernel::Value::Time($row.try_get($index)?),
                            ColumnKind::Uuid => ucm_kernel::Value::Uuid($row.try_get($index)?),
                            ColumnKind::Json => {
                                let sqlx::types::Json(v) = $row.try_get($index)?;
                                ucm_kernel::Value::Json(v)
                            }
                            ColumnKind::Other => match $row.try_get::<String, _>($index) {
                                Ok(text) => ucm_kernel::Value::Text(text),
                                Err(_) => {
                                    return Err($crate::convert::unsupported($index, &type_name));
                                }
                            },
                        };
                        values.push(value);
                    }
                    out.push(
                        ucm_kernel::Row::new(std::sync::Arc::clone(&columns), values)
                            .map_err(|e| sqlx::Error::Protocol(e.to_string()))?,
                    );
                }
                Ok(out)
            }
        }
    };
}

pub(crate) use neutral_values;

/// Binds every parameter in order.
pub(crate) fn bind_all<'q, D: NeutralValues>(
    mut query: Query<'q, D::Db, <D::Db as Database>::Arguments>,
    params: &[Value],
) -> Query<'q, D::Db, <D::Db as Database>::Arguments> {
    for value in params {
        query = D::bind(query, value);
    }
    query
}
