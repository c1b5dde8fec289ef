//! PostgreSQL for the tests: the server on 127.0.0.1:5432, the machine's own cluster, or a
//! throwaway cluster made with `initdb`/`pg_ctl` under `target/ucm-services`.

use std::{
    env, fs,
    path::{Path, PathBuf},
    thread,
    time::Duration,
};

use anyhow::{Context, Result, bail};

use super::{Ctx, Outcome, port_open};
use crate::cmd::{shell_quote, which};

/// Finds or starts PostgreSQL, trying in turn the usual port, the machine's cluster and a
/// throwaway cluster; the reasons every attempt failed end up in the report.
pub(super) fn discover(ctx: &Ctx) -> Outcome {
    let mut reasons = Vec::new();
    if ctx.options.force_throwaway_pg {
        ctx.say("--force-throwaway-pg: skipping 127.0.0.1:5432 and the machine's cluster");
    } else {
        match probe(ctx, SYSTEM_PORT) {
            Probe::Ready => return found(ctx, SYSTEM_PORT, "a server answers".to_owned(), None),
            Probe::NotReady(why) => reasons.push(why),
            Probe::Down => reasons.push(format!("nothing answers on 127.0.0.1:{SYSTEM_PORT}")),
        }
        match start_system_cluster(ctx) {
            Ok(Some((version, stop))) => {
                let note = format!("started the machine's cluster {version}/main");
                return found(ctx, SYSTEM_PORT, note, Some(stop));
            }
            Ok(None) => {}
            Err(e) => reasons.push(format!("{e:#}")),
        }
    }
    match throwaway(ctx) {
        Ok(outcome) => outcome,
        Err(e) => {
            reasons.push(format!("{e:#}"));
            Outcome::Missing(reasons.join("; "))
        }
    }
}

/// The port of the machine's PostgreSQL server.
const SYSTEM_PORT: u16 = 5432;

/// The port of our throwaway cluster: away from 5432 so it never competes with a real server.
const THROWAWAY_PORT: u16 = 54329;

/// The longest Unix socket path the kernel accepts (`sun_path` is 108 bytes with its NUL).
const MAX_SOCKET_PATH: usize = 107;

/// What a probe of a port found.
pub(super) enum Probe {
    /// PostgreSQL accepts connections.
    Ready,
    /// Nothing listens.
    Down,
    /// Something listens but is not a PostgreSQL accepting connections.
    NotReady(String),
}

/// Checks `port` with a TCP connect, then with `pg_isready` when it is installed.
pub(super) fn probe(ctx: &Ctx, port: u16) -> Probe {
    if !port_open(port) {
        return Probe::Down;
    }
    let isready = tool("pg_isready");
    let isready = ctx.cmd(&isready).args(["-h", "127.0.0.1", "-p", &port.to_string()]);
    // Exit 1 means "rejecting connections": a server that is starting up. Give it a few
    // seconds before concluding anything.
    for _ in 0..10 {
        match isready.status().map(|s| s.code()) {
            // pg_isready is not installed: the open port is all we can know.
            Err(_) | Ok(Some(0)) => return Probe::Ready,
            Ok(Some(1)) => thread::sleep(Duration::from_millis(500)),
            Ok(_) => break,
        }
    }
    Probe::NotReady(format!(
        "something answers on 127.0.0.1:{port} but pg_isready says it does not accept connections"
    ))
}

/// Reports a server on `port`, making sure a database `test` exists and preferring it.
fn found(ctx: &Ctx, port: u16, note: String, stop: Option<String>) -> Outcome {
    let note = format!("{note} on 127.0.0.1:{port}");
    let (database, note) = match ensure_test_database(ctx, port, None) {
        Ok(()) => ("test", note),
        Err(e) => ("postgres", format!("{note}; using `postgres`: {e:#}")),
    };
    let url = format!("postgres://postgres@127.0.0.1:{port}/{database}");
    match stop {
        Some(stop) => Outcome::Started { url, note, stop },
        None => Outcome::Found { url, note },
    }
}

/// Creates database `test` unless it exists, connecting over TCP as `postgres`.
pub(super) fn ensure_test_database(ctx: &Ctx, port: u16, bin: Option<&Path>) -> Result<()> {
    let client = |name: &str| {
        let program =
            bin.map(|b| b.join(name)).filter(|p| p.is_file()).unwrap_or_else(|| tool(name));
        // `-w`: never prompt for a password; a server that wants one should be given as
        // PG_DATABASE_URL instead.
        ctx.cmd(program).args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres", "-w"])
    };
    let exists = client("psql")
        .args(["-d", "postgres", "-tAc", "select 1 from pg_database where datname = 'test'"])
        .read()
        .context(
            "could not list the databases (does it need a password? then export PG_DATABASE_URL)",
        )?;
    if exists != "1" {
        client("createdb").arg("test").run()?;
    }
    Ok(())
}

/// Starts the distribution's own cluster (`/etc/postgresql/<version>/main`) with
/// `pg_ctlcluster`; `Ok(None)` when there is none, else the version and its stop command once
/// 5432 answers.
fn start_system_cluster(ctx: &Ctx) -> Result<Option<(String, String)>> {
    if which("pg_ctlcluster").is_none() {
        return Ok(None);
    }
    let mut versions: Vec<String> = fs::read_dir("/etc/postgresql")
        .map(|dir| dir.filter_map(|e| Some(e.ok()?.file_name().to_str()?.to_owned())).collect())
        .unwrap_or_default();
    versions.retain(|v| Path::new("/etc/postgresql").join(v).join("main").is_dir());
    versions.sort_by_key(|v| std::cmp::Reverse(version_key(v)));
    let mut errors = Vec::new();
    for version in versions {
        let started = ctx
            .cmd("pg_ctlcluster")
            .args(["--skip-systemctl-redirect", &version, "main", "start"])
            .run();
        match started {
            Err(e) => errors.push(format!("{e:#}")),
            Ok(()) if matches!(probe(ctx, SYSTEM_PORT), Probe::Ready) => {
                let stop = format!("pg_ctlcluster --skip-systemctl-redirect {version} main stop");
                return Ok(Some((version, stop)));
            }
            Ok(()) => errors.push(format!(
                "started cluster {version}/main but 127.0.0.1:{SYSTEM_PORT} does not answer \
                 (its port is in /etc/postgresql/{version}/main/postgresql.conf)"
            )),
        }
    }
    if errors.is_empty() { Ok(None) } else { bail!(errors.join("; ")) }
}

/// Starts (making it first if needed) a throwaway cluster on port 54329 with trust auth.
fn throwaway(ctx: &Ctx) -> Result<Outcome> {
    if matches!(probe(ctx, THROWAWAY_PORT), Probe::Ready) {
        // Most likely one we started earlier, perhaps from another worktree.
        return Ok(found(ctx, THROWAWAY_PORT, "a throwaway cluster already runs".to_owned(), None));
    }
    let bin = server_bin_dir().context(
        "no PostgreSQL server binaries (initdb, pg_ctl) in /usr/lib/postgresql/*/bin or on PATH; \
         install PostgreSQL or export PG_DATABASE_URL",
    )?;
    let as_root = ctx.is_root();
    let dir = data_dir(ctx, as_root)?;
    let as_postgres = |program: &str| {
        let program = bin.join(program);
        // PostgreSQL refuses to run as root, so root hands the work to the postgres user.
        let cmd = if as_root {
            ctx.cmd("runuser").args(["-u", "postgres", "--"]).arg(program)
        } else {
            ctx.cmd(program)
        };
        cmd.dir(&dir)
    };
    let reused = dir.join("PG_VERSION").is_file();
    if !reused {
        // UTF-8 and the C locale whatever the machine's locale: tests store non-ASCII text,
        // and a container's default POSIX locale would give SQL_ASCII.
        as_postgres("initdb")
            .arg("-D")
            .arg(&dir)
            .args(["-U", "postgres", "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync"])
            .run()?;
    }
    let log = dir.join("log");
    let server_options = format!(
        "-p {THROWAWAY_PORT} -k {} -c listen_addresses=127.0.0.1",
        shell_quote(&dir.to_string_lossy())
    );
    let started = as_postgres("pg_ctl")
        .arg("-D")
        .arg(&dir)
        .arg("-l")
        .arg(&log)
        .args(["-o", &server_options, "-w", "start"])
        .run();
    if let Err(e) = started {
        bail!("{e:#}\nlast lines of {}:\n{}", log.display(), tail(&log, 15));
    }
    ensure_test_database(ctx, THROWAWAY_PORT, Some(&bin))?;
    let stop = as_postgres("pg_ctl").arg("-D").arg(&dir).args(["-m", "fast", "stop"]).display();
    let what = if reused { "started the existing" } else { "made and started a" };
    Ok(Outcome::Started {
        url: format!("postgres://postgres@127.0.0.1:{THROWAWAY_PORT}/test"),
        note: format!("{what} throwaway cluster in {}", dir.display()),
        stop,
    })
}

/// The data directory of the throwaway cluster, created and, when we are root, owned by
/// `postgres`: under the workspace's `target/` when the postgres user can reach it there,
/// else under the system's temporary directory.
fn data_dir(ctx: &Ctx, as_root: bool) -> Result<PathBuf> {
    cluster_dir(ctx, as_root, &format!("pg-{THROWAWAY_PORT}"), THROWAWAY_PORT)
}

/// A data directory named `name` for a cluster listening on `port` (see [`data_dir`]).
pub(super) fn cluster_dir(ctx: &Ctx, as_root: bool, name: &str, port: u16) -> Result<PathBuf> {
    let candidates = [ctx.state_dir.join(name), env::temp_dir().join("ucm-services").join(name)];
    let mut rejected = Vec::new();
    for dir in candidates {
        // The server's socket lives in the data directory, and socket paths are short.
        let socket = dir.join(format!(".s.PGSQL.{port}"));
        if socket.as_os_str().len() > MAX_SOCKET_PATH {
            rejected.push(format!("{}: path too long for a Unix socket", dir.display()));
            continue;
        }
        if let Err(e) = fs::create_dir_all(&dir) {
            rejected.push(format!("{}: {e}", dir.display()));
            continue;
        }
        if !as_root {
            return Ok(dir);
        }
        // Every parent must be traversable by postgres; asking postgres itself is the only
        // check that also respects ACLs and mount options.
        let usable = ctx.cmd("chown").args(["postgres:postgres"]).arg(&dir).run().and_then(|()| {
            ctx.cmd("runuser").args(["-u", "postgres", "--", "test", "-w"]).arg(&dir).run()
        });
        match usable {
            Ok(()) => return Ok(dir),
            Err(_) => {
                rejected.push(format!("{}: the postgres user cannot write there", dir.display()))
            }
        }
    }
    bail!("no usable directory for a throwaway cluster ({})", rejected.join("; "))
}

/// The directory holding `initdb` and `pg_ctl`: the highest version under
/// `/usr/lib/postgresql`, else wherever `PATH` has them.
pub(super) fn server_bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<(Vec<u32>, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let bin = entry.path().join("bin");
            let has_tools = bin.join("initdb").is_file() && bin.join("pg_ctl").is_file();
            has_tools.then(|| (version_key(&entry.file_name().to_string_lossy()), bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    let initdb = which("initdb")?;
    let bin = initdb.parent()?.to_path_buf();
    bin.join("pg_ctl").is_file().then_some(bin)
}

/// A client tool such as `pg_isready`: from `PATH` (Debian's wrappers there pick the right
/// version), else from the server's bin directory, else the bare name (which then fails to
/// run, and the caller says so).
fn tool(name: &str) -> PathBuf {
    which(name)
        .or_else(|| server_bin_dir().map(|bin| bin.join(name)).filter(|p| p.is_file()))
        .unwrap_or_else(|| PathBuf::from(name))
}

/// `"15"` → `[15]`, `"9.6"` → `[9, 6]`, so versions sort numerically.
fn version_key(version: &str) -> Vec<u32> {
    version.split('.').map(|part| part.parse().unwrap_or(0)).collect()
}

/// The last `lines` lines of a log file, or why it could not be read.
pub(super) fn tail(path: &Path, lines: usize) -> String {
    match fs::read_to_string(path) {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(could not read it: {e})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_key_sorts_numerically() {
        let mut versions = vec!["9.6", "15", "10", "16", "bogus"];
        versions.sort_by_key(|v| version_key(v));
        assert_eq!(versions, ["bogus", "9.6", "10", "15", "16"]);
    }
}
