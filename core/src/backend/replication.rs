//! `replication_status`: a backend connector's answer to the health loop (standby or not, replay lag), written once over the neutral SQL surface.

use super::BackendConnector;
use crate::error::{Phase, Result};
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
    let rows = C::fetch_all(connection, sql, &[])
        .await
        .map_err(|e| e.into_error(connector.url(), Phase::Statement))?;
    ReplicationStatus::from_row(rows.first()).map(Some)
}
