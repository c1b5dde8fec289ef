//! A MariaDB with TLS for the TLS tests: a server of its own on 127.0.0.1:33070 (`mariadb-install-db`, then `mariadbd` as `mysql`), with the test CA's certificate for `localhost`; the machine's MariaDB on 3306 stays without TLS.

use std::{fs, os::unix::fs::PermissionsExt, path::Path};

use anyhow::{Context, Result, bail};

use super::{Ctx, Outcome, START_TIMEOUT, port_open, wait_for_port};
use crate::cmd::which;

/// Its port.
const PORT: u16 = 33070;

/// The server program Debian installs.
const DAEMON: &str = "/usr/sbin/mariadbd";

/// Finds or starts it; the URL names `localhost`, the only name its certificate lists.
pub(super) fn discover(ctx: &Ctx) -> Outcome {
    let url = format!("mysql://root@localhost:{PORT}/test");
    let dir = ctx.state_dir.join("mariadb-tls");
    if port_open(PORT) {
        return Outcome::Found { url, note: format!("a server answers on 127.0.0.1:{PORT}") };
    }
    match start(ctx, &dir) {
        Ok(()) => Outcome::Started {
            url,
            note: format!("started {DAEMON} with TLS in {}", dir.display()),
            stop: format!("kill $(cat {})", dir.join("mariadbd.pid").display()),
        },
        Err(e) => Outcome::Missing(format!("{e:#}")),
    }
}

fn start(ctx: &Ctx, dir: &Path) -> Result<()> {
    if !Path::new(DAEMON).exists() || which("mariadb-install-db").is_none() {
        bail!("{DAEMON} or mariadb-install-db is not installed (Debian's mariadb-server)");
    }
    if !ctx.is_root() {
        bail!("starting a MariaDB of our own needs root (it runs as `mysql`)");
    }
    let data = dir.join("data");
    let certs = super::certificates::dir(ctx);
    super::certificates::make(ctx, &certs)?;
    fs::create_dir_all(&data).with_context(|| format!("could not create {}", data.display()))?;
    for (name, mode) in [("ca.crt", 0o644), ("server.crt", 0o644), ("server.key", 0o600)] {
        let target = dir.join(name);
        fs::copy(certs.join(name), &target).with_context(|| format!("copying {name}"))?;
        fs::set_permissions(&target, fs::Permissions::from_mode(mode))?;
    }
    ctx.cmd("chown").args(["-R", "mysql:mysql"]).arg(dir).run()?;
    if !data.join("mysql").is_dir() {
        ctx.cmd("mariadb-install-db")
            .args(["--user=mysql", "--auth-root-authentication-method=normal", "--skip-test-db"])
            .arg(format!("--datadir={}", data.display()))
            .run()
            .context("mariadb-install-db")?;
    }
    let path = |name: &str| dir.join(name).display().to_string();
    ctx.cmd("start-stop-daemon")
        .args(["--start", "--background", "--make-pidfile", "--pidfile"])
        .arg(path("mariadbd.pid"))
        .args(["--exec", DAEMON, "--"])
        .args(["--no-defaults", "--user=mysql", "--bind-address=127.0.0.1"])
        .arg(format!("--port={PORT}"))
        .arg(format!("--datadir={}", data.display()))
        .arg(format!("--socket={}", path("mariadbd.sock")))
        .arg(format!("--log-error={}", path("error.log")))
        .arg(format!("--ssl-ca={}", path("ca.crt")))
        .arg(format!("--ssl-cert={}", path("server.crt")))
        .arg(format!("--ssl-key={}", path("server.key")))
        .run()
        .context("starting mariadbd")?;
    if !wait_for_port(PORT, START_TIMEOUT) {
        bail!(
            "started {DAEMON} but nothing answers on 127.0.0.1:{PORT}; see {}",
            path("error.log")
        );
    }
    let client = ["mariadb", "mysql"].into_iter().find(|c| which(c).is_some());
    if let Some(client) = client {
        ctx.cmd(client)
            .args(["-h", "127.0.0.1", "-P", &PORT.to_string(), "-u", "root"])
            .args(["-e", "create database if not exists test"])
            .run()
            .context("creating database `test`")?;
    }
    Ok(())
}
