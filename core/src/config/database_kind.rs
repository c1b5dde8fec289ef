//! `DatabaseKind`: the database engine a URL points at, and the SQL that differs between engines (the read-only switch, `BEGIN` for writers, the replication probe).

use std::fmt;

/// The database engine a URL points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DatabaseKind {
    /// PostgreSQL: `postgres://`, `postgresql://`, `postgresql+asyncpg://`, `postgresql+psycopg://`,
    /// `postgresql+psycopg2://`.
    Postgres,
    /// MySQL or MariaDB: `mysql://`, `mariadb://`, `mysql+pymysql://`, `mysql+aiomysql://`,
    /// `mysql+asyncmy://`.
    MySql,
    /// SQLite: `sqlite://PATH`, `sqlite:PATH`, `sqlite::memory:`, `sqlite://:memory:`.
    Sqlite,
}

impl DatabaseKind {
    /// Every kind, in declaration order.
    pub const ALL: [Self; 3] = [Self::Postgres, Self::MySql, Self::Sqlite];

    /// The OpenTelemetry `db.system.name` value: `postgresql`, `mysql` or `sqlite`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Postgres => "postgresql",
            Self::MySql => "mysql",
            Self::Sqlite => "sqlite",
        }
    }

    /// The statement that makes a session refuse (`on`) or accept writes, enforced by the
    /// database: every backend switches read-only sessions with it.
    pub fn read_only_statement(self, on: bool) -> &'static str {
        match (self, on) {
            (Self::Postgres, true) => "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
            (Self::Postgres, false) => "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
            (Self::MySql, true) => "SET SESSION TRANSACTION READ ONLY",
            (Self::MySql, false) => "SET SESSION TRANSACTION READ WRITE",
            (Self::Sqlite, true) => "PRAGMA query_only = ON",
            (Self::Sqlite, false) => "PRAGMA query_only = OFF",
        }
    }

    /// The statement that opens a transaction for `mode` (the session's read-only setting
    /// applies). SQLite writers take the write lock up front (`BEGIN IMMEDIATE`): a deferred
    /// transaction that later writes must upgrade its lock, and that upgrade fails with
    /// `SQLITE_BUSY` whatever the busy timeout, where `IMMEDIATE` queues on the timeout.
    pub fn begin_statement(self, mode: crate::ConnectionMode) -> &'static str {
        match self {
            Self::Postgres => "BEGIN",
            Self::MySql => "START TRANSACTION",
            Self::Sqlite if mode.is_read_only() => "BEGIN",
            Self::Sqlite => "BEGIN IMMEDIATE",
        }
    }

    /// The query that tells where a server stands in replication, read by
    /// [`ReplicationStatus::from_row`](crate::connector::ReplicationStatus::from_row):
    /// `in_recovery` (a PostgreSQL standby, or a MySQL server with `read_only` set) and
    /// `lag_seconds` (how far a standby's replay is behind what it received, as the age of
    /// its last replayed commit, or of the server's start when it has replayed none since;
    /// zero when it has replayed everything it received, so an idle primary does not look
    /// like lag; NULL, unknown, when it receives no stream: an archive-only standby, or a
    /// WAL receiver not started yet) and `wal_position` (PostgreSQL: a primary's WAL write
    /// position, a standby's replay position, in bytes; the health loop compares them to
    /// find a standby that stopped receiving). `None` for SQLite, which has no replication.
    pub fn replication_query(self) -> Option<&'static str> {
        match self {
            Self::Postgres => Some(
                "SELECT pg_is_in_recovery() AS in_recovery, \
                 CASE WHEN NOT pg_is_in_recovery() THEN NULL \
                 WHEN pg_last_wal_receive_lsn() IS NULL THEN NULL \
                 WHEN pg_last_wal_receive_lsn() <= pg_last_wal_replay_lsn() THEN 0::float8 \
                 ELSE GREATEST(EXTRACT(EPOCH FROM now() - COALESCE(pg_last_xact_replay_timestamp(), pg_postmaster_start_time()))::float8, 0) \
                 END AS lag_seconds, \
                 ((CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() \
                 ELSE pg_current_wal_lsn() END) - '0/0'::pg_lsn)::float8 AS wal_position",
            ),
            // MySQL's lag lives in SHOW REPLICA STATUS, which needs the REPLICATION CLIENT
            // privilege and does not run as a prepared statement everywhere; read_only is
            // what MySQL failover tooling (orchestrator, MHA) reads as the role.
            Self::MySql => Some(
                "SELECT @@global.read_only AS in_recovery, NULL AS lag_seconds, NULL AS wal_position",
            ),
            Self::Sqlite => None,
        }
    }

    /// The server's well-known port (5432, 3306); `None` for SQLite, which has no server.
    pub fn default_port(self) -> Option<u16> {
        match self {
            Self::Postgres => Some(5432),
            Self::MySql => Some(3306),
            Self::Sqlite => None,
        }
    }
}

impl fmt::Display for DatabaseKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Serialises as [`DatabaseKind::as_str`].
#[cfg(feature = "serde")]
impl serde::Serialize for DatabaseKind {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}
