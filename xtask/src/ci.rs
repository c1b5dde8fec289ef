//! `cargo xtask ci`: what CI runs (`.ci/run` mirrors it): `tidy`, `package`, then `test`.

use std::time::Instant;

use anyhow::Result;

use crate::{package, test::seconds, tidy};

/// One step of CI.
type Step = fn() -> Result<()>;

/// Runs `tidy`, `package` and `test`, each skipped once one before it failed (as `.ci/run`
/// stops there too), and prints how long each took.
pub(crate) fn run() -> Result<()> {
    let steps: [(&str, Step); 3] =
        [("tidy", tidy::run), ("package", package::run), ("test", || crate::test::run(&[]))];
    let mut results = Vec::new();
    for (name, step) in steps {
        if results.iter().any(|(_, result, _): &(_, Result<()>, _)| result.is_err()) {
            results.push((name, Ok(()), None));
            continue;
        }
        let started = Instant::now();
        let result = step();
        results.push((name, result, Some(started.elapsed())));
    }
    eprintln!("\nci summary:");
    for (name, result, took) in &results {
        match took {
            Some(took) => eprintln!("  {}  {name:<7}  {}", verdict(result), seconds(*took)),
            None => eprintln!("  SKIP  {name:<7}  (a step before it failed)"),
        }
    }
    results.into_iter().try_for_each(|(_, result, _)| result)
}

fn verdict(result: &Result<()>) -> &'static str {
    if result.is_ok() { "PASS" } else { "FAIL" }
}
