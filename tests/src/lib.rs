//! Shared fixtures for ucm's cross-backend conformance and high-availability suites: finding the databases, per-database SQL, unique names, and the `Backend` a suite runs against.
//!
//! The scenarios themselves live in [`scenarios`], written once against
//! `ConnectionManagerProtocol`; each file in `tests/tests/` instantiates them for one
//! backend and every database. The chaos scenarios in [`chaos`] put a
//! [`fault_proxy::FaultProxy`] between a manager and PostgreSQL; `chaos_suite!`
//! instantiates them per backend.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // Test support code.

pub mod cache;
pub mod chaos;
pub mod diagnostics;
pub mod fault_proxy;
pub mod ha;
pub mod ha_scenarios;
pub mod operations;
pub mod pipeline;
pub mod scenarios;
pub mod secrets;
pub mod tls;

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};

use ucm_kernel::{
    ConnectionManagerProtocol, DatabaseKind, ManagerConfig, ManagerMode, PoolConfiguration,
};

/// A backend under test: how to build its manager from a configuration.
pub trait Backend: 'static {
    /// The manager type.
    type Manager: ConnectionManagerProtocol + 'static;
    /// The backend as core names it.
    type Core: ucm_kernel::backend::Backend;
    /// The backend's name, for messages.
    const NAME: &'static str;
    /// Connects a manager.
    fn connect(
        config: ManagerConfig,
    ) -> impl Future<Output = ucm_kernel::Result<Self::Manager>> + Send;
    /// The manager as core's `Manager`, for what the protocol does not cover (resize,
    /// suspend).
    fn kernel(manager: &Self::Manager) -> &ucm_kernel::Manager<Self::Core>;
    /// A read-your-writes session on `manager`.
    fn session(manager: &Self::Manager) -> ucm_kernel::RoutingSession<'_, Self::Core>;
    /// Runs the statement `sql` on a `kind` database through the backend's own
    /// driver-shaped handle (sqlx's executor on `SqlxPool`, diesel's `sql_query` on
    /// `DieselPool`), not through the neutral API.
    fn driver_execute(
        manager: std::sync::Arc<Self::Manager>,
        kind: DatabaseKind,
        sql: String,
    ) -> impl Future<Output = ucm_kernel::Result<()>> + Send;
}

/// One database a scenario runs against, with its URL.
#[derive(Debug, Clone)]
pub struct Target {
    /// Which database.
    pub kind: DatabaseKind,
    /// Its URL (from `PG_DATABASE_URL`, `MYSQL_DATABASE_URL`, `SQLITE_DATABASE_URL`, or `DATABASE_URL`).
    pub url: String,
}

impl Target {
    /// Finds the database's URL in the environment. When it is missing, prints why and
    /// returns `None` (the test then passes vacuously) — unless `CI` is set, where a
    /// missing database fails the test: CI must run everything.
    pub fn find(kind: DatabaseKind) -> Option<Self> {
        let var = match kind {
            DatabaseKind::Postgres => "PG_DATABASE_URL",
            DatabaseKind::MySql => "MYSQL_DATABASE_URL",
            DatabaseKind::Sqlite => "SQLITE_DATABASE_URL",
        };
        let from_var = std::env::var(var).ok().filter(|v| !v.is_empty());
        let fallback = std::env::var("DATABASE_URL")
            .ok()
            .filter(|v| ucm_kernel::DatabaseUrl::parse(v).is_ok_and(|u| u.kind() == kind));
        match from_var.or(fallback) {
            Some(url) => Some(Self { kind, url }),
            None => skip_unless_ci(var),
        }
    }

    /// PostgreSQL through PgBouncer in transaction mode (`PGBOUNCER_DATABASE_URL`, which
    /// `cargo xtask services` exports); `None` (the test passes vacuously) when it is not
    /// set, and a failure under `CI`, as for [`Self::find`].
    pub fn pgbouncer() -> Option<Self> {
        const VAR: &str = "PGBOUNCER_DATABASE_URL";
        match std::env::var(VAR).ok().filter(|v| !v.is_empty()) {
            Some(url) => Some(Self { kind: DatabaseKind::Postgres, url }),
            None => skip_unless_ci(VAR),
        }
    }

    /// A manager configuration for this target in `mode`, with `pool` overrides.
    pub fn config(&self, mode: ManagerMode, pool: PoolConfiguration) -> ManagerConfig {
        ManagerConfig::builder(mode).primary(&self.url).pool(pool).build().unwrap()
    }

    /// The `n`th (1-based) parameter placeholder: `$n` for PostgreSQL, `?` elsewhere.
    pub fn p(&self, n: usize) -> String {
        match self.kind {
            DatabaseKind::Postgres => format!("${n}"),
            _ => "?".to_owned(),
        }
    }

    /// `n` placeholders separated by commas.
    pub fn placeholders(&self, n: usize) -> String {
        (1..=n).map(|i| self.p(i)).collect::<Vec<_>>().join(", ")
    }
}

/// A missing service variable `var`: `None` (the test passes vacuously) with the reason
/// printed, or a failure under `CI`, where everything must run.
pub fn skip_unless_ci<T>(var: &str) -> Option<T> {
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false");
    assert!(!ci, "{var} is not set and CI is: run the tests through `cargo xtask test`");
    eprintln!(
        "skipped: {var} is not set (run `cargo xtask test`, which finds or starts the services)"
    );
    None
}

/// What a scenario returns: `Err` with ucm's error when a call the scenario expects to
/// succeed fails (its assertions still panic, with what they compared).
pub type Outcome = ucm_kernel::Result<()>;

/// A table name no other test (or test run) uses: tests run in parallel on one database.
pub fn unique_table(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("ucm_{prefix}_{}_{n}_{nanos}", std::process::id())
}

/// Generates one `#[tokio::test]` per scenario for `$backend` on `$kind`, against the
/// database `Target::find($kind)` gives, or the one a fourth argument gives (PgBouncer).
#[macro_export]
macro_rules! conformance_suite {
    ($module:ident, $backend:ty, $kind:expr) => {
        $crate::conformance_suite!($module, $backend, $kind, $crate::Target::find($kind));
    };
    ($module:ident, $backend:ty, $kind:expr, $target:expr) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;
            use $crate::scenarios;
            $crate::conformance_suite!(@tests $backend, $target;
                protocol_methods, values_round_trip, presets_reach_the_pool, read_only_is_enforced,
                transactions_commit_and_roll_back, a_panic_rolls_back, serialization_failures_are_retried,
                pool_exhaustion_is_its_own_error, connect_failures_say_why, bad_credentials_say_so,
                dropped_futures_leak_nothing, close_drains, statement_timeouts_are_enforced,
                a_cancelled_statement_is_not_inherited, a_silent_server_meets_the_client_deadline,
                a_configured_time_zone_reaches_the_session, no_session_state_reaches_another_client);
        }
    };
    (@tests $backend:ty, $target:expr; $($scenario:ident),+) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $scenario() -> $crate::Outcome {
                match $target {
                    Some(target) => scenarios::$scenario::<$backend>(&target).await,
                    None => Ok(()),
                }
            }
        )+
    };
}

/// Generates one `#[tokio::test]` per chaos scenario for `$backend`, against PostgreSQL
/// only: the fault proxy finds a write's reply by reading PostgreSQL's wire protocol. The
/// scenarios that restart a server run on the HA pair's primary (`@ha_tests`) and skip, or
/// fail under `CI`, as the HA scenarios do when the pair is not exported.
#[macro_export]
macro_rules! chaos_suite {
    ($module:ident, $backend:ty) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;
            $crate::chaos_suite!(@tests $backend; reply_lost_after_commit_is_ambiguous);
            $crate::chaos_suite!(@ha_tests $backend; ledger_survives_killed_backends_and_a_restart);
        }
    };
    (@ha_tests $backend:ty; $($scenario:ident),+) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $scenario() {
                if let Some(cluster) = $crate::ha::HaCluster::find() {
                    $crate::chaos::$scenario::<$backend>(&cluster).await;
                }
            }
        )+
    };
    (@tests $backend:ty; $($scenario:ident),+) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $scenario() {
                if let Some(target) = $crate::chaos::target() {
                    $crate::chaos::$scenario::<$backend>(&target).await;
                }
            }
        )+
    };
}
