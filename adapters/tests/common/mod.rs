//! What the façade's database tests share: the database URL from the environment, skipped locally and required under `CI`.

/// The database URL from `var`, or `None` (the test is skipped, with the reason printed)
/// locally; under `CI` a missing database fails.
pub(crate) fn url(var: &str) -> Option<String> {
    match std::env::var(var).ok().filter(|v| !v.is_empty()) {
        Some(url) => Some(url),
        None => {
            let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false");
            assert!(!ci, "{var} is not set and CI is: run the tests through `cargo xtask test`");
            eprintln!("skipped: {var} is not set (run `cargo xtask test`)");
            None
        }
    }
}
