//! What a server says of its place in replication: `ReplicationStatus`, and `replication_status`, a backend connector's answer to the health loop written once over the neutral SQL surface.

use std::time::Duration;

use super::{BackendConnector, DriverError, Phase};
use crate::error::{Error, Result};
use crate::value::{Row, Value};

/// Runs the database's [`replication_query`](crate::DatabaseKind::replication_query) on
/// `connection` and reads its row; `Ok(None)` for a database without replication (SQLite).
/// Every backend's [`Connector::replication_status`](crate::backend::Connector::replication_status)
/// is this call.
///
/// # Errors
/// The query's error, mapped and scrubbed as any statement's; `Other` when the row is not
/// what the query returns.
pub async fn replication_status<C: BackendConnector>(
    connector: &C,
    connection: &mut C::Connection,
) -> Result<Option<ReplicationStatus>> {
    let Some(sql) = connector.url().kind().replication_query() else { return Ok(None) };
    let read = |e: DriverError| e.into_error(connector.url(), Phase::Statement);
    // Behind a transaction pooler, the query's round trips must share one server
    // connection: a transaction of its own keeps them together.
    let pooled = connector.transaction_pooled();
    if pooled {
        C::begin_with(connection, "BEGIN READ ONLY").await.map_err(read)?;
    }
    let rows = C::fetch_all(connection, sql, &[]).await.map_err(read);
    if pooled {
        let end =
            if rows.is_ok() { C::commit(connection).await } else { C::rollback(connection).await };
        end.map_err(read)?;
    }
    ReplicationStatus::from_row(rows?.first()).map(Some)
}

/// Where one server stands in replication, as its probe read it.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct ReplicationStatus {
    /// The server is a standby (PostgreSQL: `pg_is_in_recovery()`; MySQL: `read_only`):
    /// it refuses writes and follows a primary.
    pub in_recovery: bool,
    /// How far its replay is behind what it received, when it is a standby that reports it.
    pub lag: Option<Duration>,
    /// Its position in the WAL, in bytes: a primary's write position, a standby's replay
    /// position (PostgreSQL); the health loop compares the two from one round to see a
    /// standby whose replay stopped (a stopped WAL receiver reports no lag).
    pub position: Option<u64>,
}

impl ReplicationStatus {
    /// Reads the row of [`DatabaseKind::replication_query`](crate::DatabaseKind::replication_query):
    /// a boolean (or 0/1) `in_recovery`, a number of seconds (or NULL) `lag_seconds`, and
    /// optionally a WAL position in bytes (or NULL) `wal_position`.
    ///
    /// # Errors
    /// `Other` when the row is missing or its columns are not of those types.
    pub fn from_row(row: Option<&Row>) -> Result<Self> {
        let row = row.ok_or_else(|| Error::other("the replication query returned no row"))?;
        let in_recovery: bool = row.try_get("in_recovery")?;
        let lag = match row.get("lag_seconds") {
            None | Some(Value::Null) => None,
            Some(_) => {
                let seconds: f64 = row.try_get("lag_seconds")?;
                Some(Duration::try_from_secs_f64(seconds.max(0.0)).unwrap_or(Duration::MAX))
            }
        };
        let position = match row.get("wal_position") {
            None | Some(Value::Null) => None,
            Some(_) => {
                let bytes: f64 = row.try_get("wal_position")?;
                // Positions are whole, non-negative byte counts far below 2^53.
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                Some(bytes.max(0.0) as u64)
            }
        };
        Ok(Self { in_recovery, lag, position })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(values: Vec<Value>) -> Row {
        Row::new(vec!["in_recovery".to_owned(), "lag_seconds".to_owned()].into(), values).unwrap()
    }

    #[test]
    fn reads_every_shape_the_databases_answer_with() {
        let table = [
            (vec![Value::Bool(false), Value::Null], false, None),
            (vec![Value::Bool(true), Value::Float(0.0)], true, Some(Duration::ZERO)),
            (vec![Value::Bool(true), Value::Float(2.5)], true, Some(Duration::from_millis(2500))),
            // MySQL's @@read_only is an integer.
            (vec![Value::Int(1), Value::Null], true, None),
            (vec![Value::Int(0), Value::Null], false, None),
            // A clock step on the standby must not read as negative lag.
            (vec![Value::Bool(true), Value::Float(-0.3)], true, Some(Duration::ZERO)),
        ];
        for (values, in_recovery, lag) in table {
            let status = ReplicationStatus::from_row(Some(&row(values.clone()))).unwrap();
            assert_eq!(
                status,
                ReplicationStatus { in_recovery, lag, position: None },
                "{values:?}"
            );
        }
        let with_position = Row::new(
            vec!["in_recovery".to_owned(), "lag_seconds".to_owned(), "wal_position".to_owned()]
                .into(),
            vec![Value::Bool(true), Value::Float(0.0), Value::Float(50_331_648.0)],
        )
        .unwrap();
        let status = ReplicationStatus::from_row(Some(&with_position)).unwrap();
        assert_eq!(status.position, Some(50_331_648));
        assert!(ReplicationStatus::from_row(None).is_err());
        let wrong = row(vec![Value::Text("yes".into()), Value::Null]);
        assert!(ReplicationStatus::from_row(Some(&wrong)).is_err());
    }
}
