//! What the sqlx handle tests share: finding a database's URL, skipping locally and failing under `CI` when it is missing.

/// The URL in `var`, or `None` (the test then passes vacuously, printing why) unless `CI` is
/// set, where a missing database fails.
pub(crate) fn url(var: &str) -> Option<String> {
    let url = std::env::var(var).ok().filter(|v| !v.is_empty());
    if url.is_none() {
        let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false");
        assert!(!ci, "{var} is not set and CI is: run `cargo xtask test`");
        eprintln!("skipped: {var} is not set (run `cargo xtask test`)");
    }
    url
}
