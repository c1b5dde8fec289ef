//! `ucm bench`: ucm side by side with the raw pools in one run, interleaved, reported as ratios.
//!
//! Every figure that matters here is a ratio measured in the same run, because a 2-core
//! machine shared by client and server is noisy: contenders run in turn (A B C D, then
//! again) and their rounds are pooled.

mod checkout;
mod contenders;
mod load;
mod report;
mod storm;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use ucm::{DatabaseKind, DatabaseUrl};

use load::{Op, Sample};

/// `ucm bench` options.
#[derive(Debug, clap::Args)]
pub(crate) struct BenchArgs {
    /// The PostgreSQL database to measure against; defaults to $PG_DATABASE_URL, then
    /// $DATABASE_URL, the better places for one with a password.
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
    /// Seconds each contender runs per round.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Rounds; contenders alternate within each round so drift hits them alike.
    #[arg(long, default_value_t = 2)]
    rounds: u32,
    /// Concurrency levels (tasks), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    concurrency: Vec<usize>,
    /// Iterations of the no-I/O checkout loop per contender.
    #[arg(long, default_value_t = 200_000)]
    checkouts: u64,
    /// Where to write the Markdown report (a JSON twin is written beside it).
    #[arg(long, default_value = "target/bench/report.md")]
    report: PathBuf,
    /// The pgbench binary for the C baseline; found on PATH or under /usr/lib/postgresql when not given.
    #[arg(long)]
    pgbench: Option<PathBuf>,
    /// A streaming replica of the database, for the HA comparison (e.g. from `cargo xtask
    /// services --ha`); without it the replica is the same server under another name.
    #[arg(long)]
    replica_url: Option<String>,
}

/// The two read workloads every contender runs.
pub(crate) const WORKLOADS: [&str; 2] = ["SELECT 1", "indexed read"];

/// pgbench runs at concurrency levels up to this many clients (one server session each).
pub(crate) const PGBENCH_MAX_CLIENTS: usize = 64;

/// The heap each task costs is measured on `SELECT 1` from this many tasks up (below it the
/// per-task figure is lost in the allocator's noise).
pub(crate) const MEMORY_MIN_TASKS: usize = 64;

/// Concurrency of the HA-overhead comparison.
pub(crate) const HA_TASKS: usize = 16;

/// One table of the report: a workload at a concurrency, every contender's pooled sample.
pub(crate) struct Table {
    pub(crate) workload: &'static str,
    pub(crate) tasks: usize,
    pub(crate) samples: Vec<(&'static str, Sample)>,
    /// Heap bytes per task of the load harness alone (an operation that only yields), where
    /// the contenders' were measured: what every contender's figure includes.
    pub(crate) harness_heap_per_task: Option<f64>,
}

/// Every measurement of one run.
pub(crate) struct Results {
    pub(crate) url: String,
    /// The TLS mode every contender connected with.
    pub(crate) transport: &'static str,
    pub(crate) seconds: f64,
    pub(crate) rounds: u32,
    pub(crate) throughput: Vec<Table>,
    /// Per concurrency: pgbench's `SELECT 1` transactions per second, when pgbench ran.
    pub(crate) pgbench: Vec<(usize, Option<f64>)>,
    /// The indexed read at [`HA_TASKS`]: one endpoint against one replica configured.
    pub(crate) ha: Table,
    pub(crate) checkout: Vec<checkout::CheckoutResult>,
    pub(crate) storm: Vec<storm::StormResult>,
    /// The real replica the HA comparison read from, redacted; `None`: the same server under
    /// another name.
    pub(crate) replica: Option<String>,
}

/// Runs the `SELECT 1` of the contender named `name` alone from `tasks` tasks for
/// `seconds`, and prints its rate: a steady load for `perf record`.
pub(crate) async fn profile_load(
    url: &str,
    name: &str,
    tasks: usize,
    seconds: f64,
) -> anyhow::Result<()> {
    let mut chosen = None;
    for family in 0..contenders::FAMILIES {
        for contender in contenders::family(url, family).await? {
            if contender.name == name && chosen.is_none() {
                chosen = Some(contender);
            } else {
                contender.close().await;
            }
        }
    }
    let contender = chosen.ok_or_else(|| anyhow::anyhow!("no contender is named {name:?}"))?;
    let sample = load::run(&contender.select1, tasks, Duration::from_secs_f64(seconds)).await;
    println!(
        "{name}: {:.0} SELECT 1/s from {tasks} tasks, {} errors",
        sample.per_second(),
        sample.errors
    );
    contender.close().await;
    Ok(())
}

/// `raw` with `sslmode=` set to the mode ucm resolved for it (`url`), unless it names one.
fn with_ssl_mode(raw: &str, url: &DatabaseUrl) -> String {
    let named =
        url.params().iter().any(|(k, _)| matches!(k.as_str(), "sslmode" | "ssl-mode" | "ssl_mode"));
    if named {
        return raw.to_owned();
    }
    let joiner = if raw.contains('?') { '&' } else { '?' };
    format!("{raw}{joiner}sslmode={}", url.ssl_mode().as_str())
}

pub(crate) use load::publish_thread_heap;

/// See [`checkout::profile`].
pub(crate) async fn profile_checkout(contender: &str, iterations: u64) -> anyhow::Result<()> {
    checkout::profile(contender, iterations).await
}

/// The checkout table of `ucm bench` alone (`ucm profile-checkout table`): ns per checkout
/// of each contender at 1 and 16 tasks, and ucm's ratio to raw deadpool.
pub(crate) async fn print_checkout_table(iterations: u64) -> anyhow::Result<()> {
    let results = checkout::run(iterations).await?;
    for tasks in [1, 16] {
        let at = |name: &str| {
            results
                .iter()
                .find(|r| r.tasks == tasks && r.name.starts_with(name))
                .map(|r| r.ns_per_op)
        };
        for result in results.iter().filter(|r| r.tasks == tasks) {
            println!("{:>2} task(s)  {:<40} {:>7.0} ns", tasks, result.name, result.ns_per_op);
        }
        if let (Some(ucm), Some(raw)) = (at("ucm"), at("deadpool")) {
            println!("{tasks:>2} task(s)  ucm / raw deadpool: {:.2}", ucm / raw);
        }
    }
    Ok(())
}

pub(crate) async fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let database_url = crate::url_arg::required(
        args.database_url.as_deref(),
        &["PG_DATABASE_URL", "DATABASE_URL"],
    )?;
    if let Some(replica) = &args.replica_url {
        crate::url_arg::warn_if_password(replica);
    }
    let url = DatabaseUrl::parse(&database_url)?;
    if url.kind() != DatabaseKind::Postgres {
        bail!("ucm bench compares against raw PostgreSQL pools: give it a postgres:// URL");
    }
    // One transport for every contender: the TLS mode ucm resolves for the URL (`disable`
    // for a local host unless the URL says otherwise), written into the URL the raw pools
    // read, which would otherwise apply their own default (sqlx: `prefer`, so TLS where the
    // server has it).
    let database_url = with_ssl_mode(&database_url, &url);
    if args.seconds <= 0.0 || args.rounds == 0 || args.concurrency.is_empty() {
        bail!("--seconds must be positive, --rounds at least 1 and --concurrency non-empty");
    }
    println!(
        "ucm bench against {url}: {} round(s) of {:.1}s per contender, concurrency {:?}",
        args.rounds, args.seconds, args.concurrency
    );
    let per_run = Duration::from_secs_f64(args.seconds);
    // pgbench first, while no contender holds connections: five pools of 20 and pgbench's
    // own clients would not fit in PostgreSQL's default max_connections of 100.
    // pgbench opens one server session per client: past PGBENCH_MAX_CLIENTS it would
    // not fit in `max_connections` either.
    let pgbench: Vec<(usize, Option<f64>)> = args
        .concurrency
        .iter()
        .map(|&tasks| {
            let tps = (tasks <= PGBENCH_MAX_CLIENTS).then(|| {
                contenders::pgbench(args.pgbench.as_deref(), &database_url, tasks, per_run)
            });
            (tasks, tps.flatten())
        })
        .collect();
    contenders::create_items(&database_url).await.context("creating the indexed-read table")?;
    let measured = measure(args, &database_url, per_run).await;
    contenders::drop_items(&database_url).await?;
    let (throughput, ha) = measured?;
    let checkout = checkout::run(args.checkouts).await?;
    let storm = storm::run(&database_url).await?;
    let results = Results {
        transport: url.ssl_mode().as_str(),
        url: url.to_string(),
        seconds: args.seconds,
        rounds: args.rounds,
        throughput,
        pgbench,
        ha,
        checkout,
        storm,
        replica: match &args.replica_url {
            Some(replica) => Some(DatabaseUrl::parse(replica)?.to_string()),
            None => None,
        },
    };
    let markdown = report::markdown(&results);
    println!("\n{markdown}");
    report::write(&args.report, &markdown, &report::json(&results))?;
    println!("report written to {} (and .json)", args.report.display());
    Ok(())
}

/// The throughput tables, family by family (their samples merged into one table per
/// workload and concurrency), then the HA pair: all at once they would not fit in
/// `max_connections`.
async fn measure(
    args: &BenchArgs,
    database_url: &str,
    per_run: Duration,
) -> anyhow::Result<(Vec<Table>, Table)> {
    let per_family = 6 * WORKLOADS.len() * args.concurrency.len();
    let runs = (contenders::FAMILIES * per_family + 2) as u64;
    let bar = progress(runs * u64::from(args.rounds));
    let mut tables: Vec<Table> = Vec::new();
    for family in 0..contenders::FAMILIES {
        let contenders =
            contenders::family(database_url, family).await.context("setting up the contenders")?;
        for workload in WORKLOADS {
            for &tasks in &args.concurrency {
                let ops: Vec<(&'static str, Op)> = contenders
                    .iter()
                    .map(|c| {
                        let op = if workload == WORKLOADS[0] { &c.select1 } else { &c.indexed };
                        (c.name, op.clone())
                    })
                    .collect();
                let table = compare(workload, tasks, &ops, args.rounds, per_run, &bar).await;
                match tables.iter_mut().find(|t| t.workload == workload && t.tasks == tasks) {
                    Some(existing) => {
                        existing.samples.extend(table.samples);
                        existing.harness_heap_per_task =
                            existing.harness_heap_per_task.or(table.harness_heap_per_task);
                    }
                    None => tables.push(table),
                }
            }
        }
        for contender in contenders {
            contender.close().await;
        }
    }
    let pair = contenders::ha_pair(database_url, args.replica_url.as_deref())
        .await
        .context("setting up the HA comparison")?;
    let ops: Vec<(&'static str, Op)> = pair.iter().map(|c| (c.name, c.indexed.clone())).collect();
    let ha = compare(WORKLOADS[1], HA_TASKS, &ops, args.rounds, per_run, &bar).await;
    for contender in pair {
        contender.close().await;
    }
    bar.finish_and_clear();
    Ok((tables, ha))
}

/// Warms every contender up, then runs them in turn for `rounds` rounds and pools each
/// one's samples.
async fn compare(
    workload: &'static str,
    tasks: usize,
    ops: &[(&'static str, Op)],
    rounds: u32,
    per_run: Duration,
    bar: &ProgressBar,
) -> Table {
    // A short warm-up per contender: statements prepared, pools full, caches hot.
    for (_, op) in ops {
        load::run(op, tasks, Duration::from_millis(300)).await;
    }
    let mut samples: Vec<(&'static str, Sample)> =
        ops.iter().map(|(name, _)| (*name, Sample::empty())).collect();
    for _ in 0..rounds {
        for ((name, op), slot) in ops.iter().zip(&mut samples) {
            bar.set_message(format!("{workload}, {name} x{tasks}"));
            slot.1.merge(&load::run(op, tasks, per_run).await);
            bar.inc(1);
        }
    }
    let mut harness_heap_per_task = None;
    if workload == WORKLOADS[0] && tasks >= MEMORY_MIN_TASKS {
        bar.set_message(format!("memory per task x{tasks}"));
        for ((_, op), slot) in ops.iter().zip(&mut samples) {
            slot.1.heap_per_task = load::heap_per_task(op, tasks).await;
        }
        let yields: Op = std::sync::Arc::new(|| {
            Box::pin(async {
                tokio::task::yield_now().await;
                Ok(())
            })
        });
        harness_heap_per_task = load::heap_per_task(&yields, tasks).await;
    }
    Table { workload, tasks, samples, harness_heap_per_task }
}

fn progress(len: u64) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("[{bar:32}] {pos}/{len} runs {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_contender_gets_the_tls_mode_ucm_resolved() {
        let with = |raw: &str| with_ssl_mode(raw, &DatabaseUrl::parse(raw).unwrap());
        assert_eq!(
            with("postgres://u@127.0.0.1:5432/db"),
            "postgres://u@127.0.0.1:5432/db?sslmode=disable"
        );
        assert_eq!(
            with("postgres://u@db.example/db?application_name=x"),
            "postgres://u@db.example/db?application_name=x&sslmode=prefer"
        );
        let named = "postgres://u@127.0.0.1/db?sslmode=require";
        assert_eq!(with(named), named, "a mode the URL names is kept");
    }
}
