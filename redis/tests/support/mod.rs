//! What the Redis test files share: a service's URL from the environment, or a skip that `CI` turns into a failure.

/// Whether the tests run under CI, where everything must run.
pub(crate) fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false")
}

/// `reason` for not running: printed (the test passes vacuously), or a failure under `CI`.
pub(crate) fn skip(reason: &str) {
    assert!(!under_ci(), "{reason}, and CI is set: run the tests through `cargo xtask test`");
    eprintln!("skipped: {reason} (run `cargo xtask test`)");
}

/// The URL in `var`, or `None` after [`skip`].
pub(crate) fn url_from(var: &str) -> Option<String> {
    let url = std::env::var(var).ok().filter(|v| !v.is_empty());
    if url.is_none() {
        skip(&format!("{var} is not set"));
    }
    url
}
