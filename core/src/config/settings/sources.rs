//! `ConfigSources`: where settings are read from (a TOML file, the environment, libpq's variables), merged with figment, and which source gave each setting.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use figment::providers::{Format, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider, Source};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};

use super::layer::{
    BreakerLayer, CacheLayer, Layer, PermissionsLayer, PoolLayer, RedisLayer, RetryLayer,
};
use crate::error::{Error, Result};
use crate::mode::ManagerMode;

/// Where a manager's settings come from, lowest precedence first: the mode's preset, a
/// TOML file, then the environment. Within each, a `[modes.<mode>]` section (or a
/// `UCM_<MODE>_...` variable) beats the general setting. Builder calls made after loading
/// beat them all.
///
/// The environment variables read: `DATABASE_URL`, `DATABASE_REPLICA_URLS`,
/// `UCM_DRAIN_DEADLINE`, `UCM_DATABASE_USER`, `UCM_PASSWORD_FILE`, `UCM_PASSWORD_ENV`;
/// every `[pool]` key as `UCM_<KEY>` (`UCM_POOL_SIZE`, `UCM_ACQUIRE_TIMEOUT`...), every
/// `[breaker]` key as `UCM_BREAKER_<KEY>`, every `[retry]` key as `UCM_RETRY_<KEY>`; per
/// mode `UCM_<MODE>_DATABASE_URL`, `UCM_<MODE>_DATABASE_REPLICA_URLS`,
/// `UCM_<MODE>_DATABASE_USER`, `UCM_<MODE>_PASSWORD_FILE`, `UCM_<MODE>_PASSWORD_ENV`
/// (`UCM_MCP_SERVER_DATABASE_URL`...); and, when no URL is set anywhere, libpq's `PGHOST`,
/// `PGPORT`, `PGUSER`, `PGPASSWORD`, `PGDATABASE`, `PGSSLMODE` (or the `POSTGRES_HOST`,
/// `POSTGRES_PORT`, `POSTGRES_USER`, `POSTGRES_PASSWORD`, `POSTGRES_DB` of many container
/// images). Blank variables count as unset. The file is named by `UCM_CONFIG` or
/// [`Self::with_file`].
#[derive(Clone, Default)]
pub struct ConfigSources {
    file: Option<PathBuf>,
    /// The variables ucm reads that are set and not blank, with their values, read once.
    env: BTreeMap<String, String>,
}

/// Where one setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum Origin {
    /// A key of the TOML file.
    File {
        /// The file.
        path: PathBuf,
        /// The key, dotted (`modes.admin.pool.pool_size`).
        key: String,
    },
    /// An environment variable.
    Environment(String),
    /// libpq's variables (`PGHOST`...), named.
    Libpq(Vec<String>),
}

impl fmt::Display for Origin {
    /// How an error names the setting: the variable, or the key and its file.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File { path, key } => write!(f, "{key} (in {})", path.display()),
            Self::Environment(name) => f.write_str(name),
            Self::Libpq(names) => f.write_str(&names.join(", ")),
        }
    }
}

impl fmt::Debug for ConfigSources {
    /// The file and the names of the variables set, never their values (URLs and
    /// passwords are among them).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigSources")
            .field("file", &self.file)
            .field("variables", &self.env.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// libpq's variables, each with the name the original system's containers use.
const LIBPQ: [(&str, &str); 6] = [
    ("PGHOST", "POSTGRES_HOST"),
    ("PGPORT", "POSTGRES_PORT"),
    ("PGUSER", "POSTGRES_USER"),
    ("PGPASSWORD", "POSTGRES_PASSWORD"),
    ("PGDATABASE", "POSTGRES_DB"),
    ("PGSSLMODE", "POSTGRES_SSLMODE"),
];

impl ConfigSources {
    /// The environment variable naming the configuration file.
    pub const FILE_ENV: &'static str = "UCM_CONFIG";

    /// No file and no environment: the presets and what the builder sets.
    pub fn none() -> Self {
        Self::default()
    }

    /// The process environment, and the file `UCM_CONFIG` names, if set.
    pub fn environment() -> Self {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// `lookup` as the environment (a map in tests), and the file its `UCM_CONFIG` names.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let names = env_table().into_iter().map(|(var, _)| var);
        let libpq = LIBPQ.iter().flat_map(|(a, b)| [(*a).to_owned(), (*b).to_owned()]);
        let env = names
            .chain(libpq)
            .chain(["USER".to_owned()])
            .filter_map(|name| get(&name).map(|value| (name, value)))
            .collect();
        Self { file: get(Self::FILE_ENV).map(PathBuf::from), env }
    }

    /// Reads settings from the TOML file at `path` too (instead of `UCM_CONFIG`'s).
    #[must_use]
    pub fn with_file(mut self, path: impl AsRef<Path>) -> Self {
        self.file = Some(path.as_ref().to_owned());
        self
    }

    /// The same sources without the file (the environment alone).
    pub(crate) fn without_file(mut self) -> Self {
        self.file = None;
        self
    }

    /// The configuration file read, if any.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// The file and the environment merged, each variable its own provider so that its
    /// name is where its value came from.
    fn figment(&self) -> Result<Figment> {
        let mut figment = Figment::new();
        if let Some(path) = &self.file {
            let field = || format!("{} ({})", Self::FILE_ENV, path.display());
            let meta = std::fs::metadata(path).map_err(|e| {
                Error::config(field(), format!("cannot read the configuration file: {e}"))
            })?;
            if !meta.is_file() {
                return Err(Error::config(field(), "is not a file; name a TOML file"));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        for (var, key) in env_table() {
            if let Some(value) = self.env.get(&var) {
                figment = figment.merge(Variable { name: var, key, value: value.clone() });
            }
        }
        Ok(figment)
    }

    /// The pool configuration these sources give `mode` (for a report made before any URL
    /// is known).
    ///
    /// # Errors
    /// As [`ManagerConfig::from_sources`](crate::ManagerConfig::from_sources), URLs aside.
    pub fn pool(&self, mode: ManagerMode) -> Result<crate::config::PoolConfiguration> {
        let resolved = self.resolve(mode)?;
        super::pool(crate::config::PoolConfiguration::builder(mode), &resolved)?.build()
    }

    /// The Redis these sources give `mode` (`[redis]` and `[modes.<mode>.redis]`,
    /// `REDIS_URL`, `UCM_<MODE>_REDIS_URL`, `UCM_REDIS_*`); `None` when no URL is set.
    ///
    /// # Errors
    /// A malformed value, named with where it came from (never the URL's text).
    pub fn redis(&self, mode: ManagerMode) -> Result<Option<crate::config::RedisSettings>> {
        super::apply::redis(&self.resolve(mode)?, mode)
    }

    /// The query cache settings these sources give `mode` (`[cache]`, `UCM_CACHE_*`).
    ///
    /// # Errors
    /// A malformed value, named with where it came from.
    pub fn cache(&self, mode: ManagerMode) -> Result<crate::config::CacheSettings> {
        super::apply::cache(&self.resolve(mode)?)
    }

    /// Whether these sources name a primary for `mode` (a URL, or libpq's variables).
    ///
    /// # Errors
    /// As [`Self::pool`].
    pub fn has_primary(&self, mode: ManagerMode) -> Result<bool> {
        Ok(self.resolve(mode)?.layer.primary.is_some())
    }

    /// The settings in effect for `mode` (its section over the general ones), with where
    /// each came from.
    pub(crate) fn resolve(&self, mode: ManagerMode) -> Result<Resolved> {
        let figment = self.figment()?;
        let all: Layer = figment.extract().map_err(|e| extraction_error(&e))?;
        for (name, section) in &all.modes {
            let known = name.parse::<ManagerMode>().is_ok_and(|m| m.as_str() == name);
            if !known {
                let names: Vec<_> = ManagerMode::ALL.iter().map(|m| m.as_str()).collect();
                return Err(Error::config(
                    format!("modes.{name}"),
                    format!("is not a mode; use one of {}", names.join(", ")),
                ));
            }
            if !section.modes.is_empty() {
                return Err(Error::config(
                    format!("modes.{name}.modes"),
                    "a mode's section cannot hold other modes; move it to the top level",
                ));
            }
        }
        let section = all.modes.get(mode.as_str()).cloned().unwrap_or_default();
        let layer = all.overlaid(&section);
        let prefix = format!("modes.{}.", mode.as_str());
        let mut origins = BTreeMap::new();
        for key in set_keys(&layer) {
            let specific = format!("{prefix}{key}");
            let found = [specific.as_str(), key.as_str()]
                .into_iter()
                .find_map(|path| figment.find_metadata(path).map(|meta| (path, meta)));
            if let Some((path, meta)) = found.map(|(p, m)| (p.to_owned(), m)) {
                let origin = origin(meta, &path);
                origins.insert(key, origin);
            }
        }
        let mut resolved = Resolved { layer, origins };
        if resolved.layer.primary.is_none() {
            self.libpq_fallback(&mut resolved)?;
        }
        Ok(resolved)
    }

    /// A PostgreSQL URL from libpq's variables, when any of host, port, user or database
    /// is set: host `localhost`, port 5432, user `$USER`, database the user's name by
    /// default, as libpq does.
    fn libpq_fallback(&self, resolved: &mut Resolved) -> Result<()> {
        let mut used = Vec::new();
        let mut get = |i: usize| {
            let (pg, container) = LIBPQ[i];
            [pg, container].into_iter().find_map(|name| {
                self.env.get(name).map(|value| {
                    used.push(name.to_owned());
                    value.trim().to_owned()
                })
            })
        };
        let (host, port, user, password, database, ssl_mode) =
            (get(0), get(1), get(2), get(3), get(4), get(5));
        if host.is_none() && port.is_none() && user.is_none() && database.is_none() {
            return Ok(());
        }
        let origin = Origin::Libpq(used);
        let host = host.unwrap_or_else(|| "localhost".to_owned());
        let user =
            user.or_else(|| self.env.get("USER").cloned()).unwrap_or_else(|| "postgres".to_owned());
        let database = database.unwrap_or_else(|| user.clone());
        let encode = |s: &str| utf8_percent_encode(s, NON_ALPHANUMERIC).to_string();
        // A socket directory is percent-encoded whole; an IPv6 address goes in brackets.
        let host = if host.starts_with('/') {
            encode(&host)
        } else if host.contains(':') {
            format!("[{host}]")
        } else {
            host
        };
        let password = password.map(|p| format!(":{}", encode(&p))).unwrap_or_default();
        let query = ssl_mode.map(|m| format!("?sslmode={}", encode(&m))).unwrap_or_default();
        let url = format!(
            "postgres://{}{password}@{host}:{}/{}{query}",
            encode(&user),
            port.unwrap_or_else(|| "5432".to_owned()),
            encode(&database)
        );
        resolved.layer.primary = Some(url);
        resolved.origins.insert("primary".to_owned(), origin);
        Ok(())
    }
}

/// The settings in effect for one mode, and where each came from (settings absent from
/// `origins` are the preset's).
#[derive(Debug, Clone, Default)]
pub(crate) struct Resolved {
    pub(crate) layer: Layer,
    pub(crate) origins: BTreeMap<String, Origin>,
}

impl Resolved {
    /// How errors name setting `key` (dotted, as in the file): where it came from, or the
    /// key itself.
    pub(crate) fn field(&self, key: &str) -> String {
        self.origins.get(key).map_or_else(|| key.to_owned(), ToString::to_string)
    }
}

/// Every environment variable ucm reads as a setting, with its dotted key.
fn env_table() -> Vec<(String, String)> {
    let mut table: Vec<(String, String)> = [
        ("DATABASE_URL", "primary"),
        ("DATABASE_REPLICA_URLS", "replicas"),
        ("UCM_DRAIN_DEADLINE", "drain_deadline"),
        ("UCM_DATABASE_USER", "user"),
        ("UCM_PASSWORD_FILE", "password_file"),
        ("UCM_PASSWORD_ENV", "password_env"),
        ("REDIS_URL", "redis.url"),
    ]
    .into_iter()
    .map(|(var, key)| (var.to_owned(), key.to_owned()))
    .collect();
    let table_keys = |prefix: &str, table_name: &str, keys: &[&str]| {
        keys.iter()
            .map(|key| {
                (format!("{prefix}{}", key.to_ascii_uppercase()), format!("{table_name}.{key}"))
            })
            .collect::<Vec<_>>()
    };
    table.extend(table_keys("UCM_", "pool", PoolLayer::KEYS));
    table.extend(table_keys("UCM_BREAKER_", "breaker", BreakerLayer::KEYS));
    table.extend(table_keys("UCM_RETRY_", "retry", RetryLayer::KEYS));
    table.extend(table_keys("UCM_REDIS_", "redis", RedisLayer::KEYS));
    table.extend(table_keys("UCM_CACHE_", "cache", CacheLayer::KEYS));
    for mode in ManagerMode::ALL {
        let upper = mode.as_str().to_ascii_uppercase();
        for (suffix, key) in [
            ("DATABASE_URL", "primary"),
            ("DATABASE_REPLICA_URLS", "replicas"),
            ("DATABASE_USER", "user"),
            ("PASSWORD_FILE", "password_file"),
            ("PASSWORD_ENV", "password_env"),
            ("REDIS_URL", "redis.url"),
        ] {
            table.push((format!("UCM_{upper}_{suffix}"), format!("modes.{}.{key}", mode.as_str())));
        }
    }
    table
}

/// The dotted keys `layer` sets (its own, not its `modes`).
fn set_keys(layer: &Layer) -> Vec<String> {
    let mut keys = Vec::new();
    let top = [
        ("primary", layer.primary.is_some()),
        ("replicas", layer.replicas.is_some()),
        ("drain_deadline", layer.drain_deadline.is_some()),
        ("user", layer.user.is_some()),
        ("password_file", layer.password_file.is_some()),
        ("password_env", layer.password_env.is_some()),
    ];
    keys.extend(top.iter().filter(|(_, set)| *set).map(|(key, _)| (*key).to_owned()));
    let mut table = |name: &str, all: &[&str], get: &dyn Fn(&str) -> bool| {
        keys.extend(all.iter().filter(|key| get(key)).map(|key| format!("{name}.{key}")));
    };
    table("pool", PoolLayer::KEYS, &|key| layer.pool.get(key).is_some());
    table("breaker", BreakerLayer::KEYS, &|key| layer.breaker.get(key).is_some());
    table("retry", RetryLayer::KEYS, &|key| layer.retry.get(key).is_some());
    table("permissions", PermissionsLayer::KEYS, &|key| layer.permissions.is_set(key));
    table("redis", RedisLayer::KEYS, &|key| layer.redis.get(key).is_some());
    table("cache", CacheLayer::KEYS, &|key| layer.cache.get(key).is_some());
    keys
}

/// Where the value at `path` came from, as figment recorded it.
fn origin(meta: &Metadata, path: &str) -> Origin {
    match &meta.source {
        Some(Source::File(file)) => Origin::File { path: file.clone(), key: path.to_owned() },
        Some(Source::Custom(var)) => Origin::Environment(var.clone()),
        _ => Origin::Environment(meta.name.to_string()),
    }
}

/// A figment error as ucm's: the key and the file, what is wrong, and the keys allowed
/// there when the key is unknown.
fn extraction_error(error: &figment::Error) -> Error {
    let mut key = error.path.join(".");
    let message = match &error.kind {
        figment::error::Kind::UnknownField(name, expected) => {
            if error.path.last() != Some(name) {
                key = if key.is_empty() { name.clone() } else { format!("{key}.{name}") };
            }
            format!(
                "is not a setting ucm knows; the keys allowed here are: {}",
                expected.join(", ")
            )
        }
        kind => kind.to_string(),
    };
    let field = match error.metadata.as_ref().and_then(|m| m.source.as_ref()) {
        Some(Source::File(path)) => format!("{key} (in {})", path.display()),
        Some(Source::Custom(var)) => var.clone(),
        _ => key,
    };
    Error::config(field, message)
}

/// One environment variable as a figment provider, so that figment records it as the
/// source of its key.
struct Variable {
    name: String,
    key: String,
    value: String,
}

impl Provider for Variable {
    fn metadata(&self) -> Metadata {
        Metadata::named("environment variable").source(Source::Custom(self.name.clone()))
    }

    fn data(&self) -> figment::Result<Map<Profile, Dict>> {
        let nested = figment::util::nest(&self.key, Value::from(self.value.clone()));
        let Value::Dict(_, dict) = nested else {
            return Err(figment::Error::from(format!("{} has an empty key", self.name)));
        };
        Ok(Map::from([(Profile::Default, dict)]))
    }
}
