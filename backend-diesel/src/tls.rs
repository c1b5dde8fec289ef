//! TLS for diesel's PostgreSQL connections (tokio-postgres): rustls (ring) with libpq's `sslmode` meanings, `sslrootcert`, `sslcert` and `sslkey`.

use std::path::Path;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use ucm_kernel::{DatabaseUrl, Error, Result, SslMode};

/// How a connection checks the server's certificate, from `sslmode` and `sslrootcert` as
/// libpq reads them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    /// Encrypt, check nothing (`allow`, `prefer`, `require` without a root certificate).
    Nothing,
    /// The chain up to a trusted root, not the host name (`verify-ca`, and `require` or
    /// `prefer` given `sslrootcert`, as libpq does).
    Chain,
    /// The chain and the host name (`verify-full`).
    ChainAndName,
}

/// The rustls configuration ucm-diesel connects to the PostgreSQL server at `url` with
/// (libpq's meanings of `sslmode`, `sslrootcert`, `sslcert` and `sslkey`), `None` for
/// `sslmode=disable`: for a tokio-postgres client of your own (through
/// `tokio-postgres-rustls`) that should connect exactly as ucm does.
///
/// # Errors
/// `Configuration` naming the parameter when a certificate or key file cannot be read.
pub fn postgres_tls_config(url: &DatabaseUrl) -> Result<Option<ClientConfig>> {
    let root_file = url.param("sslrootcert").filter(|v| !v.is_empty());
    let check = match url.ssl_mode() {
        SslMode::Disable => return Ok(None),
        SslMode::VerifyFull => Check::ChainAndName,
        SslMode::VerifyCa => Check::Chain,
        SslMode::Allow | SslMode::Prefer | SslMode::Require if root_file.is_some() => Check::Chain,
        SslMode::Allow | SslMode::Prefer | SslMode::Require => Check::Nothing,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::config("sslmode", format!("no TLS protocol version available: {e}")))?;
    let algorithms = provider.signature_verification_algorithms;
    let verifier: Arc<dyn ServerCertVerifier> = match check {
        Check::Nothing => Arc::new(Lenient { chain: None, algorithms }),
        Check::Chain | Check::ChainAndName => {
            let roots = roots(root_file)?;
            let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| {
                    Error::config("sslrootcert", format!("no usable root certificate: {e}"))
                })?;
            if check == Check::Chain {
                Arc::new(Lenient { chain: Some(inner), algorithms })
            } else {
                inner
            }
        }
    };
    let builder = builder.dangerous().with_custom_certificate_verifier(verifier);
    let config = match (url.param("sslcert"), url.param("sslkey")) {
        (Some(cert), Some(key)) => {
            let certs = CertificateDer::pem_file_iter(cert)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| unreadable("sslcert", cert, &e))?;
            let key =
                PrivateKeyDer::from_pem_file(key).map_err(|e| unreadable("sslkey", key, &e))?;
            builder.with_client_auth_cert(certs, key).map_err(|e| {
                Error::config("sslkey", format!("the client certificate and key do not match: {e}"))
            })?
        }
        (None, None) => builder.with_no_client_auth(),
        (Some(_), None) | (None, Some(_)) => {
            return Err(Error::config(
                "sslcert",
                "a client certificate needs both sslcert= and sslkey=",
            ));
        }
    };
    Ok(Some(config))
}

/// The trusted roots: the PEM file `sslrootcert` names (`system` for the public web
/// roots), else the public web roots.
fn roots(file: Option<&str>) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    match file {
        None | Some("system") => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        Some(file) => {
            let certs = CertificateDer::pem_file_iter(file)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| unreadable("sslrootcert", file, &e))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(Error::config(
                    "sslrootcert",
                    format!("{file} holds no certificate rustls can use (PEM expected)"),
                ));
            }
        }
    }
    Ok(roots)
}

fn unreadable(parameter: &str, file: &str, error: &dyn std::fmt::Display) -> Error {
    let name = Path::new(file).display();
    Error::config(parameter, format!("could not read {name}: {error}"))
}

/// The modes short of `verify-full`: `verify-ca` (`chain`: the chain must reach a trusted
/// root, the host name is not checked) and, with no `chain`, `prefer` and `require`
/// without a root certificate (encrypted, the certificate unchecked: libpq's meaning).
/// The handshake's signatures are checked either way.
#[derive(Debug)]
struct Lenient {
    chain: Option<Arc<WebPkiServerVerifier>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Lenient {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else { return Ok(ServerCertVerified::assertion()) };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
