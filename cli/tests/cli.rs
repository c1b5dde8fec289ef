//! The `ucm` binary end to end: demo on its own SQLite file, check against a real server and a dead one, config, help.

#![allow(clippy::expect_used)] // Test helpers, outside `#[test]` functions.

use std::process::{Command, Output};

fn ucm(args: &[&str]) -> Output {
    ucm_with_env(args, &[])
}

/// `ucm args` with only `env` of the database and Redis variables set.
fn ucm_with_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ucm"));
    command
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("DATABASE_REPLICA_URLS")
        .env_remove("RUST_LOG")
        .env_remove("PG_DATABASE_URL")
        .env_remove("REDIS_URL");
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().expect("the ucm binary runs")
}

/// The start of the warning about a password given on the command line.
const PASSWORD_WARNING: &str = "warning: a password on the command line is visible in the \
    process list and shell history; put it in DATABASE_URL";

/// PostgreSQL's URL; `None` (after saying why) when it is not set, which fails under CI.
fn postgres_url() -> Option<String> {
    let url = std::env::var("PG_DATABASE_URL").ok().filter(|u| !u.is_empty());
    if url.is_none() {
        assert!(std::env::var("CI").is_err(), "PG_DATABASE_URL must be set under CI");
        eprintln!("skipped: PG_DATABASE_URL is not set");
    }
    url
}

fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn piped_logs_carry_no_colour_codes() {
    // Debug logging makes sure something is logged; piped, it must be plain text.
    let output = ucm_with_env(
        &["demo", "--seconds", "0.2", "--tasks", "2", "--accounts", "4"],
        &[("RUST_LOG", "debug")],
    );
    let (_, stderr) = text(&output);
    assert!(!stderr.is_empty(), "nothing was logged at debug");
    assert!(
        !stderr.contains('\u{1b}'),
        "escape codes in piped logs: {}",
        &stderr[..stderr.len().min(300)]
    );
}

#[test]
fn demo_output_to_a_file_is_its_report_alone() {
    // Standard output and error both piped, as `ucm demo > report.txt 2>&1` would be: no
    // progress bar, no colour, no log line (RUST_LOG unset), only the report.
    let output = ucm(&["demo", "--seconds", "0.5", "--tasks", "4", "--accounts", "10"]);
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("money conserved"), "no report:\n{stdout}");
    assert!(
        !stdout.contains('\u{1b}') && !stderr.contains('\u{1b}'),
        "escape codes:\n{stdout}{stderr}"
    );
    assert_eq!(stderr, "", "standard error carries more than the report");
    for level in [" TRACE ", " DEBUG ", " INFO ", " WARN ", " ERROR "] {
        assert!(!stdout.contains(level), "a log line in the report:\n{stdout}");
    }
}

#[test]
fn demo_shows_cache_hits_with_redis() {
    let Some(redis) = std::env::var("REDIS_URL").ok().filter(|v| !v.is_empty()) else {
        assert!(std::env::var("CI").is_err(), "REDIS_URL must be set under CI");
        eprintln!("skipped: REDIS_URL is not set (run `cargo xtask test`)");
        return;
    };
    let output = ucm_with_env(
        &["demo", "--seconds", "0.5", "--tasks", "4", "--accounts", "10"],
        &[("REDIS_URL", &redis)],
    );
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    let hits = stdout
        .lines()
        .find_map(|line| line.trim().strip_prefix("hits: "))
        .unwrap_or_else(|| panic!("no cache report:\n{stdout}"));
    let in_process: u64 = hits.split(' ').next().and_then(|n| n.parse().ok()).unwrap_or(0);
    assert!(in_process > 0, "no hit in process: {hits}");
    assert!(stdout.contains("the last cached read equals the database: yes"), "{stdout}");
}

#[test]
fn demo_runs_with_no_server_and_no_environment() {
    let output = ucm(&["demo", "--seconds", "0.5", "--tasks", "4", "--accounts", "10"]);
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    for needle in [
        "== async_modern:",
        "== mcp_server:",
        "== high_availability:",
        "a deliberate conflict",
        "errors by kind: none",
        "pool: ",
        "health: healthy",
    ] {
        assert!(stdout.contains(needle), "{needle} missing from:\n{stdout}");
    }
    assert!(stdout.contains("money conserved across every transfer and retry: yes"), "{stdout}");
}

#[test]
fn demo_runs_on_the_diesel_backend() {
    let output = ucm(&[
        "demo",
        "--backend",
        "diesel",
        "--seconds",
        "0.3",
        "--tasks",
        "2",
        "--accounts",
        "10",
    ]);
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("diesel backend"), "{stdout}");
    assert!(stdout.contains("money conserved across every transfer and retry: yes"), "{stdout}");
}

#[test]
fn otel_stdout_exports_client_spans_and_metrics() {
    let output =
        ucm(&["--otel", "stdout", "demo", "--seconds", "0.2", "--tasks", "1", "--accounts", "4"]);
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stderr}");
    for needle in [
        "Kind         : Client",
        "db.system.name: String(Owned(\"sqlite\"))",
        "db.operation.name: String(Owned(\"SELECT\"))",
        "Name         : db.client.operation.duration",
        "Name         : db.client.connection.count",
        "db.client.connection.state: idle",
    ] {
        assert!(stdout.contains(needle), "{needle} missing from the --otel stdout output");
    }
}

#[test]
fn health_shows_the_topology_and_a_dead_replica() {
    let Some(url) = postgres_url() else { return };
    let dead_replica = "postgres://app:hunter2@127.0.0.1:1/app";
    let output = ucm(&["health", "--database-url", &url, "--replica-urls", dead_replica]);
    let (stdout, stderr) = text(&output);
    // Degraded: pg_isready's 1 (answering, not all well).
    assert_eq!(output.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stderr.contains(PASSWORD_WARNING), "the replica's password: {stderr}");
    assert!(stdout.contains("topology (sqlx backend): degraded"), "{stdout}");
    assert!(stdout.contains("primary") && stdout.contains("healthy"), "{stdout}");
    assert!(stdout.contains("replica") && stdout.contains(" down "), "{stdout}");
    assert!(stdout.contains("primary") && stdout.contains("not in recovery"), "{stdout}");
    assert!(stdout.contains("breaker") && stdout.contains("failovers followed: 0"), "{stdout}");
    assert!(!stdout.contains("hunter2") && !stderr.contains("hunter2"), "{stdout}{stderr}");
    let output = ucm_with_env(&["health", "--backend", "diesel"], &[("DATABASE_URL", &url)]);
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("topology (diesel backend): healthy"), "{stdout}");
    let output = ucm(&["health"]);
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(3), "no URL is bad input: {stderr}");
    assert!(stderr.contains("set DATABASE_URL or pass --database-url"), "{stderr}");
}

#[test]
fn health_shows_redis_beside_the_database() {
    let Some(url) = postgres_url() else { return };
    let Some(redis) = std::env::var("REDIS_URL").ok().filter(|v| !v.is_empty()) else {
        eprintln!("skipped: REDIS_URL is not set (run `cargo xtask test`)");
        return;
    };
    let output = ucm(&["health", "--database-url", &url, "--redis-url", &redis]);
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("redis:") && stdout.contains("reachable, ping"), "{stdout}");
    // An unreachable Redis: exit 1, said in text and JSON, the password never shown.
    let dead = "redis://:hunter2@127.0.0.1:1";
    let output = ucm(&["health", "--database-url", &url, "--redis-url", dead, "--format", "json"]);
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stdout}\n{stderr}");
    let report = json_of(&output);
    assert_eq!(report["redis"]["reachable"], false, "{report}");
    assert_eq!(report["exit_code"], 1, "{report}");
    assert!(report["redis"]["error"].as_str().is_some_and(|e| e.contains("refused")), "{report}");
    assert!(stderr.contains("Redis is unreachable"), "{stderr}");
    assert!(!stdout.contains("hunter2") && !stderr.contains("hunter2"), "{stdout}{stderr}");
}

/// Parses standard output as the one JSON document `--format json` promises.
fn json_of(output: &Output) -> serde_json::Value {
    let (stdout, stderr) = text(output);
    let parsed = serde_json::from_str(&stdout);
    assert!(parsed.is_ok(), "not JSON ({parsed:?}):\n{stdout}\n{stderr}");
    parsed.expect("checked above")
}

#[test]
fn json_outputs_parse_and_exit_codes_follow_pg_isready() {
    // No response: nothing listens on port 1.
    let dead = "postgres://app:Hunter2Secret@127.0.0.1:1/db";
    let output = ucm_with_env(&["check", "--format", "json"], &[("DATABASE_URL", dead)]);
    assert_eq!(output.status.code(), Some(2));
    let report = json_of(&output);
    assert_eq!(report["accepting"], false);
    assert_eq!(report["exit_code"], 2);
    assert_eq!(report["error"]["kind"], "connect_failed");
    assert_eq!(report["url"], "postgres://app:***@127.0.0.1:1/db");
    assert!(!report.to_string().contains("Hunter2Secret"), "{report}");
    // Bad input: no URL, a malformed one, an unknown option.
    let output = ucm(&["check", "--format", "json"]);
    assert_eq!(output.status.code(), Some(3));
    assert_eq!(json_of(&output)["exit_code"], 3);
    let output =
        ucm(&["check", "--database-url", "postgres://app:p@ss@db/app", "--format", "json"]);
    assert_eq!(output.status.code(), Some(3));
    assert_eq!(json_of(&output)["error"]["kind"], "configuration");
    assert_eq!(ucm(&["check", "--no-such-option"]).status.code(), Some(3));
    assert_eq!(ucm(&["--help"]).status.code(), Some(0));
    // config, with and without a URL.
    let output = ucm(&[
        "config",
        "--format",
        "json",
        "--database-url",
        "postgres://app:Hunter2Secret@db/app",
    ]);
    assert_eq!(output.status.code(), Some(0));
    let config = json_of(&output);
    assert!(config.to_string().contains("postgres://app:***@db:5432/app"), "{config}");
    assert!(!config.to_string().contains("Hunter2Secret"), "{config}");
    assert_eq!(json_of(&ucm(&["config", "--format", "json"]))["primary"], serde_json::Value::Null);
    // A live server: accepting, and a healthy topology.
    let Some(url) = postgres_url() else { return };
    let output = ucm(&["check", "--database-url", &url, "--format", "json"]);
    assert_eq!(output.status.code(), Some(0));
    let report = json_of(&output);
    assert_eq!(report["accepting"], true);
    assert!(report["server"].as_str().is_some_and(|s| s.starts_with("PostgreSQL")), "{report}");
    assert!(report["latency"]["best_ms"].as_f64().is_some(), "{report}");
    let output = ucm(&["health", "--database-url", &url, "--format", "json"]);
    assert_eq!(output.status.code(), Some(0));
    let health = json_of(&output);
    assert_eq!(health["health"]["status"], "healthy", "{health}");
    assert_eq!(health["backend"], "sqlx");
    assert!(health["info"]["endpoints"].as_array().is_some_and(|e| e.len() == 1), "{health}");
    assert_eq!(health["deep"], serde_json::Value::Null, "no diagnostics unless --deep");
    let output = ucm(&["health", "--database-url", &url, "--deep", "--format", "json"]);
    let deep = json_of(&output);
    assert_eq!(deep["deep"]["database"], "postgresql", "{deep}");
    let checks: Vec<&str> = deep["deep"]["findings"]
        .as_array()
        .map(|f| f.iter().filter_map(|f| f["check"].as_str()).collect())
        .unwrap_or_default();
    assert!(checks.contains(&"connections"), "every server has connections to report: {deep}");
    // No response from any endpoint: 2.
    let output = ucm(&["health", "--database-url", dead, "--format", "json"]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output).1);
}

#[test]
fn check_reports_a_live_server() {
    let Some(url) = postgres_url() else { return };
    let from_env = ucm_with_env(&["check"], &[("DATABASE_URL", &url)]);
    let from_flag = ucm(&["check", "--database-url", &url]);
    for output in [from_env, from_flag] {
        let (stdout, stderr) = text(&output);
        assert!(output.status.success(), "{stdout}\n{stderr}");
        for needle in
            ["connect:   ok", "server:    PostgreSQL", "latency:", "tls:", "read-only: no"]
        {
            assert!(stdout.contains(needle), "{needle} missing from:\n{stdout}");
        }
    }
    // The old positional form still works, with a word about the new one.
    let output = ucm(&["check", &url]);
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("`ucm check URL` is deprecated"), "{stderr}");
}

#[test]
fn check_diagnoses_a_dead_endpoint_in_one_line_without_the_password() {
    let dead = "postgres://app:Hunter2Secret@127.0.0.1:1/db";
    let output = ucm_with_env(&["check"], &[("DATABASE_URL", dead)]);
    let (stdout, stderr) = text(&output);
    assert!(!output.status.success());
    assert!(stdout.contains("connect:   FAILED"), "{stdout}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("error: connection refused"), "{stderr}");
    assert!(!stdout.contains("Hunter2Secret") && !stderr.contains("Hunter2Secret"));
}

#[test]
fn a_password_on_the_command_line_is_warned_about() {
    let dead = "postgres://app:Hunter2Secret@127.0.0.1:1/db";
    let dead_replica = "postgres://app:Hunter2Secret@127.0.0.1:2/db";
    for args in [
        &["check", "--database-url", dead][..],
        &["check", dead],
        &["config", "--database-url", dead],
        &["config", "--database-url", "postgres://app@db/app", "--replica-urls", dead],
        &["health", "--database-url", dead],
        &["demo", "--database-url", dead, "--seconds", "0.1"],
    ] {
        let output = ucm(args);
        let (stdout, stderr) = text(&output);
        assert!(stderr.contains(PASSWORD_WARNING), "{args:?}: {stderr}");
        assert!(!stdout.contains("Hunter2Secret") && !stderr.contains("Hunter2Secret"));
    }
    // From the environment, or without a password, there is nothing to warn about.
    for (args, env) in [
        (&["check"][..], &[("DATABASE_URL", dead)][..]),
        (&["config"], &[("DATABASE_URL", dead), ("DATABASE_REPLICA_URLS", dead_replica)]),
        (&["check", "--database-url", "postgres://app@127.0.0.1:1/db"], &[]),
    ] {
        let (_, stderr) = text(&ucm_with_env(args, env));
        assert!(!stderr.contains("warning"), "{args:?}: {stderr}");
    }
}

#[test]
fn check_without_a_url_says_where_to_put_one() {
    let output = ucm(&["check"]);
    let (_, stderr) = text(&output);
    assert!(!output.status.success());
    assert!(
        stderr.contains("no database URL: set DATABASE_URL or pass --database-url"),
        "{stderr}"
    );
}

#[test]
fn malformed_urls_say_how_to_fix_them() {
    let output = ucm(&["check", "postgres://app:p@ss@db/app"]);
    let (_, stderr) = text(&output);
    assert!(!output.status.success());
    assert!(stderr.contains("percent-encode it as %40"), "{stderr}");
    assert!(!stderr.contains("p@ss"), "{stderr}");
}

#[test]
fn config_prints_the_preset_redacted() {
    let output = ucm(&[
        "config",
        "--mode",
        "mcp-server",
        "--database-url",
        "postgresql+asyncpg://app:Hunter2Secret@db/app",
    ]);
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stderr}");
    assert!(stdout.contains("postgres://app:***@db:5432/app"), "{stdout}");
    assert!(stdout.contains("200ms") && stdout.contains("20 connections"), "{stdout}");
    assert!(!stdout.contains("Hunter2Secret"));
}

#[test]
fn every_command_has_help() {
    for args in [
        &["--help"][..],
        &["demo", "--help"],
        &["check", "--help"],
        &["config", "--help"],
        &["health", "--help"],
        &["bench", "--help"],
    ] {
        let output = ucm(args);
        assert!(output.status.success(), "{args:?}");
        assert!(String::from_utf8_lossy(&output.stdout).contains("Usage"), "{args:?}");
    }
}

#[test]
fn bench_smoke_run_writes_its_report() {
    let Some(url) = postgres_url() else { return };
    let dir = std::env::temp_dir().join(format!("ucm-bench-smoke-{}", std::process::id()));
    let report = dir.join("report.md");
    let output = ucm_with_env(
        &[
            "bench",
            "--seconds",
            "0.1",
            "--rounds",
            "1",
            "--concurrency",
            "2",
            "--checkouts",
            "2000",
            "--report",
            report.to_str().expect("utf-8 temp path"),
        ],
        &[("PG_DATABASE_URL", &url)],
    );
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    let markdown = std::fs::read_to_string(&report).expect("the report was written");
    for needle in [
        "## SELECT 1, 2 task(s)",
        "## indexed read, 2 task(s)",
        "## HA overhead",
        "ucm-sqlx (native)",
        "deadpool-postgres",
        "## Checkout without I/O",
        "## Connection storm",
    ] {
        assert!(markdown.contains(needle), "{needle} missing from:\n{markdown}");
    }
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(report.with_extension("json")).expect("json written"),
    )
    .expect("valid json");
    assert_eq!(json["storm"][0]["completed"], 1000, "{json}");
    assert_eq!(json["storm"][0]["timeouts"], 0, "{json}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn validate_passes_on_the_test_database() {
    let output = ucm_with_env(
        &["validate"],
        &[("DATABASE_URL", "postgres://a:Hunter2Secret@127.0.0.1:1/db")],
    );
    assert_eq!(output.status.code(), Some(2), "nothing answers: {}", text(&output).1);
    let Some(url) = postgres_url() else { return };
    let output =
        ucm(&["validate", "--database-url", &url, "--format", "json", "--round-trips", "40"]);
    let report = json_of(&output);
    assert_eq!(output.status.code(), Some(0), "{report:#}");
    assert_eq!(report["failed"], 0, "{report:#}");
    let names: Vec<&str> = report["checks"]
        .as_array()
        .map(|c| c.iter().filter_map(|c| c["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(
        names,
        ["manager health", "test adapter", "session vs direct", "compat (async)", "compat (sync)"]
    );
    assert_eq!(report["overhead"]["round_trips"], 40, "{report:#}");
    assert!(report["overhead"]["ratio"].as_f64().is_some_and(|r| r > 0.0), "{report:#}");
}
