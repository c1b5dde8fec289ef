//! The protocol's rows in the cache: `QueryCache::fetch_all` keys a query by its text and parameters, tags it with the tables it reads, and keeps its rows with their columns once.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use ucm_kernel::{
    ConnectionManagerProtocol, ConnectionMode, Error, Result, Row, Value, read_tables,
};

use super::{QueryCache, table_name};

/// A query's rows as cached: the query they answer (checked on every hit, so two queries
/// whose keys collide never see each other's rows), the columns once, and the values.
#[derive(Serialize, Deserialize)]
struct CachedRows {
    query: String,
    columns: Vec<String>,
    rows: Vec<Vec<Value>>,
}

impl CachedRows {
    fn new(query: String, rows: &[Row]) -> Self {
        let columns = rows.first().map(|row| row.columns().to_vec()).unwrap_or_default();
        Self { query, columns, rows: rows.iter().map(|row| row.values().to_vec()).collect() }
    }

    fn into_rows(self) -> Result<Vec<Row>> {
        let columns: Arc<[String]> = self.columns.into();
        self.rows.into_iter().map(|values| Row::new(Arc::clone(&columns), values)).collect()
    }
}

/// The query's identity (its text and parameters as JSON) and its cache key (a hash of
/// that, so parameters are not written into Redis's key space).
fn identity(sql: &str, params: &[Value]) -> Result<(String, String)> {
    let query = serde_json::to_string(&(sql, params))
        .map_err(|e| Error::other(format!("the query's parameters cannot be cached: {e}")))?;
    let mut hasher = std::hash::DefaultHasher::new();
    query.hash(&mut hasher);
    Ok((query, format!("rows:{:016x}", hasher.finish())))
}

impl QueryCache {
    /// `sql`'s rows with `params`, from the cache, else read through `db` on the primary
    /// and cached, tagged with the tables `sql` reads ([`read_tables`]: every `FROM` and
    /// `JOIN`). A write to one of them through a manager the cache listens to
    /// ([`Self::invalidate_on_writes`]) drops the entry.
    ///
    /// Misses read on the primary (`ConnectionMode::ReadWrite`), not a replica: a replica
    /// behind the primary would have its past cached as current. A query on a view or a
    /// function, whose base tables the text does not name, needs
    /// [`Self::fetch_all_tagged`].
    ///
    /// # Errors
    /// The query's error; nothing is cached then.
    pub async fn fetch_all(
        &self,
        db: &(impl ConnectionManagerProtocol + ?Sized),
        sql: &str,
        params: &[Value],
    ) -> Result<Vec<Row>> {
        self.fetch_rows(db, sql, params, read_tables(sql)).await
    }

    /// [`Self::fetch_all`] tagged with `tables` instead of the tables its text names (a
    /// view's base tables, a function's).
    ///
    /// # Errors
    /// As [`Self::fetch_all`].
    pub async fn fetch_all_tagged(
        &self,
        db: &(impl ConnectionManagerProtocol + ?Sized),
        sql: &str,
        params: &[Value],
        tables: &[&str],
    ) -> Result<Vec<Row>> {
        self.fetch_rows(db, sql, params, tables.iter().map(|t| table_name(t)).collect()).await
    }

    async fn fetch_rows(
        &self,
        db: &(impl ConnectionManagerProtocol + ?Sized),
        sql: &str,
        params: &[Value],
        tables: Vec<String>,
    ) -> Result<Vec<Row>> {
        let (query, key) = identity(sql, params)?;
        let cached: CachedRows = self
            .get_or_compute_tagged(&key, tables, || async {
                let rows = db.fetch_all(ConnectionMode::ReadWrite, sql, params).await?;
                Ok(CachedRows::new(query.clone(), &rows))
            })
            .await?;
        if cached.query == query {
            return cached.into_rows();
        }
        // Another query with the same key: read this one uncached.
        db.fetch_all(ConnectionMode::ReadWrite, sql, params).await
    }
}
