//! What ucm emits for observability, installed by nobody here: `tracing` spans per acquire and per statement, named and attributed per the OpenTelemetry database conventions, and (feature `otel`) OpenTelemetry metrics through the global meter provider.
//!
//! Spans carry `otel.name` and `otel.kind = "client"`, so `tracing-opentelemetry` exports
//! them as CLIENT spans named `{db.operation.name} {target}` (`SELECT items`), with
//! `db.system.name`, `db.namespace`, `db.operation.name`, `db.query.summary`,
//! `server.address`, `server.port`, `db.client.connection.pool.name`, and on failure
//! `error.type` (ucm's error kind) and `db.response.status_code` (the SQLSTATE). Parameter
//! values and passwords are never recorded; the SQL text is reduced to its summary.

pub mod metrics;
#[cfg(feature = "otel")]
pub(crate) mod otel;
mod summary;

use tracing::Span;
use tracing::field::Empty;

pub use summary::{operation_name, query_summary};

use crate::error::Error;

/// Who a pool talks to, as telemetry names it; built once per pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointAttributes {
    /// `db.system.name`: `postgresql`, `mysql`, `mariadb`, `sqlite`, or `other_sql`.
    pub system: &'static str,
    /// `db.namespace`: the database name (the file for SQLite).
    pub namespace: Option<String>,
    /// `server.address`.
    pub address: Option<String>,
    /// `server.port`.
    pub port: Option<u16>,
    /// `db.client.connection.pool.name`: the pool's redacted label.
    pub pool: String,
}

impl EndpointAttributes {
    /// An endpoint known only by its pool label (a pool built without a URL).
    pub fn unnamed(pool: &str) -> Self {
        Self {
            system: "other_sql",
            namespace: None,
            address: None,
            port: None,
            pool: pool.to_owned(),
        }
    }
}

/// The span of one statement on `endpoint`, `None` when no subscriber wants it (then no
/// summary is computed); [`record_failure`] completes it on error.
pub(crate) fn statement_span(endpoint: &EndpointAttributes, sql: &str) -> Option<Span> {
    if !tracing::enabled!(target: "ucm::db", tracing::Level::INFO) {
        return None;
    }
    let summary = query_summary(sql, None);
    let name = match (summary.contains(' '), endpoint.namespace.as_deref()) {
        (false, Some(namespace)) => format!("{summary} {namespace}"),
        _ => summary.clone(),
    };
    Some(tracing::info_span!(
        target: "ucm::db",
        "db.operation",
        otel.name = %name,
        otel.kind = "client",
        otel.status_code = Empty,
        db.system.name = endpoint.system,
        db.namespace = endpoint.namespace.as_deref(),
        db.operation.name = operation_name(sql),
        db.query.summary = %summary,
        server.address = endpoint.address.as_deref(),
        server.port = endpoint.port.map(i64::from),
        db.client.connection.pool.name = %endpoint.pool,
        db.response.status_code = Empty,
        error.type = Empty,
    ))
}

/// The span of one statement run through a driver's own API, whose text is known only once
/// the driver takes it: named by [`name_statement_span`] then. `None` when no subscriber
/// wants it.
pub(crate) fn driver_statement_span(endpoint: &EndpointAttributes) -> Option<Span> {
    if !tracing::enabled!(target: "ucm::db", tracing::Level::INFO) {
        return None;
    }
    Some(tracing::info_span!(
        target: "ucm::db",
        "db.operation",
        otel.name = Empty,
        otel.kind = "client",
        otel.status_code = Empty,
        db.system.name = endpoint.system,
        db.namespace = endpoint.namespace.as_deref(),
        db.operation.name = Empty,
        db.query.summary = Empty,
        server.address = endpoint.address.as_deref(),
        server.port = endpoint.port.map(i64::from),
        db.client.connection.pool.name = %endpoint.pool,
        db.response.status_code = Empty,
        error.type = Empty,
        ucm.api = "driver",
    ))
}

/// Names a span made by [`driver_statement_span`] after its statement, as
/// [`statement_span`] names its own.
pub(crate) fn name_statement_span(span: &Span, sql: &str) {
    let summary = query_summary(sql, None);
    span.record("otel.name", summary.as_str());
    span.record("db.query.summary", summary.as_str());
    if let Some(operation) = operation_name(sql) {
        span.record("db.operation.name", operation);
    }
}

/// The span of one checkout from the pool of `endpoint`; `None` when no subscriber wants it,
/// so the hot path then neither builds a span nor wraps the checkout future in one.
pub(crate) fn acquire_span(endpoint: &EndpointAttributes, mode: &'static str) -> Option<Span> {
    if !tracing::enabled!(target: "ucm::pool", tracing::Level::INFO) {
        return None;
    }
    Some(tracing::info_span!(
        target: "ucm::pool",
        "db.client.connection.acquire",
        otel.name = %format_args!("acquire {}", endpoint.pool),
        otel.kind = "client",
        otel.status_code = Empty,
        db.system.name = endpoint.system,
        db.client.connection.pool.name = %endpoint.pool,
        ucm.connection_mode = mode,
        error.type = Empty,
    ))
}

/// Marks `span` failed with `error`: `error.type`, the SQLSTATE, and the OpenTelemetry status.
pub fn record_failure(span: Option<&Span>, error: &Error) {
    let Some(span) = span else { return };
    span.record("otel.status_code", "ERROR");
    span.record("error.type", error.kind().as_str());
    if let Some(sqlstate) = error.sqlstate() {
        span.record("db.response.status_code", sqlstate);
    }
}
