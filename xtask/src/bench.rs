//! `cargo xtask bench`: find or start PostgreSQL, then run `ucm bench` from a release build, writing target/bench/report.md and .json.

use anyhow::{Result, bail};

use crate::cmd::Cmd;
use crate::services::{self, Options};

/// Runs the benchmark; `extra` goes to `ucm bench` (e.g. `--seconds 1 --rounds 1`).
pub(crate) fn run(extra: &[String]) -> Result<()> {
    let found = services::run(Options::default())?;
    let Some(postgres) = found.postgres else {
        bail!(
            "the benchmark needs PostgreSQL and none was found or started (see the report above)"
        );
    };
    let root = crate::project_root();
    let report = root.join("target").join("bench").join("report.md");
    // Release build: the figures are meant to be compared with other release builds.
    Cmd::cargo()
        .args(["run", "--release", "--package", "ucm-tool", "--", "bench", "--report"])
        .arg(&report)
        .args(extra)
        .hidden_env("PG_DATABASE_URL", postgres)
        .dir(&root)
        .run()
}
