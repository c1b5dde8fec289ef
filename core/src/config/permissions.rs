//! `PermissionPolicy`: what a mode's database role must and must not be able to do (read, write, change the schema), which `check_permissions` verifies against the server.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};
use crate::mode::ManagerMode;

/// What the role a manager logs in as must and must not be able to do. Tables are named
/// as in SQL (`feedback`, `app.rules`); the check runs statements that touch no row.
///
/// The original system gave each mode its own role (the MCP server's could read and write
/// feedback, never rules); this is how ucm states and checks such a split.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct PermissionPolicy {
    /// Tables the role must be able to `SELECT` from.
    pub read: Vec<String>,
    /// Tables the role must be able to `INSERT` into.
    pub write: Vec<String>,
    /// Tables the role must not be able to `SELECT` from.
    pub deny_read: Vec<String>,
    /// Tables the role must not be able to `INSERT` into.
    pub deny_write: Vec<String>,
    /// Whether the role may create objects in its schema (or is a superuser).
    pub ddl: DdlRule,
}

/// Whether a role may change the schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum DdlRule {
    /// It must be able to (migrations: `Admin`'s default).
    Required,
    /// It must not be able to (every other mode's default: least privilege).
    Forbidden,
    /// Not checked.
    Allowed,
}

impl PermissionPolicy {
    /// `mode`'s default: no table named; `Admin` must be able to change the schema, every
    /// other mode must not.
    pub fn for_mode(mode: ManagerMode) -> Self {
        Self {
            read: Vec::new(),
            write: Vec::new(),
            deny_read: Vec::new(),
            deny_write: Vec::new(),
            ddl: if mode == ManagerMode::Admin { DdlRule::Required } else { DdlRule::Forbidden },
        }
    }
}

impl FromStr for DdlRule {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "required" => Ok(Self::Required),
            "forbidden" => Ok(Self::Forbidden),
            "allowed" => Ok(Self::Allowed),
            _ => Err(Error::config(
                "permissions.ddl",
                format!("{s:?} is not a rule; use required, forbidden or allowed"),
            )),
        }
    }
}

impl fmt::Display for DdlRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Required => "required",
            Self::Forbidden => "forbidden",
            Self::Allowed => "allowed",
        })
    }
}
