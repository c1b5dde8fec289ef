//! Database URLs: every accepted spelling parsed into one canonical form, TLS defaults, and password redaction.
//!
//! A [`DatabaseUrl`] never shows its password: `Debug`, `Display`, [`DatabaseUrl::label`],
//! serialisation and every parse error are redacted. The secret leaves the type only through
//! [`DatabaseUrl::expose_url`] (for a driver that takes a URL) and [`Secret::expose`] (for a
//! driver configured field by field).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use super::{CredentialSource, DatabaseKind, Secret, SslMode};
use crate::error::{Error, Result};
use crate::telemetry::EndpointAttributes;

mod parse;
#[cfg(test)]
mod tests;

/// A parsed, normalised database URL whose password is never shown.
///
/// Build one with [`DatabaseUrl::parse`] (or `str::parse`). Equality compares the
/// normalised components (a missing port equals the default port; `mariadb://` equals
/// `mysql://`), so `DatabaseUrl::parse(&url.expose_url())` gives back an equal value.
///
/// `Debug` and `Display` print the canonical URL with the password (and any query
/// parameter whose name contains `password`, `secret` or `token`) replaced by `***`.
#[derive(Clone)]
pub struct DatabaseUrl {
    kind: DatabaseKind,
    mariadb: bool,
    user: Option<String>,
    password: Option<Secret>,
    host: Option<String>,
    port: Option<u16>,
    database: Option<String>,
    sqlite: Option<SqliteTarget>,
    params: Vec<(String, String)>,
    ssl_mode: SslMode,
    /// Where new connections' user and password come from instead, when set.
    credentials: Option<CredentialSource>,
}

impl DatabaseUrl {
    /// Parses a URL; errors name the `DATABASE_URL` field.
    ///
    /// Accepted forms: `postgres://`, `postgresql://`, `postgresql+asyncpg://`,
    /// `postgresql+psycopg://`, `postgresql+psycopg2://` (all normalised to `postgres://`);
    /// `mysql://`, `mariadb://`, `mysql+pymysql://`, `mysql+aiomysql://`, `mysql+asyncmy://`
    /// (normalised to `mysql://`); `sqlite://PATH` (everything after `//` is the path, so
    /// `sqlite://data/app.db` is relative and `sqlite:///tmp/app.db` absolute), `sqlite:PATH`,
    /// `sqlite::memory:` and `sqlite://:memory:`. Server URLs are
    /// `scheme://[user[:password]@]host[:port][/database][?key=value&...]`, every component
    /// percent-decoded; a PostgreSQL unix socket is either a percent-encoded path as the host
    /// or `?host=/var/run/postgresql`.
    ///
    /// # Errors
    /// A `Configuration` error saying what is wrong and how to fix it: an empty string, no
    /// `scheme://`, an unknown scheme, a missing host, a port that is not a number in
    /// 1..=65535, invalid percent-encoding, a `#`, whitespace, or reserved characters left
    /// unencoded in the password. The error never contains the password or a piece of it.
    pub fn parse(url: &str) -> Result<Self> {
        Self::parse_named("DATABASE_URL", url)
    }

    /// Like [`Self::parse`], with errors naming `field` (e.g. `DATABASE_REPLICA_URLS[2]`).
    ///
    /// # Errors
    /// As [`Self::parse`].
    pub fn parse_named(field: &str, url: &str) -> Result<Self> {
        parse::Parser { field }.parse(url)
    }

    /// Which database engine this is.
    pub fn kind(&self) -> DatabaseKind {
        self.kind
    }

    /// Whether the URL was written `mariadb://`. Information only: the kind is
    /// [`DatabaseKind::MySql`] either way, and equality ignores it.
    pub fn is_mariadb(&self) -> bool {
        self.mariadb
    }

    /// The percent-decoded user name. `None` lets the driver choose (PostgreSQL: `PGUSER`
    /// or the operating-system user; MySQL: the driver's default, usually `root`).
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// The endpoint this URL names as telemetry names it, its pool labelled `pool`.
    pub fn endpoint_attributes(&self, pool: &str) -> EndpointAttributes {
        let system = match self.kind() {
            DatabaseKind::Postgres => "postgresql",
            DatabaseKind::MySql if self.is_mariadb() => "mariadb",
            DatabaseKind::MySql => "mysql",
            DatabaseKind::Sqlite => "sqlite",
        };
        let namespace = match self.kind() {
            DatabaseKind::Sqlite => Some(self.sqlite_path().unwrap_or(":memory:").to_owned()),
            _ => self.database().map(str::to_owned),
        };
        EndpointAttributes {
            system,
            namespace,
            address: self.host().map(str::to_owned),
            port: self.port(),
            pool: pool.to_owned(),
        }
    }

    /// The same URL, its new connections logging in with what `source` gives at the time
    /// (a rotated password, a fresh token) instead of the URL's user and password.
    #[must_use]
    pub fn with_credentials(mut self, source: CredentialSource) -> Self {
        self.credentials = Some(source);
        self
    }

    /// The credential source new connections consult, if any.
    pub fn credential_source(&self) -> Option<&CredentialSource> {
        self.credentials.as_ref()
    }

    /// This URL with its credential source's user and password of now, for one new
    /// connection; `None` when it has no source (the URL's own are used).
    ///
    /// # Errors
    /// The source's error (an unreadable password file, a failed token request).
    pub async fn with_current_credentials(&self) -> Result<Option<Self>> {
        let Some(source) = &self.credentials else { return Ok(None) };
        let now = source.credentials().await?;
        let mut url = self.clone();
        url.credentials = None;
        if let Some(user) = now.user {
            url.user = Some(user);
        }
        if let Some(password) = now.password {
            url.password = (!password.expose().is_empty()).then_some(password);
        }
        Ok(Some(url))
    }

    /// The percent-decoded password; an empty password is `None`.
    pub fn password(&self) -> Option<&Secret> {
        self.password.as_ref()
    }

    /// The percent-decoded host: a name, an IP address (IPv6 without its brackets), or a
    /// unix socket directory starting with `/` (PostgreSQL). `None` for SQLite.
    pub fn host(&self) -> Option<&str> {
        self.host.as_deref()
    }

    /// The port, the kind's default when the URL gives none. `None` for SQLite.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// The percent-decoded database name. `None` means the driver default: PostgreSQL
    /// connects to the database named like the user; MySQL selects no database. Always
    /// `None` for SQLite (see [`Self::sqlite_path`]).
    pub fn database(&self) -> Option<&str> {
        self.database.as_deref()
    }

    /// The query parameters in order, percent-decoded. PostgreSQL's `host` parameter is not
    /// listed: it becomes [`Self::host`].
    pub fn params(&self) -> &[(String, String)] {
        &self.params
    }

    /// The value of query parameter `key` (the last one when repeated, as libpq does).
    pub fn param(&self, key: &str) -> Option<&str> {
        self.params.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// A copy without the query parameters whose name `drop` picks, for a driver that
    /// would log a parameter it does not know, value included (sqlx's PostgreSQL driver).
    #[must_use]
    pub fn without_params(&self, mut drop: impl FnMut(&str) -> bool) -> Self {
        let mut url = self.clone();
        url.params.retain(|(key, _)| !drop(key));
        url
    }

    /// The same server, credentials and parameters on another database: `name` is the
    /// database's name, or for SQLite the file's path (a test's fresh database).
    #[must_use]
    pub fn with_database(&self, name: &str) -> Self {
        let mut url = self.clone();
        if url.sqlite.is_some() {
            url.sqlite = Some(SqliteTarget::Path(name.to_owned()));
        } else {
            url.database = Some(name.to_owned());
        }
        url
    }

    /// The TLS mode: `sslmode`/`ssl-mode` when given, else [`SslMode::Disable`] for local
    /// hosts (localhost, 127.0.0.0/8, ::1, unix sockets) and SQLite, [`SslMode::Prefer`]
    /// for any other host.
    pub fn ssl_mode(&self) -> SslMode {
        self.ssl_mode
    }

    /// The SQLite database file as written (relative or absolute); `None` for an in-memory
    /// database and for server kinds.
    pub fn sqlite_path(&self) -> Option<&str> {
        match &self.sqlite {
            Some(SqliteTarget::Path(path)) => Some(path),
            _ => None,
        }
    }

    /// Whether this is an in-memory SQLite database.
    pub fn is_memory(&self) -> bool {
        matches!(self.sqlite, Some(SqliteTarget::Memory))
    }

    /// Whether the host is a unix socket path (PostgreSQL) or a `socket` parameter is given (MySQL).
    pub fn is_unix_socket(&self) -> bool {
        self.host.as_deref().is_some_and(|h| h.starts_with('/')) || self.param("socket").is_some()
    }

    /// Whether the endpoint is on this machine: SQLite, a unix socket, `localhost`,
    /// 127.0.0.0/8 or ::1.
    pub fn is_local(&self) -> bool {
        self.kind == DatabaseKind::Sqlite
            || self.is_unix_socket()
            || self.host.as_deref().is_some_and(is_local_host)
    }

    /// Whether both URLs reach the same database: same kind, host (case-insensitive), port
    /// and database name, or the same SQLite file. Credentials and parameters are ignored.
    pub fn same_endpoint(&self, other: &Self) -> bool {
        let same_host = match (&self.host, &other.host) {
            (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
            (a, b) => a == b,
        };
        self.kind == other.kind
            && same_host
            && self.port == other.port
            && self.database == other.database
            && self.sqlite == other.sqlite
    }

    /// `host:port/database` (IPv6 in brackets, no database part when there is none), or the
    /// SQLite path or `:memory:`: a secret-free name for error messages and pool metrics.
    pub fn label(&self) -> String {
        match &self.sqlite {
            Some(SqliteTarget::Memory) => ":memory:".to_owned(),
            Some(SqliteTarget::Path(path)) => path.clone(),
            None => {
                let host = self.host.as_deref().unwrap_or_default();
                let host = if host.contains(':') { format!("[{host}]") } else { host.to_owned() };
                let port = self.port.map(|p| format!(":{p}")).unwrap_or_default();
                let db = self.database.as_deref().map(|d| format!("/{d}")).unwrap_or_default();
                format!("{host}{port}{db}")
            }
        }
    }

    /// The canonical URL WITH the password, percent-encoded, for handing to a driver.
    ///
    /// This is the only way the whole URL, secret included, leaves the type (the password
    /// alone is reachable through [`Self::password`] and [`Secret::expose`], for drivers
    /// configured field by field). Never log or format the result.
    pub fn expose_url(&self) -> String {
        self.render(true)
    }

    /// Replaces every occurrence of the password and of sensitive query parameter values, raw
    /// or percent-encoded, in `text` by `***`. Backends pass driver error messages through it.
    pub fn scrub(&self, text: &str) -> String {
        let mut needles: Vec<String> = Vec::new();
        let secrets = self.password.iter().map(Secret::expose).chain(
            self.params.iter().filter(|(k, _)| is_sensitive_param(k)).map(|(_, v)| v.as_str()),
        );
        for secret in secrets.filter(|s| !s.is_empty()) {
            needles.push(secret.to_owned());
            // Drivers echo URLs encoded their own way: strictly or loosely, with upper- or
            // lower-case escapes, and with a space as %20 or '+'.
            for set in [COMPONENT, NON_ALPHANUMERIC, QUERY] {
                let encoded = utf8_percent_encode(secret, set).to_string();
                let plus = encoded.replace("%20", "+");
                needles.extend([lowercase_hex(&encoded), lowercase_hex(&plus), plus, encoded]);
            }
        }
        // Longest first, so that a short form never leaves the tail of a longer one behind.
        needles.sort_by_key(|n| std::cmp::Reverse(n.len()));
        needles.dedup();
        needles.iter().fold(text.to_owned(), |acc, needle| acc.replace(needle.as_str(), "***"))
    }

    /// The canonical URL, with or without the secrets.
    fn render(&self, reveal: bool) -> String {
        let mut out = String::new();
        match &self.sqlite {
            Some(SqliteTarget::Memory) => out.push_str("sqlite::memory:"),
            Some(SqliteTarget::Path(path)) => {
                out.push_str("sqlite://");
                out.extend(utf8_percent_encode(path, SQLITE_PATH));
            }
            None => {
                out.push_str(if self.kind == DatabaseKind::MySql {
                    "mysql://"
                } else {
                    "postgres://"
                });
                if self.user.is_some() || self.password.is_some() {
                    out.extend(utf8_percent_encode(
                        self.user.as_deref().unwrap_or_default(),
                        COMPONENT,
                    ));
                    if let Some(password) = &self.password {
                        out.push(':');
                        if reveal {
                            out.extend(utf8_percent_encode(password.expose(), COMPONENT));
                        } else {
                            out.push_str("***");
                        }
                    }
                    out.push('@');
                }
                let host = self.host.as_deref().unwrap_or_default();
                if host.contains(':') {
                    // IPv6, with a zone identifier's '%' encoded as RFC 6874 asks.
                    out.push('[');
                    out.push_str(&host.replace('%', "%25"));
                    out.push(']');
                } else {
                    out.extend(utf8_percent_encode(host, COMPONENT));
                }
                if let Some(port) = self.port {
                    out.push(':');
                    out.push_str(&port.to_string());
                }
                if let Some(db) = &self.database {
                    out.push('/');
                    out.extend(utf8_percent_encode(db, COMPONENT));
                }
            }
        }
        for (i, (key, value)) in self.params.iter().enumerate() {
            out.push(if i == 0 { '?' } else { '&' });
            out.push_str(key);
            out.push('=');
            if !reveal && is_sensitive_param(key) {
                out.push_str("***");
            } else {
                out.extend(utf8_percent_encode(value, QUERY));
            }
        }
        out
    }
}

impl PartialEq for DatabaseUrl {
    /// Compares every normalised component except the `mariadb://` spelling, which is
    /// information only.
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind
            && self.user == other.user
            && self.password == other.password
            && self.host == other.host
            && self.port == other.port
            && self.database == other.database
            && self.sqlite == other.sqlite
            && self.params == other.params
            && self.ssl_mode == other.ssl_mode
            && self.credentials == other.credentials
    }
}

impl Eq for DatabaseUrl {}

impl FromStr for DatabaseUrl {
    type Err = Error;

    /// See [`DatabaseUrl::parse`].
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render(false))
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("DatabaseUrl").field(&self.render(false)).finish()
    }
}

/// Serialises as the redacted URL (`***` for the password), so a serialised configuration
/// can be shown but not used to connect.
#[cfg(feature = "serde")]
impl serde::Serialize for DatabaseUrl {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Deserialises from a URL string through [`DatabaseUrl::parse`].
#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for DatabaseUrl {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <String as serde::Deserialize>::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Where a SQLite database lives.
#[derive(Debug, Clone, PartialEq, Eq)]
enum SqliteTarget {
    Memory,
    Path(String),
}

/// Characters left as they are in user names, passwords, hosts and database names: RFC
/// 3986's unreserved set. Everything else is encoded, so no driver can misread a component.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// Query values keep `/` and `:` readable (certificate paths); `+` stays encoded because
/// form decoders (sqlx) read it as a space where libpq does not.
const QUERY: &AsciiSet = &COMPONENT.remove(b'/').remove(b':');

/// SQLite paths keep their separators and drive letters.
const SQLITE_PATH: &AsciiSet = &COMPONENT.remove(b'/').remove(b':');

/// Whether a query parameter holds a credential and must be redacted.
fn is_sensitive_param(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["password", "secret", "token"].iter().any(|word| key.contains(word))
}

/// Whether a host name or address is this machine.
fn is_local_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.starts_with('/')
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// `%2F` becomes `%2f`: some drivers echo URLs with lower-case escapes.
fn lowercase_hex(encoded: &str) -> String {
    let mut out = String::with_capacity(encoded.len());
    let mut hex_left = 0;
    for c in encoded.chars() {
        if hex_left > 0 {
            out.push(c.to_ascii_lowercase());
            hex_left -= 1;
        } else {
            out.push(c);
            if c == '%' {
                hex_left = 2;
            }
        }
    }
    out
}
