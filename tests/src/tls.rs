//! TLS against real servers: the TLS server of `cargo xtask services --ha` (a certificate for `localhost` from a test CA) and PgBouncer (no TLS), on every backend; `tls_suite!` instantiates them.

use ucm_core::{
    ConnectFailure, ConnectionManagerProtocol, ConnectionMode, Error, ManagerConfig, ManagerMode,
};

use crate::Backend;

/// The TLS server's URL and its CA's certificate file, from `TLS_DATABASE_URL` and
/// `TLS_CA_FILE`; `None` (the test passes vacuously) when they are not set, a failure
/// under `CI`.
pub fn tls_server() -> Option<(String, String)> {
    let get = |var: &str| std::env::var(var).ok().filter(|v| !v.is_empty());
    match (get("TLS_DATABASE_URL"), get("TLS_CA_FILE")) {
        (Some(url), Some(ca)) => Some((url, ca)),
        _ => crate::skip_unless_ci("TLS_DATABASE_URL"),
    }
}

async fn connect<B: Backend>(url: &str) -> ucm_core::Result<B::Manager> {
    let config = ManagerConfig::builder(ManagerMode::AsyncModern).primary(url).build()?;
    B::connect(config).await
}

/// Whether the manager's session is encrypted, as the server sees it.
async fn encrypted<M: ConnectionManagerProtocol>(m: &M) -> bool {
    let rows = m
        .fetch_all(
            ConnectionMode::ReadOnly,
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    rows[0].try_get("ssl").unwrap()
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

/// `verify-full` with the CA connects encrypted; `prefer` uses TLS when the server offers it.
pub async fn verify_full_with_the_ca_connects<B: Backend>(url: &str, ca: &str) {
    let m = connect::<B>(&format!("{url}?sslmode=verify-full&sslrootcert={ca}"))
        .await
        .unwrap_or_else(|e| panic!("{}: verify-full with the CA: {e}", B::NAME));
    assert!(encrypted(&m).await, "verify-full connected in plaintext");
    m.close().await.unwrap();
    let m = connect::<B>(&format!("{url}?sslmode=prefer")).await.unwrap();
    assert!(encrypted(&m).await, "prefer did not use the TLS the server offers");
    m.close().await.unwrap();
    let m = connect::<B>(&format!("{url}?sslmode=verify-ca&sslrootcert={ca}")).await.unwrap();
    assert!(encrypted(&m).await);
    m.close().await.unwrap();
}

/// The certificate names `localhost`: `verify-full` to 127.0.0.1 is refused and says how
/// out (a listed name, or `verify-ca`), which then connects.
pub async fn a_wrong_host_name_is_refused_with_the_way_out<B: Backend>(url: &str, ca: &str) {
    let by_address = url.replace("localhost", "127.0.0.1");
    let error = connect::<B>(&format!("{by_address}?sslmode=verify-full&sslrootcert={ca}"))
        .await
        .map(|_| ())
        .unwrap_err();
    eprintln!("tls figure ({}): wrong host name: {error}", B::NAME);
    assert_tls_failure(&error, "sslmode=verify-ca");
    let m = connect::<B>(&format!("{by_address}?sslmode=verify-ca&sslrootcert={ca}"))
        .await
        .unwrap_or_else(|e| panic!("{}: verify-ca by address: {e}", B::NAME));
    assert!(encrypted(&m).await);
    m.close().await.unwrap();
}

/// Without the CA, `verify-full` fails on the unknown issuer and names `sslrootcert`.
pub async fn a_missing_ca_is_refused_with_the_way_out<B: Backend>(url: &str, _ca: &str) {
    let error = connect::<B>(&format!("{url}?sslmode=verify-full")).await.map(|_| ()).unwrap_err();
    eprintln!("tls figure ({}): missing CA: {error}", B::NAME);
    assert_tls_failure(&error, "sslrootcert=");
}

/// `require` against a server without TLS (PgBouncer as `cargo xtask services` starts it)
/// is refused and says what to change.
pub async fn require_without_tls_on_the_server_is_refused<B: Backend>(_url: &str, _ca: &str) {
    let Some(pgbouncer) = crate::Target::pgbouncer() else { return };
    let error =
        connect::<B>(&format!("{}&sslmode=require", pgbouncer.url)).await.map(|_| ()).unwrap_err();
    eprintln!("tls figure ({}): require without TLS: {error}", B::NAME);
    assert_tls_failure(&error, "turn ssl on at the server");
}

/// Generates the TLS scenarios as `#[tokio::test]`s for `$backend`.
#[macro_export]
macro_rules! tls_suite {
    ($module:ident, $backend:ty) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;
            $crate::tls_suite!(@tests $backend;
                verify_full_with_the_ca_connects, a_wrong_host_name_is_refused_with_the_way_out,
                a_missing_ca_is_refused_with_the_way_out,
                require_without_tls_on_the_server_is_refused);
        }
    };
    (@tests $backend:ty; $($scenario:ident),+) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $scenario() {
                if let Some((url, ca)) = $crate::tls::tls_server() {
                    $crate::tls::$scenario::<$backend>(&url, &ca).await;
                }
            }
        )+
    };
}
