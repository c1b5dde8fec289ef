//! The test CA and the server certificate of the TLS test servers (PostgreSQL on 54332, MariaDB on 33070), made once with openssl under `target/ucm-services/tls`.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};

use super::Ctx;

/// Where the CA and the server certificate live.
pub(super) fn dir(ctx: &Ctx) -> PathBuf {
    ctx.state_dir.join("tls")
}

/// A test CA and a server certificate it signed for `localhost` only (so that 127.0.0.1
/// fails `verify-full`), in `dir`, made with openssl unless there; returns the CA's path.
pub(super) fn make(ctx: &Ctx, dir: &Path) -> Result<PathBuf> {
    let ca = dir.join("ca.crt");
    if ca.is_file() && dir.join("server.crt").is_file() && dir.join("server.key").is_file() {
        return Ok(ca);
    }
    fs::create_dir_all(dir).with_context(|| format!("could not create {}", dir.display()))?;
    fs::write(dir.join("server.ext"), "subjectAltName = DNS:localhost\n")?;
    let openssl = |args: &[&str]| ctx.cmd("openssl").args(args).dir(dir).run();
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "3650",
        "-subj",
        "/CN=ucm test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
    ])
    .context("making the test CA with openssl (is openssl installed?)")?;
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ])?;
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "3650",
        "-extfile",
        "server.ext",
        "-out",
        "server.crt",
    ])?;
    Ok(ca)
}
