//! `cargo xtask services --ha`: a PostgreSQL primary and a streaming replica of it (initdb, `pg_basebackup -R`), on their own ports, run as `postgres`, for the high-availability tests.

use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::Ctx;
use super::postgres::{Probe, cluster_dir, ensure_test_database, probe, server_bin_dir, tail};
use crate::cmd::shell_quote;

/// The primary's port.
pub(crate) const PRIMARY_PORT: u16 = 54330;
/// The replica's port.
pub(crate) const REPLICA_PORT: u16 = 54331;

/// The URLs of a running primary/replica pair.
#[derive(Debug, Clone)]
pub(crate) struct HaPair {
    pub(crate) primary: String,
    pub(crate) replica: String,
    /// How to stop both, for the report.
    pub(crate) stop: String,
}

/// Starts (making them first when needed) the primary and its streaming replica, and waits
/// until the replica serves the primary's `test` database. A replica that is no longer one
/// (promoted by an earlier run) is made again from a fresh base backup.
pub(crate) fn start(ctx: &Ctx) -> Result<HaPair> {
    let bin = server_bin_dir().context(
        "no PostgreSQL server binaries (initdb, pg_ctl, pg_basebackup) in /usr/lib/postgresql/*/bin or on PATH",
    )?;
    let as_root = ctx.is_root();
    let primary_dir = cluster_dir(ctx, as_root, "pg-ha-primary", PRIMARY_PORT)?;
    let replica_dir = cluster_dir(ctx, as_root, "pg-ha-replica", REPLICA_PORT)?;
    let as_postgres = |program: &str| {
        let program = bin.join(program);
        // PostgreSQL refuses to run as root, so root hands the work to the postgres user.
        if as_root {
            ctx.cmd("runuser").args(["-u", "postgres", "--"]).arg(program)
        } else {
            ctx.cmd(program)
        }
    };
    let start_server = |dir: &Path, port: u16| -> Result<()> {
        if matches!(probe(ctx, port), Probe::Ready) {
            return Ok(());
        }
        let log = dir.join("log");
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1",
            shell_quote(&dir.to_string_lossy())
        );
        let started = as_postgres("pg_ctl")
            .arg("-D")
            .arg(dir)
            .arg("-l")
            .arg(&log)
            .args(["-o", &options, "-w", "start"])
            .dir(dir)
            .run();
        if let Err(e) = started {
            bail!("{e:#}\nlast lines of {}:\n{}", log.display(), tail(&log, 15));
        }
        Ok(())
    };

    if !primary_dir.join("PG_VERSION").is_file() {
        as_postgres("initdb")
            .arg("-D")
            .arg(&primary_dir)
            .args(["-U", "postgres", "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync"])
            .dir(&primary_dir)
            .run()?;
        // Streaming replication: WAL for a replica, senders for it; initdb's pg_hba.conf
        // already trusts replication connections from 127.0.0.1.
        let settings =
            "\nwal_level = replica\nmax_wal_senders = 5\nhot_standby = on\nwal_keep_size = 256MB\n";
        let conf = primary_dir.join("postgresql.conf");
        let mut text =
            std::fs::read_to_string(&conf).context("reading the primary's postgresql.conf")?;
        text.push_str(settings);
        std::fs::write(&conf, text).context("writing the primary's postgresql.conf")?;
    }
    start_server(&primary_dir, PRIMARY_PORT)?;
    ensure_test_database(ctx, PRIMARY_PORT, Some(&bin))?;

    let replica_ready = replica_dir.join("standby.signal").is_file();
    if !replica_ready {
        // Not a replica (never made, or promoted by an earlier run): make it anew.
        if matches!(probe(ctx, REPLICA_PORT), Probe::Ready) {
            let _ = as_postgres("pg_ctl")
                .arg("-D")
                .arg(&replica_dir)
                .args(["-m", "immediate", "stop"])
                .run();
        }
        empty(&replica_dir).context("emptying the replica's data directory")?;
        as_postgres("pg_basebackup")
            .args(["-h", "127.0.0.1", "-p", &PRIMARY_PORT.to_string(), "-U", "postgres"])
            .arg("-D")
            .arg(&replica_dir)
            // A fast checkpoint: the default spread one makes the backup wait minutes.
            .args(["-R", "-X", "stream", "--no-sync", "--checkpoint=fast"])
            .dir(&replica_dir)
            .run()?;
    }
    // PostgreSQL insists on a private data directory.
    std::fs::set_permissions(&replica_dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .context("making the replica's data directory private")?;
    start_server(&replica_dir, REPLICA_PORT)?;
    wait_for_replica(ctx, &bin)?;
    let stop = format!(
        "{0} -D {1} -m fast stop; {0} -D {2} -m fast stop",
        bin.join("pg_ctl").display(),
        replica_dir.display(),
        primary_dir.display()
    );
    Ok(HaPair {
        primary: format!("postgres://postgres@127.0.0.1:{PRIMARY_PORT}/test"),
        replica: format!("postgres://postgres@127.0.0.1:{REPLICA_PORT}/test"),
        stop,
    })
}

/// Removes everything inside `dir`, keeping the directory (and its owner).
fn empty(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() { std::fs::remove_dir_all(&path)? } else { std::fs::remove_file(&path)? }
    }
    Ok(())
}

/// Waits until the replica is in recovery and serves the `test` database.
fn wait_for_replica(ctx: &Ctx, bin: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = ctx
            .cmd(bin.join("psql"))
            .args(["-h", "127.0.0.1", "-p", &REPLICA_PORT.to_string(), "-U", "postgres", "-w"])
            .args(["-d", "test", "-tAc", "select pg_is_in_recovery()"])
            .read();
        match answer {
            Ok(text) if text.trim() == "t" => return Ok(()),
            Ok(text) if text.trim() == "f" => {
                bail!("the server on {REPLICA_PORT} is not in recovery: it is not a replica")
            }
            _ if Instant::now() > deadline => {
                bail!("the replica on {REPLICA_PORT} did not serve `test` within 30 s")
            }
            _ => thread::sleep(Duration::from_millis(200)),
        }
    }
}
