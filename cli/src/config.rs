//! `ucm config`: the effective configuration for a mode (preset, `UCM_*` overrides, URLs), secrets redacted.

use ucm::{ManagerConfig, ManagerMode, PoolConfiguration};

use crate::url_arg;

/// `ucm config` options.
#[derive(Debug, clap::Args)]
pub(crate) struct ConfigArgs {
    /// The manager mode: mcp_server, ml_training, admin, sync_heavy, async_modern, high_availability.
    #[arg(long, default_value = "async_modern")]
    mode: ManagerMode,
    /// The primary's URL; defaults to $DATABASE_URL, the better place for one with a
    /// password (the password is never printed).
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
    /// Replica URLs, comma-separated; default to $DATABASE_REPLICA_URLS.
    #[arg(long, value_name = "URLS", value_delimiter = ',')]
    replica_urls: Vec<String>,
}

/// The same resolution a manager performs, printed instead of connected.
pub(crate) fn run(args: &ConfigArgs) -> anyhow::Result<()> {
    let pool = PoolConfiguration::builder(args.mode).from_env()?.build()?;
    let Some(primary) = url_arg::primary(args.database_url.as_deref(), &["DATABASE_URL"]) else {
        println!("mode:        {}", args.mode);
        println!("primary:     none (set DATABASE_URL or pass --database-url)");
        print!("{pool}");
        return Ok(());
    };
    let replicas = url_arg::replicas(&args.replica_urls, "DATABASE_REPLICA_URLS");
    let config = ManagerConfig::builder(args.mode)
        .primary(&primary)
        .replicas(replicas)
        .pool(pool)
        .build()?;
    print!("{config}");
    Ok(())
}
