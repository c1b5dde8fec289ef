//! The permission self-test: whether the manager's role can do what its mode's `PermissionPolicy` requires and cannot do what it forbids, found by statements that touch no row (and, for schema changes, the server's privilege catalog).

use std::fmt;

use crate::config::{DatabaseKind, DdlRule, PermissionPolicy};
use crate::error::{Error, ErrorKind, Result};
use crate::mode::ConnectionMode;
use crate::protocol::ConnectionManagerProtocol;
use crate::value::Value;

/// What the self-test found for one role.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct PermissionReport {
    /// The role the manager logs in as, as the server names it.
    pub role: String,
    /// Each check, in the policy's order.
    pub checks: Vec<PermissionCheck>,
}

/// One check: a capability, whether the policy wants it, whether the role has it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct PermissionCheck {
    /// What was tried: `read feedback`, `write rules`, `change the schema`.
    pub capability: String,
    /// Whether the policy requires it (`false`: forbids it).
    pub required: bool,
    /// Whether the role has it.
    pub granted: bool,
    /// The server's refusal, when it refused.
    pub refusal: Option<String>,
    /// `false` when the statement failed for another reason than a permission (a table
    /// that does not exist): the check says nothing, and fails.
    pub conclusive: bool,
}

impl PermissionCheck {
    /// Whether the role is as the policy wants.
    pub fn passed(&self) -> bool {
        self.conclusive && self.required == self.granted
    }
}

impl PermissionReport {
    /// Whether every check passed.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(PermissionCheck::passed)
    }
}

impl fmt::Display for PermissionReport {
    /// One line per failed check (too many grants, too few), or that all passed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let failed: Vec<_> = self.checks.iter().filter(|c| !c.passed()).collect();
        if failed.is_empty() {
            return writeln!(
                f,
                "role {}: all {} permission checks passed",
                self.role,
                self.checks.len()
            );
        }
        writeln!(
            f,
            "role {}: {} of {} permission checks failed",
            self.role,
            failed.len(),
            self.checks.len()
        )?;
        for check in failed {
            if !check.conclusive {
                let why = check.refusal.as_deref().unwrap_or("failed");
                writeln!(
                    f,
                    "  not checked: {} failed for another reason ({why}); fix the policy or the schema",
                    check.capability
                )?;
            } else if check.granted {
                writeln!(
                    f,
                    "  too many grants: can {}, which the policy forbids; revoke it",
                    check.capability
                )?;
            } else {
                let why = check.refusal.as_deref().unwrap_or("refused");
                writeln!(f, "  too few grants: cannot {} ({why}); grant it", check.capability)?;
            }
        }
        Ok(())
    }
}

/// Runs the self-test for `policy` through `manager` (on the primary). Reads are tried as
/// `SELECT * FROM t WHERE 1 = 0`, writes as `INSERT INTO t SELECT * FROM t WHERE 1 = 0`
/// (so a write check needs read access too), schema changes read from the catalog
/// (`has_schema_privilege` or superuser on PostgreSQL; the `CREATE` privilege for the
/// user or the database on MySQL). SQLite has no roles: the report has no checks.
///
/// # Errors
/// A failure that is not a refusal (the server unreachable, the connection lost).
pub async fn check_permissions<M>(
    manager: &M,
    kind: DatabaseKind,
    policy: &PermissionPolicy,
) -> Result<PermissionReport>
where
    M: ConnectionManagerProtocol + ?Sized,
{
    let role_sql = match kind {
        DatabaseKind::Postgres => "SELECT CAST(current_user AS TEXT) AS r",
        DatabaseKind::MySql => "SELECT CURRENT_USER() AS r",
        DatabaseKind::Sqlite => {
            return Ok(PermissionReport {
                role: "sqlite (no roles)".to_owned(),
                checks: Vec::new(),
            });
        }
    };
    let rows = manager.fetch_all(ConnectionMode::ReadWrite, role_sql, &[]).await?;
    let role = rows.first().and_then(|r| r.try_get::<String>("r").ok()).unwrap_or_default();
    let mut checks = Vec::new();
    let tables = [
        (&policy.read, "read", true),
        (&policy.write, "write", true),
        (&policy.deny_read, "read", false),
        (&policy.deny_write, "write", false),
    ];
    for (list, verb, required) in tables {
        for table in list {
            let t = quote(kind, table)?;
            let probe = if verb == "read" {
                Probe::Read(format!("SELECT 1 AS probe FROM {t} WHERE 1 = 0"))
            } else {
                Probe::Write(format!("INSERT INTO {t} SELECT * FROM {t} WHERE 1 = 0"))
            };
            let (granted, refusal, conclusive) = attempt(manager, probe).await?;
            checks.push(PermissionCheck {
                capability: format!("{verb} {table}"),
                required,
                granted,
                refusal,
                conclusive,
            });
        }
    }
    if policy.ddl != DdlRule::Allowed {
        let granted = can_change_schema(manager, kind).await?;
        checks.push(PermissionCheck {
            capability: "change the schema (create objects)".to_owned(),
            required: policy.ddl == DdlRule::Required,
            granted,
            refusal: None,
            conclusive: true,
        });
    }
    Ok(PermissionReport { role, checks })
}

/// A statement that touches no row: a read (rows fetched) or a write (rows counted).
enum Probe {
    Read(String),
    Write(String),
}

/// Runs the probe: (granted, the server's message when it failed, whether the failure was
/// a permission refusal: PostgreSQL's 42501, MySQL's "command denied"). Errors that are
/// not about the statement (connection, pool, breaker) are returned.
async fn attempt<M>(manager: &M, probe: Probe) -> Result<(bool, Option<String>, bool)>
where
    M: ConnectionManagerProtocol + ?Sized,
{
    let result = match &probe {
        Probe::Read(sql) => manager.fetch_all(ConnectionMode::ReadWrite, sql, &[]).await.map(drop),
        Probe::Write(sql) => manager.execute(ConnectionMode::ReadWrite, sql, &[]).await.map(drop),
    };
    match result {
        Ok(()) => Ok((true, None, true)),
        Err(Error::Database {
            kind: ErrorKind::Query | ErrorKind::ReadOnlyViolation,
            sqlstate,
            message,
            ..
        }) => {
            let denied = sqlstate.as_deref() == Some("42501") || message.contains("denied");
            Ok((false, Some(message), denied))
        }
        Err(e) => Err(e),
    }
}

/// Whether the role may create objects in its schema or database.
async fn can_change_schema<M>(manager: &M, kind: DatabaseKind) -> Result<bool>
where
    M: ConnectionManagerProtocol + ?Sized,
{
    let sql = match kind {
        DatabaseKind::Postgres => {
            "SELECT (has_schema_privilege(current_schema(), 'CREATE') \
             OR (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)) AS c"
        }
        _ => {
            "SELECT COUNT(*) AS c FROM (\
             SELECT PRIVILEGE_TYPE FROM information_schema.USER_PRIVILEGES \
             WHERE GRANTEE = CONCAT('''', SUBSTRING_INDEX(CURRENT_USER(), '@', 1), '''@''', \
             SUBSTRING_INDEX(CURRENT_USER(), '@', -1), '''') AND PRIVILEGE_TYPE = 'CREATE' \
             UNION ALL SELECT PRIVILEGE_TYPE FROM information_schema.SCHEMA_PRIVILEGES \
             WHERE GRANTEE = CONCAT('''', SUBSTRING_INDEX(CURRENT_USER(), '@', 1), '''@''', \
             SUBSTRING_INDEX(CURRENT_USER(), '@', -1), '''') AND PRIVILEGE_TYPE = 'CREATE' \
             AND DATABASE() LIKE TABLE_SCHEMA) AS p"
        }
    };
    let rows = manager.fetch_all(ConnectionMode::ReadWrite, sql, &[]).await?;
    Ok(match rows.first().and_then(|r| r.get("c")) {
        Some(Value::Bool(b)) => *b,
        Some(Value::Int(n)) => *n > 0,
        _ => false,
    })
}

/// `table` (optionally `schema.table`) as a quoted identifier.
fn quote(kind: DatabaseKind, table: &str) -> Result<String> {
    if table.trim().is_empty() {
        return Err(Error::config("permissions", "a table name is empty"));
    }
    let (open, close) = if kind == DatabaseKind::Postgres { ('"', "\"\"") } else { ('`', "``") };
    Ok(table
        .split('.')
        .map(|part| format!("{open}{}{open}", part.replace(open, close)))
        .collect::<Vec<_>>()
        .join("."))
}
