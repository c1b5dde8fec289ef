//! For backend authors: everything a backend crate (`ucm-sqlx`, `ucm-diesel`, or your own) implements or calls, in one module; application code never needs it.
//!
//! A backend implements [`BackendConnector`] once per database: the pool's [`Connector`]
//! (open, ping, roll back, read-only switch, replication status) plus the neutral SQL
//! surface (run a statement, fetch rows, `BEGIN`/`COMMIT`/`ROLLBACK`), each reporting the
//! driver's errors as a [`DriverError`], which core reads into ucm's `Error` by [`Phase`]
//! (a lost connection under `COMMIT` is an ambiguous commit, under a read it is not). A
//! [`Backend`] names its three connectors, [`Disabled`] for a database whose feature is
//! off; `Manager<B>` is then the complete `ConnectionManagerProtocol`.
//!
//! The helpers here keep backends to driver glue: [`fresh_options`] gives each new
//! connection the URL's credential source's user and password of now, [`replication_status`] answers the
//! health loop over the neutral surface, [`apply_session_statements`] runs the settings a
//! server takes only as statements, [`classify_sqlstate`] reads a server's error code,
//! [`PooledSession`] and [`ObservedStatement`] run a driver-shaped handle's statements through
//! the pool's deadlines, metrics and breaker, and [`rerun_transaction`] is the retried
//! transaction loop those handles share.

pub use crate::connector::{
    Backend, BackendConnector, Classified, Connector, Disabled, DriverError, Phase,
    ReplicationStatus, apply_session_statements, fresh_options, replication_status,
};
pub use crate::error::{SqlStateClass, classify_connect_sqlstate, classify_sqlstate};
pub use crate::manager::{ObservedStatement, PooledSession};
pub use crate::pool::{Pool, PooledConnection, StatementExpiry};
pub use crate::protocol::rerun_transaction;
