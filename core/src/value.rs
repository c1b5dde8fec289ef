//! Backend-neutral SQL values and rows, so compat, the CLI and tests need no driver types.

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use uuid::Uuid;

use crate::error::{Error, Result};

/// One SQL value, as a parameter or as a column of a fetched [`Row`].
///
/// Backends bind each variant as the matching native type (never by string
/// interpolation) and decode columns into the closest variant by column type. Exact
/// decimals (`NUMERIC`, `DECIMAL`) come back as their exact `Text`; other types with no
/// variant of their own (intervals, enums, arrays...) come back as `Text` when the driver
/// can render them, else the read fails with a hint to cast the column.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum Value {
    /// SQL NULL.
    Null,
    /// A boolean.
    Bool(bool),
    /// Any integer column (smallint, int, bigint), widened to 64 bits.
    Int(i64),
    /// Any floating-point column (real, double precision).
    Float(f64),
    /// Text (char, varchar, text; and types without a variant of their own).
    Text(String),
    /// Binary data (bytea, blob).
    Bytes(Vec<u8>),
    /// A timestamp without time zone.
    Timestamp(NaiveDateTime),
    /// A timestamp with time zone, in UTC (every ucm session runs in UTC).
    TimestampTz(DateTime<Utc>),
    /// A calendar date.
    Date(NaiveDate),
    /// A time of day.
    Time(NaiveTime),
    /// A UUID.
    Uuid(Uuid),
    /// A JSON document (json, jsonb).
    Json(serde_json::Value),
}

/// A fetched row: column names shared by every row of a result, and one value per column.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    columns: Arc<[String]>,
    values: Vec<Value>,
}

impl Value {
    /// The variant's SQL-ish type name, used in conversion errors.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Null => "null",
            Self::Bool(_) => "bool",
            Self::Int(_) => "integer",
            Self::Float(_) => "float",
            Self::Text(_) => "text",
            Self::Bytes(_) => "bytes",
            Self::Timestamp(_) => "timestamp",
            Self::TimestampTz(_) => "timestamptz",
            Self::Date(_) => "date",
            Self::Time(_) => "time",
            Self::Uuid(_) => "uuid",
            Self::Json(_) => "json",
        }
    }

    /// Whether this is SQL NULL.
    pub fn is_null(&self) -> bool {
        matches!(self, Self::Null)
    }
}

impl fmt::Display for Value {
    /// Human-readable rendering for CLI output; bytes are shown as hex, NULL as `NULL`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Null => f.write_str("NULL"),
            Self::Bool(v) => write!(f, "{v}"),
            Self::Int(v) => write!(f, "{v}"),
            Self::Float(v) => write!(f, "{v}"),
            Self::Text(v) => f.write_str(v),
            Self::Bytes(v) => {
                f.write_str("\\x")?;
                v.iter().try_for_each(|b| write!(f, "{b:02x}"))
            }
            Self::Timestamp(v) => write!(f, "{v}"),
            Self::TimestampTz(v) => write!(f, "{v}"),
            Self::Date(v) => write!(f, "{v}"),
            Self::Time(v) => write!(f, "{v}"),
            Self::Uuid(v) => write!(f, "{v}"),
            Self::Json(v) => write!(f, "{v}"),
        }
    }
}

impl Row {
    /// A row with the given columns and values (backends build rows with this).
    ///
    /// # Errors
    /// `Other` when the number of values differs from the number of columns.
    pub fn new(columns: Arc<[String]>, values: Vec<Value>) -> Result<Self> {
        if columns.len() != values.len() {
            return Err(Error::other(format!(
                "row has {} values for {} columns",
                values.len(),
                columns.len()
            )));
        }
        Ok(Self { columns, values })
    }

    /// The column names, in select order.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// The values, in select order.
    pub fn values(&self) -> &[Value] {
        &self.values
    }

    /// The number of columns.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether the row has no columns.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The value of the column named `name` (the first, if several share the name).
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.columns.iter().position(|c| c == name).map(|i| &self.values[i])
    }

    /// The value of column `name` converted to `T`.
    ///
    /// # Errors
    /// `Query` when there is no such column or the value does not convert.
    pub fn try_get<T: FromValue>(&self, name: &str) -> Result<T> {
        let value = self.get(name).ok_or_else(|| {
            Error::database(
                crate::ErrorKind::Query,
                "row",
                None,
                format!("no column {name:?}; the row has {}", self.columns.join(", ")),
            )
        })?;
        T::from_value(value).map_err(|e| e.in_column(name))
    }

    /// Takes the values out of the row.
    pub fn into_values(self) -> Vec<Value> {
        self.values
    }
}

/// Conversion from a [`Value`] to a Rust type, for [`Row::try_get`].
pub trait FromValue: Sized {
    /// Converts, or says why not.
    ///
    /// # Errors
    /// A [`ConversionError`] naming both types.
    fn from_value(value: &Value) -> Result<Self, ConversionError>;
}

/// A value that does not convert to the requested type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversionError {
    from: &'static str,
    to: &'static str,
}

impl ConversionError {
    fn in_column(self, column: &str) -> Error {
        Error::database(
            crate::ErrorKind::Query,
            "row",
            None,
            format!("column {column:?} holds {}, which does not convert to {}", self.from, self.to),
        )
    }
}

macro_rules! from_value {
    ($ty:ty, $name:literal, $($pat:pat => $out:expr),+) => {
        impl FromValue for $ty {
            fn from_value(value: &Value) -> Result<Self, ConversionError> {
                match value {
                    $($pat => $out,)+
                    other => Err(ConversionError { from: other.type_name(), to: $name }),
                }
            }
        }
    };
}

from_value!(bool, "bool", Value::Bool(v) => Ok(*v), Value::Int(v) => Ok(*v != 0));
// Exact decimals come as their text (PostgreSQL's `sum(bigint)` is a NUMERIC): a whole
// number among them reads as an integer, anything else is refused, never rounded.
from_value!(i64, "i64",
    Value::Int(v) => Ok(*v),
    Value::Text(v) => v.parse().map_err(|_| ConversionError { from: "text that is not a whole number", to: "i64" }));
from_value!(i32, "i32", Value::Int(v) => i32::try_from(*v).map_err(|_| ConversionError { from: "integer out of i32 range", to: "i32" }));
from_value!(f64, "f64", Value::Float(v) => Ok(*v), Value::Int(v) => Ok(*v as f64));
// MySQL marks text with a binary collation (and MariaDB's JSON) as binary, so UTF-8
// bytes read as text.
from_value!(String, "String", Value::Text(v) => Ok(v.clone()), Value::Bytes(v) => String::from_utf8(v.clone()).map_err(|_| ConversionError { from: "bytes that are not UTF-8", to: "String" }));
from_value!(Vec<u8>, "Vec<u8>", Value::Bytes(v) => Ok(v.clone()));
// Databases without date and time types (SQLite) store them as text in ISO 8601 form; a
// backend that reads values by storage class hands that text over, and it parses back.
from_value!(NaiveDateTime, "NaiveDateTime",
    Value::Timestamp(v) => Ok(*v),
    Value::TimestampTz(v) => Ok(v.naive_utc()),
    Value::Text(v) => parse_timestamp(v).map(|t| t.naive_utc()).ok_or(ConversionError { from: "text that is not a timestamp", to: "NaiveDateTime" }));
from_value!(DateTime<Utc>, "DateTime<Utc>",
    Value::TimestampTz(v) => Ok(*v),
    Value::Timestamp(v) => Ok(v.and_utc()),
    Value::Text(v) => parse_timestamp(v).ok_or(ConversionError { from: "text that is not a timestamp", to: "DateTime<Utc>" }));
from_value!(NaiveDate, "NaiveDate",
    Value::Date(v) => Ok(*v),
    Value::Text(v) => NaiveDate::parse_from_str(v, "%Y-%m-%d").map_err(|_| ConversionError { from: "text that is not a date", to: "NaiveDate" }));
from_value!(NaiveTime, "NaiveTime",
    Value::Time(v) => Ok(*v),
    Value::Text(v) => NaiveTime::parse_from_str(v, "%H:%M:%S%.f").map_err(|_| ConversionError { from: "text that is not a time", to: "NaiveTime" }));
// Databases without a UUID type store it as 16 bytes (or as its text).
from_value!(Uuid, "Uuid",
    Value::Uuid(v) => Ok(*v),
    Value::Bytes(v) => Uuid::from_slice(v).map_err(|_| ConversionError { from: "bytes that are not 16 long", to: "Uuid" }),
    Value::Text(v) => Uuid::parse_str(v).map_err(|_| ConversionError { from: "text that is not a UUID", to: "Uuid" }));
// Databases without a JSON type store documents as text; they parse back.
from_value!(serde_json::Value, "serde_json::Value",
    Value::Json(v) => Ok(v.clone()),
    Value::Text(v) => serde_json::from_str(v).map_err(|_| ConversionError { from: "text that is not JSON", to: "serde_json::Value" }),
    Value::Bytes(v) => serde_json::from_slice(v).map_err(|_| ConversionError { from: "bytes that are not JSON", to: "serde_json::Value" }));

/// Reads an ISO 8601 timestamp as SQLite stores it: `2026-11-22 07:30:01.5`, with `T` or a
/// space, with or without an offset (no offset means UTC).
fn parse_timestamp(text: &str) -> Option<DateTime<Utc>> {
    if let Ok(with_offset) = DateTime::parse_from_rfc3339(text) {
        return Some(with_offset.with_timezone(&Utc));
    }
    if let Ok(with_offset) = DateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f%:z") {
        return Some(with_offset.with_timezone(&Utc));
    }
    ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"]
        .iter()
        .find_map(|format| NaiveDateTime::parse_from_str(text, format).ok())
        .map(|naive| naive.and_utc())
}

impl<T: FromValue> FromValue for Option<T> {
    fn from_value(value: &Value) -> Result<Self, ConversionError> {
        match value {
            Value::Null => Ok(None),
            other => T::from_value(other).map(Some),
        }
    }
}

macro_rules! into_value {
    ($($ty:ty => $variant:ident $(via $conv:expr)?),+ $(,)?) => {
        $(impl From<$ty> for Value {
            fn from(v: $ty) -> Self {
                Value::$variant($( $conv )?(v))
            }
        })+
    };
}

into_value!(
    bool => Bool,
    i64 => Int,
    i32 => Int via i64::from,
    i16 => Int via i64::from,
    f64 => Float,
    f32 => Float via f64::from,
    String => Text,
    Vec<u8> => Bytes,
    NaiveDateTime => Timestamp,
    DateTime<Utc> => TimestampTz,
    NaiveDate => Date,
    NaiveTime => Time,
    Uuid => Uuid,
    serde_json::Value => Json,
);

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_owned())
    }
}

impl From<&[u8]> for Value {
    fn from(v: &[u8]) -> Self {
        Value::Bytes(v.to_vec())
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> Row {
        let columns: Arc<[String]> = ["id", "name", "score", "note", "at"].map(String::from).into();
        let at = NaiveDate::from_ymd_opt(2026, 11, 22).unwrap().and_hms_opt(7, 0, 0).unwrap();
        Row::new(
            columns,
            vec![Value::Int(7), "ada".into(), Value::Float(0.5), Value::Null, at.into()],
        )
        .unwrap()
    }

    #[test]
    fn typed_access_by_name() {
        let r = row();
        assert_eq!(r.try_get::<i64>("id").unwrap(), 7);
        assert_eq!(r.try_get::<i32>("id").unwrap(), 7);
        assert_eq!(r.try_get::<String>("name").unwrap(), "ada");
        assert_eq!(r.try_get::<f64>("score").unwrap(), 0.5);
        assert_eq!(r.try_get::<Option<String>>("note").unwrap(), None);
        assert_eq!(
            r.try_get::<DateTime<Utc>>("at").unwrap().to_rfc3339(),
            "2026-11-22T07:00:00+00:00"
        );
    }

    #[test]
    fn conversion_errors_name_column_and_types() {
        let r = row();
        let err = r.try_get::<i64>("name").unwrap_err().to_string();
        assert!(
            err.contains(
                "\"name\" holds text that is not a whole number, which does not convert to i64"
            ),
            "{err}"
        );
        let err = r.try_get::<i64>("missing").unwrap_err().to_string();
        assert!(err.contains("no column \"missing\"") && err.contains("id, name"), "{err}");
        let big = Row::new(Arc::from(vec!["n".to_owned()]), vec![Value::Int(i64::MAX)]).unwrap();
        assert!(big.try_get::<i32>("n").is_err());
    }

    #[test]
    fn text_and_json_read_from_their_stand_ins() {
        let columns: Arc<[String]> = ["a", "b", "c"].map(String::from).into();
        let r = Row::new(
            columns,
            vec![Value::Bytes(b"{\"k\":1}".to_vec()), "[1]".into(), Value::Bytes(vec![0xff])],
        )
        .unwrap();
        assert_eq!(r.try_get::<String>("a").unwrap(), "{\"k\":1}");
        assert_eq!(r.try_get::<serde_json::Value>("a").unwrap(), serde_json::json!({"k": 1}));
        assert_eq!(r.try_get::<serde_json::Value>("b").unwrap(), serde_json::json!([1]));
        assert!(r.try_get::<String>("c").is_err());
    }

    #[test]
    fn rows_refuse_mismatched_lengths() {
        assert!(Row::new(Arc::from(vec!["a".to_owned()]), vec![]).is_err());
    }

    #[test]
    fn values_render_for_humans() {
        assert_eq!(Value::Bytes(vec![0xde, 0xad]).to_string(), "\\xdead");
        assert_eq!(Value::Null.to_string(), "NULL");
        assert_eq!(Value::from(Some(3_i32)), Value::Int(3));
        assert_eq!(Value::from(None::<i64>), Value::Null);
    }

    #[test]
    fn whole_decimals_read_as_integers() {
        assert_eq!(i64::from_value(&Value::Text("350".into())).unwrap(), 350);
        assert_eq!(i64::from_value(&Value::Text("-7".into())).unwrap(), -7);
        assert!(i64::from_value(&Value::Text("350.50".into())).is_err());
        assert!(i64::from_value(&Value::Text("ada".into())).is_err());
    }

    #[test]
    fn dates_stored_as_text_parse_back() {
        let ts =
            NaiveDate::from_ymd_opt(2026, 11, 22).unwrap().and_hms_micro_opt(7, 30, 1, 5).unwrap();
        for text in [
            "2026-11-22 07:30:01.000005",
            "2026-11-22T07:30:01.000005",
            "2026-11-22 07:30:01.000005+00:00",
            "2026-11-22T09:30:01.000005+02:00",
        ] {
            let value = Value::Text(text.into());
            assert_eq!(NaiveDateTime::from_value(&value).unwrap(), ts, "{text}");
            assert_eq!(DateTime::<Utc>::from_value(&value).unwrap(), ts.and_utc(), "{text}");
        }
        assert_eq!(NaiveDate::from_value(&Value::Text("2026-11-22".into())).unwrap(), ts.date());
        assert_eq!(
            NaiveTime::from_value(&Value::Text("07:30:01.000005".into())).unwrap(),
            ts.time()
        );
        assert!(NaiveDate::from_value(&Value::Text("yesterday".into())).is_err());
        let id = Uuid::from_u128(42);
        assert_eq!(Uuid::from_value(&Value::Bytes(id.as_bytes().to_vec())).unwrap(), id);
        assert_eq!(Uuid::from_value(&Value::Text(id.to_string())).unwrap(), id);
        assert!(Uuid::from_value(&Value::Bytes(vec![1, 2])).is_err());
    }
}
