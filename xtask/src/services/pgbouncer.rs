//! PgBouncer for the tests: Debian's `pgbouncer` (installed with `apt-get` when missing and we are root), run as `postgres` in transaction mode on 127.0.0.1:6439 in front of the test PostgreSQL.

use std::{fs, path::Path};

use anyhow::{Context, Result, bail};

use super::{Ctx, Outcome, START_TIMEOUT, port_open, wait_for_port};
use crate::cmd::which;

/// Our PgBouncer's port: away from 6432, where a distribution's own PgBouncer may listen.
pub(super) const PORT: u16 = 6439;

/// The password clients give PgBouncer (checked by it; it reaches PostgreSQL, which trusts
/// local connections, as the configured user). Not a secret: a test fixture on loopback.
const PASSWORD: &str = "ucm-pgbouncer";

/// Finds or starts PgBouncer in front of the PostgreSQL at `postgres` (its URL, from the
/// PostgreSQL report); `None` there means there is nothing to pool.
pub(super) fn discover(ctx: &Ctx, postgres: Option<&str>) -> Outcome {
    let Some(postgres) = postgres else {
        return Outcome::Missing("no PostgreSQL to put it in front of".to_owned());
    };
    let Some((user, port, database)) = endpoint(postgres) else {
        return Outcome::Missing(format!(
            "could not read user, port and database from the PostgreSQL URL {}",
            super::redact(postgres)
        ));
    };
    let url =
        format!("postgres://{user}:{PASSWORD}@127.0.0.1:{PORT}/{database}?pooler=transaction");
    let dir = ctx.state_dir.join("pgbouncer");
    match start(ctx, &dir, &user, port) {
        Ok(Some(note)) => Outcome::Started {
            url,
            note,
            stop: format!("kill $(cat {})", dir.join("pgbouncer.pid").display()),
        },
        Ok(None) => Outcome::Found {
            url,
            note: format!("a PgBouncer ucm did not start answers on 127.0.0.1:{PORT}"),
        },
        Err(e) => Outcome::Missing(format!("{e:#}")),
    }
}

/// The user, port and database of a `postgres://user@host:port/database` URL.
fn endpoint(url: &str) -> Option<(String, u16, String)> {
    let rest = url.strip_prefix("postgres://").or_else(|| url.strip_prefix("postgresql://"))?;
    let (authority, path) = rest.split_once('/')?;
    let (userinfo, hostport) = authority.rsplit_once('@')?;
    let user = userinfo.split(':').next()?.to_owned();
    let port = hostport.rsplit_once(':').map_or(Some(5432), |(_, p)| p.parse().ok())?;
    let database = path.split('?').next()?.to_owned();
    Some((user, port, database))
}

/// Starts PgBouncer afresh; `Some(note)` when it was started now, `None` when another
/// PgBouncer (not ours) already listens on the port.
///
/// Ours is restarted when it runs, so that every run begins with fresh server connections:
/// PgBouncer in transaction mode keeps what a client left on a server session (no reset
/// query there), and the tests prove that ucm leaves nothing, which state left by an
/// earlier run (a client of another configuration) would blur.
fn start(ctx: &Ctx, dir: &Path, user: &str, postgres_port: u16) -> Result<Option<String>> {
    let pid_file = dir.join("pgbouncer.pid");
    if port_open(PORT) {
        let Ok(pid) = fs::read_to_string(&pid_file) else { return Ok(None) };
        ctx.cmd("kill").arg(pid.trim()).run().context("stopping our earlier pgbouncer")?;
        if !wait_for_port_closed(PORT) {
            bail!("our earlier pgbouncer (pid {}) still listens on {PORT}", pid.trim());
        }
    }
    let binary = match find() {
        Some(binary) => binary,
        None => {
            install(ctx)?;
            find().context("apt-get installed pgbouncer but its binary is not there")?
        }
    };
    fs::create_dir_all(dir).with_context(|| format!("could not create {}", dir.display()))?;
    let config = dir.join("pgbouncer.ini");
    fs::write(dir.join("userlist.txt"), format!("\"{user}\" \"{PASSWORD}\"\n"))?;
    fs::write(
        &config,
        format!(
            "[databases]\n\
             * = host=127.0.0.1 port={postgres_port}\n\
             [pgbouncer]\n\
             listen_addr = 127.0.0.1\n\
             listen_port = {PORT}\n\
             unix_socket_dir =\n\
             auth_type = plain\n\
             auth_file = {dir}/userlist.txt\n\
             pool_mode = transaction\n\
             max_client_conn = 1000\n\
             default_pool_size = 20\n\
             ignore_startup_parameters = extra_float_digits, options\n\
             logfile = {dir}/pgbouncer.log\n\
             pidfile = {dir}/pgbouncer.pid\n",
            dir = dir.display()
        ),
    )?;
    // PgBouncer refuses to run as root.
    let daemon = if ctx.is_root() {
        ctx.cmd("chown").args(["-R", "postgres:postgres"]).arg(dir).run()?;
        ctx.cmd("runuser").args(["-u", "postgres", "--"]).arg(&binary)
    } else {
        ctx.cmd(&binary)
    };
    daemon.arg("-d").arg(&config).run().context("starting pgbouncer")?;
    if !wait_for_port(PORT, START_TIMEOUT) {
        bail!(
            "started {} but nothing answers on 127.0.0.1:{PORT}; see {}",
            binary.display(),
            dir.join("pgbouncer.log").display()
        );
    }
    Ok(Some(format!("started {} in transaction mode", binary.display())))
}

/// Waits up to the start timeout for nothing to listen on 127.0.0.1:`port`.
fn wait_for_port_closed(port: u16) -> bool {
    let deadline = std::time::Instant::now() + START_TIMEOUT;
    while port_open(port) {
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    true
}

/// The pgbouncer binary: Debian puts it in /usr/sbin, which a user's PATH may lack.
fn find() -> Option<std::path::PathBuf> {
    which("pgbouncer").or_else(|| {
        let debian = Path::new("/usr/sbin/pgbouncer");
        debian.is_file().then(|| debian.to_owned())
    })
}

/// Installs Debian's package (as root), refreshing the package lists once if needed.
fn install(ctx: &Ctx) -> Result<()> {
    if !ctx.is_root() {
        bail!(
            "pgbouncer is not installed and installing it needs root (apt-get install pgbouncer)"
        );
    }
    let apt = || {
        ctx.cmd("apt-get").env("DEBIAN_FRONTEND", "noninteractive").args([
            "install",
            "-y",
            "--no-install-recommends",
            "pgbouncer",
        ])
    };
    if apt().run().is_ok() {
        return Ok(());
    }
    ctx.cmd("apt-get").arg("update").run().context("apt-get update")?;
    apt().run().context("apt-get install pgbouncer")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoint_is_read_from_the_postgres_url() {
        assert_eq!(
            endpoint("postgres://postgres@127.0.0.1:5432/test"),
            Some(("postgres".to_owned(), 5432, "test".to_owned()))
        );
        assert_eq!(
            endpoint("postgresql://app:pw@db/app?sslmode=disable"),
            Some(("app".to_owned(), 5432, "app".to_owned()))
        );
        assert_eq!(endpoint("mysql://root@127.0.0.1/test"), None);
    }
}
