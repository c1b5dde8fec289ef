//! `ucm-core`: the driver-free heart of ucm, shared by every backend.
//!
//! It holds the [`ConnectionManagerProtocol`] every backend implements, the
//! [`ConnectionMode`] and [`ManagerMode`] enums with their [`PoolConfiguration`] presets,
//! configuration and URL parsing with redaction, the one [`Error`] type classified by
//! [`ErrorKind`], the per-endpoint [`CircuitBreaker`], the [`RetryPolicy`], the
//! connection [`pool`] (deadpool underneath, plus what deadpool lacks), and the health and
//! metrics types. It depends on no database driver: backends plug in through the
//! [`pool::Connector`] trait.
//!
//! # Features
//! - `testing`: `pool::testing`, a scriptable in-memory connector for fault tests.
//! - `serde`: `Serialize`/`Deserialize` on configuration types.
//! - `otel`: OpenTelemetry metrics through the global meter provider (see [`telemetry`]).

pub mod backend;
mod background;
pub mod blocking;
pub mod circuit_breaker;
pub mod config;
mod error;
pub mod health;
mod info;
pub mod metrics;
mod mode;
pub mod pool;
mod protocol;
pub mod retry;
pub mod telemetry;
pub mod topology;
mod value;

// The crates whose types appear in `Value`, so users need no version of their own.
pub use chrono;
pub use serde_json;
pub use uuid;

pub use backend::{
    Backend, BackendConnector, Connection, Direct, DirectConnection, Disabled, Manager,
    ObservedStatement, RoutingSession, Session,
};
pub use circuit_breaker::{BreakerState, CircuitBreaker, CircuitBreakerConfig};
pub use config::{
    DatabaseKind, DatabaseUrl, ManagerConfig, ManagerConfigBuilder, PoolConfiguration,
    PoolConfigurationBuilder, Pooler, Secret, SslMode,
};
pub use error::{
    BoxError, Classified, ConnectFailure, DriverError, Error, ErrorKind, Phase, Result,
    SqlStateClass, classify_connect_sqlstate, classify_sqlstate,
};
pub use health::{ComponentHealth, EndpointRole, EndpointState, HealthReport, HealthStatus};
pub use info::{ConnectionInfo, EndpointInfo, SlaSummary};
pub use mode::{ConnectionMode, ManagerMode};
pub use pool::{Connector, Pool, PoolStatus, PooledConnection, StatementExpiry};
pub use protocol::{
    BoxFuture, ConnectionManagerProtocol, ProtocolExt, SqlExecutor, TransactionOptions,
    TransactionWork, TransactionalConnection,
};
pub use retry::{Backoff, RetryBudget, RetryPolicy};
pub use topology::ReplicationStatus;
pub use value::{ConversionError, FromValue, Row, Value};
