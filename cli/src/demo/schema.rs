//! The demo's schema: two tables named for this run, created, filled and dropped, and every statement the demo sends, by name.

use ucm::{ConnectionManagerProtocol, ConnectionMode, DatabaseKind, Manager, ProtocolExt};
use ucm_kernel::backend::Backend;

/// Two tables whose names are unique to this run, on one database.
pub(super) struct Schema {
    accounts: String,
    transfers: String,
    pub(super) kind: DatabaseKind,
}

/// Every statement of the workload and the conflict, written once for the schema's
/// database (its placeholders: `$1` on PostgreSQL, `?` elsewhere).
#[derive(Clone)]
pub(super) struct Statements {
    /// One account's balance, by id.
    pub(super) read_balance: String,
    /// A new owner name for one account: owner, id.
    pub(super) set_owner: String,
    /// Takes an amount from one account: amount, id.
    pub(super) debit: String,
    /// Adds an amount to one account: amount, id.
    pub(super) credit: String,
    /// Records a transfer: from, to, amount, when.
    pub(super) record_transfer: String,
    /// Takes 5 from one account: id (the conflict's first step).
    pub(super) debit_five: String,
    /// Adds 5 to one account: id (the conflict's second step).
    pub(super) credit_five: String,
}

impl Schema {
    /// The schema for this process on a database of `kind`.
    pub(super) fn new(kind: DatabaseKind) -> Self {
        Self {
            accounts: format!("ucm_demo_accounts_{}", std::process::id()),
            transfers: format!("ucm_demo_transfers_{}", std::process::id()),
            kind,
        }
    }

    /// The `n`th placeholder for the schema's database.
    fn placeholder(&self, n: usize) -> String {
        if self.kind == DatabaseKind::Postgres { format!("${n}") } else { "?".to_owned() }
    }

    /// The ten richest accounts (what the cache phase reads).
    pub(super) fn top_accounts(&self) -> String {
        format!("SELECT id, balance FROM {} ORDER BY balance DESC, id LIMIT 10", self.accounts)
    }

    /// The workload's statements on this schema.
    pub(super) fn statements(&self) -> Statements {
        let (accounts, p) = (&self.accounts, |n| self.placeholder(n));
        Statements {
            read_balance: format!("SELECT balance FROM {accounts} WHERE id = {}", p(1)),
            set_owner: format!("UPDATE {accounts} SET owner = {} WHERE id = {}", p(1), p(2)),
            debit: format!(
                "UPDATE {accounts} SET balance = balance - {} WHERE id = {}",
                p(1),
                p(2)
            ),
            credit: format!(
                "UPDATE {accounts} SET balance = balance + {} WHERE id = {}",
                p(1),
                p(2)
            ),
            record_transfer: format!(
                "INSERT INTO {} (from_id, to_id, amount, at) VALUES ({}, {}, {}, {})",
                self.transfers,
                p(1),
                p(2),
                p(3),
                p(4)
            ),
            debit_five: format!("UPDATE {accounts} SET balance = balance - 5 WHERE id = {}", p(1)),
            credit_five: format!("UPDATE {accounts} SET balance = balance + 5 WHERE id = {}", p(1)),
        }
    }

    /// Creates both tables and `accounts` accounts of 1000 each, in one transaction.
    pub(super) async fn create<B: Backend>(
        &self,
        m: &Manager<B>,
        accounts: i64,
    ) -> anyhow::Result<()> {
        let timestamp =
            if self.kind == DatabaseKind::Postgres { "TIMESTAMPTZ" } else { "TIMESTAMP" };
        let create_accounts = format!(
            "CREATE TABLE {} (id BIGINT PRIMARY KEY, owner VARCHAR(64) NOT NULL, balance BIGINT NOT NULL)",
            self.accounts
        );
        let create_transfers = format!(
            "CREATE TABLE {} (from_id BIGINT NOT NULL, to_id BIGINT NOT NULL, amount BIGINT NOT NULL, at {timestamp} NOT NULL)",
            self.transfers
        );
        m.execute(ConnectionMode::ReadWrite, &create_accounts, &[]).await?;
        m.execute(ConnectionMode::ReadWrite, &create_transfers, &[]).await?;
        let insert_account = format!(
            "INSERT INTO {} (id, owner, balance) VALUES ({}, {}, {})",
            self.accounts,
            self.placeholder(1),
            self.placeholder(2),
            self.placeholder(3)
        );
        m.transaction(ConnectionMode::Batch, |tx| {
            let insert_account = insert_account.clone();
            Box::pin(async move {
                for id in 1..=accounts {
                    let owner = format!("owner {id}");
                    tx.execute(&insert_account, &[id.into(), owner.into(), 1_000_i64.into()])
                        .await?;
                }
                Ok(())
            })
        })
        .await?;
        Ok(())
    }

    /// Drops both tables, whatever state the demo left them in.
    pub(super) async fn drop<B: Backend>(&self, m: &Manager<B>) {
        for table in [&self.transfers, &self.accounts] {
            let drop_table = format!("DROP TABLE IF EXISTS {table}");
            let _ = m.execute(ConnectionMode::ReadWrite, &drop_table, &[]).await;
        }
    }

    /// The sum of every account's balance.
    pub(super) async fn total_balance<B: Backend>(&self, m: &Manager<B>) -> anyhow::Result<i64> {
        let balances = format!("SELECT balance FROM {}", self.accounts);
        let rows = m.fetch_all(ConnectionMode::ReadOnly, &balances, &[]).await?;
        Ok(rows.iter().map(|r| r.try_get::<i64>("balance")).sum::<Result<i64, _>>()?)
    }
}
