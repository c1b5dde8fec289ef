//! The database URL parser: scheme table, authority and query splitting, and errors that never echo a secret.
//!
//! Errors quote nothing from the URL except a well-formed scheme or parameter name: a URL
//! whose password holds an unencoded reserved character is cut in the wrong place, and the
//! pieces (a "port", a "database name") are then fragments of the password.

use std::net::Ipv6Addr;

use percent_encoding::percent_decode_str;

use super::{DatabaseKind, DatabaseUrl, Secret, SqliteTarget, SslMode, is_local_host};
use crate::error::{Error, Result};

/// Every server scheme, its kind, and whether it spells MariaDB.
const SCHEMES: [(&str, DatabaseKind, bool); 10] = [
    ("postgres", DatabaseKind::Postgres, false),
    ("postgresql", DatabaseKind::Postgres, false),
    ("postgresql+asyncpg", DatabaseKind::Postgres, false),
    ("postgresql+psycopg", DatabaseKind::Postgres, false),
    ("postgresql+psycopg2", DatabaseKind::Postgres, false),
    ("mysql", DatabaseKind::MySql, false),
    ("mariadb", DatabaseKind::MySql, true),
    ("mysql+pymysql", DatabaseKind::MySql, false),
    ("mysql+aiomysql", DatabaseKind::MySql, false),
    ("mysql+asyncmy", DatabaseKind::MySql, false),
];

/// What to do about reserved characters, repeated in every error that a mangled password can cause.
const ENCODE_HINT: &str = "percent-encode reserved characters in the user name and password \
    (/ as %2F, # as %23, ? as %3F, : as %3A, @ as %40, % as %25)";

const EXAMPLES: &str = "postgres://user@localhost:5432/app, mysql://user@localhost:3306/app, \
    sqlite://data/app.db or sqlite::memory:";

/// Parses one URL, naming `field` in its errors.
pub(super) struct Parser<'a> {
    pub(super) field: &'a str,
}

impl Parser<'_> {
    pub(super) fn parse(&self, input: &str) -> Result<DatabaseUrl> {
        // Trailing newlines and spaces are common in .env files and secrets mounts.
        let input = input.trim();
        if input.is_empty() {
            return Err(self.err(format!("is empty; set it to a database URL such as {EXAMPLES}")));
        }
        if input.contains('#') {
            return Err(self.err(
                "contains a '#', but URL fragments are not supported; a '#' in a password (or \
                 in any other part) must be percent-encoded as %23",
            ));
        }
        if input.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(self.err(
                "contains whitespace or a control character; percent-encode a space as %20, \
                 also inside a password",
            ));
        }
        if let Some(rest) = strip_prefix_ignore_case(input, "sqlite:") {
            return self.parse_sqlite(rest);
        }
        let Some((scheme, rest)) = input.split_once("://") else {
            return Err(self.err(format!(
                "does not start with a scheme followed by '://'; write e.g. {EXAMPLES}"
            )));
        };
        let Some(&(_, kind, mariadb)) =
            SCHEMES.iter().find(|(name, _, _)| name.eq_ignore_ascii_case(scheme))
        else {
            return Err(self.unknown_scheme(scheme));
        };
        self.parse_server(kind, mariadb, rest)
    }

    fn parse_server(&self, kind: DatabaseKind, mariadb: bool, rest: &str) -> Result<DatabaseUrl> {
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);
        let (userinfo, hostport) = match authority.matches('@').count() {
            0 => (None, authority),
            1 => authority.split_once('@').map_or((None, authority), |(u, h)| (Some(u), h)),
            _ => {
                return Err(self.err(
                    "the password or user name contains an unencoded '@'; percent-encode it as %40",
                ));
            }
        };
        let (user, password) = match userinfo {
            None => (None, None),
            Some(userinfo) => {
                // The first ':' separates user and password, so a ':' in the password is
                // read correctly even unencoded; one in the user name cannot be.
                let (user, password) =
                    userinfo.split_once(':').map_or((userinfo, None), |(u, p)| (u, Some(p)));
                let user = self.decode_nonempty("the user name", user)?;
                let password = match password {
                    Some(p) => self.decode_nonempty("the password", p)?.map(Secret::from),
                    None => None,
                };
                (user, password)
            }
        };
        let (mut host, port) = self.parse_host_port(kind, hostport)?;
        if tail.contains('@') {
            return Err(self.err(format!(
                "has an unencoded '@' after the host, so the user name or password probably \
                 contains an unencoded '/' or '?' that cut the URL short; {ENCODE_HINT}; an '@' \
                 in a database name or parameter must also be written %40"
            )));
        }
        let (path, query) = tail.split_once('?').unwrap_or((tail, ""));
        let path = path.strip_prefix('/').unwrap_or(path);
        if path.contains('/') {
            return Err(
                self.err("the database name contains an unencoded '/'; percent-encode it as %2F")
            );
        }
        let database = self.decode_nonempty("the database name", path)?;
        let mut params = self.parse_query(query)?;

        // libpq lets `?host=` name the host or the unix socket directory, overriding the
        // authority; it becomes the host so that there is one place to look.
        let host_param = params.iter().rev().find(|(k, _)| k == "host").map(|(_, v)| v.clone());
        if kind == DatabaseKind::Postgres
            && let Some(value) = host_param
        {
            params.retain(|(k, _)| k != "host");
            if !value.is_empty() {
                host = Some(self.check_host(kind, value)?);
            }
        }
        let Some(host) = host else {
            return Err(self.err(match kind {
                DatabaseKind::Postgres => {
                    "the host is missing; write e.g. postgres://user@localhost:5432/app, or add \
                     ?host=/var/run/postgresql for a unix socket"
                }
                _ => "the host is missing; write e.g. mysql://user@localhost:3306/app",
            }));
        };
        let socket = kind == DatabaseKind::MySql && params.iter().any(|(k, _)| k == "socket");
        if let Some((_, pooler)) = params.iter().rev().find(|(k, _)| k == "pooler") {
            pooler.parse::<crate::config::Pooler>()?;
        }
        let ssl_mode = match self.explicit_ssl_mode(&params)? {
            Some(mode) => mode,
            None if socket || is_local_host(&host) => SslMode::Disable,
            None => SslMode::Prefer,
        };
        Ok(DatabaseUrl {
            kind,
            mariadb,
            user,
            password,
            host: Some(host),
            port: Some(port),
            database,
            sqlite: None,
            params,
            ssl_mode,
            credentials: None,
        })
    }

    fn parse_sqlite(&self, rest: &str) -> Result<DatabaseUrl> {
        // sqlx's convention: everything after `sqlite://` (or `sqlite:`) is the path.
        let rest = rest.strip_prefix("//").unwrap_or(rest);
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        if path.is_empty() {
            return Err(self.err(
                "the SQLite database path is missing; write sqlite://data/app.db (relative), \
                 sqlite:///var/lib/app.db (absolute) or sqlite::memory:",
            ));
        }
        let path = self.decode("the SQLite path", path)?;
        let target =
            if path == ":memory:" { SqliteTarget::Memory } else { SqliteTarget::Path(path) };
        Ok(DatabaseUrl {
            kind: DatabaseKind::Sqlite,
            mariadb: false,
            user: None,
            password: None,
            host: None,
            port: None,
            database: None,
            sqlite: Some(target),
            params: self.parse_query(query)?,
            ssl_mode: SslMode::Disable,
            credentials: None,
        })
    }

    /// Splits `host[:port]` or `[ipv6][:port]`; the port defaults to the kind's.
    fn parse_host_port(&self, kind: DatabaseKind, text: &str) -> Result<(Option<String>, u16)> {
        let (host, port) = if let Some(bracketed) = text.strip_prefix('[') {
            let Some((inner, after)) = bracketed.split_once(']') else {
                return Err(self.err("an IPv6 address is missing its closing ']'"));
            };
            let port = match after {
                "" => None,
                _ => Some(after.strip_prefix(':').ok_or_else(|| {
                    self.err(
                        "unexpected text after the ']' of the IPv6 address; write [address]:port",
                    )
                })?),
            };
            let address = self.decode("the IPv6 address", inner)?;
            // A zone identifier (`fe80::1%eth0`) follows the address; only the address is checked.
            let bare = address.split('%').next().unwrap_or_default();
            if bare.parse::<Ipv6Addr>().is_err() {
                return Err(self.err("the address in brackets is not a valid IPv6 address"));
            }
            (Some(address), port)
        } else {
            if text.contains(',') {
                return Err(self.err(
                    "lists several hosts, but one URL is one endpoint; put replicas in \
                     DATABASE_REPLICA_URLS (or a password's ',' is unencoded: write it %2C)",
                ));
            }
            let (host, port) = match text.matches(':').count() {
                0 => (text, None),
                1 => text.split_once(':').map_or((text, None), |(h, p)| (h, Some(p))),
                _ => {
                    return Err(self.err(format!(
                        "the host part contains several ':'; write an IPv6 address in brackets \
                         (e.g. [::1]:5432), and if the ':' belong to a password, {ENCODE_HINT}"
                    )));
                }
            };
            let host = match self.decode_nonempty("the host", host)? {
                Some(host) => Some(self.check_host(kind, host)?),
                None => None,
            };
            (host, port)
        };
        let default = kind.default_port().unwrap_or_default();
        let port = match port.filter(|p| !p.is_empty()) {
            None => default,
            Some(p) if !p.bytes().all(|b| b.is_ascii_digit()) => {
                return Err(self.err(format!(
                    "the port is not a number; if the text after ':' is part of a password, \
                     {ENCODE_HINT}"
                )));
            }
            Some(p) => p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| {
                self.err(format!(
                    "the port is out of range; it must be between 1 and 65535 (if the digits are \
                     part of a password, {ENCODE_HINT})"
                ))
            })?,
        };
        Ok((host, port))
    }

    /// Accepts a decoded host name, IPv4 address or (PostgreSQL) unix socket directory.
    fn check_host(&self, kind: DatabaseKind, host: String) -> Result<String> {
        if host.starts_with('/') {
            return match kind {
                DatabaseKind::Postgres => Ok(host),
                _ => Err(self.err(
                    "a unix socket path is not a MySQL host; write mysql://user@localhost/app?socket=/path/to/mysqld.sock",
                )),
            };
        }
        if host.contains(':') && host.parse::<Ipv6Addr>().is_ok() {
            return Ok(host);
        }
        if !host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')) {
            return Err(self.err(
                "the host contains a character not allowed in a host name (letters, digits, '-', \
                 '.', '_'); write an IPv6 address in brackets and percent-encode a unix socket \
                 path (/ as %2F)",
            ));
        }
        Ok(host)
    }

    /// Splits `key=value&...`, decoding both; empty pieces (a trailing `&`) are skipped.
    fn parse_query(&self, query: &str) -> Result<Vec<(String, String)>> {
        let mut params = Vec::new();
        for (i, pair) in query.split('&').filter(|p| !p.is_empty()).enumerate() {
            let n = i + 1;
            let Some((key, value)) = pair.split_once('=') else {
                return Err(self.err(format!(
                    "query parameter {n} has no '='; write key=value pairs separated by '&'"
                )));
            };
            if key.is_empty()
                || !key.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
            {
                return Err(self.err(format!(
                    "query parameter {n} has an invalid name; names are letters, digits, '_', '-' \
                     and '.'"
                )));
            }
            let value = self.decode(&format!("the value of query parameter `{key}`"), value)?;
            params.push((key.to_owned(), value));
        }
        Ok(params)
    }

    /// The last `sslmode`/`ssl-mode`/`ssl_mode` parameter, parsed.
    fn explicit_ssl_mode(&self, params: &[(String, String)]) -> Result<Option<SslMode>> {
        let Some((_, value)) = params.iter().rev().find(|(k, _)| {
            ["sslmode", "ssl-mode", "ssl_mode"].iter().any(|name| k.eq_ignore_ascii_case(name))
        }) else {
            return Ok(None);
        };
        value.parse::<SslMode>().map(Some).map_err(|e| match e {
            Error::Configuration { message, .. } => self.err(format!("sslmode: {message}")),
            other => other,
        })
    }

    /// Percent-decodes `raw`, refusing a `%` without two hex digits and invalid UTF-8.
    fn decode(&self, part: &str, raw: &str) -> Result<String> {
        let bytes = raw.as_bytes();
        for (i, _) in raw.match_indices('%') {
            let escaped =
                bytes.get(i + 1..i + 3).is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit));
            if !escaped {
                return Err(self.err(format!(
                    "{part} contains a '%' that is not followed by two hex digits; write a literal \
                     '%' as %25"
                )));
            }
        }
        let decoded = percent_decode_str(raw).decode_utf8().map_err(|_| {
            self.err(format!(
                "{part} is not valid UTF-8 once percent-decoded; percent-encode each byte of the \
                 UTF-8 form of non-ASCII characters"
            ))
        })?;
        // Drivers write the user, database and parameters into the startup message as
        // NUL-terminated strings: a NUL inside one would end it early and let the rest be
        // read as further settings (`options`, say). No server accepts one anyway.
        if decoded.contains('\0') {
            return Err(self.err(format!(
                "{part} contains a NUL byte (%00), which no database accepts in a connection \
                 setting"
            )));
        }
        Ok(decoded.into_owned())
    }

    /// Like [`Self::decode`], with an empty component read as absent.
    fn decode_nonempty(&self, part: &str, raw: &str) -> Result<Option<String>> {
        Ok(Some(self.decode(part, raw)?).filter(|s| !s.is_empty()))
    }

    fn unknown_scheme(&self, scheme: &str) -> Error {
        let names: Vec<String> = SCHEMES.iter().map(|(name, _, _)| format!("{name}://")).collect();
        // Only a well-formed scheme is quoted; anything else may be a piece of a credential.
        let well_formed = scheme.len() <= 32
            && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
        let what = if well_formed {
            format!("unknown scheme {scheme:?}")
        } else {
            "the text before '://' is not a URL scheme".to_owned()
        };
        self.err(format!("{what}; supported schemes are {}, sqlite://", names.join(", ")))
    }

    fn err(&self, message: impl Into<String>) -> Error {
        Error::config(self.field, message)
    }
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    if head.eq_ignore_ascii_case(prefix) { text.get(prefix.len()..) } else { None }
}
