//! Deep diagnostics of a database, as `ucm health --deep` prints them: slow and frequent statements, cache hit ratio, unused and redundant indexes, foreign keys without an index, dead tuples and vacuum needs, lock waits, long and idle-in-transaction sessions, connections, replication; each finding with a severity and a one-line recommendation.
//!
//! Written once over [`ConnectionManagerProtocol`], so any backend's manager answers it;
//! every query runs on the primary and only reads the server's statistics views.

mod mysql;
mod permissions;
mod postgres;

pub use permissions::{PermissionCheck, PermissionReport, check_permissions};

use std::fmt;
use std::time::Duration;

use crate::config::DatabaseKind;
use crate::error::Result;
use crate::mode::ConnectionMode;
use crate::protocol::ConnectionManagerProtocol;
use crate::value::Row;

/// How much a finding matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum Severity {
    /// Worth knowing (a figure, a check that could not run).
    Info,
    /// Costs something now or will (an unused index, dead tuples, a long transaction).
    Warning,
    /// Hurting right now (a session blocked by another).
    Critical,
}

impl Severity {
    /// `info`, `warning` or `critical`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// One thing the diagnostics found.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct Finding {
    /// How much it matters.
    pub severity: Severity,
    /// Which check found it: `statements`, `cache`, `indexes`, `foreign_keys`, `vacuum`,
    /// `locks`, `sessions`, `connections`, `replication`.
    pub check: &'static str,
    /// What it is about: a table, an index, a session, a statement.
    pub subject: String,
    /// What was seen, with the figures.
    pub detail: String,
    /// What to do about it, in one line.
    pub recommendation: String,
}

/// Thresholds of the deep diagnostics.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct DeepOptions {
    /// A transaction open (or a statement running) longer than this is reported.
    pub long_after: Duration,
    /// A table whose dead tuples exceed this share of its live ones (and 1000) is reported.
    pub dead_tuple_share: f64,
}

impl Default for DeepOptions {
    fn default() -> Self {
        Self { long_after: Duration::from_secs(60), dead_tuple_share: 0.2 }
    }
}

impl DeepOptions {
    /// The defaults with `long_after` instead.
    pub fn long_after(mut self, long_after: Duration) -> Self {
        self.long_after = long_after;
        self
    }
}

/// What [`deep_health`] found.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct DeepReport {
    /// The database diagnosed.
    pub database: DatabaseKind,
    /// Every finding, the most severe first.
    pub findings: Vec<Finding>,
    /// Checks that could not run, and why (a view the server lacks, a missing privilege).
    pub skipped: Vec<String>,
}

impl DeepReport {
    /// The most severe finding's severity; `None` when there is none.
    pub fn worst(&self) -> Option<Severity> {
        self.findings.iter().map(|f| f.severity).max()
    }
}

/// Runs every check the database offers on the manager's primary and gathers the findings.
/// A check the server cannot answer (a missing view or privilege) is listed in
/// [`DeepReport::skipped`] instead of failing the report.
///
/// # Errors
/// Only when the manager cannot reach the primary at all.
pub async fn deep_health<M>(
    manager: &M,
    database: DatabaseKind,
    options: DeepOptions,
) -> Result<DeepReport>
where
    M: ConnectionManagerProtocol + ?Sized,
{
    // One round trip first, so an unreachable primary is an error, not a list of skips.
    manager.fetch_all(ConnectionMode::ReadWrite, "SELECT 1", &[]).await?;
    let mut report = DeepReport { database, findings: Vec::new(), skipped: Vec::new() };
    let mut run = Runner { manager, report: &mut report };
    match database {
        DatabaseKind::Postgres => postgres::diagnose(&mut run, options).await,
        DatabaseKind::MySql => mysql::diagnose(&mut run, options).await,
        DatabaseKind::Sqlite => run.report.skipped.push(
            "SQLite is a file in this process: it has no server statistics to read".to_owned(),
        ),
    }
    report.findings.sort_by_key(|f| std::cmp::Reverse(f.severity));
    Ok(report)
}

/// Runs one check's query and records its findings, or why it was skipped.
struct Runner<'a, M: ?Sized> {
    manager: &'a M,
    report: &'a mut DeepReport,
}

impl<M: ConnectionManagerProtocol + ?Sized> Runner<'_, M> {
    /// The rows of `sql` on the primary; `None` (and the check listed as skipped, with the
    /// server's reason) when it fails.
    async fn rows(&mut self, check: &str, sql: &str) -> Option<Vec<Row>> {
        match self.manager.fetch_all(ConnectionMode::ReadWrite, sql, &[]).await {
            Ok(rows) => Some(rows),
            Err(e) => {
                self.report.skipped.push(format!("{check}: {e}"));
                None
            }
        }
    }

    fn find(
        &mut self,
        severity: Severity,
        check: &'static str,
        subject: impl Into<String>,
        detail: impl Into<String>,
        recommendation: impl Into<String>,
    ) {
        self.report.findings.push(Finding {
            severity,
            check,
            subject: subject.into(),
            detail: detail.into(),
            recommendation: recommendation.into(),
        });
    }
}

impl<M: ConnectionManagerProtocol + ?Sized> Runner<'_, M> {
    /// The connections finding, from `sql`'s rows: `who` and `what` (say application and
    /// state), `n` connections each, and the server's `max` connections; a warning past
    /// 80% of it, with `advice`.
    async fn connections(&mut self, sql: &str, advice: &str) {
        let Some(rows) = self.rows("connections", sql).await else { return };
        let total: f64 = rows.iter().map(|r| number(r, "n")).sum();
        let max = rows.first().map_or(0.0, |r| number(r, "max"));
        let groups: Vec<String> = rows
            .iter()
            .map(|r| format!("{} {} {:.0}", text(r, "who"), text(r, "what"), number(r, "n")))
            .collect();
        let crowded = max > 0.0 && total > 0.8 * max;
        self.find(
            if crowded { Severity::Warning } else { Severity::Info },
            "connections",
            "client connections",
            format!("{total:.0} of max_connections {max:.0}: {}", groups.join("; ")),
            if crowded {
                format!("over 80% of max_connections: {advice}")
            } else {
                "within limits".to_owned()
            },
        );
    }

    /// The cache finding, from `sql`'s one row of `requests` (reads asked for) and `disk`
    /// (those that went to disk); nothing below 10 000 reads, a warning below 99% served
    /// from memory, with `advice`.
    async fn cache(&mut self, sql: &str, subject: &str, advice: &str) {
        let Some(rows) = self.rows("cache", sql).await else { return };
        let Some(row) = rows.first() else { return };
        let (requests, disk) = (number(row, "requests"), number(row, "disk"));
        if requests < 10_000.0 {
            return; // Too few reads to say anything.
        }
        let ratio = 1.0 - disk / requests;
        let low = ratio < 0.99;
        self.find(
            if low { Severity::Warning } else { Severity::Info },
            "cache",
            subject,
            format!("{:.2}% of {requests:.0} reads served from memory", ratio * 100.0),
            if low { format!("below 99%: {advice}") } else { "healthy".to_owned() },
        );
    }
}

/// A text column, empty when NULL or not text.
fn text(row: &Row, column: &str) -> String {
    row.try_get::<Option<String>>(column).ok().flatten().unwrap_or_default()
}

/// A number column (any numeric type the driver returns), 0 when NULL.
fn number(row: &Row, column: &str) -> f64 {
    row.try_get::<Option<f64>>(column)
        .ok()
        .flatten()
        .or_else(|| row.try_get::<Option<i64>>(column).ok().flatten().map(|n| n as f64))
        .unwrap_or(0.0)
}

/// `bytes` as `12.3 MB`.
fn size(bytes: f64) -> String {
    match bytes {
        b if b >= 1e9 => format!("{:.1} GB", b / 1e9),
        b if b >= 1e6 => format!("{:.1} MB", b / 1e6),
        b if b >= 1e3 => format!("{:.1} kB", b / 1e3),
        b => format!("{b:.0} B"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(size(512.0), "512 B");
        assert_eq!(size(8192.0), "8.2 kB");
        assert_eq!(size(3_500_000.0), "3.5 MB");
        assert_eq!(size(2e9), "2.0 GB");
    }

    #[test]
    fn the_worst_finding_decides() {
        let finding = |severity| Finding {
            severity,
            check: "locks",
            subject: String::new(),
            detail: String::new(),
            recommendation: String::new(),
        };
        let mut report =
            DeepReport { database: DatabaseKind::Postgres, findings: vec![], skipped: vec![] };
        assert_eq!(report.worst(), None);
        report.findings =
            vec![finding(Severity::Info), finding(Severity::Critical), finding(Severity::Warning)];
        assert_eq!(report.worst(), Some(Severity::Critical));
    }
}
