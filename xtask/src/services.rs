//! `cargo xtask services`: finds or starts the databases the tests need and prints their URLs.
//!
//! Each service is looked for in the same order: a URL the user already exported wins, then a
//! server answering on its usual local port, then one we can start ourselves. Whatever happens
//! is reported; under `CI` a missing service is an error, locally it is a warning (the tests
//! that need it skip with a printed reason).

mod certificates;
mod ha;
mod mariadb_tls;
mod pgbouncer;
mod postgres;
mod redis_sentinel;

use std::{
    cell::OnceCell,
    env, fs,
    net::{Ipv4Addr, SocketAddr, TcpStream},
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::cmd::{Cmd, shell_quote, which};

/// How `services` was asked to run.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Options {
    /// Print only the URL lines on standard output: no command echo, no report.
    pub(crate) quiet: bool,
    /// Skip the server on 127.0.0.1:5432 and the machine's own cluster, to exercise the
    /// throwaway-cluster fallback on a machine that has PostgreSQL running.
    pub(crate) force_throwaway_pg: bool,
    /// Also start (or repair) a PostgreSQL primary and a streaming replica of it (`--ha`).
    pub(crate) ha: bool,
}

/// The database URLs the tests should use; `None` where that database is not available.
#[derive(Debug, Default, Clone)]
pub(crate) struct Services {
    pub(crate) postgres: Option<String>,
    /// PgBouncer in transaction mode in front of `postgres`.
    pub(crate) pgbouncer: Option<String>,
    pub(crate) mysql: Option<String>,
    /// A MariaDB of our own with TLS (a certificate of the test CA).
    pub(crate) mysql_tls: Option<String>,
    pub(crate) sqlite: Option<String>,
    pub(crate) redis: Option<String>,
    /// A Sentinel-watched master and replica (`redis+sentinel://`).
    pub(crate) redis_sentinel: Option<String>,
    /// The HA primary/replica pair, when it was asked for and is running.
    pub(crate) ha: Option<ha::HaPair>,
}

/// Finds or starts every service, prints what it found, and returns the URLs.
///
/// Under `CI` any missing service is an error, raised only after every service's status has
/// been printed so one run shows everything that is wrong.
pub(crate) fn run(options: Options) -> Result<Services> {
    let ctx = Ctx::new(options)?;
    let postgres = Report::new("PostgreSQL", "PG_DATABASE_URL", || postgres::discover(&ctx));
    let pgbouncer = Report::new("PgBouncer", "PGBOUNCER_DATABASE_URL", || {
        pgbouncer::discover(&ctx, postgres.url())
    });
    let reports = [
        postgres,
        pgbouncer,
        Report::new("MariaDB", "MYSQL_DATABASE_URL", || mariadb(&ctx)),
        Report::new("MariaDB TLS", "TLS_MYSQL_DATABASE_URL", || mariadb_tls::discover(&ctx)),
        Report::new("Redis", "REDIS_URL", || redis(&ctx)),
        Report::new("Redis Sentinel", "REDIS_SENTINEL_URL", || redis_sentinel::discover(&ctx)),
        Report::new("SQLite", "SQLITE_DATABASE_URL", || sqlite(&ctx)),
    ];
    let ha = ctx.options.ha.then(|| ha::start(&ctx).context("starting the HA primary and replica"));
    print_reports(&reports, ha.as_ref(), &ctx);

    let mut missing: Vec<&str> =
        reports.iter().filter(|r| r.url().is_none()).map(|r| r.name).collect();
    if matches!(ha, Some(Err(_))) {
        missing.push(HA_NAME);
    }
    if !missing.is_empty() {
        if is_ci() {
            bail!(
                "CI is set and these services are missing: {}; install or start them, or export \
                 their URLs (see the report above)",
                missing.join(", ")
            );
        }
        eprintln!(
            "warning: missing {}: the tests that need them will skip (under CI they would fail)",
            missing.join(", ")
        );
    }
    let [postgres, pgbouncer, mysql, mysql_tls, redis, redis_sentinel, sqlite] =
        reports.map(|r| r.url().map(str::to_owned));
    let ha = ha.and_then(Result::ok);
    Ok(Services { postgres, pgbouncer, mysql, mysql_tls, sqlite, redis, redis_sentinel, ha })
}

/// The HA pair's name in the report.
const HA_NAME: &str = "HA pair";

/// Whether we run under CI: `CI` set, non-empty and not `false` or `0`.
pub(crate) fn is_ci() -> bool {
    env::var("CI").is_ok_and(|v| !matches!(v.trim(), "" | "false" | "0"))
}

/// Hides the password of a URL such as `postgres://user:secret@host/db`, for printing.
pub(crate) fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let authority_end =
        url[scheme_end..].find(['/', '?', '#']).map_or(url.len(), |i| scheme_end + i);
    let authority = &url[scheme_end..authority_end];
    // The user info ends at the last `@`: an unencoded `@` in a password is a common mistake
    // and must not leak the rest of the password.
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    match authority[..at].find(':') {
        Some(colon) => format!("{}:***{}", &url[..scheme_end + colon], &url[scheme_end + at..]),
        None => url.to_owned(),
    }
}

impl Services {
    /// The environment the tests read: one `(variable, URL)` pair per available service,
    /// then the HA pair's variables when it runs.
    pub(crate) fn env(&self) -> Vec<(&'static str, &str)> {
        let urls = [
            ("PG_DATABASE_URL", &self.postgres),
            ("PGBOUNCER_DATABASE_URL", &self.pgbouncer),
            ("MYSQL_DATABASE_URL", &self.mysql),
            ("TLS_MYSQL_DATABASE_URL", &self.mysql_tls),
            ("SQLITE_DATABASE_URL", &self.sqlite),
            ("REDIS_URL", &self.redis),
            ("REDIS_SENTINEL_URL", &self.redis_sentinel),
        ]
        .into_iter()
        .filter_map(|(var, url)| Some((var, url.as_deref()?)));
        let ha = self.ha.iter().flat_map(|pair| &pair.env).map(|(var, value)| (*var, &**value));
        urls.chain(ha).collect()
    }
}

/// What became of one service.
enum Outcome {
    /// The user exported the URL; we used it as is.
    FromEnv(String),
    /// A server was already running.
    Found { url: String, note: String },
    /// We started a server; `stop` is the command that stops it again.
    Started { url: String, note: String, stop: String },
    /// Not available, and why.
    Missing(String),
}

/// One line of the report: a service, the variable its URL goes into, and what happened.
struct Report {
    name: &'static str,
    var: &'static str,
    outcome: Outcome,
}

/// What every service probe needs: the options, the paths, and whether we are root.
struct Ctx {
    options: Options,
    /// `<workspace>/target/ucm-services`, where the throwaway state lives.
    state_dir: PathBuf,
    root: OnceCell<bool>,
}

/// How long a TCP probe waits: local servers answer in well under a millisecond.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(300);

/// How long we wait for a server we started to open its port.
const START_TIMEOUT: Duration = Duration::from_secs(15);

impl Report {
    fn new(name: &'static str, var: &'static str, discover: impl FnOnce() -> Outcome) -> Self {
        let outcome = match env::var(var) {
            Ok(url) if !url.trim().is_empty() => Outcome::FromEnv(url),
            _ => discover(),
        };
        Self { name, var, outcome }
    }

    fn url(&self) -> Option<&str> {
        match &self.outcome {
            Outcome::FromEnv(url) | Outcome::Found { url, .. } | Outcome::Started { url, .. } => {
                Some(url)
            }
            Outcome::Missing(_) => None,
        }
    }
}

impl Ctx {
    fn new(options: Options) -> Result<Self> {
        let state_dir = crate::project_root().join("target").join("ucm-services");
        fs::create_dir_all(&state_dir)
            .with_context(|| format!("could not create {}", state_dir.display()))?;
        Ok(Self { options, state_dir, root: OnceCell::new() })
    }

    /// A command echoed unless `--quiet`.
    fn cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> Cmd {
        Cmd::new(program).quiet(self.options.quiet)
    }

    /// Whether we run as root, asked of `id -u` once.
    fn is_root(&self) -> bool {
        *self.root.get_or_init(|| self.cmd("id").arg("-u").read().is_ok_and(|uid| uid == "0"))
    }

    fn say(&self, message: &str) {
        if !self.options.quiet {
            eprintln!("{message}");
        }
    }
}

/// MariaDB on 127.0.0.1:3306, started from `/usr/sbin/mariadbd` when we are root.
fn mariadb(ctx: &Ctx) -> Outcome {
    const PORT: u16 = 3306;
    const DAEMON: &str = "/usr/sbin/mariadbd";
    let url = format!("mysql://root@127.0.0.1:{PORT}/test");
    let (note, stop) = if port_open(PORT) {
        (format!("a server answers on 127.0.0.1:{PORT}"), None)
    } else if !Path::new(DAEMON).exists() {
        return Outcome::Missing(format!(
            "nothing answers on 127.0.0.1:{PORT} and {DAEMON} is not installed"
        ));
    } else if !ctx.is_root() {
        return Outcome::Missing(format!(
            "nothing answers on 127.0.0.1:{PORT}; starting {DAEMON} needs root \
             (start your MariaDB service or export MYSQL_DATABASE_URL)"
        ));
    } else {
        match start_mariadb(ctx, DAEMON, PORT) {
            Ok(()) => (
                format!("started {DAEMON}"),
                Some(format!("start-stop-daemon --stop --exec {DAEMON}")),
            ),
            Err(e) => return Outcome::Missing(format!("{e:#}")),
        }
    };
    // The URL names the `test` database, so make sure it exists; a client is needed for that,
    // and without one the tests report the missing database themselves.
    let client = ["mariadb", "mysql"].into_iter().find(|c| which(c).is_some());
    let note = match client {
        Some(client) => {
            let created = ctx
                .cmd(client)
                .args(["-h", "127.0.0.1", "-P", &PORT.to_string(), "-u", "root"])
                .args(["-e", "create database if not exists test"])
                .run();
            match created {
                Ok(()) => note,
                Err(e) => format!("{note}; could not create database `test`: {e:#}"),
            }
        }
        None => format!("{note}; no mariadb client to check that database `test` exists"),
    };
    match stop {
        Some(stop) => Outcome::Started { url, note, stop },
        None => Outcome::Found { url, note },
    }
}

fn start_mariadb(ctx: &Ctx, daemon: &str, port: u16) -> Result<()> {
    // The socket directory lives on a tmpfs that the distribution's service script recreates
    // at boot; without it mariadbd refuses to start.
    let run_dir = Path::new("/run/mysqld");
    if !run_dir.exists() {
        fs::create_dir_all(run_dir)
            .with_context(|| format!("could not create {}", run_dir.display()))?;
        ctx.cmd("chown").args(["mysql:mysql", "/run/mysqld"]).run()?;
    }
    ctx.cmd("start-stop-daemon")
        .args(["--start", "--oknodo", "--background", "--exec", daemon])
        .run()?;
    if wait_for_port(port, START_TIMEOUT) {
        Ok(())
    } else {
        bail!(
            "started {daemon} but nothing answers on 127.0.0.1:{port} after {}s; see its error \
             log (usually /var/log/mysql/error.log or `journalctl`)",
            START_TIMEOUT.as_secs()
        )
    }
}

/// Redis on 127.0.0.1:6379, started with `redis-server` when it is installed.
fn redis(ctx: &Ctx) -> Outcome {
    const PORT: u16 = 6379;
    let url = format!("redis://127.0.0.1:{PORT}");
    if port_open(PORT) {
        return Outcome::Found { url, note: format!("a server answers on 127.0.0.1:{PORT}") };
    }
    if which("redis-server").is_none() {
        return Outcome::Missing(format!(
            "nothing answers on 127.0.0.1:{PORT} and redis-server is not installed"
        ));
    }
    // No persistence: this server only ever holds test data.
    let started = ctx
        .cmd("redis-server")
        .args(["--daemonize", "yes", "--bind", "127.0.0.1", "--port", &PORT.to_string()])
        .args(["--save", "", "--appendonly", "no"])
        .run();
    match started {
        Err(e) => Outcome::Missing(format!("{e:#}")),
        Ok(()) if !wait_for_port(PORT, START_TIMEOUT) => Outcome::Missing(format!(
            "started redis-server but nothing answers on 127.0.0.1:{PORT}"
        )),
        Ok(()) => Outcome::Started {
            url,
            note: "started redis-server (no persistence)".to_owned(),
            stop: format!("redis-cli -p {PORT} shutdown nosave"),
        },
    }
}

/// SQLite is bundled, so it only needs a file; an empty file is a valid empty database.
fn sqlite(ctx: &Ctx) -> Outcome {
    let path = ctx.state_dir.join("test.db");
    let created = fs::OpenOptions::new().create(true).append(true).open(&path);
    match created {
        Ok(_) => Outcome::Found {
            url: format!("sqlite://{}", path.display()),
            note: "bundled; delete the file to start afresh".to_owned(),
        },
        Err(e) => Outcome::Missing(format!("could not create {}: {e}", path.display())),
    }
}

fn print_reports(reports: &[Report], ha: Option<&Result<ha::HaPair>>, ctx: &Ctx) {
    if !ctx.options.quiet {
        eprintln!("\nservices:");
        for report in reports {
            let (state, detail) = match &report.outcome {
                Outcome::FromEnv(url) => ("from env", format!("{} (${})", redact(url), report.var)),
                Outcome::Found { url, note } => ("found", format!("{} ({note})", redact(url))),
                Outcome::Started { url, note, stop } => {
                    ("started", format!("{} ({note})\n{:23}stop with: {stop}", redact(url), ""))
                }
                Outcome::Missing(reason) => ("MISSING", reason.clone()),
            };
            eprintln!("  {:<10} {state:<9} {detail}", report.name);
        }
        if let Some(ha) = ha {
            let (state, detail) = match ha {
                Ok(pair) => {
                    let detail = format!(
                        "primary 127.0.0.1:{}, streaming replica 127.0.0.1:{} ({})\n{:23}stop \
                         with: {}",
                        ha::PRIMARY_PORT,
                        ha::REPLICA_PORT,
                        pair.note,
                        "",
                        pair.stop
                    );
                    (if pair.changed { "started" } else { "found" }, detail)
                }
                Err(e) => ("MISSING", format!("{e:#}")),
            };
            eprintln!("  {HA_NAME:<10} {state:<9} {detail}");
        }
        eprintln!();
    }
    // Standard output carries only shell lines, so `eval "$(cargo xtask services --quiet)"`
    // exports the URLs. A URL the user exported is left alone: printing it redacted would
    // overwrite their real one.
    for report in reports {
        match &report.outcome {
            Outcome::FromEnv(url) => println!("# {} is already set ({})", report.var, redact(url)),
            Outcome::Found { url, .. } | Outcome::Started { url, .. } => {
                println!("export {}={}", report.var, shell_quote(url));
            }
            Outcome::Missing(_) => println!("# {}: {} is not available", report.var, report.name),
        }
    }
    match ha {
        Some(Ok(pair)) => {
            for (var, value) in &pair.env {
                println!("export {var}={}", shell_quote(value));
            }
        }
        Some(Err(_)) => {
            println!("# HA_PRIMARY_URL, HA_REPLICA_URL, ...: {HA_NAME} is not available")
        }
        None => {}
    }
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
fn port_open(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).is_ok()
}

/// Polls `port` until it opens or `timeout` passes.
fn wait_for_port(port: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if port_open(port) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(250));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_only_the_password() {
        let cases = [
            ("postgres://postgres@127.0.0.1:5432/test", "postgres://postgres@127.0.0.1:5432/test"),
            ("postgres://u:secret@db:5432/app", "postgres://u:***@db:5432/app"),
            ("mysql://root:p@ss@localhost/test", "mysql://root:***@localhost/test"),
            ("redis://:secret@127.0.0.1:6379", "redis://:***@127.0.0.1:6379"),
            (
                "postgres://u:secret@db/app?sslmode=require",
                "postgres://u:***@db/app?sslmode=require",
            ),
            ("postgres://db/app?user=u@x", "postgres://db/app?user=u@x"),
            ("sqlite:///tmp/test.db", "sqlite:///tmp/test.db"),
            ("sqlite::memory:", "sqlite::memory:"),
        ];
        for (url, expected) in cases {
            assert_eq!(redact(url), expected, "redacting {url:?}");
        }
    }

    #[test]
    fn services_env_lists_only_available_urls() {
        let services = Services {
            postgres: Some("postgres://postgres@127.0.0.1:5432/test".to_owned()),
            pgbouncer: None,
            mysql: None,
            mysql_tls: None,
            sqlite: Some("sqlite:///tmp/test.db".to_owned()),
            redis: None,
            redis_sentinel: None,
            ha: None,
        };
        assert_eq!(
            services.env(),
            [
                ("PG_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test"),
                ("SQLITE_DATABASE_URL", "sqlite:///tmp/test.db"),
            ]
        );
    }
}
