//! Tests of `PoolConfiguration`: presets, overrides by builder and environment, validation, durations.

use super::*;
use std::collections::HashMap;

#[test]
fn presets_match_the_design_table() {
    let table = [
        (ManagerMode::McpServer, 20, 10, 200, false, true),
        (ManagerMode::MlTraining, 15, 10, 5_000, true, false),
        (ManagerMode::Admin, 5, 2, 10_000, true, false),
        (ManagerMode::SyncHeavy, 10, 15, 5_000, false, true),
        (ManagerMode::AsyncModern, 12, 8, 5_000, false, true),
        (ManagerMode::HighAvailability, 20, 20, 10_000, true, true),
    ];
    for (mode, pool, overflow, acquire_ms, ha, breaker) in table {
        let c = PoolConfiguration::for_mode(mode);
        assert_eq!(c.pool_size(), pool, "{mode}");
        assert_eq!(c.max_overflow(), overflow, "{mode}");
        assert_eq!(c.max_size(), pool + overflow, "{mode}");
        assert_eq!(c.acquire_timeout(), Duration::from_millis(acquire_ms), "{mode}");
        assert_eq!(c.high_availability(), ha, "{mode}");
        assert_eq!(c.circuit_breaker(), breaker, "{mode}");
        assert_eq!(c.connect_timeout(), Duration::from_secs(10), "{mode}");
        assert_eq!(c.max_lifetime(), Duration::from_secs(3600), "{mode}");
        assert!(c.lifetime_jitter() > Duration::ZERO, "{mode}");
        assert_eq!(c.application_name(), format!("ucm_{}", mode.as_str()));
        assert_eq!(c.time_zone(), "UTC");
        // Every preset passes its own validation.
        assert_eq!(PoolConfiguration::builder(mode).build().unwrap(), c);
    }
    assert_eq!(PoolConfiguration::default().mode(), ManagerMode::AsyncModern);
}

#[test]
fn incoherent_settings_are_refused_naming_the_field() {
    let b = || PoolConfiguration::builder(ManagerMode::AsyncModern);
    let cases: [(PoolConfigurationBuilder, &str); 7] = [
        (b().pool_size(0), "pool.pool_size"),
        (b().max_overflow(usize::MAX), "pool.max_overflow"),
        (b().acquire_timeout(Duration::ZERO), "pool.acquire_timeout"),
        (b().connect_timeout(Duration::ZERO), "pool.connect_timeout"),
        (b().validation_timeout(Duration::from_secs(5)), "pool.validation_timeout"),
        (b().lifetime_jitter(Duration::from_secs(3600)), "pool.lifetime_jitter"),
        (b().application_name(""), "pool.application_name"),
    ];
    for (builder, field) in cases {
        let err = builder.build().unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Configuration);
        assert!(err.to_string().contains(field), "{field}: {err}");
    }
}

#[test]
fn mcp_server_rejects_a_validation_timeout_at_its_acquire_timeout() {
    let err = PoolConfiguration::builder(ManagerMode::McpServer)
        .validation_timeout(Duration::from_millis(200))
        .build()
        .unwrap_err()
        .to_string();
    assert!(err.contains("must be shorter than acquire_timeout (200ms)"), "{err}");
}

#[test]
fn the_validation_timeout_follows_an_overridden_acquire_timeout() {
    let c = PoolConfiguration::builder(ManagerMode::HighAvailability)
        .env_overrides(|k| (k == "UCM_ACQUIRE_TIMEOUT").then(|| "2s".to_owned()))
        .unwrap()
        .build()
        .unwrap();
    assert_eq!(c.validation_timeout(), Duration::from_secs(1));
    let c = PoolConfiguration::builder(ManagerMode::AsyncModern)
        .acquire_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    assert_eq!(c.validation_timeout(), Duration::from_millis(150));
}

#[test]
fn environment_overrides_apply_and_validate() {
    let env: HashMap<&str, &str> = HashMap::from([
        ("UCM_POOL_SIZE", "3"),
        ("UCM_MAX_OVERFLOW", "1"),
        ("UCM_ACQUIRE_TIMEOUT", "750ms"),
        ("UCM_VALIDATION_TIMEOUT", "0.1"),
        ("UCM_MAX_LIFETIME", "2m"),
        ("UCM_LIFETIME_JITTER", "5s"),
        ("UCM_HIGH_AVAILABILITY", "yes"),
        ("UCM_APPLICATION_NAME", "billing"),
    ]);
    let c = PoolConfiguration::builder(ManagerMode::Admin)
        .env_overrides(|k| env.get(k).map(|v| (*v).to_owned()))
        .unwrap()
        .build()
        .unwrap();
    assert_eq!((c.pool_size(), c.max_overflow()), (3, 1));
    assert_eq!(c.acquire_timeout(), Duration::from_millis(750));
    assert_eq!(c.validation_timeout(), Duration::from_millis(100));
    assert_eq!(c.max_lifetime(), Duration::from_secs(120));
    assert_eq!(c.lifetime_jitter(), Duration::from_secs(5));
    assert!(c.high_availability());
    assert_eq!(c.application_name(), "billing");
}

#[test]
fn malformed_environment_values_name_the_variable() {
    for (name, value) in [
        ("UCM_POOL_SIZE", "ten"),
        ("UCM_ACQUIRE_TIMEOUT", "soon"),
        ("UCM_MAX_LIFETIME", "-5s"),
        ("UCM_CIRCUIT_BREAKER", "maybe"),
    ] {
        let err = PoolConfiguration::builder(ManagerMode::AsyncModern)
            .env_overrides(|k| (k == name).then(|| value.to_owned()))
            .unwrap_err()
            .to_string();
        assert!(err.contains(name) && err.contains(value), "{err}");
    }
}

#[test]
fn durations_parse_in_each_unit() {
    for (text, expected) in [
        ("250ms", Duration::from_millis(250)),
        ("5s", Duration::from_secs(5)),
        ("2m", Duration::from_secs(120)),
        ("0.2", Duration::from_millis(200)),
        (" 3 ", Duration::from_secs(3)),
    ] {
        assert_eq!(parse_duration("X", text).unwrap(), expected, "{text}");
    }
}

/// Values that would end MySQL's `SET time_zone = '...'` literal or PostgreSQL's
/// `-c TimeZone=...` startup option and smuggle in SQL or another setting.
const HOSTILE_TIME_ZONES: &[&str] = &[
    "UTC'; DROP TABLE x; --",
    "UTC' OR '1'='1",
    "'UTC'",
    "\"UTC\"",
    "UTC;SET autocommit=0",
    "Europe/Paris -c search_path=evil",
    "UTC\\",
    "UTC\\' --",
    "UTC--",
    "UTC\0options",
    "UTC\nSET x=1",
    "UTC\t",
    "../../etc/localtime",
    "Europe//Paris",
    "/UTC",
    "+5:30",
    "+05:30'",
    "+05:30; DROP TABLE x",
    "+25:00",
    "+05:60",
    "Europe/Pärís",
    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
];

#[test]
fn time_zones_accept_names_and_offsets() {
    for tz in [
        "UTC",
        "utc",
        "Etc/UTC",
        "Europe/Paris",
        "America/Argentina/Buenos_Aires",
        "America/Port-au-Prince",
        "Etc/GMT+3",
        "Etc/GMT-14",
        "EST5EDT",
        "+05:30",
        "-08:00",
        "+00:00",
        "+14:00",
    ] {
        let c = PoolConfiguration::builder(ManagerMode::AsyncModern).time_zone(tz).build();
        assert_eq!(c.map(|c| c.time_zone().to_owned()).ok().as_deref(), Some(tz), "{tz}");
        let from_env = PoolConfiguration::builder(ManagerMode::AsyncModern)
            .env_overrides(|k| (k == "UCM_TIME_ZONE").then(|| tz.to_owned()))
            .and_then(PoolConfigurationBuilder::build);
        assert!(from_env.is_ok(), "{tz}: {from_env:?}");
    }
}

#[test]
fn hostile_time_zones_are_refused_by_the_builder_and_the_environment() {
    for &tz in HOSTILE_TIME_ZONES {
        let built = PoolConfiguration::builder(ManagerMode::AsyncModern).time_zone(tz).build();
        let from_env = PoolConfiguration::builder(ManagerMode::AsyncModern)
            .env_overrides(|k| (k == "UCM_TIME_ZONE").then(|| tz.to_owned()))
            .and_then(PoolConfigurationBuilder::build);
        for result in [built, from_env] {
            let err = result.expect_err(tz);
            assert_eq!(err.kind(), crate::ErrorKind::Configuration, "{tz}");
            let text = err.to_string();
            assert!(text.contains("pool.time_zone") && text.contains("Europe/Paris"), "{text}");
        }
    }
    let err = PoolConfiguration::builder(ManagerMode::AsyncModern).time_zone("").build();
    assert!(err.is_err());
}

#[test]
fn application_names_with_control_characters_are_refused() {
    for name in ["app\0options", "app\u{1}", "line\nbreak", "tab\there", "nön-ascii"] {
        let built =
            PoolConfiguration::builder(ManagerMode::AsyncModern).application_name(name).build();
        let from_env = PoolConfiguration::builder(ManagerMode::AsyncModern)
            .env_overrides(|k| (k == "UCM_APPLICATION_NAME").then(|| name.to_owned()))
            .and_then(PoolConfigurationBuilder::build);
        for result in [built, from_env] {
            let text = result.expect_err(name).to_string();
            assert!(text.contains("pool.application_name"), "{text}");
        }
    }
    // A startup parameter, never SQL: punctuation is fine.
    let c = PoolConfiguration::builder(ManagerMode::AsyncModern)
        .application_name("billing worker (it's v2)")
        .build()
        .unwrap();
    assert_eq!(c.application_name(), "billing worker (it's v2)");
}

#[test]
fn deadlines_become_server_settings() {
    let mcp = PoolConfiguration::for_mode(ManagerMode::McpServer);
    assert_eq!(mcp.statement_timeout(), Some(Duration::from_millis(150)));
    assert_eq!(
        mcp.postgres_deadline_settings(),
        [
            ("statement_timeout", "150ms".to_owned()),
            ("lock_timeout", "100ms".to_owned()),
            ("idle_in_transaction_session_timeout", "5000ms".to_owned()),
        ]
    );
    assert_eq!(
        mcp.mysql_deadline_statements(),
        [
            vec![
                "SET SESSION max_statement_time = 0.150".to_owned(),
                "SET SESSION max_execution_time = 150".to_owned(),
            ],
            vec!["SET SESSION innodb_lock_wait_timeout = 1".to_owned()],
        ]
    );
    assert_eq!(mcp.client_statement_deadline(), Some(Duration::from_millis(300)));
    let admin = PoolConfiguration::for_mode(ManagerMode::Admin);
    assert_eq!(admin.statement_timeout(), None, "migrations may run long");
    assert!(
        admin.postgres_deadline_settings().iter().all(|(name, _)| *name != "statement_timeout")
    );
    let off = PoolConfiguration::builder(ManagerMode::McpServer)
        .env_overrides(|name| {
            (name == "UCM_STATEMENT_TIMEOUT")
                .then(|| "off".to_owned())
                .or_else(|| (name == "UCM_LOCK_TIMEOUT").then(|| "2.5s".to_owned()))
        })
        .unwrap()
        .build()
        .unwrap();
    assert_eq!(off.statement_timeout(), None);
    assert_eq!(off.client_statement_deadline(), None);
    assert_eq!(off.lock_timeout(), Some(Duration::from_millis(2500)));
    assert_eq!(
        off.mysql_deadline_statements(),
        [vec!["SET SESSION innodb_lock_wait_timeout = 3".to_owned()]]
    );
    let zero = PoolConfiguration::builder(ManagerMode::McpServer)
        .statement_timeout(Some(Duration::ZERO))
        .build()
        .unwrap_err();
    assert!(zero.to_string().contains("pool.statement_timeout"), "{zero}");
}

#[test]
fn a_zone_other_than_utc_is_set_after_the_drivers_defaults() {
    use crate::DatabaseKind;
    let utc = PoolConfiguration::for_mode(ManagerMode::AsyncModern);
    assert!(utc.session_statements_for(DatabaseKind::Postgres).is_empty());
    let paris = PoolConfiguration::builder(ManagerMode::AsyncModern)
        .time_zone("Europe/Paris")
        .build()
        .unwrap();
    assert_eq!(
        paris.session_statements_for(DatabaseKind::Postgres),
        [vec!["SET TIME ZONE 'Europe/Paris'".to_owned()]]
    );
    assert_eq!(
        paris.session_statements_for(DatabaseKind::MySql).last().unwrap(),
        &vec!["SET time_zone = 'Europe/Paris'".to_owned()]
    );
    assert!(paris.session_statements_for(DatabaseKind::Sqlite).is_empty());
    let india =
        PoolConfiguration::builder(ManagerMode::AsyncModern).time_zone("+05:30").build().unwrap();
    assert_eq!(
        india.session_statements_for(DatabaseKind::Postgres),
        [vec!["SET TIME ZONE INTERVAL '+05:30' HOUR TO MINUTE".to_owned()]]
    );
}
