//! `ucm validate`: the consolidation validation of the original system, against one database: the unified manager's health, the legacy adapters (async and sync) and the test adapter working on it, and a production session's cost beside a direct connection's, measured; a pass/fail summary.

use std::time::{Duration, Instant};

use ucm::{
    ConnectionManagerProtocol, DatabaseTestAdapter, DatabaseUrl, HealthStatus, ManagerConfig,
    ManagerMode, SqlExecutor,
};
use ucm_compat::{DatabaseManager, DatabaseSessionManager};

use crate::output::{self, Exit, Format};
use crate::url_arg;

/// `ucm validate` options.
#[derive(Debug, clap::Args)]
pub(crate) struct ValidateArgs {
    /// The database to validate against; defaults to $DATABASE_URL.
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
    /// `SELECT 1` round trips timed on each side of the session-vs-direct comparison.
    #[arg(long, default_value_t = 200)]
    round_trips: u32,
    /// The most a production session may cost per statement, as a multiple of a direct
    /// connection's.
    #[arg(long, default_value_t = 3.0)]
    max_overhead: f64,
    /// `text`, or `json`.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

/// One check's outcome.
#[derive(Debug, serde::Serialize)]
struct Check {
    name: &'static str,
    passed: bool,
    detail: String,
}

/// The session-vs-direct measurement.
#[derive(Debug, serde::Serialize)]
struct Overhead {
    round_trips: u32,
    production_session_us: f64,
    direct_connection_us: f64,
    ratio: f64,
}

/// What `ucm validate --format json` prints.
#[derive(Debug, serde::Serialize)]
struct Validation {
    url: String,
    checks: Vec<Check>,
    overhead: Option<Overhead>,
    passed: usize,
    failed: usize,
}

pub(crate) async fn run(args: &ValidateArgs) -> anyhow::Result<()> {
    let url =
        DatabaseUrl::parse(&url_arg::required(args.database_url.as_deref(), &["DATABASE_URL"])?)?;
    if args.round_trips == 0 || args.max_overhead.is_nan() || args.max_overhead <= 0.0 {
        return Err(Exit::new(
            output::BAD_INPUT,
            "--round-trips and --max-overhead must be positive",
        )
        .into());
    }
    let config = ManagerConfig::builder(ManagerMode::Admin).primary_url(url.clone()).build()?;
    // Nothing to validate when the database does not answer: say so with pg_isready's code.
    let adapter = DatabaseTestAdapter::for_config(config).await?;
    let mut checks = Vec::new();

    let health = adapter.manager().health_check().await;
    checks.push(Check {
        name: "manager health",
        passed: health.status != HealthStatus::Unhealthy,
        detail: format!("the unified manager's topology is {}", health.status),
    });

    let mut production = adapter.production_database_session().await;
    let mut direct = adapter.benchmark_database_connection().await;
    let test_adapter = match (&mut production, &mut direct) {
        (Ok(p), Ok(d)) => select_one(p).await.and(select_one(d).await),
        (Err(e), _) | (_, Err(e)) => Err(e.to_string()),
    };
    checks.push(Check {
        name: "test adapter",
        passed: test_adapter.is_ok(),
        detail: test_adapter.err().unwrap_or_else(|| {
            "a production session (pooled) and a direct connection both answer".to_owned()
        }),
    });

    let overhead = match (&mut production, &mut direct) {
        (Ok(p), Ok(d)) => Some(measure(p, d, args.round_trips).await),
        _ => None,
    };
    if let Some(Ok(o)) = &overhead {
        checks.push(Check {
            name: "session vs direct",
            passed: o.ratio <= args.max_overhead,
            detail: format!(
                "{:.1} us per statement through the manager, {:.1} us on a direct connection: {:.2}x (at most {:.2}x)",
                o.production_session_us, o.direct_connection_us, o.ratio, args.max_overhead
            ),
        });
    }
    drop((production, direct));

    let secret_url = url.expose_url();
    let async_compat = async {
        let legacy = DatabaseSessionManager::new(&secret_url, false)?;
        let rows = legacy.execute_query("SELECT 1 AS one", &[]).await?;
        legacy.close().await?;
        Ok::<_, ucm::Error>(rows.len())
    }
    .await;
    checks.push(Check {
        name: "compat (async)",
        passed: matches!(async_compat, Ok(1)),
        detail: match async_compat {
            Ok(n) => format!("DatabaseSessionManager ran a query ({n} row)"),
            Err(e) => format!("DatabaseSessionManager: {e}"),
        },
    });
    let sync_compat = tokio::task::spawn_blocking(move || {
        let legacy = DatabaseManager::new(&secret_url, false)?;
        let healthy = legacy.health_check();
        let rows = legacy.execute_query("SELECT 1 AS one", &[])?;
        legacy.close()?;
        Ok::<_, ucm::Error>((healthy, rows.len()))
    })
    .await?;
    checks.push(Check {
        name: "compat (sync)",
        passed: matches!(sync_compat, Ok((true, 1))),
        detail: match sync_compat {
            Ok((healthy, n)) => {
                format!("DatabaseManager: health check {healthy}, a query ran ({n} row)")
            }
            Err(e) => format!("DatabaseManager: {e}"),
        },
    });
    adapter.manager().close().await?;

    let failed = checks.iter().filter(|c| !c.passed).count();
    let validation = Validation {
        url: url.to_string(),
        passed: checks.len() - failed,
        failed,
        checks,
        overhead: overhead.and_then(Result::ok),
    };
    match args.format {
        Format::Json => output::print_json(&validation)?,
        Format::Text => {
            println!("ucm validate on {}", validation.url);
            for check in &validation.checks {
                let verdict = if check.passed { "PASS" } else { "FAIL" };
                println!("  {verdict}  {:<18} {}", check.name, check.detail);
            }
            println!("{} of {} checks passed", validation.passed, validation.checks.len());
        }
    }
    if failed > 0 {
        return Err(
            Exit::new(output::REJECTING, format!("{failed} validation check(s) failed")).into()
        );
    }
    Ok(())
}

async fn select_one(connection: &mut (impl SqlExecutor + ?Sized)) -> Result<(), String> {
    connection.fetch_all("SELECT 1 AS one", &[]).await.map(drop).map_err(|e| e.to_string())
}

/// Interleaves rounds of `SELECT 1` on both connections, so that both see the same
/// moments of the machine, and returns the mean per statement of each.
async fn measure(
    production: &mut (impl SqlExecutor + ?Sized),
    direct: &mut (impl SqlExecutor + ?Sized),
    round_trips: u32,
) -> Result<Overhead, String> {
    const ROUNDS: u32 = 4;
    let per_round = round_trips.div_ceil(ROUNDS);
    let (mut on_production, mut on_direct) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..ROUNDS {
        on_production += time(production, per_round).await?;
        on_direct += time(direct, per_round).await?;
    }
    let n = f64::from(per_round * ROUNDS);
    let production_session_us = on_production.as_secs_f64() * 1e6 / n;
    let direct_connection_us = on_direct.as_secs_f64() * 1e6 / n;
    Ok(Overhead {
        round_trips: per_round * ROUNDS,
        production_session_us,
        direct_connection_us,
        ratio: production_session_us / direct_connection_us.max(f64::MIN_POSITIVE),
    })
}

async fn time(connection: &mut (impl SqlExecutor + ?Sized), n: u32) -> Result<Duration, String> {
    let started = Instant::now();
    for _ in 0..n {
        select_one(connection).await?;
    }
    Ok(started.elapsed())
}
