//! Tests of the configuration file and environment: every key read, precedence, origins, unknown keys, libpq's variables, no password shown.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use super::{ConfigSources, Origin};
use crate::config::{ManagerConfig, Pooler};
use crate::error::ErrorKind;
use crate::mode::ManagerMode;

/// A TOML file under the system's temporary directory, removed when dropped.
struct TempToml(PathBuf);

impl TempToml {
    fn new(name: &str, text: &str) -> Self {
        let path =
            std::env::temp_dir().join(format!("ucm-settings-{}-{name}.toml", std::process::id()));
        std::fs::write(&path, text).unwrap();
        Self(path)
    }
}

impl Drop for TempToml {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn env(pairs: &[(&str, &str)]) -> ConfigSources {
    let map: HashMap<String, String> =
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    ConfigSources::from_lookup(move |key| map.get(key).cloned())
}

fn load_error(sources: &ConfigSources) -> String {
    let err = ManagerConfig::from_sources(ManagerMode::AsyncModern, sources).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Configuration);
    err.to_string()
}

const EVERY_KEY: &str = r#"
primary = "postgres://app:F1le-pw@db.example.com/shop"
replicas = ["postgres://app:F1le-pw@r1.example.com/shop"]
drain_deadline = "45s"

[pool]
pool_size = 7
min_idle = 3
max_overflow = 4
acquire_timeout = "1500ms"
connect_timeout = 3
validation_timeout = 0.25
validate_after_idle = "2s"
max_lifetime = "20m"
lifetime_jitter = "30s"
overflow_idle_timeout = "11s"
health_interval = "3s"
max_replica_lag = "4s"
sla_target = "120ms"
high_availability = true
circuit_breaker = false
application_name = "billing"
time_zone = "Europe/Paris"
pooler = "transaction"
read_your_writes = "2s"
statement_timeout = "off"
lock_timeout = "750ms"
idle_in_transaction_timeout = "9s"
leak_detection_threshold = "5s"
tcp_keepalive = false
tcp_user_timeout = "12s"

[breaker]
failure_threshold = 9
recovery_timeout = "2s"
backoff_multiplier = 2.5
max_recovery_timeout = "60s"
half_open_max_probes = 2
success_threshold = 4

[retry]
max_attempts = 5
backoff_base = "20ms"
backoff_max = "1s"
budget_ttl = "20s"
budget_min_per_sec = 7
budget_ratio = 0.5
"#;

#[test]
fn a_file_drives_every_setting() {
    let file = TempToml::new("every", EVERY_KEY);
    let config = ManagerConfig::from_sources(
        ManagerMode::AsyncModern,
        &ConfigSources::none().with_file(&file.0),
    )
    .unwrap();
    let p = config.pool();
    let s = Duration::from_secs;
    let ms = Duration::from_millis;
    assert_eq!(config.primary().label(), "db.example.com:5432/shop");
    assert_eq!(config.replicas()[0].label(), "r1.example.com:5432/shop");
    assert_eq!(config.drain_deadline(), s(45));
    assert_eq!((p.pool_size(), p.min_idle(), p.max_overflow()), (7, 3, 4));
    assert_eq!(p.acquire_timeout(), ms(1500));
    assert_eq!(p.connect_timeout(), s(3));
    assert_eq!(p.validation_timeout(), ms(250));
    assert_eq!(p.validate_after_idle(), s(2));
    assert_eq!(p.max_lifetime(), s(1200));
    assert_eq!(p.lifetime_jitter(), s(30));
    assert_eq!(p.overflow_idle_timeout(), s(11));
    assert_eq!(p.health_interval(), s(3));
    assert_eq!(p.max_replica_lag(), s(4));
    assert_eq!(p.sla_target(), ms(120));
    assert!(p.high_availability());
    assert!(!p.circuit_breaker());
    assert_eq!(p.application_name(), "billing");
    assert_eq!(p.time_zone(), "Europe/Paris");
    assert_eq!(p.pooler(), Pooler::Transaction);
    assert_eq!(p.read_your_writes(), Some(s(2)));
    assert_eq!(p.statement_timeout(), None);
    assert_eq!(p.lock_timeout(), Some(ms(750)));
    assert_eq!(p.idle_in_transaction_timeout(), Some(s(9)));
    assert_eq!(p.leak_detection_threshold(), Some(s(5)));
    assert_eq!(p.tcp_keepalive(), None);
    assert_eq!(p.tcp_user_timeout(), Some(s(12)));
    let b = config.breaker();
    assert_eq!((b.failure_threshold, b.half_open_max_probes, b.success_threshold), (9, 2, 4));
    assert_eq!((b.recovery_timeout, b.max_recovery_timeout), (s(2), s(60)));
    assert!((b.backoff_multiplier - 2.5).abs() < f64::EPSILON);
    let r = config.retry();
    assert_eq!((r.max_attempts, r.backoff.base, r.backoff.max), (5, ms(20), s(1)));
    assert_eq!((r.budget.ttl(), r.budget.min_per_sec()), (s(20), 7));
    assert!((r.budget.retry_ratio() - 0.5).abs() < f64::EPSILON);
    // Every key of the file is recorded as coming from it.
    let keys = EVERY_KEY.lines().filter(|l| l.contains(" = ")).count();
    assert_eq!(config.origins().len(), keys, "{:?}", config.origins());
    assert_eq!(
        config.origins()["pool.pool_size"],
        Origin::File { path: file.0.clone(), key: "pool.pool_size".into() }
    );
    let report = config.to_string();
    assert!(!report.contains("F1le-pw") && !format!("{config:?}").contains("F1le-pw"), "{report}");
    assert!(
        report.contains("pool.pool_size") && report.contains("file: pool.pool_size (in"),
        "{report}"
    );
    assert!(report.contains("opens after 9 failures"), "{report}");
    assert!(report.contains("5 attempts"), "{report}");
}

#[test]
fn the_environment_beats_the_file_and_a_mode_section_beats_both() {
    let file = TempToml::new(
        "precedence",
        r#"
primary = "postgres://db.example.com/shop"
[pool]
pool_size = 7
max_overflow = 5
[modes.admin]
primary = "postgres://admin@db.example.com/shop"
[modes.admin.pool]
max_overflow = 1
[modes.admin.retry]
max_attempts = 1
"#,
    );
    let sources = env(&[
        ("UCM_CONFIG", file.0.to_str().unwrap()),
        ("UCM_POOL_SIZE", "9"),
        ("UCM_MAX_OVERFLOW", "6"),
        ("UCM_BREAKER_FAILURE_THRESHOLD", "2"),
        ("UCM_DRAIN_DEADLINE", "5s"),
        ("UCM_MCP_SERVER_DATABASE_URL", "postgres://mcp@db.example.com/shop"),
    ]);
    let modern = ManagerConfig::from_sources(ManagerMode::AsyncModern, &sources).unwrap();
    assert_eq!(modern.pool().pool_size(), 9);
    assert_eq!(modern.pool().max_overflow(), 6);
    assert_eq!(modern.breaker().failure_threshold, 2);
    assert_eq!(modern.retry().max_attempts, 3);
    assert_eq!(modern.drain_deadline(), Duration::from_secs(5));
    assert_eq!(modern.primary().user(), None);
    assert_eq!(modern.origins()["pool.pool_size"], Origin::Environment("UCM_POOL_SIZE".into()));
    let admin = ManagerConfig::from_sources(ManagerMode::Admin, &sources).unwrap();
    assert_eq!(admin.pool().pool_size(), 9);
    assert_eq!(admin.pool().max_overflow(), 1);
    assert_eq!(admin.retry().max_attempts, 1);
    assert_eq!(admin.primary().user(), Some("admin"));
    assert_eq!(
        admin.origins()["pool.max_overflow"],
        Origin::File { path: file.0.clone(), key: "modes.admin.pool.max_overflow".into() }
    );
    let mcp = ManagerConfig::from_sources(ManagerMode::McpServer, &sources).unwrap();
    assert_eq!(mcp.primary().user(), Some("mcp"));
    assert_eq!(mcp.origins()["primary"], Origin::Environment("UCM_MCP_SERVER_DATABASE_URL".into()));
    // The builder's own calls, made after loading, come last.
    let built = ManagerConfig::builder_from(ManagerMode::AsyncModern, &sources)
        .unwrap()
        .drain_deadline(Duration::from_secs(1))
        .build()
        .unwrap();
    assert_eq!(built.drain_deadline(), Duration::from_secs(1));
}

#[test]
fn unknown_keys_and_modes_are_refused_with_the_key_and_the_file() {
    let cases: [(&str, &[&str]); 5] = [
        (
            "[pool]\npool_sise = 3\n",
            &["pool.pool_sise (in", "not a setting ucm knows", "pool_size"],
        ),
        ("primry = \"postgres://db/app\"\n", &["primry (in", "primary, replicas"]),
        ("[modes.admn.pool]\npool_size = 3\n", &["modes.admn", "not a mode", "admin"]),
        ("[retry]\nmax_attempts = 0\n", &["retry.max_attempts", "at least 1"]),
        (
            "[pool]\npool_size = \"many\"\n",
            &["pool.pool_size (in", "\"many\" is not a whole number"],
        ),
    ];
    for (i, (text, needles)) in cases.into_iter().enumerate() {
        let file =
            TempToml::new(&format!("bad{i}"), &format!("primary = \"postgres://db/app\"\n{text}"));
        let message = load_error(&ConfigSources::none().with_file(&file.0));
        for needle in needles {
            assert!(message.contains(needle), "{needle:?} missing from {message}");
        }
    }
    let missing = ConfigSources::none().with_file("/nonexistent/ucm.toml");
    let message = load_error(&missing);
    assert!(message.contains("UCM_CONFIG (/nonexistent/ucm.toml)"), "{message}");
    assert!(message.contains("cannot read the configuration file"), "{message}");
    let message = load_error(&env(&[
        ("DATABASE_URL", "postgres://db/app"),
        ("UCM_BREAKER_BACKOFF_MULTIPLIER", "0.5"),
    ]));
    assert!(message.contains("breaker.backoff_multiplier"), "{message}");
}

#[test]
fn a_malformed_url_in_the_file_is_named_without_its_password() {
    let file = TempToml::new("badurl", "primary = \"postgres://app:pw9#s3cret@db/app\"\n");
    let message = load_error(&ConfigSources::none().with_file(&file.0));
    assert!(message.contains("primary (in"), "{message}");
    assert!(!message.contains("s3cret") && !message.contains("pw9"), "{message}");
}

#[test]
fn libpq_variables_make_the_url_when_none_is_set() {
    let config = ManagerConfig::from_sources(
        ManagerMode::AsyncModern,
        &env(&[
            ("PGHOST", "db.internal"),
            ("PGPORT", "6432"),
            ("PGUSER", "app"),
            ("PGPASSWORD", "p@ss:w/rd"),
            ("PGSSLMODE", "require"),
            ("POSTGRES_DB", "shop"),
        ]),
    )
    .unwrap();
    assert_eq!(config.primary().label(), "db.internal:6432/shop");
    assert_eq!(config.primary().user(), Some("app"));
    assert_eq!(config.primary().password().map(crate::config::Secret::expose), Some("p@ss:w/rd"));
    assert_eq!(config.primary().ssl_mode().to_string(), "require");
    let Origin::Libpq(names) = &config.origins()["primary"] else { panic!() };
    assert_eq!(names, &["PGHOST", "PGPORT", "PGUSER", "PGPASSWORD", "POSTGRES_DB", "PGSSLMODE"]);
    assert!(!config.to_string().contains("p@ss"));
    // The container images' names alone; the database defaults to the user's name.
    let config = ManagerConfig::from_sources(
        ManagerMode::AsyncModern,
        &env(&[("POSTGRES_HOST", "pg"), ("POSTGRES_USER", "svc")]),
    )
    .unwrap();
    assert_eq!(config.primary().label(), "pg:5432/svc");
    // DATABASE_URL wins; a socket directory works as in libpq.
    let config = ManagerConfig::from_sources(
        ManagerMode::AsyncModern,
        &env(&[("DATABASE_URL", "postgres://db/app"), ("PGHOST", "other")]),
    )
    .unwrap();
    assert_eq!(config.primary().label(), "db:5432/app");
    let config = ManagerConfig::from_sources(
        ManagerMode::AsyncModern,
        &env(&[("PGHOST", "/var/run/postgresql"), ("PGUSER", "app")]),
    )
    .unwrap();
    assert_eq!(config.primary().host(), Some("/var/run/postgresql"));
    // Nothing set at all: the error says what to set.
    assert!(load_error(&env(&[])).contains("set DATABASE_URL"));
}

#[test]
fn sources_never_print_values() {
    let sources = env(&[("DATABASE_URL", "postgres://u:Env-s3cret@db/app")]);
    let debug = format!("{sources:?}");
    assert!(debug.contains("DATABASE_URL") && !debug.contains("Env-s3cret"), "{debug}");
}

#[test]
fn the_documented_example_file_loads_for_every_mode() {
    let text = include_str!("../../../../docs/ucm.example.toml");
    let file = TempToml::new("example", text);
    for mode in ManagerMode::ALL {
        let config =
            ManagerConfig::from_sources(mode, &ConfigSources::none().with_file(&file.0)).unwrap();
        assert_eq!(config.drain_deadline(), Duration::from_secs(20), "{mode}");
        let credentials = config.primary().credential_source().map(|c| c.describe());
        let expected = match mode {
            ManagerMode::McpServer => "password file /run/secrets/shop-mcp-password",
            ManagerMode::Admin => "password file /run/secrets/shop-owner-password",
            _ => "password file /run/secrets/shop-db-password",
        };
        assert_eq!(credentials.as_deref(), Some(expected), "{mode}");
    }
    let mcp = ManagerConfig::from_sources(
        ManagerMode::McpServer,
        &ConfigSources::none().with_file(&file.0),
    )
    .unwrap();
    assert_eq!(mcp.pool().pool_size(), 20);
    assert_eq!(mcp.permissions().deny_write, ["rules"]);
    assert_eq!(mcp.permissions().ddl, crate::config::DdlRule::Forbidden);
}

#[test]
fn redis_and_cache_settings_come_from_the_file_and_the_environment() {
    let file = TempToml::new(
        "redis",
        r#"
[redis]
url = "redis://:R3dis-pw@cache.example.com:6380/2"
pool_size = 3
command_timeout = "250ms"
circuit_breaker = false

[cache]
l1_capacity = 500
l2_ttl = "2m"

[modes.mcp_server.redis]
url = "redis+sentinel://s1:26379,s2:26379/cache"
read_from_replicas = true

[modes.mcp_server.cache]
l1_ttl = "3s"
"#,
    );
    let sources = env(&[("UCM_REDIS_MAX_OVERFLOW", "5")]).with_file(&file.0);
    let redis = sources.redis(ManagerMode::AsyncModern).unwrap().unwrap();
    assert_eq!(redis.expose_url(), "redis://:R3dis-pw@cache.example.com:6380/2");
    assert!(redis.url_origin().contains("redis.url"), "{}", redis.url_origin());
    assert_eq!((redis.pool().pool_size(), redis.pool().max_overflow()), (3, 5));
    assert!(!redis.pool().circuit_breaker());
    assert_eq!(redis.command_timeout(), Some(Duration::from_millis(250)));
    assert!(!format!("{redis:?}").contains("R3dis-pw"), "{redis:?}");
    let mcp = sources.redis(ManagerMode::McpServer).unwrap().unwrap();
    assert_eq!(mcp.expose_url(), "redis+sentinel://s1:26379,s2:26379/cache");
    assert!(mcp.read_from_replicas() && !redis.read_from_replicas());
    let cache = sources.cache(ManagerMode::McpServer).unwrap();
    assert_eq!(cache.l1_capacity, Some(500));
    assert_eq!(cache.l1_ttl, Some(Duration::from_secs(3)));
    assert_eq!(cache.l2_ttl, Some(Duration::from_secs(120)));
    assert_eq!(sources.cache(ManagerMode::Admin).unwrap().l1_ttl, None);

    // REDIS_URL alone; a mode's own variable beats it; none at all is no Redis.
    let from_env = env(&[
        ("REDIS_URL", "redis://127.0.0.1:6379"),
        ("UCM_ADMIN_REDIS_URL", "redis://admin-cache:6379"),
    ]);
    assert_eq!(
        from_env.redis(ManagerMode::AsyncModern).unwrap().unwrap().url_origin(),
        "REDIS_URL"
    );
    assert_eq!(
        from_env.redis(ManagerMode::Admin).unwrap().unwrap().expose_url(),
        "redis://admin-cache:6379"
    );
    assert!(env(&[]).redis(ManagerMode::AsyncModern).unwrap().is_none());

    // Malformed values are named with where they came from.
    let bad = env(&[("REDIS_URL", "redis://x"), ("UCM_REDIS_POOL_SIZE", "many")]);
    let err = bad.redis(ManagerMode::AsyncModern).unwrap_err().to_string();
    assert!(err.contains("UCM_REDIS_POOL_SIZE"), "{err}");
    let err = env(&[("UCM_CACHE_L2_TTL", "soon")]).cache(ManagerMode::Admin).unwrap_err();
    assert!(err.to_string().contains("UCM_CACHE_L2_TTL"), "{err}");
}
