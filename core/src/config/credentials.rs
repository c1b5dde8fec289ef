//! `CredentialSource`: where a new connection's user and password come from while they change under a running service (a password file, an environment variable, an async callback for tokens).

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use super::Secret;
use crate::error::{Error, Result};
use crate::future::BoxFuture;

/// The user and password for the next connection. `None` keeps the URL's.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Credentials {
    /// The role to log in as; `None`: the URL's user.
    pub user: Option<String>,
    /// The password; `None`: the URL's (if any).
    pub password: Option<Secret>,
}

/// Gives the credentials of each new connection. Consulted once per connection opened
/// (never per statement), so a rotated password or a refreshed token is picked up by the
/// next connection without a restart; connections already open stay as they are (servers
/// do not end sessions when a password changes) and are replaced as they age out.
pub trait CredentialProvider: Send + Sync + 'static {
    /// The credentials to use now.
    ///
    /// # Errors
    /// Why they could not be had (an unreadable file, a failed token request); the
    /// connection attempt fails with it.
    fn credentials(&self) -> BoxFuture<'_, Result<Credentials>>;

    /// What the provider reads, for reports and `Debug` (never the secret itself).
    fn describe(&self) -> String;
}

/// A shared [`CredentialProvider`], attached to a [`DatabaseUrl`](super::DatabaseUrl) with
/// [`DatabaseUrl::with_credentials`](super::DatabaseUrl::with_credentials) or to every
/// endpoint with `ManagerConfigBuilder::credentials`.
#[derive(Clone)]
pub struct CredentialSource(Arc<dyn CredentialProvider>);

impl CredentialSource {
    /// A source backed by `provider`.
    pub fn new(provider: impl CredentialProvider) -> Self {
        Self(Arc::new(provider))
    }

    /// The password is the content of `path` (surrounding whitespace trimmed), read again
    /// for each new connection: Kubernetes and Vault Agent rewrite such files in place.
    /// `user`, when given, replaces the URL's.
    pub fn password_file(path: impl Into<PathBuf>, user: Option<String>) -> Self {
        Self::new(PasswordFile { path: path.into(), user })
    }

    /// The password is environment variable `var`, read again for each new connection.
    /// `user`, when given, replaces the URL's.
    pub fn password_env(var: impl Into<String>, user: Option<String>) -> Self {
        Self::new(PasswordEnv { var: var.into(), user })
    }

    /// The credentials come from `fetch`, awaited for each new connection: an IAM token
    /// (AWS RDS, Google Cloud SQL, Azure) or a Vault lease. Cache inside `fetch` what may
    /// be reused; it runs on the connecting task, within the connect timeout.
    pub fn from_fn<F, Fut>(describe: impl Into<String>, fetch: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Credentials>> + Send + 'static,
    {
        Self::new(Callback { describe: describe.into(), fetch })
    }

    /// The credentials to use now.
    ///
    /// # Errors
    /// The provider's error.
    pub async fn credentials(&self) -> Result<Credentials> {
        self.0.credentials().await
    }

    /// What the source reads.
    pub fn describe(&self) -> String {
        self.0.describe()
    }
}

impl fmt::Debug for CredentialSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CredentialSource({})", self.describe())
    }
}

impl PartialEq for CredentialSource {
    /// The same provider (not two that happen to read the same place).
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for CredentialSource {}

struct PasswordFile {
    path: PathBuf,
    user: Option<String>,
}

impl CredentialProvider for PasswordFile {
    fn credentials(&self) -> BoxFuture<'_, Result<Credentials>> {
        // A small file read once per new connection: not worth a blocking-pool hop.
        let read = std::fs::read_to_string(&self.path).map_err(|e| {
            Error::config(
                "password_file",
                format!(
                    "cannot read {}: {e}; make the file readable by this process",
                    self.path.display()
                ),
            )
        });
        let user = self.user.clone();
        Box::pin(async move {
            let password = read?.trim().to_owned();
            Ok(Credentials { user, password: Some(Secret::new(password)) })
        })
    }

    fn describe(&self) -> String {
        format!("password file {}", self.path.display())
    }
}

struct PasswordEnv {
    var: String,
    user: Option<String>,
}

impl CredentialProvider for PasswordEnv {
    fn credentials(&self) -> BoxFuture<'_, Result<Credentials>> {
        let found = std::env::var(&self.var).map_err(|_| {
            Error::config("password_env", format!("{} is not set (or not UTF-8); set it", self.var))
        });
        let user = self.user.clone();
        Box::pin(async move { Ok(Credentials { user, password: Some(Secret::new(found?)) }) })
    }

    fn describe(&self) -> String {
        format!("password in ${}", self.var)
    }
}

struct Callback<F> {
    describe: String,
    fetch: F,
}

impl<F, Fut> CredentialProvider for Callback<F>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Credentials>> + Send + 'static,
{
    fn credentials(&self) -> BoxFuture<'_, Result<Credentials>> {
        Box::pin((self.fetch)())
    }

    fn describe(&self) -> String {
        self.describe.clone()
    }
}
