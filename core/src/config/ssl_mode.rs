//! `SslMode`: whether and how a connection uses TLS, in libpq's vocabulary, parsed from PostgreSQL's and MySQL's spellings.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// Whether and how a connection uses TLS, in libpq's vocabulary (`sslmode`).
///
/// Parsed from PostgreSQL's `sslmode=` and MySQL's `ssl-mode=`/`sslmode=`; both vocabularies
/// are accepted for both kinds, case-insensitively, with `-` and `_` interchangeable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SslMode {
    /// No TLS (`disable`, MySQL `DISABLED`). The default for local hosts and SQLite.
    Disable,
    /// Plain first, TLS if the server insists (`allow`).
    Allow,
    /// TLS if the server offers it, plain otherwise (`prefer`, MySQL `PREFERRED`).
    /// The default for every non-local host.
    Prefer,
    /// TLS or fail, without checking the certificate (`require`, MySQL `REQUIRED`).
    Require,
    /// TLS with a certificate signed by a trusted CA (`verify-ca`, MySQL `VERIFY_CA`).
    VerifyCa,
    /// TLS with a trusted certificate whose name matches the host (`verify-full`, MySQL
    /// `VERIFY_IDENTITY`).
    VerifyFull,
}

impl SslMode {
    /// Every mode, from least to most strict.
    pub const ALL: [Self; 6] =
        [Self::Disable, Self::Allow, Self::Prefer, Self::Require, Self::VerifyCa, Self::VerifyFull];

    /// libpq's spelling: `disable`, `allow`, `prefer`, `require`, `verify-ca`, `verify-full`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Allow => "allow",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }

    /// MySQL's `ssl-mode` spelling; MySQL has no `allow`, whose nearest equivalent is `PREFERRED`.
    pub fn as_mysql_str(self) -> &'static str {
        match self {
            Self::Disable => "DISABLED",
            Self::Allow | Self::Prefer => "PREFERRED",
            Self::Require => "REQUIRED",
            Self::VerifyCa => "VERIFY_CA",
            Self::VerifyFull => "VERIFY_IDENTITY",
        }
    }

    /// Whether the connection fails rather than fall back to plain text.
    pub fn requires_tls(self) -> bool {
        matches!(self, Self::Require | Self::VerifyCa | Self::VerifyFull)
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SslMode {
    type Err = Error;

    /// Accepts libpq's and MySQL's names in any case: `disable`/`DISABLED`, `allow`,
    /// `prefer`/`PREFERRED`, `require`/`REQUIRED`, `verify-ca`/`VERIFY_CA`,
    /// `verify-full`/`VERIFY_IDENTITY`.
    fn from_str(s: &str) -> Result<Self> {
        let folded = s.trim().to_ascii_lowercase().replace('_', "-");
        Ok(match folded.as_str() {
            "disable" | "disabled" => Self::Disable,
            "allow" => Self::Allow,
            "prefer" | "preferred" => Self::Prefer,
            "require" | "required" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" | "verify-identity" => Self::VerifyFull,
            // The value is not echoed: it came out of a URL, and a mangled URL can put a
            // piece of a password anywhere.
            _ => {
                return Err(Error::config(
                    "sslmode",
                    "unknown TLS mode; use one of disable, allow, prefer, require, verify-ca, \
                     verify-full (MySQL spellings DISABLED, PREFERRED, REQUIRED, VERIFY_CA, \
                     VERIFY_IDENTITY also work)",
                ));
            }
        })
    }
}

/// Serialises as [`SslMode::as_str`].
#[cfg(feature = "serde")]
impl serde::Serialize for SslMode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}
