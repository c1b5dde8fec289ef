//! `ucm demo`: a concurrent mixed workload through the unified manager in three modes, with a progress bar and a summary; the workload, the conflict and the report each have a file, and every statement is named in `schema.rs`.

mod cache;
mod conflict;
mod report;
mod schema;
mod workload;

use std::sync::Arc;

use anyhow::{Context, bail};

use crate::backend::BackendChoice;
use schema::Schema;
use ucm::{ConnectionManagerProtocol, DatabaseUrl, Manager, ManagerConfig, ManagerMode};
use ucm_kernel::backend::Backend;

/// `ucm demo` options.
#[derive(Debug, clap::Args)]
pub(crate) struct DemoArgs {
    /// Run against this database instead of a throwaway SQLite file (postgres://, mysql://,
    /// sqlite://). Deliberately not read from $DATABASE_URL: the demo creates and fills
    /// tables, which it should do only where it is pointed explicitly.
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
    /// How long each mode's workload runs, in seconds.
    #[arg(long, default_value_t = 3.0)]
    pub(super) seconds: f64,
    /// How many tasks run the workload concurrently.
    #[arg(long, default_value_t = 16)]
    pub(super) tasks: usize,
    /// How many accounts the demo schema holds.
    #[arg(long, default_value_t = 100)]
    pub(super) accounts: i64,
    /// Which backend drives the connections.
    #[arg(long, value_enum, default_value_t = BackendChoice::Sqlx)]
    backend: BackendChoice,
    /// A Redis (redis://, rediss://, redis+sentinel://) for the query cache phase: tasks
    /// read through the two-level cache while transfers invalidate it. Without it the
    /// phase is skipped.
    #[arg(long, value_name = "URL", env = "REDIS_URL")]
    redis_url: Option<String>,
}

/// The modes the demo runs, in order.
const MODES: [ManagerMode; 3] =
    [ManagerMode::AsyncModern, ManagerMode::McpServer, ManagerMode::HighAvailability];

pub(crate) async fn run(args: &DemoArgs) -> anyhow::Result<()> {
    match args.backend {
        BackendChoice::Sqlx => run_on::<ucm_sqlx::Sqlx>(args).await,
        BackendChoice::Diesel => run_on::<ucm_diesel::Diesel>(args).await,
    }
}

async fn run_on<B: Backend>(args: &DemoArgs) -> anyhow::Result<()> {
    if args.seconds <= 0.0 || args.tasks == 0 || args.accounts < 2 {
        bail!("--seconds must be positive, --tasks at least 1 and --accounts at least 2");
    }
    let (url, scratch) = match &args.database_url {
        Some(url) => {
            crate::url_arg::warn_if_password(url);
            (url.clone(), None)
        }
        None => {
            let path = std::env::temp_dir().join(format!("ucm-demo-{}.db", std::process::id()));
            (format!("sqlite://{}", path.display()), Some(path))
        }
    };
    let parsed = DatabaseUrl::parse(&url)?;
    println!(
        "ucm demo: {} tasks for {:.1}s per mode on {parsed} ({}, {} backend)",
        args.tasks,
        args.seconds,
        parsed.kind(),
        B::NAME
    );
    if scratch.is_some() {
        println!(
            "(a throwaway SQLite file; pass --database-url to run against PostgreSQL or MariaDB)"
        );
    }
    let schema = Schema::new(parsed.kind());
    let admin = Manager::<B>::connect(config(&url, ManagerMode::Admin)?).await?;
    let result = demo(&url, &admin, &schema, args).await;
    // Clean up whatever happened, then report the demo's own outcome.
    schema.drop(&admin).await;
    admin.close().await?;
    if let Some(path) = scratch {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }
    result
}

fn config(url: &str, mode: ManagerMode) -> anyhow::Result<ManagerConfig> {
    Ok(ManagerConfig::builder(mode).primary(url).build()?)
}

async fn demo<B: Backend>(
    url: &str,
    admin: &Manager<B>,
    schema: &Schema,
    args: &DemoArgs,
) -> anyhow::Result<()> {
    schema.create(admin, args.accounts).await.context("creating the demo schema")?;
    let expected_total = args.accounts * 1_000;
    for mode in MODES {
        let manager = Arc::new(Manager::<B>::connect(config(url, mode)?).await?);
        let stats = workload::run(&manager, &schema.statements(), args, mode).await;
        report::print_mode(mode, &stats, &manager, args.seconds).await;
        // With --otel, the pool gauges are exported while this mode's pool still exists.
        crate::telemetry::flush_metrics();
        manager.close().await?;
    }
    match &args.redis_url {
        Some(redis_url) => {
            let manager =
                Arc::new(Manager::<B>::connect(config(url, ManagerMode::McpServer)?).await?);
            let outcome = cache::run(&manager, schema, redis_url, args.tasks, args.seconds).await;
            manager.close().await?;
            outcome?;
        }
        None => println!("\n(no query cache phase: pass --redis-url or set REDIS_URL)"),
    }
    conflict::run(admin, schema).await?;
    let total = schema.total_balance(admin).await?;
    println!(
        "\nmoney conserved across every transfer and retry: {} (total {total}, expected {expected_total})",
        if total == expected_total { "yes" } else { "NO" }
    );
    if total != expected_total {
        bail!("the balances no longer add up: {total} instead of {expected_total}");
    }
    Ok(())
}
