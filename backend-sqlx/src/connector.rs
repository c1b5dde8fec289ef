//! `SqlxConnector<D>`: core's `Connector` for any sqlx dialect (connect, ping, rollback, read-only switch), written once.

use std::marker::PhantomData;
use std::sync::Arc;

use sqlx::{Connection, Database};
use ucm_core::pool::Connector;
use ucm_core::{DatabaseUrl, PoolConfiguration, Result};

use crate::convert::NeutralValues;
use crate::dialect::Dialect;
use crate::error::{Phase, map_error};

/// Connect options for the connection type of dialect `D`.
pub(crate) type Options<D> = <<<D as Dialect>::Db as Database>::Connection as Connection>::Options;

/// Opens and maintains sqlx connections of one dialect to one endpoint.
pub struct SqlxConnector<D: Dialect> {
    url: Arc<DatabaseUrl>,
    options: Options<D>,
    dialect: PhantomData<D>,
}

impl<D: Dialect> SqlxConnector<D> {
    /// A connector for `url` with the preset's session settings.
    ///
    /// # Errors
    /// `Configuration` when the URL's options are not valid for the driver.
    pub(crate) fn new(url: &DatabaseUrl, config: &PoolConfiguration) -> Result<Self> {
        Ok(Self {
            url: Arc::new(url.clone()),
            options: D::options(url, config)?,
            dialect: PhantomData,
        })
    }

    /// The endpoint's URL (redacted in every rendering).
    pub fn url(&self) -> &Arc<DatabaseUrl> {
        &self.url
    }
}

impl<D: Dialect> std::fmt::Debug for SqlxConnector<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlxConnector").field("url", &self.url).field("system", &D::SYSTEM).finish()
    }
}

impl<D: NeutralValues> Connector for SqlxConnector<D> {
    type Connection = <D::Db as Database>::Connection;

    async fn connect(&self) -> Result<Self::Connection> {
        <Self::Connection as Connection>::connect_with(&self.options)
            .await
            .map_err(|e| map_error(e, &self.url, Phase::Connect, D::classify))
    }

    async fn validate(&self, connection: &mut Self::Connection) -> Result<()> {
        connection.ping().await.map_err(|e| map_error(e, &self.url, Phase::Statement, D::classify))
    }

    async fn reset(&self, connection: &mut Self::Connection) -> Result<()> {
        match D::raw(connection, "ROLLBACK").await {
            Ok(_) => Ok(()),
            Err(e) if D::rollback_error_is_benign(&e) => Ok(()),
            Err(e) => Err(map_error(e, &self.url, Phase::Statement, D::classify)),
        }
    }

    async fn set_read_only(
        &self,
        connection: &mut Self::Connection,
        read_only: bool,
    ) -> Result<()> {
        D::raw(connection, D::read_only_sql(read_only))
            .await
            .map_err(|e| map_error(e, &self.url, Phase::Statement, D::classify))
    }
}
