//! Web integration (feature `axum`): the manager as router state, a request-scoped read-your-writes session extractor, `ucm::Error` as an HTTP response, and readiness and liveness handlers.
//!
//! ```no_run
//! use std::sync::Arc;
//!
//! use axum::Router;
//! use axum::routing::post;
//! use ucm::web::{HttpError, RequestSession, health_routes};
//! use ucm::{ConnectionManagerProtocol, ConnectionMode, UnifiedManager};
//!
//! async fn create(session: RequestSession) -> Result<&'static str, HttpError> {
//!     session.execute(ConnectionMode::ReadWrite, "INSERT INTO jobs (kind) VALUES ('x')", &[]).await?;
//!     Ok("created")
//! }
//!
//! # fn app(manager: Arc<UnifiedManager>) -> Router {
//! Router::new()
//!     .route("/jobs", post(create))
//!     .merge(health_routes())
//!     .with_state(manager)
//! # }
//! ```
//!
//! The state is an `Arc<UnifiedManager>`, or any state it can be taken from
//! (`FromRef`). Responses never carry the database's message, SQL or endpoint: the body is
//! `{"error": kind, "message": ...}` with a fixed message per kind, and the full error goes
//! to the log (`tracing`, target `ucm::web`).

use std::convert::Infallible;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{FromRef, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use ucm_kernel::{ConnectionManagerProtocol, Error, ErrorKind, RoutingSession};

use crate::{SelectedBackend, UnifiedManager};

/// One request's session on the shared manager: after the request writes, its reads go to
/// the primary for the manager's read-your-writes window, so it reads what it just wrote
/// even where replicas lag (other requests keep reading from replicas). Derefs to a
/// [`RoutingSession`], which is a `ConnectionManagerProtocol`.
#[derive(Debug)]
pub struct RequestSession(pub RoutingSession<'static, SelectedBackend>);

impl Deref for RequestSession {
    type Target = RoutingSession<'static, SelectedBackend>;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl<S> FromRequestParts<S> for RequestSession
where
    Arc<UnifiedManager>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Infallible;

    async fn from_request_parts(_parts: &mut Parts, state: &S) -> Result<Self, Infallible> {
        Ok(Self(Arc::<UnifiedManager>::from_ref(state).shared_session()))
    }
}

/// A ucm error as an HTTP response: 503 with `Retry-After` when the database is
/// unavailable for now (circuit open, pool exhausted, connect failed, manager closed), 409
/// for a constraint violation, 500 otherwise. Handlers return `Result<_, HttpError>` and
/// use `?` on ucm's results.
#[derive(Debug)]
pub struct HttpError(pub Error);

impl From<Error> for HttpError {
    fn from(error: Error) -> Self {
        Self(error)
    }
}

impl HttpError {
    /// The status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self.0.kind() {
            ErrorKind::CircuitOpen
            | ErrorKind::PoolExhausted
            | ErrorKind::ConnectFailed
            | ErrorKind::Closed => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Constraint => StatusCode::CONFLICT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// When a client may try again, for a 503: the breaker's time to its next probe, else
    /// one second.
    fn retry_after(&self) -> Duration {
        match &self.0 {
            Error::CircuitOpen { retry_after, .. } => *retry_after,
            _ => Duration::from_secs(1),
        }
    }
}

/// The message a client sees: fixed per kind, so no SQL, server message or endpoint leaks.
fn public_message(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::CircuitOpen
        | ErrorKind::PoolExhausted
        | ErrorKind::ConnectFailed
        | ErrorKind::Closed => "the database is unavailable for now; retry later",
        ErrorKind::Constraint => "the request conflicts with the data already stored",
        _ => "internal error",
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let status = self.status();
        let kind = self.0.kind();
        if status.is_server_error() {
            tracing::warn!(target: "ucm::web", status = status.as_u16(), "{}", self.0);
        } else {
            tracing::info!(target: "ucm::web", status = status.as_u16(), "{}", self.0);
        }
        let body = json!({ "error": kind.as_str(), "message": public_message(kind) });
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            let seconds = self.retry_after().as_secs_f64().ceil().max(1.0);
            if let Ok(value) = HeaderValue::from_str(&format!("{seconds:.0}")) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}

/// Readiness: the manager's cached health, without I/O (the health loop keeps it fresh),
/// so a probe never waits on a slow database. 200 while the manager can serve (healthy or
/// degraded), 503 when unhealthy or closed, with the endpoints' roles and states as JSON.
pub async fn readiness(State(manager): State<Arc<UnifiedManager>>) -> Response {
    let info = manager.connection_info();
    let serving = manager.is_healthy();
    let status = if manager.is_closed() {
        "closed"
    } else {
        info.health.map_or("unknown", |health| health.as_str())
    };
    let endpoints: Vec<_> = info
        .endpoints
        .iter()
        .map(|endpoint| {
            json!({
                "label": endpoint.label,
                "role": endpoint.role.as_str(),
                "state": endpoint.state.as_str(),
            })
        })
        .collect();
    let code = if serving { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, Json(json!({ "status": status, "endpoints": endpoints }))).into_response()
}

/// Liveness: the process answers; the database is not consulted (a database outage must
/// not get the service restarted).
pub async fn liveness() -> Json<serde_json::Value> {
    Json(json!({ "status": "alive" }))
}

/// `GET /health/ready` ([`readiness`]) and `GET /health/live` ([`liveness`]), to merge
/// into the application's router.
pub fn health_routes<S>() -> Router<S>
where
    Arc<UnifiedManager>: FromRef<S>,
    S: Clone + Send + Sync + 'static,
{
    Router::new().route("/health/ready", get(readiness)).route("/health/live", get(liveness))
}
