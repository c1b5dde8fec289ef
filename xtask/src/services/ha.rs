//! `cargo xtask services --ha`: a PostgreSQL primary (54330) and a streaming replica of it (54331) for the high-availability tests, repaired from whatever state the last test run left, and a PostgreSQL with TLS (54332) for the TLS tests.
//!
//! The HA tests stop, promote and rebuild these two servers (through `ucm_tests::ha`), so a
//! start checks the pair instead of trusting it: 54330 must be a running primary and 54331 a
//! running standby streaming from it. What is already right is kept, so a healthy pair costs a
//! handful of queries; a replica that is no longer one, or follows the wrong server, is made
//! anew from a base backup of the primary (its data is throwaway). A running HA test binary
//! holds `ha.lock` beside the data directories; we wait for it rather than repair the pair
//! under its tests.

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use super::postgres::{cluster_dir, ensure_test_database, server_bin_dir, tail};
use super::{Ctx, port_open};
use crate::cmd::{Cmd, shell_quote};

/// The primary's port.
pub(crate) const PRIMARY_PORT: u16 = 54330;
/// The replica's port.
pub(crate) const REPLICA_PORT: u16 = 54331;
/// The port of the TLS server: TLS on, with a certificate of a test CA made here.
pub(crate) const TLS_PORT: u16 = 54332;

/// A running primary/replica pair: what the HA tests need to find and control it.
#[derive(Debug, Clone)]
pub(crate) struct HaPair {
    /// The variables the HA tests read, in the order they are printed: `HA_PRIMARY_URL`,
    /// `HA_REPLICA_URL`, `HA_PG_BIN`, `HA_PRIMARY_DIR`, `HA_REPLICA_DIR`, `HA_RUN_AS`; then
    /// the TLS server's `TLS_DATABASE_URL` and `TLS_CA_FILE`.
    pub(crate) env: Vec<(&'static str, String)>,
    /// How to stop both, for the report.
    pub(crate) stop: String,
    /// What was done to the pair, for the report.
    pub(crate) note: String,
    /// Whether anything was started or repaired; `false` when both were found as they should be.
    pub(crate) changed: bool,
}

/// How long a replica that is otherwise right may take to stream from the primary before it
/// is made anew. Its WAL receiver retries a lost primary every `wal_retrieve_retry_interval`
/// (500 ms as we start it, but 5 s for a replica started with PostgreSQL's default), so a
/// primary restarted a moment ago needs up to that long.
const STREAM_GRACE: Duration = Duration::from_secs(10);

/// How long a replica made anew may take to stream and replay what the primary has written.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30);

/// Makes 54330 a running primary and 54331 a running replica streaming from it, whatever state
/// they were left in, then waits until the replica has replayed everything the primary wrote
/// (so it serves the `test` database).
pub(crate) fn start(ctx: &Ctx) -> Result<HaPair> {
    let bin = server_bin_dir().context(
        "no PostgreSQL server binaries (initdb, pg_ctl, pg_basebackup) in /usr/lib/postgresql/*/bin or on PATH",
    )?;
    let as_root = ctx.is_root();
    let pg = Pg { ctx, bin, as_root };
    let primary = Node::new(ctx, as_root, "pg-ha-primary", PRIMARY_PORT)?;
    let replica = Node::new(ctx, as_root, "pg-ha-replica", REPLICA_PORT)?;
    let _lock = lock_pair(&primary.dir)?;
    let mut done = Vec::new();
    ensure_primary(&pg, &primary, &mut done)?;
    ensure_replica(&pg, &primary, &replica, &mut done)?;
    let mut tls = Node::new(ctx, as_root, "pg-tls", TLS_PORT)?;
    let ca = ensure_tls_server(&pg, &mut tls, &mut done)?;

    let stop = [&tls, &replica, &primary]
        .map(|node| pg.pg_ctl(node).args(["-m", "fast", "stop"]).display())
        .join("; ");
    let url = |port: u16| format!("postgres://postgres@127.0.0.1:{port}/test");
    let path = |path: &Path| path.to_string_lossy().into_owned();
    let env = vec![
        ("HA_PRIMARY_URL", url(PRIMARY_PORT)),
        ("HA_REPLICA_URL", url(REPLICA_PORT)),
        ("HA_PG_BIN", path(&pg.bin)),
        ("HA_PRIMARY_DIR", path(&primary.dir)),
        ("HA_REPLICA_DIR", path(&replica.dir)),
        // Whom the tests run the server programs as: PostgreSQL refuses root, so root hands
        // them to `postgres`; empty means whoever runs the tests.
        ("HA_RUN_AS", if as_root { "postgres" } else { "" }.to_owned()),
        // The TLS server answers to `localhost` (the only name its certificate lists).
        ("TLS_DATABASE_URL", format!("postgres://postgres@localhost:{TLS_PORT}/test")),
        ("TLS_CA_FILE", path(&ca)),
    ];
    let changed = !done.is_empty();
    let note = if changed { done.join("; ") } else { "both running, replica streaming".to_owned() };
    Ok(HaPair { env, stop, note, changed })
}

/// One server of the pair: its port and data directory.
struct Node {
    port: u16,
    dir: PathBuf,
    /// Further `-c name=value` server settings.
    settings: String,
}

/// Runs the server's programs, as `postgres` when we are root.
struct Pg<'a> {
    ctx: &'a Ctx,
    bin: PathBuf,
    as_root: bool,
}

impl Node {
    fn new(ctx: &Ctx, as_root: bool, name: &str, port: u16) -> Result<Self> {
        let dir = cluster_dir(ctx, as_root, name, port)?;
        // The tests get this path and may run from another directory.
        let dir = fs::canonicalize(&dir)
            .with_context(|| format!("could not resolve {}", dir.display()))?;
        Ok(Self { port, dir, settings: String::new() })
    }
}

/// Takes `ha.lock` beside the data directories, waiting while an HA test process holds it
/// (`ucm_tests::ha` keeps it for the life of a test binary), so the pair is never repaired
/// under a running test. Released when the file is dropped.
fn lock_pair(primary_dir: &Path) -> Result<fs::File> {
    let path = primary_dir.parent().unwrap_or(primary_dir).join("ha.lock");
    let file = fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("could not open {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            // Printed even with --quiet: a silent wait looks like a hang.
            eprintln!("waiting for {}: a test run is using the HA pair", path.display());
            file.lock().with_context(|| format!("could not lock {}", path.display()))?;
        }
        Err(fs::TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("could not lock {}", path.display()));
        }
    }
    Ok(file)
}

/// Makes 54330 a running primary: made when it does not exist, started when stopped, promoted
/// when a test left it a standby (of a promoted 54331).
fn ensure_primary(pg: &Pg<'_>, primary: &Node, done: &mut Vec<String>) -> Result<()> {
    if !primary.dir.join("PG_VERSION").is_file() {
        // Never made, or emptied by a rebuild that did not finish: start afresh.
        pg.initdb(primary)?;
        // Streaming replication: WAL for a replica, senders for it; initdb's pg_hba.conf
        // already trusts replication connections from 127.0.0.1. A base backup copies these
        // settings, so either server can later be the primary.
        let settings =
            "\nwal_level = replica\nmax_wal_senders = 5\nhot_standby = on\nwal_keep_size = 256MB\n";
        let conf = primary.dir.join("postgresql.conf");
        let mut text =
            fs::read_to_string(&conf).context("reading the primary's postgresql.conf")?;
        text.push_str(settings);
        fs::write(&conf, text).context("writing the primary's postgresql.conf")?;
        done.push(format!("made the primary in {}", primary.dir.display()));
    }
    if pg.start(primary)? {
        done.push(format!("started {PRIMARY_PORT}"));
    }
    if pg.query(primary.port, "select pg_is_in_recovery()")? == "t" {
        // An HA test rebuilt it as a standby of a promoted 54331; promotion ends recovery even
        // when replay is paused, and leaves 54331 a primary that the replica check below
        // rebuilds.
        pg.pg_ctl(primary).args(["-w", "promote"]).run()?;
        done.push(format!("promoted {PRIMARY_PORT}, which a test had left a standby"));
    }
    ensure_test_database(pg.ctx, PRIMARY_PORT, Some(&pg.bin))
}

/// Makes 54332 a running server with TLS on: a test CA and a server certificate for
/// `localhost` (made with openssl beside its data directory, kept once made), the
/// certificate and key in its data directory; returns the CA certificate's path.
fn ensure_tls_server(pg: &Pg<'_>, node: &mut Node, done: &mut Vec<String>) -> Result<PathBuf> {
    if !node.dir.join("PG_VERSION").is_file() {
        pg.initdb(node)?;
        done.push(format!("made the TLS server in {}", node.dir.display()));
    }
    let certs = super::certificates::dir(pg.ctx);
    let ca = super::certificates::make(pg.ctx, &certs)?;
    for (name, mode) in [("server.crt", 0o644), ("server.key", 0o600)] {
        let target = node.dir.join(name);
        fs::copy(certs.join(name), &target)
            .with_context(|| format!("copying {name} into {}", node.dir.display()))?;
        fs::set_permissions(&target, fs::Permissions::from_mode(mode))?;
        if pg.as_root {
            pg.ctx.cmd("chown").arg("postgres:postgres").arg(&target).run()?;
        }
    }
    node.settings = " -c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key".to_owned();
    if pg.start(node)? {
        done.push(format!("started the TLS server on {TLS_PORT}"));
    }
    ensure_test_database(pg.ctx, TLS_PORT, Some(&pg.bin))?;
    Ok(ca)
}

/// Makes 54331 a running replica streaming from 54330, keeping it when it already is one and
/// making it anew from a base backup otherwise; then waits until it has caught up.
fn ensure_replica(
    pg: &Pg<'_>,
    primary: &Node,
    replica: &Node,
    done: &mut Vec<String>,
) -> Result<()> {
    if let Some(why) = replica_problem(pg, primary, replica, done) {
        pg.ctx.say(&format!("making the replica on {REPLICA_PORT} anew: {why}"));
        remake(pg, primary, replica)?;
        done.push(format!("made the replica anew ({why})"));
        pg.start(replica)?;
        if !wait_streaming(pg, primary, replica, CATCH_UP_TIMEOUT) {
            bail!(
                "the replica on {REPLICA_PORT} made anew does not stream from {PRIMARY_PORT} \
                 after {} s; see {}\n{}",
                CATCH_UP_TIMEOUT.as_secs(),
                replica.dir.join("log").display(),
                tail(&replica.dir.join("log"), 15)
            );
        }
    }
    wait_caught_up(pg, primary, replica)
}

/// Why the replica cannot be kept as it is, starting it when it can be; `None` when it runs in
/// recovery and streams from the primary. Paused replay is resumed on the way.
fn replica_problem(
    pg: &Pg<'_>,
    primary: &Node,
    replica: &Node,
    done: &mut Vec<String>,
) -> Option<String> {
    if !replica.dir.join("PG_VERSION").is_file() {
        return Some("it did not exist".to_owned());
    }
    if !replica.dir.join("standby.signal").is_file() {
        return Some("it was no longer a standby: a test promoted it".to_owned());
    }
    match pg.start(replica) {
        Ok(true) => done.push(format!("started {REPLICA_PORT}")),
        Ok(false) => {}
        Err(e) => return Some(format!("it would not start: {e:#}")),
    }
    // A replica that runs but does not answer (one that never reached a consistent state,
    // say) is as useless as a missing one, so its errors are reasons to remake it too.
    if let Some(why) = standby_problem(pg, primary, replica, done).unwrap_or_else(Some) {
        return Some(why);
    }
    if !wait_streaming(pg, primary, replica, STREAM_GRACE) {
        return Some(format!(
            "it did not stream from {PRIMARY_PORT} within {} s (a diverged timeline?)",
            STREAM_GRACE.as_secs()
        ));
    }
    None
}

/// Why the running replica is not a standby of the primary, by asking both; resumes paused
/// replay on the way. `Err` says which query failed.
fn standby_problem(
    pg: &Pg<'_>,
    primary: &Node,
    replica: &Node,
    done: &mut Vec<String>,
) -> Result<Option<String>, String> {
    let ask = |port: u16, sql: &str| {
        pg.query(port, sql).map_err(|e| format!("{port} does not answer `{sql}`: {e:#}"))
    };
    if ask(replica.port, "select pg_is_in_recovery()")? != "t" {
        return Ok(Some("it is not in recovery".to_owned()));
    }
    let system = "select system_identifier from pg_control_system()";
    if ask(replica.port, system)? != ask(primary.port, system)? {
        return Ok(Some(format!("it is a copy of an earlier cluster, not of {PRIMARY_PORT}")));
    }
    let conninfo = ask(replica.port, "show primary_conninfo")?;
    if !names_port(&conninfo, primary.port) {
        return Ok(Some(format!("it follows another server ({conninfo:?})")));
    }
    if ask(replica.port, "select pg_is_wal_replay_paused()")? == "t" {
        ask(replica.port, "select pg_wal_replay_resume()")?;
        done.push("resumed the replica's paused replay".to_owned());
    }
    Ok(None)
}

/// Stops the replica, empties its directory and fills it with a base backup of the primary
/// that starts as a standby of it (`-R`).
fn remake(pg: &Pg<'_>, primary: &Node, replica: &Node) -> Result<()> {
    if pg.is_running(replica) {
        pg.pg_ctl(replica).args(["-m", "immediate", "-w", "stop"]).run()?;
    }
    empty(&replica.dir).context("emptying the replica's data directory")?;
    pg.server("pg_basebackup")
        .args(["-h", "127.0.0.1", "-p", &primary.port.to_string(), "-U", "postgres"])
        .arg("-D")
        .arg(&replica.dir)
        // A fast checkpoint: the default spread one makes the backup wait minutes.
        .args(["-R", "-X", "stream", "--no-sync", "--checkpoint=fast"])
        .dir(&replica.dir)
        .run()?;
    tidy_backup(&replica.dir).context("tidying the base backup")?;
    // PostgreSQL insists on a private data directory, and the backup keeps the directory's
    // own mode.
    fs::set_permissions(&replica.dir, fs::Permissions::from_mode(0o700))
        .context("making the replica's data directory private")
}

/// Tidies a base backup of the primary. It copied what belongs to the primary's process, not
/// its data: the server log, and the socket lock files (`.s.PGSQL.<port>.lock`, there because
/// `-k` puts the sockets in the data directory), which name the primary's postmaster; should
/// that PID belong to a live process when the copy starts, the copy refuses to start. And `-R`
/// appended a `primary_conninfo` to the primary's own `postgresql.auto.conf`, which holds one
/// from every earlier rebuild when the roles have swapped; only the last one counts.
fn tidy_backup(dir: &Path) -> std::io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name == "log" || name.starts_with(".s.PGSQL.") {
            fs::remove_file(entry.path())?;
        }
    }
    let auto_conf = dir.join("postgresql.auto.conf");
    let text = fs::read_to_string(&auto_conf)?;
    let is_conninfo = |line: &&str| line.trim_start().starts_with("primary_conninfo");
    let last = text.lines().rfind(is_conninfo);
    let kept: Vec<&str> = text.lines().filter(|line| !is_conninfo(line)).chain(last).collect();
    fs::write(&auto_conf, kept.join("\n") + "\n")
}

/// Polls until the replica's WAL receiver streams from the primary's port; `false` when it
/// does not within `timeout`.
fn wait_streaming(pg: &Pg<'_>, primary: &Node, replica: &Node, timeout: Duration) -> bool {
    let expected = format!("streaming|{}", primary.port);
    let sql = "select status, sender_port from pg_stat_wal_receiver";
    pg.ctx.say(&format!(
        "waiting up to {} s for {} to stream from {}: polling `{sql}`",
        timeout.as_secs(),
        replica.port,
        primary.port
    ));
    poll(timeout, || pg.query_quietly(replica.port, sql).is_ok_and(|answer| answer == expected))
}

/// Waits until the replica has replayed everything the primary has written so far.
fn wait_caught_up(pg: &Pg<'_>, primary: &Node, replica: &Node) -> Result<()> {
    let lsn = pg.query(primary.port, "select pg_current_wal_lsn()")?;
    let sql = format!("select pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn");
    pg.ctx.say(&format!(
        "waiting up to {} s for {} to replay up to {lsn}: polling `{sql}`",
        CATCH_UP_TIMEOUT.as_secs(),
        replica.port
    ));
    if !poll(CATCH_UP_TIMEOUT, || pg.query_quietly(replica.port, &sql).is_ok_and(|a| a == "t")) {
        bail!(
            "the replica on {} did not replay up to the primary's {lsn} within {} s",
            replica.port,
            CATCH_UP_TIMEOUT.as_secs()
        );
    }
    Ok(())
}

/// Calls `check` every 100 ms until it says yes or `timeout` passes.
fn poll(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Whether a libpq connection string such as `user=postgres host=127.0.0.1 port=54330` names
/// `port`.
fn names_port(conninfo: &str, port: u16) -> bool {
    let wanted = format!("port={port}");
    conninfo.split_whitespace().any(|word| word.trim_matches('\'') == wanted)
}

/// Removes everything inside `dir`, keeping the directory (and its owner).
fn empty(dir: &Path) -> std::io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() { fs::remove_dir_all(&path)? } else { fs::remove_file(&path)? }
    }
    Ok(())
}

impl Pg<'_> {
    /// A server program; PostgreSQL refuses to run as root, so root hands it to `postgres`.
    fn server(&self, program: &str) -> Cmd {
        let program = self.bin.join(program);
        if self.as_root {
            self.ctx.cmd("runuser").args(["-u", "postgres", "--"]).arg(program)
        } else {
            self.ctx.cmd(program)
        }
    }

    /// Makes a cluster in the node's (emptied) data directory: `postgres` trusted, UTF-8.
    fn initdb(&self, node: &Node) -> Result<()> {
        empty(&node.dir).with_context(|| format!("emptying {}", node.dir.display()))?;
        self.server("initdb")
            .arg("-D")
            .arg(&node.dir)
            .args(["-U", "postgres", "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync"])
            .dir(&node.dir)
            .run()
    }

    /// `pg_ctl -D <node's directory>`.
    fn pg_ctl(&self, node: &Node) -> Cmd {
        self.server("pg_ctl").arg("-D").arg(&node.dir).dir(&node.dir)
    }

    /// Whether the node's postmaster runs, by `pg_ctl status` (exit 0: running, 3: stopped).
    fn is_running(&self, node: &Node) -> bool {
        let status = self.pg_ctl(node).arg("status").quiet(true).status();
        status.is_ok_and(|s| s.success())
    }

    /// Starts the node unless it runs; `Ok(true)` when it was started.
    fn start(&self, node: &Node) -> Result<bool> {
        if self.is_running(node) {
            return Ok(false);
        }
        if port_open(node.port) {
            bail!(
                "something else listens on 127.0.0.1:{}, not the server in {} (another \
                 worktree's HA pair?); stop it first",
                node.port,
                node.dir.display()
            );
        }
        let log = node.dir.join("log");
        // A standby retries a lost primary every `wal_retrieve_retry_interval`, 5 s by
        // default; the HA tests restart primaries often and wait for the standby each time.
        // `ucm_tests::ha` starts the servers with the same options.
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c wal_retrieve_retry_interval=500ms{}",
            node.port,
            shell_quote(&node.dir.to_string_lossy()),
            node.settings
        );
        let started =
            self.pg_ctl(node).arg("-l").arg(&log).args(["-o", &options, "-w", "start"]).run();
        if let Err(e) = started {
            bail!(
                "{e:#}\nlast lines of {}:\n{}\n(its data is throwaway: deleting {} makes it anew)",
                log.display(),
                tail(&log, 15),
                node.dir.display()
            );
        }
        Ok(true)
    }

    /// Runs `sql` in database `postgres` on `port` and returns its output, unaligned and trimmed.
    fn query(&self, port: u16, sql: &str) -> Result<String> {
        self.psql(port, sql).read()
    }

    /// [`Pg::query`] without echoing the command, for polls.
    fn query_quietly(&self, port: u16, sql: &str) -> Result<String> {
        self.psql(port, sql).quiet(true).read()
    }

    fn psql(&self, port: u16, sql: &str) -> Cmd {
        // `-X`: no ~/.psqlrc, whose settings could change the output we parse.
        self.ctx
            .cmd(self.bin.join("psql"))
            .args(["-X", "-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres", "-w"])
            // Database `postgres`: `test` does not exist yet on a primary just made.
            .args(["-d", "postgres", "-tAc", sql])
            .env("PGCONNECT_TIMEOUT", "5")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_port_matches_whole_words() {
        let cases = [
            ("user=postgres host=127.0.0.1 port=54330 sslmode=prefer", true),
            ("host=127.0.0.1 port=543301", false),
            ("host=127.0.0.1 port=54331", false),
            ("'port=54330'", true),
            ("", false),
        ];
        for (conninfo, expected) in cases {
            assert_eq!(names_port(conninfo, 54330), expected, "conninfo {conninfo:?}");
        }
    }
}
