//! `ucm-kernel`: the driver-free heart of ucm, shared by every backend.
//!
//! It holds the [`ConnectionManagerProtocol`] every backend implements, the
//! [`ConnectionMode`] and [`ManagerMode`] enums with their [`PoolConfiguration`] presets,
//! configuration and URL parsing with redaction, the one [`Error`] type classified by
//! [`ErrorKind`], the per-endpoint [`CircuitBreaker`], the [`RetryPolicy`], the
//! connection [`pool`] (its own slot queue, prefill, reaping, validation, bounded waits),
//! and the health and metrics types. It depends on no database driver: backends plug in
//! through the [`backend::Connector`] trait.
//!
//! # Features
//! - `testing`: `pool::testing`, a scriptable in-memory connector for fault tests.
//! - `serde`: `Serialize`/`Deserialize` on configuration types.
//! - `otel`: OpenTelemetry metrics through the global meter provider (see [`telemetry`]).

mod background;
pub mod blocking;
pub mod circuit_breaker;
pub mod config;
mod counted;
mod diagnostics;
mod error;
mod future;
pub mod health;
mod info;
mod mode;
pub mod pool;
mod protocol;
pub mod retry;
pub mod telemetry;
pub mod topology;
mod value;
mod writes;

// Last: for backend authors only (what a backend implements and calls).
pub mod backend;
mod connector;
mod manager;

// The crates whose types appear in `Value`, so users need no version of their own.
pub use chrono;
pub use serde_json;
pub use uuid;

pub use circuit_breaker::{BreakerSnapshot, BreakerState, CircuitBreaker, CircuitBreakerConfig};
pub use config::{
    CacheSettings, ConfigSources, CredentialProvider, CredentialSource, Credentials, DatabaseKind,
    DatabaseUrl, DdlRule, ManagerConfig, ManagerConfigBuilder, Origin, PermissionPolicy,
    PoolConfiguration, PoolConfigurationBuilder, Pooler, RedisSettings, Secret, SslMode,
};
pub use diagnostics::{
    DeepOptions, DeepReport, Finding, PermissionCheck, PermissionReport, Severity,
    check_permissions, deep_health,
};
pub use error::{BoxError, ConnectFailure, Error, ErrorKind, Result};
pub use health::{ComponentHealth, EndpointRole, EndpointState, HealthReport, HealthStatus};
pub use info::{ConnectionInfo, EndpointInfo};
pub use manager::{Connection, Direct, DirectConnection, Manager, Pipelined, RoutingSession};
pub use mode::{ConnectionMode, ManagerMode};
pub use pool::LongHold;
pub use protocol::{
    BoxFuture, ConnectionManagerProtocol, ProtocolExt, SqlExecutor, TransactionOptions,
    TransactionWork, TransactionalConnection,
};
pub use retry::{Backoff, RetryBudget, RetryPolicy};
pub use telemetry::metrics::{HistogramSnapshot, PoolMetricsSnapshot, PoolStatus, SlaSummary};
pub use value::{ConversionError, FromValue, Row, Value};
pub use writes::{WriteListener, read_tables, written_tables};
