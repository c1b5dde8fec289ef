//! `ucm health`: the topology as the manager sees it: each endpoint's role, state (healthy, degraded, banned, down), standby or not, replication lag, probe latency, breaker and pool counts, as text or JSON; exits 0 when healthy, 1 when degraded or unhealthy, 2 when nothing answered.

use ucm::{
    ConnectionInfo, ConnectionManagerProtocol, DatabaseUrl, HealthReport, HealthStatus, Manager,
    ManagerConfig, ManagerMode, PoolConfiguration,
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
    manager.close().await?;
    let code = exit_code(&report);
    match args.format {
        Format::Json => {
            let output =
                HealthOutput { backend: B::NAME, exit_code: code, health: &report, info: &info };
            output::print_json(&output)?;
        }
        Format::Text => print_text::<B>(&report, &info),
    }
    if code != output::ACCEPTING {
        let what = if code == output::NO_RESPONSE {
            "no endpoint answered"
        } else {
            "the topology is not healthy"
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
