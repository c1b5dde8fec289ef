//! `--backend`: which of ucm's backends (sqlx, diesel) a command drives its connections with.

/// A backend, chosen on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum BackendChoice {
    /// sqlx's pure-Rust drivers.
    Sqlx,
    /// diesel-async (tokio-postgres, mysql_async, SQLite through a blocking-thread wrapper).
    Diesel,
}
