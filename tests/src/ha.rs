//! The PostgreSQL primary/standby pair that `cargo xtask test` starts, as the high-availability tests see it: found from the environment, locked per test, and driven (stop, start, freeze, promote, repair) through `ucm_pg_pair`, the harness xtask makes it with.
//!
//! The pair is two real servers (127.0.0.1:54330 and 54331) shared by every HA test. A test
//! takes [`HaCluster::lock`], then calls [`HaCluster::ensure_pair`], which repairs whatever
//! the previous test left (a stopped server, a promoted standby, paused replay) and says
//! which server is the primary now: that may change from test to test, since a test that
//! promoted the standby leaves it the primary ([`Primary::Either`]). Every command is
//! printed to standard error first, so a failing test's output shows what was done to the
//! pair; a command that fails panics with its command line and its output.

use std::{
    env,
    fs::File,
    path::{Path, PathBuf},
    process::Command,
    sync::{Mutex, MutexGuard, OnceLock, PoisonError},
};

pub use ucm_pg_pair::Node;
use ucm_pg_pair::{Pair, Primary, Servers};

/// The HA pair from the environment that `cargo xtask test` exports.
#[derive(Debug, Clone)]
pub struct HaCluster {
    /// The servers, in the order xtask made them (54330, made the primary; 54331), and how
    /// to run their programs.
    pair: Pair,
}

/// A node frozen by [`HaCluster::freeze`]; thawed when dropped.
#[derive(Debug)]
pub struct Frozen {
    pids: Vec<u32>,
    port: u16,
}

impl Drop for Frozen {
    fn drop(&mut self) {
        signal(&self.pids, "CONT");
        eprintln!("ha: thawed {}", self.port);
    }
}

/// Sends `SIG<name>` to `pids` (those that exited meanwhile are skipped by `kill`).
fn signal(pids: &[u32], name: &str) {
    let status =
        Command::new("kill").arg(format!("-{name}")).args(pids.iter().map(u32::to_string)).status();
    if let Err(e) = status {
        eprintln!("ha: kill -{name} failed: {e}");
    }
}

impl HaCluster {
    /// The pair from `HA_PRIMARY_URL`, `HA_REPLICA_URL`, `HA_PG_BIN`, `HA_PRIMARY_DIR`,
    /// `HA_REPLICA_DIR` and `HA_RUN_AS` (empty: the current user). When they are missing,
    /// prints why and returns `None` (the test then passes vacuously), unless `CI` is set:
    /// then it panics, because CI must run everything.
    pub fn find() -> Option<Self> {
        let var = |name: &str| env::var(name).ok().filter(|v| !v.trim().is_empty());
        let names =
            ["HA_PRIMARY_URL", "HA_REPLICA_URL", "HA_PG_BIN", "HA_PRIMARY_DIR", "HA_REPLICA_DIR"];
        let values = names.map(var);
        let missing: Vec<&str> =
            names.iter().zip(&values).filter(|(_, v)| v.is_none()).map(|(name, _)| *name).collect();
        if !missing.is_empty() {
            let missing = missing.join(", ");
            assert!(
                !is_ci(),
                "{missing} not set and CI is: run the tests through `cargo xtask test`, which \
                 starts the HA pair"
            );
            eprintln!(
                "skipped: {missing} not set (run `cargo xtask test`, which starts the HA pair, \
                 or export what `cargo xtask services --ha` prints)"
            );
            return None;
        }
        let [primary_url, replica_url, bin, primary_dir, replica_dir] =
            values.map(Option::unwrap_or_default);
        let node =
            |url: String, dir: String| Node { url: url.clone(), ..Node::new(port_of(&url), dir) };
        let servers = Servers { bin: PathBuf::from(bin), run_as: var("HA_RUN_AS"), quiet: false };
        Some(Self {
            pair: Pair {
                nodes: [node(primary_url, primary_dir), node(replica_url, replica_dir)],
                servers,
            },
        })
    }

    /// Serialises the HA tests: they all change the one shared pair. Hold the guard for the
    /// whole test.
    ///
    /// Within this process it is a `std` mutex, held across `.await` on purpose: each
    /// `#[tokio::test]` has its own runtime on its own thread, so a test waiting here blocks
    /// only itself (clippy's `await_holding_lock` then needs an `allow` saying so). A test that
    /// panics poisons the mutex; the next test takes it anyway, since `ensure_pair` repairs
    /// whatever it left. Across processes, the first call also takes `ha.lock` beside the data
    /// directories and keeps it until the process exits, so another test binary, a second
    /// `cargo test`, or `cargo xtask services --ha` waits instead of changing the pair under
    /// this one's tests.
    pub fn lock() -> MutexGuard<'static, ()> {
        static LOCK: Mutex<()> = Mutex::new(());
        static PAIR_FILE: OnceLock<Option<File>> = OnceLock::new();
        let guard = LOCK.lock().unwrap_or_else(PoisonError::into_inner);
        PAIR_FILE.get_or_init(|| {
            let dir = env::var_os("HA_PRIMARY_DIR").filter(|dir| !dir.is_empty())?;
            Some(ucm_pg_pair::lock_beside(Path::new(&dir)).unwrap_or_else(|e| panic!("{e}")))
        });
        guard
    }

    /// Both servers, 54330 first; which one is the primary is what [`Self::ensure_pair`] says.
    pub fn nodes(&self) -> &[Node; 2] {
        &self.pair.nodes
    }

    /// Brings the pair to one running primary and one running standby streaming from it with
    /// replay not paused, whichever server is which ([`Pair::ensure`] with
    /// [`Primary::Either`]), and returns `(primary, standby)` once the standby has replayed
    /// everything the primary wrote. Panics when neither server can be made a primary.
    pub fn ensure_pair(&self) -> (Node, Node) {
        let ensured = self.pair.ensure(Primary::Either).unwrap_or_else(|e| panic!("{e}"));
        (ensured.primary, ensured.standby)
    }

    /// Stops `node` with `pg_ctl stop -m <mode>` and waits until it is down. `mode` is
    /// `"fast"` (disconnects clients, clean shutdown), `"immediate"` (a crash, as clients and
    /// WAL see it) or `"smart"` (waits for clients to leave). Does nothing when it is already
    /// stopped.
    pub fn stop(&self, node: &Node, mode: &str) {
        self.pair.servers.stop(node, mode).unwrap_or_else(|e| panic!("{e}"));
    }

    /// Starts `node` as `cargo xtask services --ha` does and waits until it accepts
    /// connections. Does nothing when it already runs. Whether it comes up as a primary or a
    /// standby is up to its data directory (`standby.signal`).
    pub fn start(&self, node: &Node) {
        self.pair.servers.start(node).unwrap_or_else(|e| panic!("{e}"));
    }

    /// Promotes the standby `node` with `pg_ctl -w promote`, waiting until it accepts writes.
    /// Panics when it is not a standby.
    pub fn promote(&self, node: &Node) {
        self.pair.servers.promote(node).unwrap_or_else(|e| panic!("{e}"));
    }

    /// Freezes every process of `node` with SIGSTOP: its sockets stay open and nothing
    /// answers, as with a paused VM, a storage hang or a one-way partition. The returned
    /// guard thaws it (SIGCONT) when dropped, a failing test included.
    pub fn freeze(&self, node: &Node) -> Frozen {
        let postmaster = std::fs::read_to_string(node.dir.join("postmaster.pid"))
            .ok()
            .and_then(|pid| pid.lines().next().and_then(|line| line.trim().parse::<u32>().ok()))
            .unwrap_or_else(|| panic!("{} runs no postmaster to freeze", node.port));
        let children = self
            .pair
            .servers
            .run(Command::new("pgrep").args(["-P", &postmaster.to_string()]), false)
            .unwrap_or_else(|e| panic!("{e}"));
        let mut pids = vec![postmaster];
        pids.extend(children.lines().filter_map(|line| line.trim().parse::<u32>().ok()));
        signal(&pids, "STOP");
        eprintln!("ha: froze {} ({} processes)", node.port, pids.len());
        Frozen { pids, port: node.port }
    }

    /// Whether `node`'s postmaster runs (`pg_ctl status`).
    pub fn is_running(&self, node: &Node) -> bool {
        self.pair.servers.is_running(node)
    }

    /// Runs `sql` in database `test` on `node` with `psql` and returns its output: unaligned,
    /// tuples only, trimmed (`select 1, 2` gives `1|2`). Panics with psql's error on failure.
    pub fn psql(&self, node: &Node, sql: &str) -> String {
        self.try_psql(node, sql).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Self::psql`] returning the error (command line and psql's message) instead, for
    /// servers that may be down.
    pub fn try_psql(&self, node: &Node, sql: &str) -> Result<String, String> {
        self.pair.servers.psql(node, "test", sql, false)
    }

    /// `pg_is_in_recovery()` on `node`: `Some(true)` for a standby, `Some(false)` for a
    /// primary, `None` when it does not answer.
    pub fn in_recovery(&self, node: &Node) -> Option<bool> {
        self.pair.servers.in_recovery(node)
    }

    /// Waits until `standby` has replayed everything `primary` has written so far, so what a
    /// test wrote on the primary is visible on the standby. Panics after 30 s.
    pub fn wait_caught_up(&self, primary: &Node, standby: &Node) {
        self.pair.wait_caught_up(primary, standby).unwrap_or_else(|e| panic!("{e}"));
    }
}

/// Whether `CI` is set, non-empty, and not `false` or `0` (as xtask decides).
fn is_ci() -> bool {
    env::var("CI").is_ok_and(|v| !matches!(v.trim(), "" | "false" | "0"))
}

/// The port of a URL such as `postgres://postgres@127.0.0.1:54330/test`.
fn port_of(url: &str) -> u16 {
    let authority = url.split_once("://").map(|(_, rest)| rest.split('/').next().unwrap_or(rest));
    let port = authority.and_then(|a| a.rsplit_once(':')).and_then(|(_, p)| p.parse().ok());
    port.unwrap_or_else(|| panic!("no port in {url:?}: expected postgres://user@host:port/db"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_of_reads_the_authority_port() {
        let cases = [
            ("postgres://postgres@127.0.0.1:54330/test", 54330),
            ("postgres://u:secret@localhost:5432/db?sslmode=disable", 5432),
            ("postgres://127.0.0.1:1", 1),
        ];
        for (url, port) in cases {
            assert_eq!(port_of(url), port, "url {url:?}");
        }
    }
}
