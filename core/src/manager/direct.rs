//! `DirectConnection<B>`: one unpooled driver connection to a manager's primary, for measuring what the pool adds (the test adapter's benchmark connection).

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;

use super::{Backend, BackendConnector};
use crate::config::DatabaseUrl;
use crate::connector::Phase;
use crate::error::{ConnectFailure, Error, Result};
use crate::protocol::SqlExecutor;
use crate::value::{Row, Value};

/// An unpooled connection opened straight through a backend's connector: no pool, no
/// breaker, no retry, no metrics. Closed when dropped.
pub struct Direct<C: BackendConnector> {
    connection: C::Connection,
    url: DatabaseUrl,
}

impl<C: BackendConnector> Direct<C> {
    /// Opens one connection with `connector`, within `limit`.
    ///
    /// # Errors
    /// The connector's `ConnectFailed`, or `ConnectFailed` (timeout) past `limit`.
    pub async fn open(connector: &C, limit: Duration) -> Result<Self> {
        let url = connector.url().clone();
        match tokio::time::timeout(limit, connector.connect()).await {
            Ok(connection) => Ok(Self { connection: connection?, url }),
            Err(_) => Err(Error::ConnectFailed {
                endpoint: url.label(),
                reason: ConnectFailure::Timeout,
                attempts: 1,
                message: format!("no connection within the connect timeout of {limit:?}"),
                source: None,
            }),
        }
    }

    /// The driver's connection.
    pub fn driver(&mut self) -> &mut C::Connection {
        &mut self.connection
    }
}

impl<C: BackendConnector> fmt::Debug for Direct<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Direct").field("url", &self.url).finish_non_exhaustive()
    }
}

#[async_trait]
impl<C: BackendConnector> SqlExecutor for Direct<C> {
    async fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64> {
        C::execute(&mut self.connection, sql, params)
            .await
            .map_err(|e| e.into_error(&self.url, Phase::Statement))
    }

    async fn fetch_all(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>> {
        C::fetch_all(&mut self.connection, sql, params)
            .await
            .map_err(|e| e.into_error(&self.url, Phase::Statement))
    }
}

/// A [`Direct`] connection for whichever database the manager's URL named.
#[non_exhaustive]
pub enum DirectConnection<B: Backend> {
    /// To PostgreSQL.
    Postgres(Direct<B::Postgres>),
    /// To MySQL or MariaDB.
    MySql(Direct<B::MySql>),
    /// To SQLite.
    Sqlite(Direct<B::Sqlite>),
}

impl<B: Backend> fmt::Debug for DirectConnection<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Postgres(d) => d.fmt(f),
            Self::MySql(d) => d.fmt(f),
            Self::Sqlite(d) => d.fmt(f),
        }
    }
}

#[async_trait]
impl<B: Backend> SqlExecutor for DirectConnection<B> {
    async fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64> {
        match self {
            Self::Postgres(d) => d.execute(sql, params).await,
            Self::MySql(d) => d.execute(sql, params).await,
            Self::Sqlite(d) => d.execute(sql, params).await,
        }
    }

    async fn fetch_all(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>> {
        match self {
            Self::Postgres(d) => d.fetch_all(sql, params).await,
            Self::MySql(d) => d.fetch_all(sql, params).await,
            Self::Sqlite(d) => d.fetch_all(sql, params).await,
        }
    }
}
