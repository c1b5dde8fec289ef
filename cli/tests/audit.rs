//! `ucm audit` end to end on the fixture codebases in `tests/audit/`: exactly the seeded sites, none from comments, strings, docs or local modules, valid JSON, and `--deny` as a CI gate.

#![allow(clippy::expect_used)] // Test helpers, outside `#[test]` functions.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/audit").join(name)
}

fn audit(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ucm"))
        .arg("audit")
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("the ucm binary runs")
}

fn json(path: &Path) -> Value {
    let output = audit(&[path.to_str().expect("a UTF-8 path"), "--format", "json"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("ucm audit --format json prints JSON")
}

/// Every site of the report as `file:line kind route`.
fn sites(report: &Value) -> Vec<String> {
    let mut found = Vec::new();
    for file in report["files"].as_array().expect("files") {
        for site in file["sites"].as_array().expect("sites") {
            found.push(format!(
                "{}:{} {} {}",
                file["file"].as_str().unwrap_or_default(),
                site["line"],
                site["kind"].as_str().unwrap_or_default(),
                site["route"].as_str().unwrap_or_default()
            ));
        }
    }
    found
}

#[test]
fn finds_exactly_the_seeded_sites() {
    let report = json(&fixture("service"));
    let expected = [
        "src/db.rs:9 sqlx pool direct",
        "src/db.rs:10 sqlx pool direct",
        "src/db.rs:11 sqlx pool direct",
        "src/db.rs:12 sqlx connection direct",
        "src/db.rs:19 diesel r2d2 pool direct",
        "src/db.rs:23 diesel connection direct",
        "src/main.rs:7 ucm manager through_ucm",
        "src/other_drivers.rs:9 deadpool-postgres pool direct",
        "src/other_drivers.rs:10 tokio-postgres connection direct",
        "src/other_drivers.rs:11 rusqlite connection direct",
        "src/other_drivers.rs:12 mysql_async pool direct",
        "src/other_drivers.rs:13 rusqlite connection direct",
    ];
    assert_eq!(sites(&report), expected, "{report:#}");
    assert_eq!(report["files_read"], 5);
    assert_eq!(report["direct_sites"], 11);
    assert_eq!(report["through_ucm_sites"], 1);
    assert_eq!(report["consolidation"], "11 direct connection sites -> 1 manager");
    let unparsed = report["unparsed"].as_array().expect("unparsed");
    assert_eq!(unparsed.len(), 1, "{unparsed:?}");
    assert_eq!(unparsed[0]["file"], "src/broken.rs");
}

#[test]
fn a_migrated_codebase_passes_the_gate() {
    let report = json(&fixture("migrated"));
    assert_eq!(
        sites(&report),
        [
            "src/lib.rs:7 ucm manager through_ucm",
            "src/lib.rs:8 ucm driver handle through_ucm",
            "src/lib.rs:9 ucm legacy adapter through_ucm",
            "src/lib.rs:19 ucm driver handle through_ucm",
        ]
    );
    let gate = audit(&[fixture("migrated").to_str().expect("a UTF-8 path"), "--deny"]);
    assert!(gate.status.success(), "{}", String::from_utf8_lossy(&gate.stderr));
}

#[test]
fn deny_fails_while_direct_sites_remain_and_text_groups_by_file() {
    let output = audit(&[fixture("service").to_str().expect("a UTF-8 path"), "--deny"]);
    assert_eq!(output.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("11 direct connection site(s) remain"), "{stderr}");
    for needle in ["src/db.rs\n", "src/other_drivers.rs\n", "PgPoolOptions::new", ".create_pool"] {
        assert!(stdout.contains(needle), "{needle:?} missing from:\n{stdout}");
    }
    assert!(stdout.contains("consolidation: 11 direct connection sites -> 1 manager"), "{stdout}");
    assert!(!stdout.contains("not_sites.rs"), "a file with no site is listed:\n{stdout}");
}

#[test]
fn a_missing_path_is_a_clear_error() {
    let output = audit(&["/no/such/codebase"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("/no/such/codebase is neither a file nor a directory"), "{stderr}");
}
