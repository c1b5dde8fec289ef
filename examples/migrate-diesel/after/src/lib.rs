//! A job queue on PostgreSQL with sync diesel: enqueue, fetch the next job with `FOR UPDATE SKIP LOCKED`, complete, fail with retries, requeue.
//!
//! After the migration: ucm's `DieselBlockingPool`, whose connections are sync diesel connections on ucm's pool.

pub mod schema;

use diesel::prelude::*;
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use ucm_diesel::core::{ConnectionMode, ManagerConfig, ManagerMode, PoolConfiguration};
use ucm_diesel::{DieselBlockingPool, DieselSyncConnection, PgDialect};

use schema::jobs;

/// The sync diesel connection the queue's functions take.
pub type DbConnection = DieselSyncConnection<PgDialect>;

/// The pool the application shares between threads.
pub type DbPool = DieselBlockingPool<PgDialect>;

/// The pool's error when no connection could be had.
pub type PoolError = ucm_diesel::core::Error;

/// The queue's migrations, compiled in.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// What can go wrong.
#[derive(Debug)]
pub enum Error {
    /// No connection could be had.
    Pool(PoolError),
    /// A statement failed.
    Database(diesel::result::Error),
    /// The migrations failed.
    Migration(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Pool(e) => write!(f, "pool: {e}"),
            Self::Database(e) => write!(f, "database: {e}"),
            Self::Migration(e) => write!(f, "migrations: {e}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<PoolError> for Error {
    fn from(error: PoolError) -> Self {
        Self::Pool(error)
    }
}

impl From<diesel::result::Error> for Error {
    fn from(error: diesel::result::Error) -> Self {
        Self::Database(error)
    }
}

/// A job as the queue hands it out.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = jobs)]
pub struct Job {
    /// Its id.
    pub id: i64,
    /// What kind of work it is.
    pub kind: String,
    /// The job's input.
    pub payload: String,
    /// `queued`, `running`, `done` or `failed`.
    pub status: String,
    /// How many times a worker took it.
    pub attempts: i32,
    /// After this many failed attempts it stays `failed`.
    pub max_attempts: i32,
    /// The worker holding it while `running`.
    pub locked_by: Option<String>,
    /// The last failure's message.
    pub last_error: Option<String>,
}

/// A new job.
#[derive(Debug, Insertable)]
#[diesel(table_name = jobs)]
struct NewJob<'a> {
    kind: &'a str,
    payload: &'a str,
    max_attempts: i32,
}

/// Opens the application's pool on `url`.
///
/// # Errors
/// When the URL or configuration is refused or the manager cannot start.
pub fn connect(url: &str) -> Result<DbPool, Error> {
    let pool = PoolConfiguration::builder(ManagerMode::SyncHeavy).pool_size(4).max_overflow(0);
    let config = ManagerConfig::builder(ManagerMode::SyncHeavy).primary(url).pool(pool.build()?);
    Ok(DbPool::connect(config.build()?, ConnectionMode::ReadWrite)?)
}

/// Runs the pending migrations.
///
/// # Errors
/// When a migration fails.
pub fn migrate(conn: &mut DbConnection) -> Result<(), Error> {
    conn.run_pending_migrations(MIGRATIONS).map_err(|e| Error::Migration(e.to_string()))?;
    Ok(())
}

/// Adds a job; it may be attempted `max_attempts` times.
///
/// # Errors
/// When the insert fails.
pub fn enqueue(
    conn: &mut DbConnection,
    kind: &str,
    payload: &str,
    max_attempts: i32,
) -> Result<Job, Error> {
    Ok(diesel::insert_into(jobs::table)
        .values(NewJob { kind, payload, max_attempts })
        .returning(Job::as_returning())
        .get_result(conn)?)
}

/// Takes the oldest queued job for `worker`, skipping jobs other workers are taking at this
/// moment (`FOR UPDATE SKIP LOCKED`), and marks it running; `None` when none is free.
///
/// # Errors
/// When a statement fails.
pub fn fetch_next(conn: &mut DbConnection, worker: &str) -> Result<Option<Job>, Error> {
    Ok(conn.transaction(|conn| {
        let next: Option<i64> = jobs::table
            .filter(jobs::status.eq("queued"))
            .order(jobs::id)
            .select(jobs::id)
            .for_update()
            .skip_locked()
            .first(conn)
            .optional()?;
        let Some(id) = next else { return Ok(None) };
        diesel::update(jobs::table.find(id))
            .set((
                jobs::status.eq("running"),
                jobs::attempts.eq(jobs::attempts + 1),
                jobs::locked_by.eq(worker),
            ))
            .returning(Job::as_returning())
            .get_result(conn)
            .map(Some)
    })?)
}

/// Marks a running job done; `false` when it was not running.
///
/// # Errors
/// When the update fails.
pub fn complete(conn: &mut DbConnection, id: i64) -> Result<bool, Error> {
    let updated = diesel::update(jobs::table.find(id).filter(jobs::status.eq("running")))
        .set((jobs::status.eq("done"), jobs::locked_by.eq(None::<String>)))
        .execute(conn)?;
    Ok(updated == 1)
}

/// Records a running job's failure: queued again while it has attempts left, else `failed`.
/// Returns the job as it now is.
///
/// # Errors
/// When a statement fails, or `NotFound` when the job was not running.
pub fn fail(conn: &mut DbConnection, id: i64, error: &str) -> Result<Job, Error> {
    Ok(conn.transaction(|conn| {
        let job: Job = jobs::table
            .find(id)
            .filter(jobs::status.eq("running"))
            .select(Job::as_select())
            .for_update()
            .first(conn)?;
        let status = if job.attempts < job.max_attempts { "queued" } else { "failed" };
        diesel::update(jobs::table.find(id))
            .set((
                jobs::status.eq(status),
                jobs::locked_by.eq(None::<String>),
                jobs::last_error.eq(error),
            ))
            .returning(Job::as_returning())
            .get_result(conn)
    })?)
}

/// Puts a failed job back in the queue with its attempts reset; `false` when it had not
/// failed.
///
/// # Errors
/// When the update fails.
pub fn retry(conn: &mut DbConnection, id: i64) -> Result<bool, Error> {
    let updated = diesel::update(jobs::table.find(id).filter(jobs::status.eq("failed")))
        .set((jobs::status.eq("queued"), jobs::attempts.eq(0)))
        .execute(conn)?;
    Ok(updated == 1)
}

/// How many jobs are in each status, by status name.
///
/// # Errors
/// When the query fails.
pub fn counts(conn: &mut DbConnection) -> Result<Vec<(String, i64)>, Error> {
    Ok(jobs::table
        .group_by(jobs::status)
        .select((jobs::status, diesel::dsl::count_star()))
        .order(jobs::status)
        .load(conn)?)
}
