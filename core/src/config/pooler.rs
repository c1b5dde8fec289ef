//! `Pooler`: whether a PostgreSQL endpoint sits behind a transaction pooler (PgBouncer in transaction mode, Supabase's, Neon's, RDS Proxy), and the per-transaction `BEGIN` that replaces session state there.

use std::fmt;
use std::str::FromStr;

use super::DatabaseUrl;
use crate::DatabaseKind;
use crate::error::Error;

/// Whether connections reach PostgreSQL through a transaction pooler, which hands the
/// server connection to another client after every transaction.
///
/// Behind one, nothing may rest on the session: ucm then sets nothing session-wide (the
/// read-only switch and the deadlines become `SET LOCAL` in each transaction's `BEGIN`),
/// turns off sqlx's named-statement cache, and runs every statement outside an explicit
/// transaction inside a short one of its own (`BEGIN READ ONLY` for `ReadOnly`), since a
/// driver's extended-protocol round trips (parse, then bind) may otherwise land on two
/// different server connections.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub enum Pooler {
    /// Read it from the URL (the default): its `pooler=transaction` (or `none`) parameter,
    /// else recognised from the endpoint: port 6432 (PgBouncer's), a host
    /// under `pooler.supabase.com`, a Neon host with `-pooler.`, an RDS Proxy host
    /// (`.proxy-` under `rds.amazonaws.com`).
    #[default]
    Auto,
    /// A direct connection, or a session pooler: session state is kept.
    None,
    /// A transaction pooler.
    Transaction,
}

impl Pooler {
    /// Whether connections to `url` go through a transaction pooler (PostgreSQL only).
    pub fn is_transaction_pooled(self, url: &DatabaseUrl) -> bool {
        if url.kind() != DatabaseKind::Postgres {
            return false;
        }
        match self {
            Self::None => false,
            Self::Transaction => true,
            Self::Auto => match url.param("pooler").map(str::parse::<Self>) {
                Some(Ok(named)) => named == Self::Transaction,
                _ => recognised(url),
            },
        }
    }

    /// The name used in configuration (`auto`, `none`, `transaction`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::None => "none",
            Self::Transaction => "transaction",
        }
    }
}

/// Whether `url` names a well-known transaction pooler.
fn recognised(url: &DatabaseUrl) -> bool {
    let host = url.host().unwrap_or_default().to_ascii_lowercase();
    url.port() == Some(6432)
        || host.ends_with(".pooler.supabase.com")
        || (host.contains("-pooler.") && host.contains("neon"))
        || (host.contains(".proxy-") && host.ends_with(".rds.amazonaws.com"))
}

impl fmt::Display for Pooler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Pooler {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "none" | "session" | "off" => Ok(Self::None),
            "transaction" | "pgbouncer" => Ok(Self::Transaction),
            other => Err(Error::config(
                "pooler",
                format!("{other:?} is not a pooler mode; use auto, none or transaction"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poolers_are_recognised_from_the_url_and_named_in_configuration() {
        let pooled =
            |url: &str| Pooler::Auto.is_transaction_pooled(&DatabaseUrl::parse(url).unwrap());
        assert!(pooled("postgres://app@127.0.0.1:6432/app"));
        assert!(pooled("postgres://app@aws-0-eu-west-1.pooler.supabase.com:5432/postgres"));
        assert!(pooled("postgres://app@ep-cool-1234-pooler.eu-central-1.aws.neon.tech/app"));
        assert!(pooled("postgres://app@db.proxy-abc123.eu-west-1.rds.amazonaws.com/app"));
        assert!(!pooled("postgres://app@127.0.0.1:5432/app"));
        assert!(pooled("postgres://app@127.0.0.1:5439/app?pooler=transaction"));
        assert!(!pooled("postgres://app@127.0.0.1:6432/app?pooler=none"));
        let bad = DatabaseUrl::parse("postgres://app@127.0.0.1/app?pooler=bouncy").unwrap_err();
        assert!(bad.to_string().contains("auto, none or transaction"), "{bad}");
        assert!(!pooled("mysql://app@127.0.0.1:6432/app"), "PostgreSQL only");
        let direct = DatabaseUrl::parse("postgres://app@127.0.0.1:5432/app").unwrap();
        assert!(Pooler::Transaction.is_transaction_pooled(&direct));
        assert!(
            !Pooler::None
                .is_transaction_pooled(&DatabaseUrl::parse("postgres://a@h:6432/d").unwrap())
        );
        assert_eq!("Transaction".parse::<Pooler>().unwrap(), Pooler::Transaction);
        let error = "bouncy".parse::<Pooler>().unwrap_err().to_string();
        assert!(error.contains("auto, none or transaction"), "{error}");
    }
}
