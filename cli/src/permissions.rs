//! `ucm check --permissions`: connect as a mode's role (its URL and credentials from the file and the environment) and run the permission self-test against the mode's policy.

use std::path::Path;

use ucm::{
    ConfigSources, ConnectionManagerProtocol, ManagerConfig, ManagerMode, PoolConfiguration,
};
use ucm_sqlx::SqlxManager;

use crate::output::{self, Exit, Format};

/// Runs the self-test and prints its report; fails (exit 1) when a check failed.
pub(crate) async fn run(
    mode: ManagerMode,
    file: Option<&Path>,
    url: Option<&str>,
    format: Format,
) -> anyhow::Result<()> {
    let mut sources = ConfigSources::environment();
    if let Some(path) = file {
        sources = sources.with_file(path);
    }
    let mut builder = ManagerConfig::builder_from(mode, &sources)?;
    if let Some(url) = url {
        builder = builder.primary(url);
    }
    let pool = PoolConfiguration::builder(mode)
        .pool_size(1)
        .max_overflow(0)
        .application_name("ucm_check")
        .build()?;
    let config = builder.pool(pool).build()?;
    let policy = config.permissions().clone();
    let kind = config.kind();
    let manager = SqlxManager::connect(config).await?;
    let report = ucm::check_permissions(&manager, kind, &policy).await;
    manager.close().await?;
    let report = report?;
    match format {
        Format::Json => output::print_json(&report)?,
        Format::Text => print!("{report}"),
    }
    if report.passed() {
        Ok(())
    } else {
        let failed = report.checks.iter().filter(|c| !c.passed()).count();
        Err(Exit::new(output::REJECTING, format!("{failed} permission check(s) failed for {mode}"))
            .into())
    }
}
