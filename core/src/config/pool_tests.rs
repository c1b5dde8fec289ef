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
