//! `cargo xtask test`: finds the databases and the HA pair, then runs the test matrix with their URLs exported.

use std::{
    env,
    time::{Duration, Instant},
};

use anyhow::{Result, bail};

use crate::{
    cmd::Cmd,
    services::{self, Services},
};

/// Runs `services` with the HA pair (its tests need it; without it they skip locally and fail
/// under `CI`, like any missing service), then every run of the matrix (all of them, even
/// after a failure, so one pass shows everything that is broken), then prints a summary.
///
/// `extra` are arguments for `cargo test`: package or target selections replace the matrix's
/// own, and anything after a `--` goes to the test binaries.
pub(crate) fn run(extra: &[String]) -> Result<()> {
    let services = services::run(services::Options { ha: true, ..services::Options::default() })?;
    let root = crate::project_root();
    let services_env = test_env(&services, env::var("DATABASE_URL").ok().as_deref());
    let names: Vec<&str> = services_env.iter().map(|(k, _)| *k).collect();
    eprintln!("exporting {} to every run (values above)", names.join(", "));

    let mut results = Vec::new();
    let tests = with_extra(matrix(), extra).into_iter().map(|run| ("test", run));
    // The runs with other feature sets; a user's own selection skips them.
    let others = if extra.is_empty() { other_feature_sets() } else { Vec::new() };
    for (subcommand, run) in tests.chain(others) {
        eprintln!("\n== cargo {subcommand}: {} ==", run.label);
        let mut cmd = Cmd::cargo().arg(subcommand).args(&run.args).dir(&root);
        for (key, value) in &services_env {
            cmd = cmd.hidden_env(*key, *value);
        }
        for (key, value) in &run.env {
            cmd = cmd.env(key, value);
        }
        let started = Instant::now();
        let outcome = cmd.run();
        if let Err(e) = &outcome {
            eprintln!("error: {e:#}");
        }
        results.push((run.label, outcome.is_ok(), started.elapsed()));
    }

    eprintln!("\ntest summary:");
    for (label, passed, elapsed) in &results {
        eprintln!("  {}  {label:<34} {}", if *passed { "PASS" } else { "FAIL" }, seconds(*elapsed));
    }
    print_conformance_matrix(&services, &results);
    print_ha(&services);
    let failed: Vec<&str> = results.iter().filter(|r| !r.1).map(|r| r.0.as_str()).collect();
    if !failed.is_empty() {
        bail!("test runs failed: {}", failed.join(", "));
    }
    Ok(())
}

/// Prints which backend × database pairs of the conformance suite ran and which were
/// skipped, and why: a suite runs against a database exactly when its URL was exported
/// (without it the tests skip, or fail under `CI`).
fn print_conformance_matrix(services: &Services, results: &[(String, bool, Duration)]) {
    let backends = conformance_backends();
    if backends.is_empty() {
        return;
    }
    let workspace = results.iter().find(|r| r.0 == "workspace").map(|r| r.1);
    let databases = [
        ("postgresql", "PG_DATABASE_URL", &services.postgres),
        ("mysql", "MYSQL_DATABASE_URL", &services.mysql),
        ("sqlite", "SQLITE_DATABASE_URL", &services.sqlite),
    ];
    eprintln!("\nconformance matrix (tests/tests/<backend>.rs, run by `workspace`):");
    for backend in &backends {
        for (database, var, url) in &databases {
            let status = match (url, workspace) {
                (None, _) => {
                    format!("skipped: {var} was not found (see the services report above)")
                }
                (Some(_), None) => "not run: the `workspace` run was not selected".to_owned(),
                (Some(_), Some(true)) => "ran, passed".to_owned(),
                (Some(_), Some(false)) => {
                    "ran; the `workspace` run failed (see its output)".to_owned()
                }
            };
            eprintln!("  {backend:<7} x {database:<11} {status}");
        }
    }
}

/// Says whether the HA tests had their primary/replica pair.
fn print_ha(services: &Services) {
    match &services.ha {
        Some(pair) => eprintln!("\nHA pair: exported to every run ({})", pair.note),
        None => eprintln!(
            "\nHA pair: not available, so the HA tests skipped (see the services report above)"
        ),
    }
}

/// The backends with a conformance suite: the files in `tests/tests/` that instantiate it.
fn conformance_backends() -> Vec<String> {
    let dir = crate::project_root().join("tests").join("tests");
    let Ok(entries) = std::fs::read_dir(&dir) else { return Vec::new() };
    let mut backends: Vec<String> = entries
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            let text = std::fs::read_to_string(&path).ok()?;
            text.contains("conformance_suite!")
                .then(|| path.file_stem()?.to_str().map(str::to_owned))
                .flatten()
        })
        .collect();
    backends.sort();
    backends
}

/// One `cargo test` invocation: a label for the summary, its arguments, and the environment
/// it needs beyond the database URLs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Run {
    pub(crate) label: String,
    pub(crate) args: Vec<String>,
    pub(crate) env: Vec<(String, String)>,
}

/// The test runs, in order.
///
/// The conformance suite of every backend (sqlx, diesel) is part of `workspace`: one build
/// with the workspace's unified features serves both, so no run rebuilds the dependencies.
/// Runs needing other features are added here as one `Run` each, with any per-run variables
/// in `env`.
pub(crate) fn matrix() -> Vec<Run> {
    vec![
        // `--no-fail-fast`: every test binary runs even after one fails, so one pass shows
        // everything that is broken (cargo stops at the first failing binary otherwise).
        Run::new("workspace", ["--workspace", "--all-targets", "--no-fail-fast"]),
        Run::new("doctests", ["--workspace", "--doc", "--no-fail-fast"]),
    ]
}

/// The runs with other feature sets, after the matrix: the compat suite with `unified-v2`
/// on (the workspace run had it off; `--workspace` keeps every other crate's features as
/// above, so only ucm-compat rebuilds), the migration example's compat state with the same
/// switch through its own `unified-v2` feature (the same build, plus the example; its other
/// states and this one with the switch off run in `workspace`, as workspace members: a
/// `-p` run would resolve features for that crate alone and rebuild sqlx and tokio), the
/// compat suite on the diesel backend (compat with `diesel,postgres` only, as a diesel
/// application takes it; it shares the diesel quick start's build of ucm), and
/// the façade's quick start as a user's crate builds it, with the default features (sqlx) and with `default-features = false,
/// features = ["diesel", "postgres"]`, against `DATABASE_URL`.
pub(crate) fn other_feature_sets() -> Vec<(&'static str, Run)> {
    vec![
        (
            "test",
            Run::new(
                "compat: unified-v2",
                ["--workspace", "--features", "ucm-compat/unified-v2", "--test", "legacy"],
            ),
        ),
        (
            "test",
            Run::new(
                "migrate-sqlx compat: unified-v2",
                [
                    "--workspace",
                    "--features",
                    "migrate-sqlx-compat/unified-v2",
                    "--test",
                    "jobs_compat",
                ],
            ),
        ),
        (
            "test",
            Run::new(
                "compat: diesel backend",
                [
                    "-p",
                    "ucm-compat",
                    "--no-default-features",
                    "--features",
                    "diesel,postgres",
                    "--test",
                    "legacy",
                ],
            ),
        ),
        ("run", Run::new("quickstart: ucm (default)", ["-p", "ucm", "--example", "quickstart"])),
        (
            "run",
            Run::new(
                "quickstart: ucm diesel+postgres",
                [
                    "-p",
                    "ucm",
                    "--no-default-features",
                    "--features",
                    "diesel,postgres",
                    "--example",
                    "quickstart",
                ],
            ),
        ),
    ]
}

/// Formats a duration for the summaries, e.g. `12.3s`.
pub(crate) fn seconds(elapsed: Duration) -> String {
    format!("{:.1}s", elapsed.as_secs_f64())
}

impl Run {
    fn new<const N: usize>(label: &str, args: [&str; N]) -> Self {
        Self { label: label.to_owned(), args: args.map(str::to_owned).to_vec(), env: Vec::new() }
    }
}

/// The variables every run gets: each available URL, plus `DATABASE_URL` pointing at
/// PostgreSQL unless the user set one (`user_database_url`).
fn test_env<'a>(
    services: &'a Services,
    user_database_url: Option<&str>,
) -> Vec<(&'static str, &'a str)> {
    let mut vars = services.env();
    let user_set = user_database_url.is_some_and(|url| !url.trim().is_empty());
    if let (false, Some(pg)) = (user_set, &services.postgres) {
        vars.push(("DATABASE_URL", pg));
    }
    vars
}

/// Applies the user's extra `cargo test` arguments to the matrix.
///
/// `cargo test --workspace -p x` silently ignores `-p`, and `--doc` cannot be combined with
/// other target selections, so a user's package selection removes `--workspace` and a user's
/// target selection replaces `--all-targets`/`--doc`; runs that become identical collapse into
/// the first of them.
fn with_extra(runs: Vec<Run>, extra: &[String]) -> Vec<Run> {
    let split = extra.iter().position(|a| a == "--").unwrap_or(extra.len());
    let (cargo_args, harness_args) = extra.split_at(split);
    let selects_packages = cargo_args
        .iter()
        .any(|a| a.starts_with("-p") || a == "--package" || a.starts_with("--package="));
    let selects_targets = cargo_args.iter().any(|a| {
        let flag = a.split('=').next().unwrap_or(a);
        TARGET_FLAGS.contains(&flag)
    });
    let mut out: Vec<Run> = Vec::new();
    for mut run in runs {
        run.args.retain(|a| {
            !(selects_packages && a == "--workspace"
                || selects_targets && (a == "--all-targets" || a == "--doc"))
        });
        run.args.extend(cargo_args.iter().chain(harness_args).cloned());
        if !out.iter().any(|o| o.args == run.args && o.env == run.env) {
            out.push(run);
        }
    }
    out
}

/// The `cargo test` flags that select targets.
const TARGET_FLAGS: [&str; 11] = [
    "--lib",
    "--bin",
    "--bins",
    "--test",
    "--tests",
    "--example",
    "--examples",
    "--bench",
    "--benches",
    "--all-targets",
    "--doc",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|a| (*a).to_owned()).collect()
    }

    #[test]
    fn with_extra_scopes_the_matrix_to_the_users_selection() {
        let cases: [(&[&str], &[&[&str]]); 6] = [
            (
                &[],
                &[
                    &["--workspace", "--all-targets", "--no-fail-fast"],
                    &["--workspace", "--doc", "--no-fail-fast"],
                ],
            ),
            (
                &["--", "retry"],
                &[
                    &["--workspace", "--all-targets", "--no-fail-fast", "--", "retry"],
                    &["--workspace", "--doc", "--no-fail-fast", "--", "retry"],
                ],
            ),
            (
                &["-p", "ucm-kernel"],
                &[
                    &["--all-targets", "--no-fail-fast", "-p", "ucm-kernel"],
                    &["--doc", "--no-fail-fast", "-p", "ucm-kernel"],
                ],
            ),
            (&["-pucm-kernel", "--lib"], &[&["--no-fail-fast", "-pucm-kernel", "--lib"]]),
            (&["--doc"], &[&["--workspace", "--no-fail-fast", "--doc"]]),
            (
                &["--test=conformance", "--", "--nocapture"],
                &[&["--workspace", "--no-fail-fast", "--test=conformance", "--", "--nocapture"]],
            ),
        ];
        for (extra, expected) in cases {
            let runs = with_extra(matrix(), &strings(extra));
            let args: Vec<Vec<String>> = runs.into_iter().map(|r| r.args).collect();
            let expected: Vec<Vec<String>> = expected.iter().map(|e| strings(e)).collect();
            assert_eq!(args, expected, "extra args {extra:?}");
        }
    }

    #[test]
    fn database_url_defaults_to_postgres_unless_the_user_set_one() {
        let services = Services {
            postgres: Some("postgres://postgres@127.0.0.1:5432/test".to_owned()),
            ..Services::default()
        };
        let cases = [
            (None, Some("postgres://postgres@127.0.0.1:5432/test")),
            (Some(""), Some("postgres://postgres@127.0.0.1:5432/test")),
            (Some("postgres://elsewhere/db"), None),
        ];
        for (user, expected) in cases {
            let vars = test_env(&services, user);
            let database_url = vars.iter().find(|(k, _)| *k == "DATABASE_URL").map(|(_, v)| *v);
            assert_eq!(database_url, expected, "user DATABASE_URL {user:?}");
        }
        assert!(test_env(&Services::default(), None).is_empty());
    }
}
