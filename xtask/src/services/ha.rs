//! `cargo xtask services --ha`: a PostgreSQL primary (54330) and a streaming replica of it (54331) for the high-availability tests, repaired from whatever state the last test run left, and a PostgreSQL with TLS (54332) for the TLS tests.
//!
//! The HA tests stop, promote and rebuild these two servers (through `ucm_tests::ha`), so a
//! start checks the pair instead of trusting it, with the same harness the tests use
//! (`ucm_pg_pair`): 54330 must be a running primary and 54331 a running standby streaming
//! from it ([`Primary::First`]). What is already right is kept, so a healthy pair costs a
//! handful of queries; a replica that is no longer one, or follows the wrong server, is made
//! anew from a base backup of the primary (its data is throwaway). A running HA test binary
//! holds `ha.lock` beside the data directories; we wait for it rather than repair the pair
//! under its tests.

use std::{fs, os::unix::fs::PermissionsExt, path::Path};

use anyhow::{Context, Result, anyhow};
use ucm_pg_pair::{Node, Pair, Primary, Servers, display};

use super::Ctx;
use super::postgres::{cluster_dir, ensure_test_database, server_bin_dir};

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

/// The server settings streaming replication needs, added to a primary made here: WAL for a
/// replica and senders for it (initdb's pg_hba.conf already trusts replication connections
/// from 127.0.0.1). A base backup copies them, so either server can later be the primary.
const REPLICATION_SETTINGS: &str =
    "\nwal_level = replica\nmax_wal_senders = 5\nhot_standby = on\nwal_keep_size = 256MB\n";

/// Makes 54330 a running primary and 54331 a running replica streaming from it, whatever state
/// they were left in, then waits until the replica has replayed everything the primary wrote
/// (so it serves the `test` database); and the TLS server on 54332.
pub(crate) fn start(ctx: &Ctx) -> Result<HaPair> {
    let bin = server_bin_dir().context(
        "no PostgreSQL server binaries (initdb, pg_ctl, pg_basebackup) in /usr/lib/postgresql/*/bin or on PATH",
    )?;
    let as_root = ctx.is_root();
    let servers =
        Servers { bin, run_as: as_root.then(|| "postgres".to_owned()), quiet: ctx.options.quiet };
    let pair = Pair {
        nodes: [
            node(ctx, as_root, "pg-ha-primary", PRIMARY_PORT)?,
            node(ctx, as_root, "pg-ha-replica", REPLICA_PORT)?,
        ],
        servers: servers.clone(),
    };
    let _lock = pair.lock().map_err(|e| anyhow!(e))?;
    let mut done = Vec::new();
    let primary = &pair.nodes[0];
    if !primary.has_data() {
        // Never made, or emptied by a rebuild that did not finish: start afresh.
        servers.initdb(primary).map_err(|e| anyhow!(e))?;
        let conf = primary.dir.join("postgresql.conf");
        let mut text =
            fs::read_to_string(&conf).context("reading the primary's postgresql.conf")?;
        text.push_str(REPLICATION_SETTINGS);
        fs::write(&conf, text).context("writing the primary's postgresql.conf")?;
        done.push(format!("made the primary in {}", primary.dir.display()));
    }
    let ensured = pair.ensure(Primary::First).map_err(|e| anyhow!(e))?;
    done.extend(ensured.changes);
    ensure_test_database(ctx, PRIMARY_PORT, Some(&servers.bin))?;
    // So the replica serves the `test` database just made.
    pair.wait_caught_up(&ensured.primary, &ensured.standby).map_err(|e| anyhow!(e))?;
    let mut tls = node(ctx, as_root, "pg-tls", TLS_PORT)?;
    let ca = ensure_tls_server(ctx, &servers, &mut tls, &mut done)?;

    let stop = [&tls, &pair.nodes[1], &pair.nodes[0]]
        .map(|node| display(servers.pg_ctl(node).args(["-m", "fast", "stop"])))
        .join("; ");
    let path = |path: &Path| path.to_string_lossy().into_owned();
    let env = vec![
        ("HA_PRIMARY_URL", pair.nodes[0].url.clone()),
        ("HA_REPLICA_URL", pair.nodes[1].url.clone()),
        ("HA_PG_BIN", path(&servers.bin)),
        ("HA_PRIMARY_DIR", path(&pair.nodes[0].dir)),
        ("HA_REPLICA_DIR", path(&pair.nodes[1].dir)),
        // Whom the tests run the server programs as: PostgreSQL refuses root, so root hands
        // them to `postgres`; empty means whoever runs the tests.
        ("HA_RUN_AS", servers.run_as.clone().unwrap_or_default()),
        // The TLS server answers to `localhost` (the only name its certificate lists).
        ("TLS_DATABASE_URL", format!("postgres://postgres@localhost:{TLS_PORT}/test")),
        ("TLS_CA_FILE", path(&ca)),
        // The one role the TLS server checks the password of (credential rotation tests).
        ("PASSWORD_ROLE", PASSWORD_CHECKED_ROLE.to_owned()),
    ];
    let changed = !done.is_empty();
    let note = if changed { done.join("; ") } else { "both running, replica streaming".to_owned() };
    Ok(HaPair { env, stop, note, changed })
}

/// The server called `name` on `port`, with its data under `target/ucm-services`.
fn node(ctx: &Ctx, as_root: bool, name: &str, port: u16) -> Result<Node> {
    let dir = cluster_dir(ctx, as_root, name, port)?;
    // The tests get this path and may run from another directory.
    let dir =
        fs::canonicalize(&dir).with_context(|| format!("could not resolve {}", dir.display()))?;
    Ok(Node::new(port, dir))
}

/// The role whose password the TLS server checks (every other role is trusted): the
/// credential-rotation tests log in as it.
pub(crate) const PASSWORD_CHECKED_ROLE: &str = "ucm_rotating";

/// Puts `host all <role> ... scram-sha-256` lines first in the node's `pg_hba.conf`, so
/// that `role` (and only it) must give its password; whether the file changed.
fn require_password_for(node: &Node, role: &str) -> Result<bool> {
    let path = node.dir.join("pg_hba.conf");
    let text = fs::read_to_string(&path).context("reading the TLS server's pg_hba.conf")?;
    let lines = format!(
        "host all {role} 127.0.0.1/32 scram-sha-256\nhost all {role} ::1/128 scram-sha-256\n"
    );
    if text.starts_with(&lines) {
        return Ok(false);
    }
    fs::write(&path, format!("{lines}{text}")).context("writing the TLS server's pg_hba.conf")?;
    Ok(true)
}

/// Makes 54332 a running server with TLS on: a test CA and a server certificate for
/// `localhost` (made with openssl beside its data directory, kept once made), the
/// certificate and key in its data directory; returns the CA certificate's path.
fn ensure_tls_server(
    ctx: &Ctx,
    servers: &Servers,
    node: &mut Node,
    done: &mut Vec<String>,
) -> Result<std::path::PathBuf> {
    if !node.has_data() {
        servers.initdb(node).map_err(|e| anyhow!(e))?;
        done.push(format!("made the TLS server in {}", node.dir.display()));
    }
    let certs = super::certificates::dir(ctx);
    let ca = super::certificates::make(ctx, &certs)?;
    for (name, mode) in [("server.crt", 0o644), ("server.key", 0o600)] {
        let target = node.dir.join(name);
        fs::copy(certs.join(name), &target)
            .with_context(|| format!("copying {name} into {}", node.dir.display()))?;
        fs::set_permissions(&target, fs::Permissions::from_mode(mode))?;
        if servers.run_as.is_some() {
            ctx.cmd("chown").arg("postgres:postgres").arg(&target).run()?;
        }
    }
    node.settings = " -c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key".to_owned();
    let hba_changed = require_password_for(node, PASSWORD_CHECKED_ROLE)?;
    if servers.start(node).map_err(|e| anyhow!(e))? {
        done.push(format!("started the TLS server on {TLS_PORT}"));
    } else if hba_changed {
        servers.psql(node, "postgres", "SELECT pg_reload_conf()", true).map_err(|e| anyhow!(e))?;
        done.push(format!("reloaded pg_hba.conf on {TLS_PORT}"));
    }
    ensure_test_database(ctx, TLS_PORT, Some(&servers.bin))?;
    Ok(ca)
}
