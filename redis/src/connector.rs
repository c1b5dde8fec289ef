//! `RedisConnector`: core's pool `Connector` for Redis (multiplexed connections, `PING` to validate), finding a Sentinel service's master at each connect, and the reading of redis errors as ucm's.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use ucm_kernel::backend::Connector;
use ucm_kernel::{ConnectFailure, Error, ErrorKind, Result};

use crate::url::RedisUrl;

/// Opens connections to the server a [`RedisUrl`] names; for a Sentinel URL, to the
/// master the sentinels name at that moment (so a failover is followed by the next
/// connection), checked to really be a master, or, for reads, to one of the replicas they
/// list as up, in turn.
#[derive(Debug)]
pub struct RedisConnector {
    url: RedisUrl,
    label: String,
    connect_timeout: Duration,
    /// Whether it connects to replicas rather than the master.
    replicas: bool,
    /// Which healthy replica the next connect takes (in turn).
    next_replica: AtomicUsize,
    /// The server the last successful connect reached.
    connected_to: Mutex<Option<(String, u16)>>,
}

impl RedisConnector {
    /// A connector for `url`'s server (a Sentinel service's master), each connect
    /// (sentinel questions included) bounded by `connect_timeout`.
    pub fn new(url: RedisUrl, connect_timeout: Duration) -> Self {
        let label = url.label();
        Self {
            url,
            label,
            connect_timeout,
            replicas: false,
            next_replica: AtomicUsize::new(0),
            connected_to: Mutex::new(None),
        }
    }

    /// A connector for the replicas of `url`'s Sentinel service: each connect takes the
    /// next replica the sentinels list as up and in sync with its master.
    ///
    /// # Errors
    /// `Configuration` when `url` names no Sentinel service (a plain server URL lists no
    /// replicas).
    pub fn for_replicas(url: RedisUrl, connect_timeout: Duration) -> Result<Self> {
        if url.service().is_none() {
            return Err(Error::config(
                "redis.read_from_replicas",
                "reads from replicas need a Sentinel URL (redis+sentinel://...), whose sentinels list the replicas",
            ));
        }
        let label = format!("{} replicas", url.label());
        Ok(Self { label, replicas: true, ..Self::new(url, connect_timeout) })
    }

    /// The URL connected to.
    pub fn url(&self) -> &RedisUrl {
        &self.url
    }

    /// Whether the sentinels name a master other than the one the last connect reached (a
    /// failover happened); `false` for a URL without Sentinel or when no sentinel answers.
    pub(crate) async fn master_moved(&self) -> bool {
        if self.url.service().is_none() || self.replicas {
            return false;
        }
        let Ok(named) = self.target().await else { return false };
        let connected = self.connected_to.lock().map(|c| c.clone()).unwrap_or(None);
        connected.is_some_and(|connected| connected != named)
    }

    /// The server to connect to now: the URL's, or the master the first answering sentinel
    /// names, or (for replicas) the next replica it lists as up.
    async fn target(&self) -> Result<(String, u16)> {
        let Some(service) = self.url.service() else {
            return Ok(self.url.hosts()[0].clone());
        };
        let mut last = String::from("no sentinel answered");
        for (host, port) in self.url.hosts() {
            let asked = async {
                let client = redis::Client::open(self.url.sentinel_url(host, *port))?;
                let mut sentinel = client.get_multiplexed_async_connection().await?;
                if self.replicas {
                    let listed: Vec<HashMap<String, String>> = redis::cmd("SENTINEL")
                        .arg("replicas")
                        .arg(service)
                        .query_async(&mut sentinel)
                        .await?;
                    let up = healthy_replicas(&listed);
                    let pick = self.next_replica.fetch_add(1, Ordering::Relaxed);
                    return Ok(up.get(pick % up.len().max(1)).cloned());
                }
                redis::cmd("SENTINEL")
                    .arg("get-master-addr-by-name")
                    .arg(service)
                    .query_async::<Option<(String, u16)>>(&mut sentinel)
                    .await
            };
            match tokio::time::timeout(self.connect_timeout, asked).await {
                Ok(Ok(Some(server))) => return Ok(server),
                Ok(Ok(None)) if self.replicas => {
                    last = format!(
                        "sentinel {host}:{port} lists no replica of {service:?} that is up and in sync"
                    )
                }
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
            message: format!(
                "no sentinel gave the {} of {service:?}: {last}",
                if self.replicas { "replicas" } else { "master" }
            ),
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
            // is never taken for the master, nor a master for a replica.
            let role: Vec<redis::Value> = redis::cmd("ROLE")
                .query_async(&mut connection)
                .await
                .map_err(|e| connect_error(&format!("{host}:{port}"), &e))?;
            let expected: &[u8] = if self.replicas { b"slave" } else { b"master" };
            let as_named =
                matches!(role.first(), Some(redis::Value::BulkString(r)) if r == expected);
            if !as_named {
                let message = if self.replicas {
                    "the sentinels listed it as a replica but it is a master now (a failover is in progress); the next connect asks again"
                } else {
                    "the sentinels named it as master but it is a replica (a failover is in progress); the next connect asks again"
                };
                return Err(Error::ConnectFailed {
                    endpoint: format!("{host}:{port}"),
                    reason: ConnectFailure::Other,
                    attempts: 1,
                    message: message.to_owned(),
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

/// The replicas a sentinel lists (`SENTINEL REPLICAS`) that are up (not subjectively or
/// objectively down, not disconnected) with their link to the master up.
fn healthy_replicas(listed: &[HashMap<String, String>]) -> Vec<(String, u16)> {
    listed
        .iter()
        .filter(|replica| {
            let flags = replica.get("flags").map_or("", String::as_str);
            let down = ["s_down", "o_down", "disconnected"].iter().any(|f| flags.contains(f));
            let linked = replica.get("master-link-status").is_some_and(|s| s == "ok");
            !down && linked
        })
        .filter_map(|replica| {
            let host = replica.get("ip")?.clone();
            let port = replica.get("port")?.parse().ok()?;
            Some((host, port))
        })
        .collect()
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
