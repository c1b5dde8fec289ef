//! `RedisConnector`: core's pool `Connector` for Redis (multiplexed connections, `PING` to validate), finding a Sentinel service's master at each connect, and the reading of redis errors as ucm's.

use std::sync::Mutex;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use ucm_kernel::backend::Connector;
use ucm_kernel::{ConnectFailure, Error, ErrorKind, Result};

use crate::url::RedisUrl;

/// Opens connections to the server a [`RedisUrl`] names; for a Sentinel URL, to the
/// master the sentinels name at that moment (so a failover is followed by the next
/// connection), checked to really be a master.
#[derive(Debug)]
pub struct RedisConnector {
    url: RedisUrl,
    label: String,
    connect_timeout: Duration,
    /// The server the last successful connect reached.
    connected_to: Mutex<Option<(String, u16)>>,
}

impl RedisConnector {
    /// A connector for `url`, each connect (sentinel questions included) bounded by
    /// `connect_timeout`.
    pub fn new(url: RedisUrl, connect_timeout: Duration) -> Self {
        let label = url.label();
        Self { url, label, connect_timeout, connected_to: Mutex::new(None) }
    }

    /// The URL connected to.
    pub fn url(&self) -> &RedisUrl {
        &self.url
    }

    /// Whether the sentinels name a master other than the one the last connect reached (a
    /// failover happened); `false` for a URL without Sentinel or when no sentinel answers.
    pub(crate) async fn master_moved(&self) -> bool {
        if self.url.service().is_none() {
            return false;
        }
        let Ok(named) = self.target().await else { return false };
        let connected = self.connected_to.lock().map(|c| c.clone()).unwrap_or(None);
        connected.is_some_and(|connected| connected != named)
    }

    /// The server to connect to now: the URL's, or the master the first answering sentinel
    /// names.
    async fn target(&self) -> Result<(String, u16)> {
        let Some(service) = self.url.service() else {
            return Ok(self.url.hosts()[0].clone());
        };
        let mut last = String::from("no sentinel answered");
        for (host, port) in self.url.hosts() {
            let asked = async {
                let client = redis::Client::open(self.url.sentinel_url(host, *port))?;
                let mut sentinel = client.get_multiplexed_async_connection().await?;
                redis::cmd("SENTINEL")
                    .arg("get-master-addr-by-name")
                    .arg(service)
                    .query_async::<Option<(String, u16)>>(&mut sentinel)
                    .await
            };
            match tokio::time::timeout(self.connect_timeout, asked).await {
                Ok(Ok(Some(master))) => return Ok(master),
                Ok(Ok(None)) => {
                    last = format!("sentinel {host}:{port} knows no service {service:?}")
                }
                Ok(Err(e)) => last = format!("sentinel {host}:{port}: {e}"),
                Err(_) => {
                    last = format!(
                        "sentinel {host}:{port} did not answer within {:?}",
                        self.connect_timeout
                    )
                }
            }
        }
        Err(Error::ConnectFailed {
            endpoint: self.label.clone(),
            reason: ConnectFailure::Other,
            attempts: 1,
            message: format!("no sentinel gave the master of {service:?}: {last}"),
            source: None,
        })
    }
}

impl Connector for RedisConnector {
    type Connection = MultiplexedConnection;

    async fn connect(&self) -> Result<MultiplexedConnection> {
        let (host, port) = self.target().await?;
        let client = redis::Client::open(self.url.server_url(&host, port))
            .map_err(|e| Error::config("redis url", scrub(&e)))?;
        let mut connection = client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| connect_error(&format!("{host}:{port}"), &e))?;
        if self.url.service().is_some() {
            // A sentinel's answer can be stale for a moment around a failover: a replica
            // is never taken for the master.
            let role: Vec<redis::Value> = redis::cmd("ROLE")
                .query_async(&mut connection)
                .await
                .map_err(|e| connect_error(&format!("{host}:{port}"), &e))?;
            let is_master =
                matches!(role.first(), Some(redis::Value::BulkString(r)) if r == b"master");
            if !is_master {
                return Err(Error::ConnectFailed {
                    endpoint: format!("{host}:{port}"),
                    reason: ConnectFailure::Other,
                    attempts: 1,
                    message: "the sentinels named it as master but it is a replica (a failover is \
                              in progress); the next connect asks again"
                        .to_owned(),
                    source: None,
                });
            }
        }
        if let Ok(mut connected) = self.connected_to.lock() {
            *connected = Some((host, port));
        }
        Ok(connection)
    }

    async fn validate(&self, connection: &mut MultiplexedConnection) -> Result<()> {
        redis::cmd("PING")
            .query_async::<String>(connection)
            .await
            .map(drop)
            .map_err(|e| command_error(&self.label, &e))
    }

    async fn reset(&self, _connection: &mut MultiplexedConnection) -> Result<()> {
        // Commands leave no state behind on a connection: there is nothing to roll back.
        Ok(())
    }

    async fn set_read_only(&self, _: &mut MultiplexedConnection, _: bool) -> Result<()> {
        // Redis has no per-session read-only switch; reads from replicas are routed instead.
        Ok(())
    }
}

/// A failed connect as ucm's `ConnectFailed`, with the reason the driver error tells.
pub(crate) fn connect_error(endpoint: &str, e: &redis::RedisError) -> Error {
    let text = scrub(e);
    let reason = if e.is_connection_refusal() {
        ConnectFailure::Refused
    } else if e.is_timeout() {
        ConnectFailure::Timeout
    } else if text.contains("WRONGPASS")
        || text.contains("NOAUTH")
        || text.contains("invalid password")
    {
        ConnectFailure::Authentication
    } else {
        ConnectFailure::Other
    };
    Error::ConnectFailed {
        endpoint: endpoint.to_owned(),
        reason,
        attempts: 1,
        message: text,
        source: None,
    }
}

/// A failed command as ucm's error: a lost connection, a replica refusing a write
/// (`READONLY`, after a failover), or the command's own error.
pub(crate) fn command_error(endpoint: &str, e: &redis::RedisError) -> Error {
    let text = scrub(e);
    let kind = if e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error() {
        ErrorKind::ConnectionLost
    } else if text.starts_with("READONLY") || text.contains("READONLY") {
        ErrorKind::ReadOnlyViolation
    } else if e.is_timeout() {
        ErrorKind::Timeout
    } else {
        ErrorKind::Query
    };
    Error::database(kind, endpoint.to_owned(), None, text)
}

/// The driver's message; redis errors carry no URL, but a server's reply could echo an
/// argument, so it is cut to one line.
fn scrub(e: &redis::RedisError) -> String {
    e.to_string().lines().next().unwrap_or_default().to_owned()
}
