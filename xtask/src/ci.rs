//! `cargo xtask ci`: what CI runs (`.ci/run` mirrors it): `tidy`, then `test`.

use std::time::Instant;

use anyhow::Result;

use crate::{test::seconds, tidy};

/// Runs `tidy`, then `test` (skipped when `tidy` failed, as `.ci/run` stops there too), and
/// prints how long each took.
pub(crate) fn run() -> Result<()> {
    let started = Instant::now();
    let tidy = tidy::run();
    let tidy_time = started.elapsed();

    let started = Instant::now();
    let test = match &tidy {
        Ok(()) => Some(crate::test::run(&[])),
        Err(_) => None,
    };
    let test_time = started.elapsed();

    eprintln!("\nci summary:");
    eprintln!("  {}  tidy  {}", verdict(&tidy), seconds(tidy_time));
    match &test {
        Some(test) => eprintln!("  {}  test  {}", verdict(test), seconds(test_time)),
        None => eprintln!("  SKIP  test  (tidy failed)"),
    }
    tidy?;
    if let Some(test) = test {
        test?;
    }
    Ok(())
}

fn verdict(result: &Result<()>) -> &'static str {
    if result.is_ok() { "PASS" } else { "FAIL" }
}
