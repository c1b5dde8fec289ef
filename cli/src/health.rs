//! `ucm health`: the topology as the manager sees it: each endpoint's role, state (healthy, degraded, banned, down), standby or not, replication lag, probe latency, breaker and pool counts, as text or JSON; exits 0 when healthy, 1 when degraded or unhealthy, 2 when nothing answered.

use std::time::Duration;

use ucm::{
    ConnectionInfo, ConnectionManagerProtocol, DatabaseUrl, DeepOptions, DeepReport, HealthReport,
    HealthStatus, Manager, ManagerConfig, ManagerMode, PoolConfiguration, RedisManager, RedisUrl,
    Severity, deep_health,
};
use ucm_kernel::backend::Backend;

use crate::backend::BackendChoice;
use crate::output::{self, Exit, Format};
use crate::url_arg;

/// `ucm health` options.
#[derive(Debug, clap::Args)]
pub(crate) struct HealthArgs {
    /// The primary's URL; defaults to $DATABASE_URL, the better place for one with a
    /// password (the password is never printed).
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
    /// Replica URLs, comma-separated; default to $DATABASE_REPLICA_URLS.
    #[arg(long, value_name = "URLS", value_delimiter = ',')]
    replica_urls: Vec<String>,
    /// Which backend drives the connections.
    #[arg(long, value_enum, default_value_t = BackendChoice::Sqlx)]
    backend: BackendChoice,
    /// Also diagnose the database itself: slow and frequent statements, cache hit ratio,
    /// unused and redundant indexes, foreign keys without an index, dead tuples, lock waits,
    /// long and idle-in-transaction sessions, connections, replication (PostgreSQL; the
    /// equivalents MySQL and MariaDB offer). A critical finding makes the exit code 1.
    #[arg(long)]
    deep: bool,
    /// With --deep: report transactions open longer than this many seconds.
    #[arg(long, default_value_t = 60.0, value_name = "SECONDS")]
    long_after: f64,
    /// Redis beside the database: its URL (`redis://`, `rediss://`, `redis+sentinel://`);
    /// defaults to $REDIS_URL, and Redis is left out when neither is given. Unreachable, it
    /// makes the exit code 1 (the query cache would be bypassed).
    #[arg(long, value_name = "URL")]
    redis_url: Option<String>,
    /// `text`, or `json`: the health report and the connection info as one document.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

/// What `ucm health --format json` prints.
#[derive(serde::Serialize)]
struct HealthOutput<'a> {
    backend: &'static str,
    exit_code: u8,
    health: &'a HealthReport,
    info: &'a ConnectionInfo,
    /// With `--deep`: the database's own diagnostics.
    deep: Option<&'a DeepReport>,
    /// With `--redis-url` or `REDIS_URL`: whether Redis answered.
    redis: Option<&'a RedisProbe>,
}

/// What a probe of Redis found.
#[derive(Debug, serde::Serialize)]
struct RedisProbe {
    /// The URL, password redacted.
    url: String,
    reachable: bool,
    /// One `PING`'s round trip, when it answered.
    ping_ms: Option<f64>,
    /// What went wrong, without the password.
    error: Option<String>,
}

/// Connects to Redis with a pool of one and times a `PING`.
async fn probe_redis(url: &str) -> RedisProbe {
    let parsed = match RedisUrl::parse(url) {
        Ok(parsed) => parsed,
        Err(e) => {
            return RedisProbe {
                url: "(malformed)".to_owned(),
                reachable: false,
                ping_ms: None,
                error: Some(e.to_string()),
            };
        }
    };
    let shown = parsed.to_string();
    let pool = PoolConfiguration::builder(ManagerMode::Admin)
        .pool_size(1)
        .max_overflow(0)
        .acquire_timeout(Duration::from_secs(3))
        .connect_timeout(Duration::from_secs(3))
        .build();
    let result = async {
        let redis = RedisManager::connect_with(parsed, pool?).await?;
        let started = std::time::Instant::now();
        redis.ping().await?;
        let took = started.elapsed();
        redis.close(Duration::from_secs(1)).await?;
        Ok::<_, ucm::Error>(took)
    }
    .await;
    match result {
        Ok(took) => RedisProbe {
            url: shown,
            reachable: true,
            ping_ms: Some(took.as_secs_f64() * 1000.0),
            error: None,
        },
        Err(e) => {
            RedisProbe { url: shown, reachable: false, ping_ms: None, error: Some(e.to_string()) }
        }
    }
}

pub(crate) async fn run(args: &HealthArgs) -> anyhow::Result<()> {
    match args.backend {
        BackendChoice::Sqlx => run_on::<ucm_sqlx::Sqlx>(args).await,
        BackendChoice::Diesel => run_on::<ucm_diesel::Diesel>(args).await,
    }
}

async fn run_on<B: Backend>(args: &HealthArgs) -> anyhow::Result<()> {
    let primary = url_arg::required(args.database_url.as_deref(), &["DATABASE_URL"])?;
    let replicas = url_arg::replicas(&args.replica_urls, "DATABASE_REPLICA_URLS");
    let pool = PoolConfiguration::builder(ManagerMode::Admin)
        .pool_size(1)
        .max_overflow(1)
        .application_name("ucm_health")
        .build()?;
    let config = ManagerConfig::builder(ManagerMode::Admin)
        .primary_url(DatabaseUrl::parse(&primary)?)
        .replicas(replicas)
        .pool(pool)
        .build()?;
    let manager = Manager::<B>::connect(config).await?;
    let report = manager.health_check().await;
    let info = manager.connection_info();
    let deep = if args.deep {
        let long_after = Duration::try_from_secs_f64(args.long_after).map_err(|_| {
            Exit::new(output::BAD_INPUT, "--long-after must be a non-negative number of seconds")
        })?;
        let options = DeepOptions::default().long_after(long_after);
        Some(deep_health(&manager, manager.config().kind(), options).await)
    } else {
        None
    };
    manager.close().await?;
    let deep = deep.transpose()?;
    let redis_url = args
        .redis_url
        .clone()
        .or_else(|| std::env::var("REDIS_URL").ok().filter(|u| !u.trim().is_empty()));
    let redis = match &redis_url {
        Some(url) => Some(probe_redis(url).await),
        None => None,
    };
    let mut code = exit_code(&report);
    if code == output::ACCEPTING
        && deep.as_ref().is_some_and(|d| d.worst() == Some(Severity::Critical))
    {
        code = output::REJECTING;
    }
    let redis_down = redis.as_ref().is_some_and(|r| !r.reachable);
    if code == output::ACCEPTING && redis_down {
        code = output::REJECTING;
    }
    match args.format {
        Format::Json => {
            let output = HealthOutput {
                backend: B::NAME,
                exit_code: code,
                health: &report,
                info: &info,
                deep: deep.as_ref(),
                redis: redis.as_ref(),
            };
            output::print_json(&output)?;
        }
        Format::Text => {
            print_text::<B>(&report, &info);
            if let Some(deep) = &deep {
                print_deep(deep);
            }
            if let Some(redis) = &redis {
                match (redis.reachable, redis.ping_ms, &redis.error) {
                    (true, Some(ms), _) => {
                        println!("redis:     {} reachable, ping {ms:.2} ms", redis.url)
                    }
                    (_, _, error) => println!(
                        "redis:     {} UNREACHABLE: {} (the query cache is bypassed)",
                        redis.url,
                        error.as_deref().unwrap_or("no answer")
                    ),
                }
            }
        }
    }
    if code != output::ACCEPTING {
        let what = match code {
            output::NO_RESPONSE => "no endpoint answered",
            _ if report.status == HealthStatus::Healthy && redis_down => {
                "Redis is unreachable, the database"
            }
            _ if report.status == HealthStatus::Healthy => {
                "the diagnostics found a critical problem"
            }
            _ => "the topology is not healthy",
        };
        return Err(Exit::new(code, format!("{what}: {}", report.status)).into());
    }
    Ok(())
}

/// pg_isready's codes for a topology: 0 healthy, 2 when no endpoint answered its probe, 1
/// otherwise (degraded, or unhealthy with a server that answered).
fn exit_code(report: &HealthReport) -> u8 {
    if report.status == HealthStatus::Healthy {
        output::ACCEPTING
    } else if report.components.iter().all(|c| c.in_recovery.is_none() && c.latency.is_none()) {
        output::NO_RESPONSE
    } else {
        output::REJECTING
    }
}

fn print_deep(deep: &DeepReport) {
    println!("\ndiagnostics ({}): {} finding(s)", deep.database, deep.findings.len());
    for finding in &deep.findings {
        println!("  {:<8} {:<12} {}", finding.severity, finding.check, finding.subject);
        println!("           {}", finding.detail);
        println!("           -> {}", finding.recommendation);
    }
    for skipped in &deep.skipped {
        println!("  skipped: {skipped}");
    }
}

fn print_text<B: Backend>(report: &HealthReport, info: &ConnectionInfo) {
    println!("topology ({} backend): {}", B::NAME, report.status);
    for component in &report.components {
        let endpoint = info.endpoints.iter().find(|e| e.label == component.name);
        let latency = component
            .latency
            .map_or_else(|| "-".to_owned(), |l| format!("{:.1} ms", l.as_secs_f64() * 1e3));
        let standby = match component.in_recovery {
            Some(true) => "standby",
            Some(false) => "not in recovery",
            None => "role not reported",
        };
        let lag =
            component.lag.map_or_else(|| "-".to_owned(), |l| format!("{:.1} s", l.as_secs_f64()));
        println!(
            "  {:<8} {:<32} {:<9} probe {latency}; {standby}, lag {lag}",
            component.role.as_str(),
            component.name,
            component.state.as_str(),
        );
        if let Some(endpoint) = endpoint {
            let s = &endpoint.status;
            let breaker = endpoint.breaker.as_ref().map_or_else(
                || "none".to_owned(),
                |b| {
                    format!(
                        "{} ({} consecutive failures)",
                        b.state.as_str(),
                        b.consecutive_failures
                    )
                },
            );
            println!(
                "           pool {} open ({} idle, {} in use, {} waiting) of {}; breaker {breaker}",
                s.size, s.idle, s.in_use, s.waiting, s.max_size
            );
        }
        if let Some(message) = &component.message {
            println!("           {message}");
        }
    }
    println!("failovers followed: {}", info.failovers);
    if let Some(sla) = &report.sla {
        println!("operations within the {} SLA: {sla}", info.mode);
    }
}
