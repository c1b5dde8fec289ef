//! `ucm config`: the effective configuration for a mode (preset, TOML file, environment, command line), secrets redacted, with where each setting came from.

use std::path::PathBuf;

use ucm::{ConfigSources, ManagerConfig, ManagerMode, PoolConfiguration};

use crate::output::{self, Format};
use crate::url_arg;

/// `ucm config` options.
#[derive(Debug, clap::Args)]
pub(crate) struct ConfigArgs {
    /// The manager mode: mcp_server, ml_training, admin, sync_heavy, async_modern, high_availability.
    #[arg(long, default_value = "async_modern")]
    mode: ManagerMode,
    /// A TOML configuration file; defaults to $UCM_CONFIG. The environment's settings come
    /// on top of it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The primary's URL, on top of the file and $DATABASE_URL (the better place for one
    /// with a password; the password is never printed).
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
    /// Replica URLs, comma-separated, instead of the file's and $DATABASE_REPLICA_URLS.
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
    let mut sources = ConfigSources::environment();
    if let Some(path) = &args.config {
        sources = sources.with_file(path);
    }
    let primary = url_arg::primary(args.database_url.as_deref(), &[]);
    if primary.is_none() && !sources.has_primary(args.mode)? {
        let pool = sources.pool(args.mode)?;
        if args.format == Format::Json {
            return output::print_json(&PoolOnly { mode: args.mode, primary: None, pool: &pool });
        }
        println!("mode:        {}", args.mode);
        println!(
            "primary:     none (set DATABASE_URL, `primary` in the file, PGHOST..., or pass \
             --database-url)"
        );
        print!("{pool}");
        return Ok(());
    }
    let mut builder = ManagerConfig::builder_from(args.mode, &sources)?;
    if let Some(url) = primary {
        builder = builder.primary(&url);
    }
    if !args.replica_urls.is_empty() {
        builder = builder.without_replicas().replicas(url_arg::replicas(&args.replica_urls, ""));
    }
    let config = builder.build()?;
    match args.format {
        Format::Json => output::print_json(&config)?,
        Format::Text => print!("{config}"),
    }
    Ok(())
}
