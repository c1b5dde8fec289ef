//! Control of the PostgreSQL primary/standby pair that `cargo xtask test` starts, for the high-availability tests: find it, stop, start and promote its servers, and repair it.
//!
//! The pair is two real servers (127.0.0.1:54330 and 54331, made by `xtask/src/services/ha.rs`)
//! shared by every HA test. A test takes [`HaCluster::lock`], then calls
//! [`HaCluster::ensure_pair`], which repairs whatever the previous test left (a stopped server,
//! a promoted standby, paused replay) and says which server is the primary now: that may
//! change from test to test.
//!
//! Only `std`, no async: the servers are driven with `pg_ctl`, `pg_basebackup` and `psql`, and
//! every command is printed to standard error first, so a failing test's output shows what
//! was done to the pair. A command that fails panics with its command line and its output.
//! The lock is also a file lock, `ha.lock` beside the data directories, which xtask takes
//! too: two processes never change the pair at once.

use std::{
    env,
    fs::{self, File, OpenOptions, TryLockError},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{Mutex, MutexGuard, OnceLock, PoisonError},
    thread,
    time::{Duration, Instant},
};

/// One server of the pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Its TCP port on 127.0.0.1.
    pub port: u16,
    /// Its data directory (absolute).
    pub dir: PathBuf,
    /// Its URL, for database `test`: `postgres://postgres@127.0.0.1:<port>/test`.
    pub url: String,
}

/// The HA pair from the environment that `cargo xtask test` exports, and how to run its
/// server programs.
#[derive(Debug, Clone)]
pub struct HaCluster {
    /// The servers, in the order xtask made them: 54330 (made the primary), 54331.
    nodes: [Node; 2],
    /// The PostgreSQL server's bin directory (`HA_PG_BIN`).
    bin: PathBuf,
    /// The user the server programs run as (`HA_RUN_AS`); `None` for the current user.
    run_as: Option<String>,
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

/// How long a standby that is otherwise right may take to stream from the primary before
/// [`HaCluster::ensure_pair`] rebuilds it. Its WAL receiver retries a lost primary every
/// `wal_retrieve_retry_interval` (500 ms as we start it, 5 s by default).
const STREAM_GRACE: Duration = Duration::from_secs(10);

/// How long a standby may take to stream after a rebuild, or to replay what the primary wrote.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a running server may take to answer queries (it may still be starting up).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

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
            |url: String, dir: String| Node { port: port_of(&url), dir: PathBuf::from(dir), url };
        Some(Self {
            nodes: [node(primary_url, primary_dir), node(replica_url, replica_dir)],
            bin: PathBuf::from(bin),
            run_as: var("HA_RUN_AS"),
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
        PAIR_FILE.get_or_init(lock_pair_file);
        guard
    }

    /// Both servers, 54330 first; which one is the primary is what [`Self::ensure_pair`] says.
    pub fn nodes(&self) -> &[Node; 2] {
        &self.nodes
    }

    /// Brings the pair to one running primary and one running standby streaming from it with
    /// replay not paused, whichever server is which, and returns `(primary, standby)` once the
    /// standby has replayed everything the primary wrote.
    ///
    /// What already holds is kept: stopped servers are started, paused replay is resumed.
    /// When both servers are primaries (a test promoted the standby), the one on the newer
    /// timeline stays primary, as after a real failover; a standby that does not stream from
    /// the primary, or a server that will not start, is rebuilt from the primary with
    /// `pg_basebackup`. Panics when neither server can be made a primary.
    pub fn ensure_pair(&self) -> (Node, Node) {
        let started = Instant::now();
        let roles = self.nodes.each_ref().map(|node| self.bring_up(node));
        let p = match roles {
            [Some(false), Some(true) | None] => 0,
            [Some(true) | None, Some(false)] => 1,
            [Some(false), Some(false)] => {
                let [first, second] = self.nodes.each_ref().map(|node| self.timeline(node));
                eprintln!(
                    "ha: both servers are primaries (timelines {first} and {second}); keeping \
                     the newer"
                );
                usize::from(second > first)
            }
            // No primary: a standby becomes one, as a failover would do.
            [Some(true), _] => {
                self.promote(&self.nodes[0]);
                0
            }
            [None, Some(true)] => {
                self.promote(&self.nodes[1]);
                1
            }
            [None, None] => panic!(
                "neither HA server runs (see above); `cargo xtask services --ha` remakes the pair"
            ),
        };
        let (primary, standby) = (&self.nodes[p], &self.nodes[1 - p]);
        let problem = match roles[1 - p] {
            Some(true) => self.standby_problem(primary, standby),
            Some(false) => Some("it is a primary too".to_owned()),
            None => Some("it does not run".to_owned()),
        };
        let what = match problem {
            Some(why) => {
                eprintln!(
                    "ha: rebuilding {} as a standby of {}: {why}",
                    standby.port, primary.port
                );
                self.rebuild(primary, standby);
                format!("rebuilt {} ({why})", standby.port)
            }
            None => "kept the standby".to_owned(),
        };
        self.wait_caught_up(primary, standby);
        eprintln!(
            "ha: pair ready after {:.1} s: primary {}, standby {}; {what}",
            started.elapsed().as_secs_f64(),
            primary.port,
            standby.port
        );
        (primary.clone(), standby.clone())
    }

    /// Stops `node` with `pg_ctl stop -m <mode>` and waits until it is down. `mode` is
    /// `"fast"` (disconnects clients, clean shutdown), `"immediate"` (a crash, as clients and
    /// WAL see it) or `"smart"` (waits for clients to leave). Does nothing when it is already
    /// stopped.
    pub fn stop(&self, node: &Node, mode: &str) {
        assert!(
            matches!(mode, "smart" | "fast" | "immediate"),
            "stop mode {mode:?}: expected \"smart\", \"fast\" or \"immediate\""
        );
        if !self.is_running(node) {
            eprintln!("ha: {} is already stopped", node.port);
            return;
        }
        let mut stop = self.pg_ctl(node);
        stop.args(["-m", mode, "-w", "stop"]);
        run(&mut stop);
    }

    /// Starts `node` as `cargo xtask services --ha` does (`pg_ctl -w start`, log in
    /// `<dir>/log`) and waits until it accepts connections. Does nothing when it already
    /// runs. Whether it comes up as a primary or a standby is up to its data directory
    /// (`standby.signal`).
    pub fn start(&self, node: &Node) {
        if let Err(e) = self.try_start(node) {
            panic!("{e}");
        }
    }

    /// Promotes the standby `node` with `pg_ctl -w promote`, waiting until it accepts writes.
    /// Panics when it is not a standby.
    pub fn promote(&self, node: &Node) {
        let mut promote = self.pg_ctl(node);
        promote.args(["-w", "promote"]);
        run(&mut promote);
    }

    /// Freezes every process of `node` with SIGSTOP: its sockets stay open and nothing
    /// answers, as with a paused VM, a storage hang or a one-way partition. The returned
    /// guard thaws it (SIGCONT) when dropped, a failing test included.
    pub fn freeze(&self, node: &Node) -> Frozen {
        let postmaster = std::fs::read_to_string(node.dir.join("postmaster.pid"))
            .ok()
            .and_then(|pid| pid.lines().next().and_then(|line| line.trim().parse::<u32>().ok()))
            .unwrap_or_else(|| panic!("{} runs no postmaster to freeze", node.port));
        let children = run(Command::new("pgrep").args(["-P", &postmaster.to_string()]));
        let mut pids = vec![postmaster];
        pids.extend(children.lines().filter_map(|line| line.trim().parse::<u32>().ok()));
        signal(&pids, "STOP");
        eprintln!("ha: froze {} ({} processes)", node.port, pids.len());
        Frozen { pids, port: node.port }
    }

    /// Whether `node`'s postmaster runs (`pg_ctl status`).
    pub fn is_running(&self, node: &Node) -> bool {
        let mut status = self.pg_ctl(node);
        status.arg("status");
        exec(&mut status, false).is_ok()
    }

    /// Runs `sql` in database `test` on `node` with `psql` and returns its output: unaligned,
    /// tuples only, trimmed (`select 1, 2` gives `1|2`). Panics with psql's error on failure.
    pub fn psql(&self, node: &Node, sql: &str) -> String {
        self.try_psql(node, sql).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Self::psql`] returning the error (command line and psql's message) instead, for
    /// servers that may be down.
    pub fn try_psql(&self, node: &Node, sql: &str) -> Result<String, String> {
        exec(&mut self.psql_command(node, sql), false)
    }

    /// `pg_is_in_recovery()` on `node`: `Some(true)` for a standby, `Some(false)` for a
    /// primary, `None` when it does not answer.
    pub fn in_recovery(&self, node: &Node) -> Option<bool> {
        match self.try_psql(node, "select pg_is_in_recovery()").as_deref() {
            Ok("t") => Some(true),
            Ok("f") => Some(false),
            _ => None,
        }
    }

    /// Waits until `standby` has replayed everything `primary` has written so far, so what a
    /// test wrote on the primary is visible on the standby. Panics after 30 s.
    pub fn wait_caught_up(&self, primary: &Node, standby: &Node) {
        let lsn = self.psql(primary, "select pg_current_wal_lsn()");
        let sql = format!("select pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn");
        eprintln!(
            "ha: waiting up to {} s for {} to replay up to {lsn} (polling `{sql}`)",
            CATCH_UP_TIMEOUT.as_secs(),
            standby.port
        );
        let caught_up =
            poll(CATCH_UP_TIMEOUT, || self.quiet_psql(standby, &sql).is_ok_and(|a| a == "t"));
        if !caught_up {
            let state = self.try_psql(
                standby,
                "select pg_last_wal_replay_lsn(), pg_is_wal_replay_paused(), \
                 (select status from pg_stat_wal_receiver)",
            );
            panic!(
                "{} did not replay up to {lsn} of {} within {} s; replayed, paused, receiver: \
                 {state:?}\nlast lines of its log:\n{}",
                standby.port,
                primary.port,
                CATCH_UP_TIMEOUT.as_secs(),
                tail(&standby.dir.join("log"), 15)
            );
        }
    }

    /// Makes `node` run if it can, and says what it is: `Some(true)` a standby, `Some(false)`
    /// a primary, `None` when it has no data or will not start or answer (it is rebuilt).
    fn bring_up(&self, node: &Node) -> Option<bool> {
        if !node.dir.join("PG_VERSION").is_file() {
            eprintln!("ha: {} has no data directory in {}", node.port, node.dir.display());
            return None;
        }
        if let Err(e) = self.try_start(node) {
            eprintln!("ha: {} will not start: {e}", node.port);
            return None;
        }
        let sql = "select pg_is_in_recovery()";
        let mut answer = None;
        poll(ANSWER_TIMEOUT, || {
            answer = match self.quiet_psql(node, sql).as_deref() {
                Ok("t") => Some(true),
                Ok("f") => Some(false),
                _ => None,
            };
            answer.is_some()
        });
        if answer.is_none() {
            eprintln!("ha: {} runs but does not answer `{sql}`", node.port);
        }
        answer
    }

    /// Why the running `standby` is not a standby streaming from `primary`, or `None`;
    /// resumes paused replay on the way.
    fn standby_problem(&self, primary: &Node, standby: &Node) -> Option<String> {
        let ask = |node: &Node, sql: &str| self.try_psql(node, sql);
        let system = "select system_identifier from pg_control_system()";
        match (ask(standby, system), ask(primary, system)) {
            (Ok(a), Ok(b)) if a == b => {}
            (Ok(_), Ok(_)) => return Some("it is a copy of another cluster".to_owned()),
            (Err(e), _) | (_, Err(e)) => return Some(e),
        }
        match ask(standby, "show primary_conninfo") {
            Ok(conninfo) if names_port(&conninfo, primary.port) => {}
            Ok(conninfo) => return Some(format!("it follows another server ({conninfo:?})")),
            Err(e) => return Some(e),
        }
        if ask(standby, "select pg_is_wal_replay_paused()").as_deref() == Ok("t") {
            eprintln!("ha: {}'s replay is paused; resuming it", standby.port);
            if let Err(e) = ask(standby, "select pg_wal_replay_resume()") {
                return Some(e);
            }
        }
        if !self.wait_streaming(primary, standby, STREAM_GRACE) {
            return Some(format!(
                "it does not stream from {} within {} s",
                primary.port,
                STREAM_GRACE.as_secs()
            ));
        }
        None
    }

    /// Stops `standby`, empties its data directory, fills it with a base backup of `primary`
    /// that starts as a standby of it (`-R`), starts it and waits until it streams.
    fn rebuild(&self, primary: &Node, standby: &Node) {
        if self.is_running(standby) {
            self.stop(standby, "immediate");
        }
        let created = empty(&standby.dir);
        if let (true, Some(user)) = (created, &self.run_as) {
            // We just made the directory (someone deleted it), so we own it, not the server.
            let mut chown = Command::new("chown");
            chown.arg(format!("{user}:")).arg(&standby.dir);
            run(&mut chown);
        }
        let mut backup = self.server("pg_basebackup");
        backup
            .args(["-h", "127.0.0.1", "-p", &primary.port.to_string(), "-U", "postgres", "-D"])
            .arg(&standby.dir)
            // A fast checkpoint: the default spread one makes the backup wait minutes.
            .args(["-R", "-X", "stream", "--checkpoint=fast", "--no-sync"])
            .current_dir(&standby.dir);
        run(&mut backup);
        tidy_backup(&standby.dir);
        // PostgreSQL insists on a private data directory; the backup kept the directory's mode.
        fs::set_permissions(&standby.dir, fs::Permissions::from_mode(0o700))
            .unwrap_or_else(|e| panic!("chmod 700 {}: {e}", standby.dir.display()));
        self.start(standby);
        if !self.wait_streaming(primary, standby, CATCH_UP_TIMEOUT) {
            panic!(
                "{} rebuilt from {} does not stream after {} s; last lines of its log:\n{}",
                standby.port,
                primary.port,
                CATCH_UP_TIMEOUT.as_secs(),
                tail(&standby.dir.join("log"), 15)
            );
        }
    }

    /// Polls until `standby`'s WAL receiver streams from `primary`; `false` after `timeout`.
    fn wait_streaming(&self, primary: &Node, standby: &Node, timeout: Duration) -> bool {
        let expected = format!("streaming|{}", primary.port);
        let sql = "select status, sender_port from pg_stat_wal_receiver";
        eprintln!(
            "ha: waiting up to {} s for {} to stream from {} (polling `{sql}`)",
            timeout.as_secs(),
            standby.port,
            primary.port
        );
        poll(timeout, || self.quiet_psql(standby, sql).is_ok_and(|answer| answer == expected))
    }

    /// The timeline `node` (a primary) writes on: a promotion starts a new, higher one.
    fn timeline(&self, node: &Node) -> u32 {
        let file = self.psql(node, "select pg_walfile_name(pg_current_wal_lsn())");
        // A WAL file name starts with its timeline, 8 hex digits.
        file.get(..8)
            .and_then(|hex| u32::from_str_radix(hex, 16).ok())
            .unwrap_or_else(|| panic!("no timeline in WAL file name {file:?}"))
    }

    /// Starts `node` unless it runs; the error carries the end of its log.
    fn try_start(&self, node: &Node) -> Result<(), String> {
        if self.is_running(node) {
            return Ok(());
        }
        let log = node.dir.join("log");
        // The options `cargo xtask services --ha` starts the servers with: a standby retries
        // a lost primary every `wal_retrieve_retry_interval`, 5 s by default, and the tests
        // restart primaries often.
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c wal_retrieve_retry_interval=500ms",
            node.port,
            shell_quote(&node.dir.to_string_lossy())
        );
        let mut start = self.pg_ctl(node);
        start.arg("-l").arg(&log).args(["-o", &options, "-w", "start"]);
        exec(&mut start, false)
            .map(drop)
            .map_err(|e| format!("{e}\nlast lines of {}:\n{}", log.display(), tail(&log, 15)))
    }

    /// A server program from `HA_PG_BIN`, run as `HA_RUN_AS` when set: PostgreSQL refuses
    /// to run as root, so xtask, running as root, made the servers as `postgres`.
    fn server(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        match &self.run_as {
            Some(user) => {
                let mut command = Command::new("runuser");
                command.args(["-u", user, "--"]).arg(program);
                command
            }
            None => Command::new(program),
        }
    }

    /// `pg_ctl -D <dir>`, run from the data directory (which the server's user can enter).
    fn pg_ctl(&self, node: &Node) -> Command {
        let mut command = self.server("pg_ctl");
        command.arg("-D").arg(&node.dir).current_dir(&node.dir);
        command
    }

    /// `psql` over TCP as `postgres` (trust authentication on 127.0.0.1), as the current
    /// user: only the server programs need `HA_RUN_AS`.
    fn psql_command(&self, node: &Node, sql: &str) -> Command {
        let mut command = Command::new(self.bin.join("psql"));
        // `-X`: no ~/.psqlrc, whose settings could change the output; `-w`: never prompt.
        command
            .args(["-X", "-w", "-h", "127.0.0.1", "-p", &node.port.to_string(), "-U", "postgres"])
            .args(["-d", "test", "-tAc", sql])
            .env("PGCONNECT_TIMEOUT", "5");
        command
    }

    /// [`Self::try_psql`] without printing the command, for polls.
    fn quiet_psql(&self, node: &Node, sql: &str) -> Result<String, String> {
        exec(&mut self.psql_command(node, sql), true)
    }
}

/// Takes `ha.lock` beside `HA_PRIMARY_DIR` (where `cargo xtask services --ha` takes it too),
/// waiting while another process holds it; `None` when the variable is unset (the tests skip).
fn lock_pair_file() -> Option<File> {
    let dir = env::var_os("HA_PRIMARY_DIR").filter(|dir| !dir.is_empty())?;
    let path = Path::new(&dir).parent()?.join("ha.lock");
    let file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(&path)
        .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            eprintln!("ha: waiting for {}: another process uses the HA pair", path.display());
            file.lock().unwrap_or_else(|e| panic!("locking {}: {e}", path.display()));
        }
        Err(TryLockError::Error(e)) => panic!("locking {}: {e}", path.display()),
    }
    Some(file)
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

/// Whether a libpq connection string such as `user=postgres host=127.0.0.1 port=54330` names
/// `port`.
fn names_port(conninfo: &str, port: u16) -> bool {
    let wanted = format!("port={port}");
    conninfo.split_whitespace().any(|word| word.trim_matches('\'') == wanted)
}

/// Runs `command`, panicking with its command line and output when it fails; returns its
/// standard output, trimmed.
fn run(command: &mut Command) -> String {
    exec(command, false).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs `command`, printing it first unless `quiet`; its standard output, trimmed, or an
/// error with the command line and everything it printed.
fn exec(command: &mut Command, quiet: bool) -> Result<String, String> {
    let line = display(command);
    if !quiet {
        eprintln!("$ {line}");
    }
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("could not run `{line}`: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    if output.status.success() {
        return Ok(stdout);
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    Err(format!("`{line}` failed ({}):\n{}\n{stdout}", output.status, stderr.trim()))
}

/// `command` as a shell line, so it can be pasted to replay it.
fn display(command: &Command) -> String {
    let envs = command.get_envs().filter_map(|(key, value)| {
        Some(format!("{}={}", key.to_string_lossy(), shell_quote(&value?.to_string_lossy())))
    });
    let program = std::iter::once(shell_quote(&command.get_program().to_string_lossy()));
    let args = command.get_args().map(|arg| shell_quote(&arg.to_string_lossy()));
    envs.chain(program).chain(args).collect::<Vec<_>>().join(" ")
}

/// Quotes `word` for a POSIX shell, leaving plain words as they are.
fn shell_quote(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_-./:=,@%+".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Calls `check` every 100 ms until it says yes or `timeout` passes.
fn poll(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Empties `dir`, keeping the directory itself; `true` when it did not exist and was made.
fn empty(dir: &Path) -> bool {
    if !dir.exists() {
        fs::create_dir_all(dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        return true;
    }
    let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.unwrap_or_else(|e| panic!("listing {}: {e}", dir.display())).path();
        let removed =
            if path.is_dir() { fs::remove_dir_all(&path) } else { fs::remove_file(&path) };
        match removed {
            // Something the stopped server left may vanish on its own (its shared memory).
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                panic!("removing {}: {e}", path.display())
            }
            _ => {}
        }
    }
    false
}

/// Tidies a base backup. It copied what belongs to the source server's process, not its
/// data: the server log, and the socket lock files (`.s.PGSQL.<port>.lock`, there because `-k`
/// puts the sockets in the data directory), which name the source's postmaster; should that
/// PID belong to a live process when the copy starts, the copy refuses to start. And `-R`
/// appended a `primary_conninfo` to the source's own `postgresql.auto.conf`, which holds one
/// from every earlier rebuild; only the last one counts.
fn tidy_backup(dir: &Path) {
    let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()));
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name == "log" || name.starts_with(".s.PGSQL.") {
            let path = entry.path();
            fs::remove_file(&path).unwrap_or_else(|e| panic!("removing {}: {e}", path.display()));
        }
    }
    let auto_conf = dir.join("postgresql.auto.conf");
    let text = fs::read_to_string(&auto_conf)
        .unwrap_or_else(|e| panic!("reading {}: {e}", auto_conf.display()));
    let is_conninfo = |line: &&str| line.trim_start().starts_with("primary_conninfo");
    let last = text.lines().rfind(is_conninfo);
    let kept: Vec<&str> = text.lines().filter(|line| !is_conninfo(line)).chain(last).collect();
    fs::write(&auto_conf, kept.join("\n") + "\n")
        .unwrap_or_else(|e| panic!("writing {}: {e}", auto_conf.display()));
}

/// The last `lines` lines of a log file, or why it could not be read.
fn tail(path: &Path, lines: usize) -> String {
    match fs::read_to_string(path) {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(could not read {}: {e})", path.display()),
    }
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

    #[test]
    fn names_port_matches_whole_words() {
        let cases = [
            ("user=postgres host=127.0.0.1 port=54330 sslmode=prefer", true),
            ("host=127.0.0.1 port=543301", false),
            ("host=127.0.0.1 port=54331", false),
            ("", false),
        ];
        for (conninfo, expected) in cases {
            assert_eq!(names_port(conninfo, 54330), expected, "conninfo {conninfo:?}");
        }
    }
}
