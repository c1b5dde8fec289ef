//! The `ucm` command line: today `ucm config`; `demo`, `check`, `health`, `bench` and `audit` arrive with the backends.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ucm::{ManagerConfig, ManagerMode, PoolConfiguration};

/// ucm, the unified connection manager.
#[derive(Debug, Parser)]
#[command(name = "ucm", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the effective configuration for a mode (preset, environment overrides, URLs), secrets redacted.
    Config(ConfigArgs),
}

#[derive(Debug, clap::Args)]
struct ConfigArgs {
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Config(args) => config(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `ucm config`: the same resolution a manager performs, printed instead of connected.
fn config(args: &ConfigArgs) -> anyhow::Result<()> {
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
