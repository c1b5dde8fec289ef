//! `ucm check`: connect once to `DATABASE_URL` (or `--database-url`) and report server version, latency, TLS and read-only state, or a precise diagnosis.

use std::time::{Duration, Instant};

use ucm::{
    ConnectionManagerProtocol, ConnectionMode, DatabaseKind, DatabaseUrl, Error, ManagerConfig,
    ManagerMode, PoolConfiguration, Row,
};
use ucm_sqlx::SqlxManager;

use crate::output::{self, Exit, Format};
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
    /// Run the permission self-test instead: connect as `--mode`'s role (its URL and
    /// credentials from `--config`/$UCM_CONFIG and the environment, or `--database-url`)
    /// and check what its policy (`[permissions]`, `[modes.<mode>.permissions]`) requires
    /// and forbids. Exit 1 when a check fails.
    #[arg(long)]
    permissions: bool,
    /// The mode whose role and policy `--permissions` checks.
    #[arg(long, default_value = "async_modern", requires = "permissions")]
    mode: ManagerMode,
    /// A TOML configuration file for `--permissions`; defaults to $UCM_CONFIG.
    #[arg(long, value_name = "FILE", requires = "permissions")]
    config: Option<std::path::PathBuf>,
    /// Round trips to time.
    #[arg(long, default_value_t = 5)]
    pings: u32,
    /// `text`, or `json`: one document on standard output, failures included.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

/// What `ucm check` found, as `--format json` prints it.
#[derive(Debug, Default, serde::Serialize)]
struct CheckReport {
    /// The URL, password redacted; `None` when it could not be read.
    url: Option<String>,
    /// The TLS mode ucm resolved for it.
    tls_mode: Option<String>,
    /// Whether the server accepted the connection and answered.
    accepting: bool,
    /// The exit code (pg_isready's meanings).
    exit_code: u8,
    connect_ms: Option<f64>,
    server: Option<String>,
    latency: Option<Latency>,
    tls: Option<String>,
    read_only: Option<String>,
    error: Option<Failure>,
}

#[derive(Debug, serde::Serialize)]
struct Latency {
    best_ms: f64,
    mean_ms: f64,
    round_trips: u32,
}

#[derive(Debug, serde::Serialize)]
struct Failure {
    /// ucm's error kind (`connect_failed`, `configuration`...), when the error is ucm's.
    kind: Option<&'static str>,
    /// Why the connect failed (`refused`, `authentication`...), for a connect failure.
    reason: Option<String>,
    /// What went wrong and what to do, in one line, without the password.
    message: String,
}

pub(crate) async fn run(args: &CheckArgs) -> anyhow::Result<()> {
    if args.url.is_some() {
        eprintln!(
            "warning: `ucm check URL` is deprecated; use `ucm check --database-url URL`, or \
             better DATABASE_URL"
        );
    }
    if args.permissions {
        let flag = args.database_url.as_deref().or(args.url.as_deref());
        if let Some(url) = flag {
            url_arg::warn_if_password(url);
        }
        return crate::permissions::run(args.mode, args.config.as_deref(), flag, args.format).await;
    }
    let text = args.format == Format::Text;
    let mut report = CheckReport::default();
    let outcome = check(args, text, &mut report).await;
    if let Err(e) = &outcome {
        report.exit_code = output::code_of(e);
        if report.error.is_none() {
            let ucm_error = e.chain().find_map(|cause| cause.downcast_ref::<Error>());
            report.error = Some(failure(ucm_error, crate::one_line(e)));
        }
    }
    if !text {
        output::print_json(&report)?;
    }
    outcome
}

/// Connects and asks, filling `report` as it goes (and printing each line when `text`).
async fn check(args: &CheckArgs, text: bool, report: &mut CheckReport) -> anyhow::Result<()> {
    let say = |line: String| {
        if text {
            println!("{line}");
        }
    };
    let flag = args.database_url.as_deref().or(args.url.as_deref());
    let url = DatabaseUrl::parse(&url_arg::required(flag, &["DATABASE_URL"])?)?;
    report.url = Some(url.to_string());
    report.tls_mode = Some(url.ssl_mode().to_string());
    say(format!("checking {url}"));
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
            say(format!("  connect:   FAILED after {}", ms(started.elapsed())));
            report.error = Some(failure(Some(&e), diagnosis(&e)));
            return Err(Exit::new(output::code_for(&e), diagnosis(&e)).into());
        }
    };
    report.connect_ms = Some(millis(started.elapsed()));
    say(format!("  connect:   ok in {} (tls {})", ms(started.elapsed()), url.ssl_mode()));
    let (version_sql, tls_sql, read_only_sql) = queries(url.kind());
    let version = first_text(&manager, version_sql).await?;
    say(format!("  server:    {version}"));
    report.server = Some(version);
    let mut best = Duration::MAX;
    let mut total = Duration::ZERO;
    let round_trips = args.pings.max(1);
    for _ in 0..round_trips {
        let t = Instant::now();
        manager.fetch_all(ConnectionMode::ReadOnly, "SELECT 1", &[]).await?;
        best = best.min(t.elapsed());
        total += t.elapsed();
    }
    say(format!(
        "  latency:   {} best, {} mean over {round_trips} round trips",
        ms(best),
        ms(total / round_trips)
    ));
    report.latency =
        Some(Latency { best_ms: millis(best), mean_ms: millis(total / round_trips), round_trips });
    // Informational: a server that hides these (say MySQL 8 without information_schema
    // status tables) still passes the check.
    if let Some(sql) = tls_sql {
        let tls = first_text(&manager, sql).await.unwrap_or_else(|e| format!("unknown ({e})"));
        say(format!("  tls:       {tls}"));
        report.tls = Some(tls);
    }
    if let Some(sql) = read_only_sql {
        let read_only =
            first_text(&manager, sql).await.unwrap_or_else(|e| format!("unknown ({e})"));
        say(format!("  read-only: {read_only}"));
        report.read_only = Some(read_only);
    }
    manager.close().await?;
    report.accepting = true;
    say("ok".to_owned());
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

/// The JSON report's reading of a failure: ucm's error kind and connect reason when the
/// error is ucm's, and the one-line message.
fn failure(error: Option<&Error>, message: String) -> Failure {
    Failure {
        kind: error.map(|e| e.kind().as_str()),
        reason: error.and_then(|e| match e {
            Error::ConnectFailed { reason, .. } => Some(reason.to_string()),
            _ => None,
        }),
        message,
    }
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

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn ms(d: Duration) -> String {
    format!("{:.2}ms", d.as_secs_f64() * 1000.0)
}
