//! `ucm check`: connect once to `DATABASE_URL` (or `--database-url`) and report server version, latency, TLS and read-only state, or a precise diagnosis.

use std::time::{Duration, Instant};

use ucm::{
    ConnectionManagerProtocol, ConnectionMode, DatabaseKind, DatabaseUrl, Error, ManagerConfig,
    ManagerMode, PoolConfiguration, Row,
};
use ucm_sqlx::SqlxManager;

use crate::url_arg;

/// `ucm check` options.
#[derive(Debug, clap::Args)]
pub(crate) struct CheckArgs {
    /// The database URL to check; defaults to $DATABASE_URL, the better place for one with a
    /// password (the password is never printed).
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
    /// Deprecated: the URL as an argument, like `--database-url`.
    #[arg(value_name = "URL", conflicts_with = "database_url")]
    url: Option<String>,
    /// Round trips to time.
    #[arg(long, default_value_t = 5)]
    pings: u32,
}

pub(crate) async fn run(args: &CheckArgs) -> anyhow::Result<()> {
    if args.url.is_some() {
        eprintln!(
            "warning: `ucm check URL` is deprecated; use `ucm check --database-url URL`, or \
             better DATABASE_URL"
        );
    }
    let flag = args.database_url.as_deref().or(args.url.as_deref());
    let url = DatabaseUrl::parse(&url_arg::required(flag, &["DATABASE_URL"])?)?;
    println!("checking {url}");
    let pool = PoolConfiguration::builder(ManagerMode::Admin)
        .pool_size(1)
        .max_overflow(0)
        .application_name("ucm_check")
        .build()?;
    let config =
        ManagerConfig::builder(ManagerMode::Admin).primary_url(url.clone()).pool(pool).build()?;
    let started = Instant::now();
    let manager = match SqlxManager::connect(config).await {
        Ok(manager) => manager,
        Err(e) => {
            println!("  connect:   FAILED after {}", ms(started.elapsed()));
            anyhow::bail!("{}", diagnosis(&e));
        }
    };
    println!("  connect:   ok in {} (tls {})", ms(started.elapsed()), url.ssl_mode());
    let (version_sql, tls_sql, read_only_sql) = queries(url.kind());
    let version = first_text(&manager, version_sql).await?;
    println!("  server:    {version}");
    let mut best = Duration::MAX;
    let mut total = Duration::ZERO;
    for _ in 0..args.pings.max(1) {
        let t = Instant::now();
        manager.fetch_all(ConnectionMode::ReadOnly, "SELECT 1", &[]).await?;
        best = best.min(t.elapsed());
        total += t.elapsed();
    }
    println!(
        "  latency:   {} best, {} mean over {} round trips",
        ms(best),
        ms(total / args.pings.max(1)),
        args.pings.max(1)
    );
    // Informational: a server that hides these (say MySQL 8 without information_schema
    // status tables) still passes the check.
    if let Some(sql) = tls_sql {
        println!(
            "  tls:       {}",
            first_text(&manager, sql).await.unwrap_or_else(|e| format!("unknown ({e})"))
        );
    }
    if let Some(sql) = read_only_sql {
        println!(
            "  read-only: {}",
            first_text(&manager, sql).await.unwrap_or_else(|e| format!("unknown ({e})"))
        );
    }
    manager.close().await?;
    println!("ok");
    Ok(())
}

/// Version, TLS and read-only queries per database; SQLite has no TLS or server role.
fn queries(kind: DatabaseKind) -> (&'static str, Option<&'static str>, Option<&'static str>) {
    match kind {
        DatabaseKind::Postgres => (
            "SELECT version()",
            Some(
                "SELECT CASE WHEN ssl THEN 'yes, ' || version || ' ' || cipher ELSE 'no' END FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            ),
            Some(
                "SELECT CASE WHEN pg_is_in_recovery() THEN 'yes (a standby in recovery)' WHEN current_setting('default_transaction_read_only') = 'on' THEN 'yes (default_transaction_read_only)' ELSE 'no (accepts writes)' END",
            ),
        ),
        DatabaseKind::MySql => (
            "SELECT VERSION()",
            Some(
                "SELECT CASE WHEN VARIABLE_VALUE = '' THEN 'no' ELSE CONCAT('yes, ', VARIABLE_VALUE) END FROM information_schema.SESSION_STATUS WHERE VARIABLE_NAME = 'Ssl_cipher'",
            ),
            Some(
                "SELECT CASE WHEN @@global.read_only THEN 'yes (read_only)' ELSE 'no (accepts writes)' END",
            ),
        ),
        DatabaseKind::Sqlite => ("SELECT 'SQLite ' || sqlite_version()", None, None),
    }
}

/// Runs `sql` on a writable session: a read-only one would report its own setting.
async fn first_text(manager: &SqlxManager, sql: &str) -> anyhow::Result<String> {
    let rows: Vec<Row> = manager.fetch_all(ConnectionMode::ReadWrite, sql, &[]).await?;
    Ok(rows
        .first()
        .and_then(|r| r.values().first())
        .map(ToString::to_string)
        .unwrap_or_else(|| "unknown".into()))
}

/// One line saying what went wrong and what to do.
fn diagnosis(error: &Error) -> String {
    match error {
        Error::ConnectFailed { reason, message, .. } => {
            format!("{reason}: {message}; {}", reason.hint())
        }
        other => other.to_string(),
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2}ms", d.as_secs_f64() * 1000.0)
}
