//! `ucm-compat`: the legacy `DatabaseManager` (sync) and `DatabaseSessionManager` (async) interfaces over ucm, so old call sites keep compiling while a codebase migrates.
//!
//! The adapters are thin: each legacy call translates into the protocol
//! (`get_connection`, `execute`, `fetch_all`, `begin`/`commit`/`rollback`,
//! `health_check`). What they run on is chosen by one Cargo feature:
//!
//! - **`unified-v2` off** (the default, as the migration flag was): every
//!   `DatabaseManager`/`DatabaseSessionManager` builds a private pool of its own
//!   ([`LEGACY_POOL_SIZE`] connections kept, no circuit breaker, no replicas): the legacy
//!   behaviour, faithfully.
//! - **`unified-v2` on**: the same signatures route through the process-wide unified
//!   manager for their database in [`LEGACY_MODE`] (`ucm::unified_manager_for`): one pool,
//!   one breaker, one set of metrics and health, HA routing when `DATABASE_REPLICA_URLS`
//!   names replicas of `DATABASE_URL`'s database. Ten managers on one URL share one pool.
//!
//! # Sync over async
//!
//! ucm is async; the sync `DatabaseManager` blocks. ucm-compat runs its own small tokio
//! runtime (two worker threads named `ucm-compat`, started on first use, kept for the life
//! of the process), and every connection the adapters open is opened and driven there:
//! - from a plain thread, a sync call enters that runtime and waits for the result;
//! - from inside a tokio runtime, where tokio refuses to start or enter another runtime on
//!   the same thread ("cannot start a runtime from within a runtime"), the call runs on a
//!   short-lived helper thread while the caller waits; on a multi-thread runtime the wait
//!   goes through `block_in_place`, so the caller's other tasks keep running on the other
//!   workers. On a current-thread runtime the caller's runtime waits with it (as any
//!   blocking call makes it wait), but nothing the call needs runs there: no deadlock.
//!
//! The async adapter runs its work on the same runtime and awaits it, so a session works
//! from any runtime, including one that shuts down while the shared pool lives on (every
//! `#[tokio::test]` has one).
//!
//! # Migration
//! `docs/migration.md` walks from hand-rolled pools to these adapters, then to
//! `unified-v2`, then to the native protocol (`DatabaseManager::manager`).

mod async_manager;
mod backing;
mod bridge;
mod session;
mod sync_manager;

pub use async_manager::{DatabaseSessionManager, get_session_context};
pub use backing::{LEGACY_MAX_OVERFLOW, LEGACY_MODE, LEGACY_POOL_SIZE};
pub use session::{AsyncSession, Session};
pub use sync_manager::{DatabaseManager, close_db_manager, get_db_manager};
pub use ucm;

/// Whether this build routes legacy managers through the unified manager (`unified-v2`).
pub const UNIFIED_V2: bool = cfg!(feature = "unified-v2");

/// Logs `sql` when a manager was created with `echo`: the statement only, never its
/// parameters (they may hold secrets).
fn echo(enabled: bool, sql: &str) {
    if enabled {
        tracing::info!(target: "ucm_compat::sql", "{sql}");
    }
}
