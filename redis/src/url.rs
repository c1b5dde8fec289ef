//! `RedisUrl`: `redis://`, `rediss://` and `redis+sentinel://` URLs parsed once, their password never shown.

use std::fmt;

use percent_encoding::{NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use ucm_kernel::{Error, Result, Secret};

/// Where a Redis server is: one server, or the master of a Sentinel-watched set.
///
/// Forms: `redis://[user[:password]@]host[:port][/db]`, `rediss://...` (TLS), and
/// `redis+sentinel://[user[:password]@]host1[:port1],host2[:port2]/service[/db]` (or
/// `rediss+sentinel://` for TLS to the servers): the sentinels are asked for the
/// service's master, and the credentials are the servers' (sentinels without auth).
/// `Display` and `Debug` show the URL with the password as `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl {
    tls: bool,
    user: Option<String>,
    password: Option<Secret>,
    /// A server's `host:port`, or the sentinels'.
    hosts: Vec<(String, u16)>,
    /// The Sentinel service (master) name; `None` for one server.
    service: Option<String>,
    db: i64,
}

impl RedisUrl {
    /// Parses `url`.
    ///
    /// # Errors
    /// A `Configuration` error naming what is wrong (scheme, host, port, database, service),
    /// never the password.
    pub fn parse(url: &str) -> Result<Self> {
        let bad = |why: &str| Error::config("redis url", why.to_owned());
        let url = url.trim();
        let (scheme, rest) = url.split_once("://").ok_or_else(|| {
            bad("is not a URL; write redis://host:6379, rediss://... or redis+sentinel://...")
        })?;
        let (tls, sentinel) = match scheme.to_ascii_lowercase().as_str() {
            "redis" => (false, false),
            "rediss" => (true, false),
            "redis+sentinel" => (false, true),
            "rediss+sentinel" => (true, true),
            other => {
                return Err(bad(&format!(
                    "unknown scheme {other:?}; use redis, rediss, redis+sentinel or rediss+sentinel"
                )));
            }
        };
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (userinfo, hosts) = match authority.rsplit_once('@') {
            Some((userinfo, hosts)) => (Some(userinfo), hosts),
            None => (None, authority),
        };
        let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
        let (user, password) = match userinfo {
            Some(info) => match info.split_once(':') {
                Some((user, password)) => (
                    (!user.is_empty()).then(|| decode(user)),
                    (!password.is_empty()).then(|| Secret::new(decode(password))),
                ),
                None => ((!info.is_empty()).then(|| decode(info)), None),
            },
            None => (None, None),
        };
        let default_port = if sentinel { 26379 } else { 6379 };
        let hosts = hosts
            .split(',')
            .filter(|h| !h.trim().is_empty())
            .map(|h| {
                let h = h.trim();
                let port_of = |text: &str| {
                    text.parse::<u16>().map_err(|_| {
                        bad("a port is not a number (a password with reserved characters must be percent-encoded)")
                    })
                };
                let (host, port) = if let Some(inner) = h.strip_prefix('[') {
                    let (host, after) = inner
                        .split_once(']')
                        .ok_or_else(|| bad("an IPv6 address misses its closing ']'"))?;
                    match after.strip_prefix(':') {
                        Some(port) => (host, port_of(port)?),
                        None => (host, default_port),
                    }
                } else {
                    match h.rsplit_once(':') {
                        Some((host, port)) => (host, port_of(port)?),
                        None => (h, default_port),
                    }
                };
                if host.is_empty() {
                    return Err(bad("a host is empty"));
                }
                Ok((host.to_owned(), port))
            })
            .collect::<Result<Vec<_>>>()?;
        if hosts.is_empty() {
            return Err(bad("no host; write redis://host:6379"));
        }
        let mut segments = path.split('/').filter(|s| !s.is_empty());
        let service = if sentinel {
            Some(segments.next().map(decode).ok_or_else(|| {
                bad("a Sentinel URL names its service: redis+sentinel://s1:26379,s2:26379/mymaster")
            })?)
        } else {
            if hosts.len() > 1 {
                return Err(bad("several hosts are only for Sentinel; use redis+sentinel://"));
            }
            None
        };
        let db = match segments.next() {
            Some(db) => db.parse::<i64>().map_err(|_| bad("the database is not a number"))?,
            None => 0,
        };
        if segments.next().is_some() {
            return Err(bad("the path has too many parts"));
        }
        Ok(Self { tls, user, password, hosts, service, db })
    }

    /// Whether the servers are reached over TLS.
    pub fn tls(&self) -> bool {
        self.tls
    }

    /// The Sentinel service name, for a Sentinel URL.
    pub fn service(&self) -> Option<&str> {
        self.service.as_deref()
    }

    /// The sentinels (`host`, `port`) of a Sentinel URL; the server of another.
    pub fn hosts(&self) -> &[(String, u16)] {
        &self.hosts
    }

    /// The logical database.
    pub fn db(&self) -> i64 {
        self.db
    }

    /// `host:port/db` of the server, or `service@sentinel,.../db`: for errors, logs and
    /// metrics; no credentials.
    pub fn label(&self) -> String {
        let hosts: Vec<String> = self.hosts.iter().map(|(h, p)| format!("{h}:{p}")).collect();
        match &self.service {
            Some(service) => format!("{service}@{}/{}", hosts.join(","), self.db),
            None => format!("{}/{}", hosts.join(","), self.db),
        }
    }

    /// The URL of one server at `host:port` with this URL's credentials, TLS and database,
    /// as the redis driver reads it (password in clear: never print it).
    pub(crate) fn server_url(&self, host: &str, port: u16) -> String {
        let encode = |s: &str| utf8_percent_encode(s, NON_ALPHANUMERIC).to_string();
        let scheme = if self.tls { "rediss" } else { "redis" };
        let auth = match (&self.user, &self.password) {
            (Some(user), Some(password)) => {
                format!("{}:{}@", encode(user), encode(password.expose()))
            }
            (None, Some(password)) => format!(":{}@", encode(password.expose())),
            (Some(user), None) => format!("{}@", encode(user)),
            (None, None) => String::new(),
        };
        let host = if host.contains(':') { format!("[{host}]") } else { host.to_owned() };
        format!("{scheme}://{auth}{host}:{port}/{}", self.db)
    }

    /// The URL of a sentinel (no credentials, no TLS unless the servers use it).
    pub(crate) fn sentinel_url(&self, host: &str, port: u16) -> String {
        let host = if host.contains(':') { format!("[{host}]") } else { host.to_owned() };
        format!("{}://{host}:{port}", if self.tls { "rediss" } else { "redis" })
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match (self.tls, self.service.is_some()) {
            (false, false) => "redis",
            (true, false) => "rediss",
            (false, true) => "redis+sentinel",
            (true, true) => "rediss+sentinel",
        };
        let user = self.user.as_deref().unwrap_or("");
        let auth = match (&self.user, &self.password) {
            (_, Some(_)) => format!("{user}:***@"),
            (Some(user), None) => format!("{user}@"),
            (None, None) => String::new(),
        };
        let hosts: Vec<String> = self.hosts.iter().map(|(h, p)| format!("{h}:{p}")).collect();
        let service = self.service.as_deref().map(|s| format!("/{s}")).unwrap_or_default();
        write!(f, "{scheme}://{auth}{}{service}/{}", hosts.join(","), self.db)
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisUrl({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_parse_and_print_without_the_password() {
        let url = RedisUrl::parse("redis://:s3cr%40t@cache.internal:6380/2").unwrap();
        assert_eq!(url.label(), "cache.internal:6380/2");
        assert_eq!(url.to_string(), "redis://:***@cache.internal:6380/2");
        assert!(url.server_url("cache.internal", 6380).contains("s3cr%40t"));
        let url = RedisUrl::parse("rediss+sentinel://app:pw@s1,s2:26380/mymaster/1").unwrap();
        assert!(url.tls());
        assert_eq!(url.service(), Some("mymaster"));
        assert_eq!(url.hosts(), [("s1".to_owned(), 26379), ("s2".to_owned(), 26380)]);
        assert_eq!(url.db(), 1);
        assert_eq!(url.to_string(), "rediss+sentinel://app:***@s1:26379,s2:26380/mymaster/1");
        assert_eq!(RedisUrl::parse("redis://[::1]").unwrap().label(), "::1:6379/0");
    }

    #[test]
    fn bad_urls_say_what_is_wrong_and_never_the_password() {
        for (url, needle) in [
            ("memcached://x", "unknown scheme"),
            ("redis://", "no host"),
            ("redis://:secret@h:63x9/0", "not a number"),
            ("redis://a,b/0", "only for Sentinel"),
            ("redis+sentinel://s1:26379", "names its service"),
            ("redis://h/zero", "database is not a number"),
            ("cache.internal:6379", "is not a URL"),
        ] {
            let text = RedisUrl::parse(url).unwrap_err().to_string();
            assert!(text.contains(needle), "{url}: {text}");
            assert!(!text.contains("secret"), "{text}");
        }
    }
}
