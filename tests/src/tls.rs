//! TLS against real servers, PostgreSQL and MariaDB each with a certificate for `localhost` from a test CA (`cargo xtask services --ha`), and each beside a server without TLS (PgBouncer, the machine's MariaDB), on every backend; `tls_suite!` instantiates them.

use ucm_kernel::{
    ConnectFailure, ConnectionManagerProtocol, ConnectionMode, DatabaseKind, Error, ManagerConfig,
    ManagerMode,
};

use crate::Backend;

/// A TLS server, its CA, and a server of the same database without TLS.
#[derive(Debug, Clone)]
pub struct TlsTarget {
    /// Which database.
    pub kind: DatabaseKind,
    /// The TLS server's URL, by the name its certificate lists (`localhost`).
    pub url: String,
    /// The test CA's certificate file.
    pub ca: String,
    /// A server of the same database without TLS.
    pub plain: String,
}

impl TlsTarget {
    /// From `TLS_DATABASE_URL` (PostgreSQL) or `TLS_MYSQL_DATABASE_URL`, `TLS_CA_FILE`, and
    /// `PGBOUNCER_DATABASE_URL` or `MYSQL_DATABASE_URL`; `None` (the test passes vacuously)
    /// when they are not set, a failure under `CI`.
    pub fn find(kind: DatabaseKind) -> Option<Self> {
        let get = |var: &str| std::env::var(var).ok().filter(|v| !v.is_empty());
        let (tls, plain) = match kind {
            DatabaseKind::Postgres => ("TLS_DATABASE_URL", "PGBOUNCER_DATABASE_URL"),
            _ => ("TLS_MYSQL_DATABASE_URL", "MYSQL_DATABASE_URL"),
        };
        for var in [tls, "TLS_CA_FILE", plain] {
            if get(var).is_none() {
                return crate::skip_unless_ci(var);
            }
        }
        Some(Self { kind, url: get(tls)?, ca: get("TLS_CA_FILE")?, plain: get(plain)? })
    }

    /// `url` with the TLS mode `mode` (libpq's name; MySQL's spelling for MySQL) and, when
    /// `with_ca`, the CA.
    fn with(&self, url: &str, mode: &str, with_ca: bool) -> String {
        let (mode_key, mode, ca_key) = match self.kind {
            DatabaseKind::Postgres => ("sslmode", mode.to_owned(), "sslrootcert"),
            _ => ("ssl-mode", mysql_mode(mode).to_owned(), "ssl-ca"),
        };
        let joiner = if url.contains('?') { '&' } else { '?' };
        let mut out = format!("{url}{joiner}{mode_key}={mode}");
        if with_ca {
            out.push_str(&format!("&{ca_key}={}", self.ca));
        }
        out
    }
}

/// MySQL's spelling of a libpq TLS mode.
fn mysql_mode(mode: &str) -> &'static str {
    match mode {
        "disable" => "DISABLED",
        "prefer" => "PREFERRED",
        "require" => "REQUIRED",
        "verify-ca" => "VERIFY_CA",
        _ => "VERIFY_IDENTITY",
    }
}

async fn connect<B: Backend>(url: &str) -> ucm_kernel::Result<B::Manager> {
    let config = ManagerConfig::builder(ManagerMode::AsyncModern).primary(url).build()?;
    B::connect(config).await
}

/// Whether the manager's session is encrypted, as the server sees it.
async fn encrypted<M: ConnectionManagerProtocol>(m: &M, kind: DatabaseKind) -> bool {
    let sql = match kind {
        DatabaseKind::Postgres => {
            "SELECT CASE WHEN ssl THEN 'yes' ELSE '' END AS v FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
        }
        _ => {
            "SELECT VARIABLE_VALUE AS v FROM information_schema.SESSION_STATUS WHERE VARIABLE_NAME = 'SSL_CIPHER'"
        }
    };
    let rows = m.fetch_all(ConnectionMode::ReadOnly, sql, &[]).await.unwrap();
    !rows[0].try_get::<String>("v").unwrap().is_empty()
}

/// A TLS failure whose message carries `advice`.
fn assert_tls_failure(error: &Error, advice: &str) {
    match error {
        Error::ConnectFailed { reason: ConnectFailure::Tls, .. } => {}
        other => panic!("expected a TLS failure, got {other:?}"),
    }
    let text = error.to_string();
    assert!(text.contains(advice), "the message does not say {advice:?}: {text}");
}

/// Connects to `url` and checks whether the session is encrypted.
async fn connects<B: Backend>(t: &TlsTarget, url: &str, tls: bool) {
    let m = connect::<B>(url).await.unwrap_or_else(|e| panic!("{} {url}: {e}", B::NAME));
    assert_eq!(encrypted(&m, t.kind).await, tls, "{} {url}: encrypted", B::NAME);
    m.close().await.unwrap();
}

/// `verify-full` with the CA connects encrypted; so do `verify-ca` with the CA and
/// `prefer`, which uses the TLS the server offers.
pub async fn verify_full_with_the_ca_connects<B: Backend>(t: &TlsTarget) {
    connects::<B>(t, &t.with(&t.url, "verify-full", true), true).await;
    if !(B::NAME == "diesel" && t.kind == DatabaseKind::MySql) {
        connects::<B>(t, &t.with(&t.url, "verify-ca", true), true).await;
    }
    connects::<B>(t, &t.with(&t.url, "require", true), true).await;
    connects::<B>(t, &t.with(&t.url, "prefer", false), true).await;
}

/// `prefer` against a server without TLS falls back to plaintext, as libpq's does.
pub async fn prefer_falls_back_to_plaintext<B: Backend>(t: &TlsTarget) {
    connects::<B>(t, &t.with(&t.plain, "prefer", false), false).await;
}

/// The certificate names `localhost`: `verify-full` to 127.0.0.1 is refused and says the
/// way out (a listed name, or `verify-ca`), which then connects.
pub async fn a_wrong_host_name_is_refused_with_the_way_out<B: Backend>(t: &TlsTarget) {
    let by_address = t.url.replace("localhost", "127.0.0.1");
    let error =
        connect::<B>(&t.with(&by_address, "verify-full", true)).await.map(|_| ()).unwrap_err();
    eprintln!("tls figure ({} {}): wrong host name: {error}", B::NAME, t.kind);
    assert_tls_failure(&error, "sslmode=verify-ca");
    let verify_ca = t.with(&by_address, "verify-ca", true);
    if B::NAME == "diesel" && t.kind == DatabaseKind::MySql {
        // mysql_async checks the chain and the name together: refused up front, saying so.
        let error = connect::<B>(&verify_ca).await.map(|_| ()).unwrap_err();
        assert!(error.to_string().contains("VERIFY_IDENTITY"), "{error}");
        return;
    }
    connects::<B>(t, &verify_ca, true).await;
}

/// Without the CA, `verify-full` fails on the unknown issuer and names `sslrootcert`.
pub async fn a_missing_ca_is_refused_with_the_way_out<B: Backend>(t: &TlsTarget) {
    let error = connect::<B>(&t.with(&t.url, "verify-full", false)).await.map(|_| ()).unwrap_err();
    eprintln!("tls figure ({} {}): missing CA: {error}", B::NAME, t.kind);
    assert_tls_failure(&error, "sslrootcert=");
}

/// `require` against a server without TLS is refused and says what to change.
pub async fn require_without_tls_on_the_server_is_refused<B: Backend>(t: &TlsTarget) {
    let error = connect::<B>(&t.with(&t.plain, "require", false)).await.map(|_| ()).unwrap_err();
    eprintln!("tls figure ({} {}): require without TLS: {error}", B::NAME, t.kind);
    assert_tls_failure(&error, "turn ssl on at the server");
}

/// Generates the TLS scenarios as `#[tokio::test]`s for `$backend` on `$kind`.
#[macro_export]
macro_rules! tls_suite {
    ($module:ident, $backend:ty, $kind:expr) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;
            $crate::tls_suite!(@tests $backend, $kind;
                verify_full_with_the_ca_connects, prefer_falls_back_to_plaintext,
                a_wrong_host_name_is_refused_with_the_way_out,
                a_missing_ca_is_refused_with_the_way_out,
                require_without_tls_on_the_server_is_refused);
        }
    };
    (@tests $backend:ty, $kind:expr; $($scenario:ident),+) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $scenario() {
                if let Some(target) = $crate::tls::TlsTarget::find($kind) {
                    $crate::tls::$scenario::<$backend>(&target).await;
                }
            }
        )+
    };
}
