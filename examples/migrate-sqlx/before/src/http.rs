//! The HTTP API: routes, handlers, and how errors become responses.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use tokio::net::TcpListener;

use crate::db::{self, Job, JobEvent, Stats};

/// How many jobs `GET /jobs` returns at most.
const PAGE: i64 = 100;

/// What every handler shares.
#[derive(Clone)]
struct AppState {
    pool: PgPool,
}

/// The body of `POST /jobs`.
#[derive(Debug, Deserialize)]
struct NewJob {
    kind: String,
    #[serde(default)]
    payload: String,
}

/// The service's routes:
/// - `POST /jobs` creates a queued job and its `created` audit row, in one transaction;
/// - `GET /jobs`, `GET /jobs/{id}`, `GET /jobs/{id}/events` and `GET /stats` read;
/// - `POST /jobs/{id}/cancel` cancels a queued job and records it, in one transaction.
pub fn router(pool: PgPool) -> Router {
    Router::new()
        .route("/jobs", post(create_job).get(list_jobs))
        .route("/jobs/{id}", get(get_job))
        .route("/jobs/{id}/events", get(job_events))
        .route("/jobs/{id}/cancel", post(cancel_job))
        .route("/stats", get(stats))
        .with_state(AppState { pool })
}

/// Serves [`router`] on `listener` until the task is dropped or the listener fails.
///
/// # Errors
/// The listener's I/O error.
pub async fn serve(listener: TcpListener, pool: PgPool) -> std::io::Result<()> {
    axum::serve(listener, router(pool)).await
}

async fn create_job(
    State(state): State<AppState>,
    Json(new): Json<NewJob>,
) -> Result<(StatusCode, Json<Job>), AppError> {
    let mut tx = state.pool.begin().await?;
    let job = db::insert_job(&mut tx, &new.kind, &new.payload).await?;
    db::insert_event(&mut tx, job.id, "created", &job.kind).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(job)))
}

async fn list_jobs(State(state): State<AppState>) -> Result<Json<Vec<Job>>, AppError> {
    Ok(Json(db::list_jobs(&state.pool, PAGE).await?))
}

async fn get_job(
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Json<Job>, AppError> {
    db::find_job(&state.pool, id).await?.map(Json).ok_or(AppError::NotFound)
}

async fn job_events(
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Json<Vec<JobEvent>>, AppError> {
    Ok(Json(db::job_events(&state.pool, id).await?))
}

async fn cancel_job(
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Json<Job>, AppError> {
    let mut tx = state.pool.begin().await?;
    let Some(job) = db::cancel_job(&mut tx, id).await? else {
        tx.rollback().await?;
        return Err(match db::find_job(&state.pool, id).await? {
            Some(_) => AppError::NotQueued,
            None => AppError::NotFound,
        });
    };
    db::insert_event(&mut tx, job.id, "cancelled", "api").await?;
    tx.commit().await?;
    Ok(Json(job))
}

async fn stats(State(state): State<AppState>) -> Result<Json<Stats>, AppError> {
    Ok(Json(db::stats(&state.pool).await?))
}

/// The body of every error response.
#[derive(Debug, Serialize)]
struct ErrorBody {
    error: String,
}

/// Why a request failed.
#[derive(Debug)]
enum AppError {
    /// No job has that id.
    NotFound,
    /// The job is no longer queued.
    NotQueued,
    /// The database refused or failed the request.
    Database(sqlx::Error),
}

impl From<sqlx::Error> for AppError {
    fn from(error: sqlx::Error) -> Self {
        Self::Database(error)
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            Self::NotFound => (StatusCode::NOT_FOUND, "no such job".to_owned()),
            Self::NotQueued => (StatusCode::CONFLICT, "the job is no longer queued".to_owned()),
            // A CHECK constraint refused the input (e.g. a kind longer than 64 characters).
            Self::Database(sqlx::Error::Database(e)) if e.is_check_violation() => {
                (StatusCode::UNPROCESSABLE_ENTITY, e.message().to_owned())
            }
            Self::Database(e) => {
                tracing::error!("request failed: {e}");
                (StatusCode::INTERNAL_SERVER_ERROR, "database error".to_owned())
            }
        };
        (status, Json(ErrorBody { error: message })).into_response()
    }
}
