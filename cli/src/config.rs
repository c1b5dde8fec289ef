//! `ucm config`: the effective configuration for a mode (preset, `UCM_*` overrides, URLs), secrets redacted.

use ucm::{ManagerConfig, ManagerMode, PoolConfiguration};

/// `ucm config` options.
#[derive(Debug, clap::Args)]
pub(crate) struct ConfigArgs {
    /// The manager mode: mcp_server, ml_training, admin, sync_heavy, async_modern, high_availability.
    #[arg(long, default_value = "async_modern")]
    mode: ManagerMode,
    /// The primary's URL; defaults to $DATABASE_URL.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Replica URLs, comma-separated; defaults to $DATABASE_REPLICA_URLS.
    #[arg(long, env = "DATABASE_REPLICA_URLS", hide_env_values = true, value_delimiter = ',')]
    replica_urls: Vec<String>,
}

/// The same resolution a manager performs, printed instead of connected.
pub(crate) fn run(args: &ConfigArgs) -> anyhow::Result<()> {
    let pool = PoolConfiguration::builder(args.mode).from_env()?.build()?;
    let Some(primary) = args.database_url.as_deref().filter(|url| !url.trim().is_empty()) else {
        println!("mode:        {}", args.mode);
        println!("primary:     none (set DATABASE_URL or pass --database-url)");
        print!("{pool}");
        return Ok(());
    };
    let replicas = args.replica_urls.iter().map(|url| url.trim()).filter(|url| !url.is_empty());
    let config =
        ManagerConfig::builder(args.mode).primary(primary).replicas(replicas).pool(pool).build()?;
    print!("{config}");
    Ok(())
}
