//! `replication_status`: a backend connector's answer to the health loop (standby or not, replay lag), written once over the neutral SQL surface.

use super::BackendConnector;
use crate::error::{DriverError, Phase, Result};
use crate::topology::ReplicationStatus;

/// Runs the database's [`replication_query`](crate::DatabaseKind::replication_query) on
/// `connection` and reads its row; `Ok(None)` for a database without replication (SQLite).
/// Every backend's [`Connector::replication_status`](crate::Connector::replication_status)
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
