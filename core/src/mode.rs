//! The two mode enums: how a caller uses one connection (`ConnectionMode`) and what a manager is tuned for (`ManagerMode`).

use std::fmt;
use std::str::FromStr;

use crate::error::Error;

/// How the caller will use a connection; decides routing and transaction access mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum ConnectionMode {
    /// Reads only. Enforced by the database (a read-only transaction), and routed to a
    /// healthy replica when one exists, else to the primary.
    ReadOnly,
    /// Reads and writes on the primary.
    #[default]
    ReadWrite,
    /// Bulk work on the primary; the same guarantees as `ReadWrite`.
    Batch,
    /// Explicit multi-statement transactions on the primary.
    Transactional,
}

impl ConnectionMode {
    /// Every connection mode, in declaration order.
    pub const ALL: [Self; 4] = [Self::ReadOnly, Self::ReadWrite, Self::Batch, Self::Transactional];

    /// Whether the database must refuse writes on connections of this mode.
    pub fn is_read_only(self) -> bool {
        self == Self::ReadOnly
    }

    /// A stable lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ReadOnly => "read_only",
            Self::ReadWrite => "read_write",
            Self::Batch => "batch",
            Self::Transactional => "transactional",
        }
    }
}

impl fmt::Display for ConnectionMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a manager is tuned for; each mode has a preset `PoolConfiguration`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum ManagerMode {
    /// Many short requests with a tight latency budget (0.2 s acquire timeout).
    McpServer,
    /// Long-running training jobs: fewer connections, patient waits, HA.
    MlTraining,
    /// Administrative tools: a small pool, long waits, HA.
    Admin,
    /// Sync-heavy callers (compat adapters) that burst: large overflow.
    SyncHeavy,
    /// General async services; the default.
    #[default]
    AsyncModern,
    /// Services that must ride out failover: large pool and overflow, HA and breaker.
    HighAvailability,
}

impl ManagerMode {
    /// Every manager mode, in declaration order.
    pub const ALL: [Self; 6] = [
        Self::McpServer,
        Self::MlTraining,
        Self::Admin,
        Self::SyncHeavy,
        Self::AsyncModern,
        Self::HighAvailability,
    ];

    /// A stable snake_case name (`mcp_server`, `async_modern`...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::McpServer => "mcp_server",
            Self::MlTraining => "ml_training",
            Self::Admin => "admin",
            Self::SyncHeavy => "sync_heavy",
            Self::AsyncModern => "async_modern",
            Self::HighAvailability => "high_availability",
        }
    }

    /// The `application_name` a manager of this mode reports to the server (`ucm_<mode>`).
    pub fn application_name(self) -> String {
        format!("ucm_{}", self.as_str())
    }
}

impl fmt::Display for ManagerMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ManagerMode {
    type Err = Error;

    /// Accepts the snake_case name, kebab-case, or the variant name, in any case
    /// (`mcp_server`, `mcp-server`, `McpServer`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let folded: String =
            s.chars().filter(|c| *c != '_' && *c != '-').flat_map(char::to_lowercase).collect();
        Self::ALL.into_iter().find(|mode| mode.as_str().replace('_', "") == folded).ok_or_else(
            || {
                let names: Vec<_> = Self::ALL.iter().map(|m| m.as_str()).collect();
                Error::config(
                    "mode",
                    format!("unknown mode {s:?}; expected one of {}", names.join(", ")),
                )
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_in_every_spelling() {
        for mode in ManagerMode::ALL {
            let variant = format!("{mode:?}");
            for spelling in [
                mode.as_str().to_owned(),
                mode.as_str().replace('_', "-"),
                variant.clone(),
                variant.to_uppercase(),
            ] {
                assert_eq!(spelling.parse::<ManagerMode>().unwrap(), mode, "{spelling}");
            }
        }
    }

    #[test]
    fn unknown_mode_lists_the_choices() {
        let err = "turbo".parse::<ManagerMode>().unwrap_err().to_string();
        assert!(err.contains("unknown mode \"turbo\""), "{err}");
        assert!(err.contains("mcp_server"), "{err}");
    }

    #[test]
    fn application_names_follow_the_mode() {
        assert_eq!(ManagerMode::McpServer.application_name(), "ucm_mcp_server");
        assert_eq!(ManagerMode::default(), ManagerMode::AsyncModern);
        assert!(ConnectionMode::ReadOnly.is_read_only());
        assert!(!ConnectionMode::Transactional.is_read_only());
    }
}
