//! The `Connector` trait: the only thing a backend writes to get a pool (connect, validate, reset, classify).

use std::future::Future;

use crate::connector::ReplicationStatus;
use crate::error::Result;

/// How a backend opens, checks and cleans one kind of connection.
///
/// The pool owns sizing, lifetimes, timeouts, the breaker and metrics; a connector only
/// talks to the driver. Every method returns ucm's [`Error`](crate::Error), so the
/// connector is also where driver errors are classified (SQLSTATE via
/// [`classify_sqlstate`](crate::backend::classify_sqlstate), connect failures via
/// [`ConnectFailure`](crate::ConnectFailure)) and scrubbed of secrets.
///
/// The pool bounds every call with its own timeout (connect: the connect timeout;
/// validate and reset: the validation timeout and the connect timeout), so a connector
/// need not, and a future it returns may be dropped at any await point.
pub trait Connector: Send + Sync + 'static {
    /// The driver's connection type.
    type Connection: Send + 'static;

    /// Opens a new connection with the configured session settings (application name,
    /// time zone).
    ///
    /// # Errors
    /// A `ConnectFailed` error with the reason and the scrubbed driver message.
    fn connect(&self) -> impl Future<Output = Result<Self::Connection>> + Send;

    /// A cheap liveness probe (`SELECT 1` or the driver's ping), run before handing out a
    /// connection that has been idle for longer than the configured threshold.
    ///
    /// # Errors
    /// Any error: the connection is discarded and another one is tried.
    fn validate(
        &self,
        connection: &mut Self::Connection,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Brings a connection returned with a transaction still open back to a clean state
    /// (`ROLLBACK`), before anyone else can use it.
    ///
    /// # Errors
    /// Any error: the connection is discarded instead of pooled.
    fn reset(&self, connection: &mut Self::Connection) -> impl Future<Output = Result<()>> + Send;

    /// Makes the session refuse (`read_only = true`) or accept writes, at the database:
    /// `SET default_transaction_read_only`, `SET SESSION TRANSACTION READ ONLY`,
    /// `PRAGMA query_only`... The pool remembers each connection's setting and calls this
    /// only when a checkout for another [`ConnectionMode`](crate::ConnectionMode) needs
    /// the other one, so a steady workload pays no extra round trip.
    ///
    /// # Errors
    /// Any error: the connection is discarded and the acquire fails with it.
    fn set_read_only(
        &self,
        connection: &mut Self::Connection,
        read_only: bool,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Whether the connections reach the server through a transaction pooler (see
    /// [`Pooler`](crate::Pooler)): then the pool never switches read-only mode on the
    /// session (each transaction's `BEGIN` carries it) and sessions wrap statements run
    /// outside a transaction in one of their own. Defaults to `false`.
    fn transaction_pooled(&self) -> bool {
        false
    }

    /// Whether each connect asks a credential source for the password (see
    /// [`CredentialSource`](crate::CredentialSource)): then a connect refused for its
    /// password is tried again, with fresh credentials, until the connect timeout, since
    /// the password may be mid-rotation (changed at the server, not yet in the file).
    /// Defaults to `false`.
    fn rotates_credentials(&self) -> bool {
        false
    }

    /// A synchronous check, without I/O, run before a pooled connection is handed out:
    /// the driver already knows the connection is dead (its socket closed) or in a state
    /// nobody else may inherit (a driver-level transaction left open). Defaults to `false`.
    fn is_broken(&self, connection: &mut Self::Connection) -> bool {
        let _ = connection;
        false
    }

    /// Where the server stands in replication (standby or not, replay lag), for the
    /// topology's health loop: banning lagging replicas and following a promotion. Backends
    /// answer with [`DatabaseKind::replication_query`](crate::DatabaseKind::replication_query)
    /// through `crate::connector::replication_status`. Defaults to `Ok(None)`: the server
    /// reports no replication role, and the configured roles stand.
    ///
    /// # Errors
    /// The query's error; the probe then counts the endpoint as failing.
    fn replication_status(
        &self,
        connection: &mut Self::Connection,
    ) -> impl Future<Output = Result<Option<ReplicationStatus>>> + Send {
        let _ = connection;
        std::future::ready(Ok(None))
    }
}
