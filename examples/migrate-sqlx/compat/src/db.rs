//! The service's queries: the schema it creates at startup and every statement it runs, compile-time checked by sqlx's macros.

use serde::Serialize;
use sqlx::Postgres;
use ucm_sqlx::{SqlxPool, SqlxTransaction};

/// A job as the API returns it.
#[derive(Debug, Clone, Serialize)]
pub struct Job {
    /// Its id, from the database.
    pub id: i64,
    /// What kind of work it is (at most 64 characters, which the audit row enforces).
    pub kind: String,
    /// The job's input, free text.
    pub payload: String,
    /// `queued`, `done` or `cancelled`.
    pub state: String,
}

/// One row of a job's audit trail.
#[derive(Debug, Clone, Serialize)]
pub struct JobEvent {
    /// `created`, `done` or `cancelled`.
    pub event: String,
    /// Who or what caused it.
    pub detail: String,
}

/// How many jobs are in each state.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Stats {
    /// Jobs waiting for the worker.
    pub queued: i64,
    /// Jobs the worker finished.
    pub done: i64,
    /// Jobs cancelled before the worker took them.
    pub cancelled: i64,
}

/// The schema, one statement each; every statement is idempotent, so the service runs them
/// at each start.
const SCHEMA: [&str; 2] = [
    "CREATE TABLE IF NOT EXISTS jobs (
        id BIGSERIAL PRIMARY KEY,
        kind TEXT NOT NULL,
        payload TEXT NOT NULL DEFAULT '',
        state TEXT NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'done', 'cancelled')),
        created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        finished_at TIMESTAMPTZ
    )",
    "CREATE TABLE IF NOT EXISTS job_events (
        id BIGSERIAL PRIMARY KEY,
        job_id BIGINT NOT NULL REFERENCES jobs (id),
        event TEXT NOT NULL,
        detail TEXT NOT NULL CHECK (char_length(detail) <= 64),
        at TIMESTAMPTZ NOT NULL DEFAULT now()
    )",
];

/// Creates the service's tables when they are missing.
///
/// # Errors
/// The database's error.
pub async fn migrate(pool: &SqlxPool<Postgres>) -> Result<(), sqlx::Error> {
    for statement in SCHEMA {
        sqlx::query(statement).execute(pool).await?;
    }
    Ok(())
}

/// Inserts a queued job inside the caller's transaction.
pub(crate) async fn insert_job(
    tx: &mut SqlxTransaction<Postgres>,
    kind: &str,
    payload: &str,
) -> Result<Job, sqlx::Error> {
    sqlx::query_as!(
        Job,
        "INSERT INTO jobs (kind, payload) VALUES ($1, $2) RETURNING id, kind, payload, state",
        kind,
        payload
    )
    .fetch_one(&mut **tx)
    .await
}

/// Appends an audit row for `job_id` inside the caller's transaction, so the row and the
/// change it records commit together or not at all.
pub(crate) async fn insert_event(
    tx: &mut SqlxTransaction<Postgres>,
    job_id: i64,
    event: &str,
    detail: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO job_events (job_id, event, detail) VALUES ($1, $2, $3)",
        job_id,
        event,
        detail
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Cancels a job that is still queued; `None` when it is not (or does not exist).
pub(crate) async fn cancel_job(
    tx: &mut SqlxTransaction<Postgres>,
    id: i64,
) -> Result<Option<Job>, sqlx::Error> {
    sqlx::query_as!(
        Job,
        "UPDATE jobs SET state = 'cancelled' WHERE id = $1 AND state = 'queued' \
         RETURNING id, kind, payload, state",
        id
    )
    .fetch_optional(&mut **tx)
    .await
}

/// Marks at most `limit` queued jobs done, oldest first, skipping rows another worker holds;
/// returns their ids.
pub(crate) async fn finish_queued(
    tx: &mut SqlxTransaction<Postgres>,
    limit: i64,
) -> Result<Vec<i64>, sqlx::Error> {
    sqlx::query_scalar!(
        "UPDATE jobs SET state = 'done', finished_at = now() WHERE id IN \
         (SELECT id FROM jobs WHERE state = 'queued' ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED) \
         RETURNING id",
        limit
    )
    .fetch_all(&mut **tx)
    .await
}

/// One job by id.
pub(crate) async fn find_job(
    pool: &SqlxPool<Postgres>,
    id: i64,
) -> Result<Option<Job>, sqlx::Error> {
    sqlx::query_as!(Job, "SELECT id, kind, payload, state FROM jobs WHERE id = $1", id)
        .fetch_optional(pool)
        .await
}

/// The first `limit` jobs by id.
pub(crate) async fn list_jobs(
    pool: &SqlxPool<Postgres>,
    limit: i64,
) -> Result<Vec<Job>, sqlx::Error> {
    sqlx::query_as!(Job, "SELECT id, kind, payload, state FROM jobs ORDER BY id LIMIT $1", limit)
        .fetch_all(pool)
        .await
}

/// A job's audit trail, oldest first.
pub(crate) async fn job_events(
    pool: &SqlxPool<Postgres>,
    job_id: i64,
) -> Result<Vec<JobEvent>, sqlx::Error> {
    sqlx::query_as!(
        JobEvent,
        "SELECT event, detail FROM job_events WHERE job_id = $1 ORDER BY id",
        job_id
    )
    .fetch_all(pool)
    .await
}

/// How many jobs are in each state.
pub(crate) async fn stats(pool: &SqlxPool<Postgres>) -> Result<Stats, sqlx::Error> {
    let row = sqlx::query!(
        r#"SELECT count(*) FILTER (WHERE state = 'queued') AS "queued!",
                  count(*) FILTER (WHERE state = 'done') AS "done!",
                  count(*) FILTER (WHERE state = 'cancelled') AS "cancelled!"
           FROM jobs"#
    )
    .fetch_one(pool)
    .await?;
    Ok(Stats { queued: row.queued, done: row.done, cancelled: row.cancelled })
}
