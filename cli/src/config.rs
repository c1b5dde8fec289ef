//! `ucm config`: the effective configuration for a mode (preset, `UCM_*` overrides, URLs), secrets redacted.

use ucm::{ManagerConfig, ManagerMode, PoolConfiguration};

use crate::output::{self, Format};
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
    /// `text`, or `json`: the same configuration as one document, secrets redacted.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

/// What `ucm config --format json` prints without a URL: the mode's pool settings.
#[derive(serde::Serialize)]
struct PoolOnly<'a> {
    mode: ManagerMode,
    primary: Option<String>,
    pool: &'a PoolConfiguration,
}

/// The same resolution a manager performs, printed instead of connected.
pub(crate) fn run(args: &ConfigArgs) -> anyhow::Result<()> {
    let pool = PoolConfiguration::builder(args.mode).from_env()?.build()?;
    let Some(primary) = url_arg::primary(args.database_url.as_deref(), &["DATABASE_URL"]) else {
        if args.format == Format::Json {
            return output::print_json(&PoolOnly { mode: args.mode, primary: None, pool: &pool });
        }
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
    match args.format {
        Format::Json => output::print_json(&config)?,
        Format::Text => print!("{config}"),
    }
    Ok(())
}
