//! The `ucm` command line: `audit` (direct connection sites in a codebase), `demo` (a workload through the unified manager), `check` (diagnose a URL), `health` (the topology), `config` (the effective configuration), `validate` (the consolidation validation), `bench` (ucm beside the raw pools).

mod audit;
mod backend;
mod bench;
mod check;
mod config;
mod demo;
mod health;
mod output;
mod permissions;
mod telemetry;
mod url_arg;
mod validate;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// jemalloc, whose per-thread allocation counts `ucm bench` reads (`bench::load`).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// ucm, the unified connection manager: one pool per endpoint, breaker, retry, health and metrics for every backend.
#[derive(Debug, Parser)]
#[command(name = "ucm", version, about, after_help = output::EXIT_CODES)]
struct Cli {
    /// Export ucm's spans and metrics with OpenTelemetry: `stdout`, or `otlp` to
    /// OTEL_EXPORTER_OTLP_ENDPOINT. Logs go to standard error, filtered by RUST_LOG.
    #[arg(long, global = true, value_enum)]
    otel: Option<telemetry::OtelExport>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Find every place a Rust codebase opens a database connection or pool without ucm
    /// (sqlx, diesel, r2d2, bb8, deadpool, tokio-postgres, mysql_async, rusqlite) and every
    /// place it goes through ucm; `--deny` exits 1 while direct sites remain.
    #[command(after_help = output::EXIT_CODES)]
    Audit(audit::AuditArgs),
    /// Run a concurrent mixed workload (reads, writes, transactions, a deliberate conflict) through the unified manager in three modes and print a summary. With no arguments it uses a throwaway SQLite file.
    Demo(demo::DemoArgs),
    /// Connect to a database (DATABASE_URL, or --database-url) and report its version, latency, TLS and read-only state, or diagnose why it cannot be reached.
    #[command(after_help = output::EXIT_CODES)]
    Check(check::CheckArgs),
    /// Print the effective configuration for a mode, secrets redacted.
    #[command(after_help = output::EXIT_CODES)]
    Config(config::ConfigArgs),
    /// Probe every endpoint (DATABASE_URL and DATABASE_REPLICA_URLS, or the flags) and show the topology: role, health, probe latency, breaker and pool counts.
    #[command(after_help = output::EXIT_CODES)]
    Health(health::HealthArgs),
    /// Run one contender of the no-I/O checkout benchmark alone (`ucm` or `deadpool`), for
    /// instruction counts under valgrind; or `table`, the benchmark's whole checkout table
    /// as `ucm bench` measures it, without a database.
    #[command(hide = true)]
    ProfileCheckout {
        /// `ucm`, `deadpool` or `table`.
        contender: String,
        /// Checkouts to run.
        #[arg(default_value_t = 100_000)]
        iterations: u64,
    },
    /// Runs one benchmark contender's `SELECT 1` alone, for a sampling profiler (`perf record`).
    #[command(hide = true)]
    ProfileLoad {
        /// The contender's name as the report spells it, e.g. `ucm-diesel (native)`.
        contender: String,
        /// Concurrent tasks.
        #[arg(long, default_value_t = 64)]
        tasks: usize,
        /// Seconds to run.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// The PostgreSQL database to run against; defaults to $PG_DATABASE_URL, then
        /// $DATABASE_URL.
        #[arg(long, value_name = "URL")]
        database_url: Option<String>,
    },
    /// Validate the consolidation against a database: the unified manager's health, the
    /// legacy adapters and the test adapter working on it, and a production session's cost
    /// beside a direct connection's, measured.
    #[command(after_help = output::EXIT_CODES)]
    Validate(validate::ValidateArgs),
    /// Measure ucm beside the raw pools (sqlx PgPool, deadpool-postgres, pgbench) on a PostgreSQL database, as ratios from one run.
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version are not errors; a bad option is bad input (3), not clap's
            // usual 2, which pg_isready's codes give to "no response".
            let code = if e.use_stderr() { output::BAD_INPUT } else { output::ACCEPTING };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let telemetry = match telemetry::install(cli.otel) {
        Ok(telemetry) => telemetry,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Audit(args) => audit::run(&args),
        Command::Config(args) => config::run(&args),
        Command::Demo(args) => block_on(demo::run(&args)),
        Command::Check(args) => block_on(check::run(&args)),
        Command::Health(args) => block_on(health::run(&args)),
        Command::Bench(args) => block_on(bench::run(&args)),
        Command::Validate(args) => block_on(validate::run(&args)),
        Command::ProfileCheckout { contender, iterations } if contender == "table" => {
            block_on(bench::print_checkout_table(iterations))
        }
        Command::ProfileCheckout { contender, iterations } => {
            // One thread, so the instruction count is the checkout's own.
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)
                .and_then(|runtime| {
                    runtime.block_on(bench::profile_checkout(&contender, iterations))
                })
        }
        Command::ProfileLoad { contender, tasks, seconds, database_url } => {
            url_arg::required(database_url.as_deref(), &["PG_DATABASE_URL", "DATABASE_URL"])
                .and_then(|url| block_on(bench::profile_load(&url, &contender, tasks, seconds)))
        }
    };
    telemetry.shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::from(output::code_of(&e))
        }
    }
}

/// The error and its causes on one line, skipping a cause whose text the line already
/// holds (ucm's errors quote the driver's message, which is also their source).
pub(crate) fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

fn block_on(future: impl Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Idle unless `ucm bench` is measuring the heap each task costs: one atomic load.
        .on_thread_park(bench::publish_thread_heap)
        .on_thread_unpark(bench::publish_thread_heap)
        .build()?
        .block_on(future)
}
