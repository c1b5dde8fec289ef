//! The PostgreSQL primary/standby pair of ucm's high-availability tests, driven the same way by `cargo xtask services --ha` (which makes it) and by `ucm_tests::ha` (whose tests stop, freeze, promote and rebuild it).
//!
//! Only `std`: the servers are driven with `pg_ctl`, `pg_basebackup` and `psql`. Every
//! command is printed to standard error first unless [`Servers::quiet`], so a failing
//! test's output shows what was done to the pair. Errors are strings carrying the command
//! line, what it printed, and the end of the server's log where that helps.
//!
//! One repair, [`Pair::ensure`], serves both callers: whatever the last run left (a stopped
//! server, a promoted standby, both primaries, paused replay, a standby of another cluster),
//! it brings the pair to one running primary and one standby streaming from it, keeping what
//! already holds. xtask asks for the first node as the primary ([`Primary::First`]: the
//! variables it prints name 54330 the primary); the tests keep whichever is primary now
//! ([`Primary::Either`]: making the old primary a standby of a promoted one again costs a
//! switchover). `ha.lock` beside the data directories ([`Pair::lock`]) keeps two processes
//! from changing the pair at once.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// What a call that failed says: the command line and what it printed, or what went wrong.
pub type Result<T> = std::result::Result<T, String>;

/// How long a standby that is otherwise right may take to stream from the primary before it
/// is rebuilt. Its WAL receiver retries a lost primary every `wal_retrieve_retry_interval`
/// (500 ms as the servers are started here, 5 s by default).
const STREAM_GRACE: Duration = Duration::from_secs(10);

/// How long a standby may take to stream after a rebuild, or to replay what the primary wrote.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a running server may take to answer queries (it may still be starting up).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// One PostgreSQL server: its port on 127.0.0.1 and its data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Its TCP port on 127.0.0.1.
    pub port: u16,
    /// Its data directory (absolute).
    pub dir: PathBuf,
    /// Its URL for database `test` as `postgres` (trust authentication on 127.0.0.1); a test
    /// may point it through a proxy.
    pub url: String,
    /// Further `-c name=value` server settings it starts with (TLS, for one).
    pub settings: String,
}

impl Node {
    /// A node on `port` with its data in `dir`.
    pub fn new(port: u16, dir: impl Into<PathBuf>) -> Self {
        let url = format!("postgres://postgres@127.0.0.1:{port}/test");
        Self { port, dir: dir.into(), url, settings: String::new() }
    }

    /// Whether its data directory holds a cluster.
    pub fn has_data(&self) -> bool {
        self.dir.join("PG_VERSION").is_file()
    }

    /// Its server log.
    pub fn log(&self) -> PathBuf {
        self.dir.join("log")
    }
}

/// How to run PostgreSQL's programs on this machine.
#[derive(Debug, Clone)]
pub struct Servers {
    /// The server's bin directory (`initdb`, `pg_ctl`, `pg_basebackup`, `psql`).
    pub bin: PathBuf,
    /// The user the server programs run as (PostgreSQL refuses root); `None`: the current user.
    pub run_as: Option<String>,
    /// Print nothing but errors.
    pub quiet: bool,
}

/// Which node [`Pair::ensure`] leaves as the primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Primary {
    /// The first node: the other is rebuilt from it if it is not already its standby.
    First,
    /// Whichever is the primary now (the newer timeline when both are), as after a real
    /// failover.
    Either,
}

/// What [`Pair::ensure`] left: which node is which, and what it had to do.
#[derive(Debug, Clone)]
pub struct Ensured {
    /// The running primary.
    pub primary: Node,
    /// The standby streaming from it, caught up.
    pub standby: Node,
    /// What was repaired (started, promoted, rebuilt, resumed); empty when all held.
    pub changes: Vec<String>,
}

/// A primary/standby pair: two nodes and the programs that run them.
#[derive(Debug, Clone)]
pub struct Pair {
    /// The two servers, in the order they were made: the first was made the primary.
    pub nodes: [Node; 2],
    /// How to run their programs.
    pub servers: Servers,
}

impl Servers {
    /// Prints `message` to standard error unless quiet.
    pub fn say(&self, message: &str) {
        if !self.quiet {
            eprintln!("ha: {message}");
        }
    }

    /// A server program, run as [`Self::run_as`] when set.
    pub fn server(&self, program: &str) -> Command {
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
    pub fn pg_ctl(&self, node: &Node) -> Command {
        let mut command = self.server("pg_ctl");
        command.arg("-D").arg(&node.dir).current_dir(&node.dir);
        command
    }

    /// Runs `command`, printing it first unless quiet or `poll`; its standard output,
    /// trimmed, or an error with the command line and everything it printed.
    pub fn run(&self, command: &mut Command, poll: bool) -> Result<String> {
        let line = display(command);
        if !self.quiet && !poll {
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

    /// Makes a cluster in `node`'s (emptied) data directory: `postgres` trusted, UTF-8.
    ///
    /// # Errors
    /// When the directory cannot be emptied or `initdb` fails.
    pub fn initdb(&self, node: &Node) -> Result<()> {
        empty(&node.dir)?;
        let mut initdb = self.server("initdb");
        initdb
            .arg("-D")
            .arg(&node.dir)
            .args(["-U", "postgres", "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync"])
            .current_dir(&node.dir);
        self.run(&mut initdb, false).map(drop)
    }

    /// Whether `node`'s postmaster runs (`pg_ctl status`).
    pub fn is_running(&self, node: &Node) -> bool {
        self.run(self.pg_ctl(node).arg("status"), true).is_ok()
    }

    /// Starts `node` unless it runs (`pg_ctl -w start`, log in `<dir>/log`), with the options
    /// every HA server has: a standby retries a lost primary every 500 ms, not 5 s, since the
    /// tests restart primaries often. `Ok(true)` when it was started.
    ///
    /// # Errors
    /// When something else listens on its port, or it does not start (with the end of its
    /// log).
    pub fn start(&self, node: &Node) -> Result<bool> {
        if self.is_running(node) {
            return Ok(false);
        }
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, node.port));
        if TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok() {
            return Err(format!(
                "something else listens on 127.0.0.1:{}, not the server in {} (another \
                 worktree's HA pair?); stop it first",
                node.port,
                node.dir.display()
            ));
        }
        let log = node.log();
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c wal_retrieve_retry_interval=500ms{}",
            node.port,
            shell_quote(&node.dir.to_string_lossy()),
            node.settings
        );
        let mut start = self.pg_ctl(node);
        start.arg("-l").arg(&log).args(["-o", &options, "-w", "start"]);
        self.run(&mut start, false).map_err(|e| {
            format!(
                "{e}\nlast lines of {}:\n{}\n(its data is throwaway: deleting {} makes it anew)",
                log.display(),
                tail(&log, 15),
                node.dir.display()
            )
        })?;
        Ok(true)
    }

    /// Stops `node` with `pg_ctl stop -m <mode>` (`smart`, `fast` or `immediate`, a crash as
    /// clients and WAL see it) and waits until it is down; nothing when it is stopped.
    ///
    /// # Errors
    /// An unknown mode, or `pg_ctl`'s failure.
    pub fn stop(&self, node: &Node, mode: &str) -> Result<()> {
        if !matches!(mode, "smart" | "fast" | "immediate") {
            return Err(format!("stop mode {mode:?}: expected smart, fast or immediate"));
        }
        if !self.is_running(node) {
            self.say(&format!("{} is already stopped", node.port));
            return Ok(());
        }
        self.run(self.pg_ctl(node).args(["-m", mode, "-w", "stop"]), false).map(drop)
    }

    /// Promotes the standby `node` (`pg_ctl -w promote`), waiting until it accepts writes.
    ///
    /// # Errors
    /// `pg_ctl`'s failure, as when `node` is not a standby.
    pub fn promote(&self, node: &Node) -> Result<()> {
        self.run(self.pg_ctl(node).args(["-w", "promote"]), false).map(drop)
    }

    /// Runs `sql` in `database` on `node` with `psql` as `postgres`, as the current user (only
    /// the server programs need [`Self::run_as`]); its output unaligned, tuples only, trimmed
    /// (`select 1, 2` gives `1|2`). `poll`: not printed.
    ///
    /// # Errors
    /// psql's failure, with its message.
    pub fn psql(&self, node: &Node, database: &str, sql: &str, poll: bool) -> Result<String> {
        let mut command = Command::new(self.bin.join("psql"));
        // `-X`: no ~/.psqlrc, whose settings could change the output; `-w`: never prompt.
        command
            .args(["-X", "-w", "-h", "127.0.0.1", "-p", &node.port.to_string(), "-U", "postgres"])
            .args(["-d", database, "-tAc", sql])
            .env("PGCONNECT_TIMEOUT", "5");
        self.run(&mut command, poll)
    }

    /// A control query: database `postgres`, which exists on a cluster just made.
    fn ask(&self, node: &Node, sql: &str, poll: bool) -> Result<String> {
        self.psql(node, "postgres", sql, poll)
    }

    /// `pg_is_in_recovery()` on `node`: `Some(true)` for a standby, `Some(false)` for a
    /// primary, `None` when it does not answer.
    pub fn in_recovery(&self, node: &Node) -> Option<bool> {
        match self.ask(node, "select pg_is_in_recovery()", true).as_deref() {
            Ok("t") => Some(true),
            Ok("f") => Some(false),
            _ => None,
        }
    }
}

impl Pair {
    /// Takes `ha.lock` beside the first node's data directory ([`lock_beside`]).
    ///
    /// # Errors
    /// When the lock file cannot be opened or locked.
    pub fn lock(&self) -> Result<File> {
        lock_beside(&self.nodes[0].dir)
    }

    /// Brings the pair to one running primary and one running standby streaming from it with
    /// replay not paused, and returns `(primary, standby)` once the standby has replayed
    /// everything the primary wrote.
    ///
    /// What already holds is kept: stopped servers are started, paused replay is resumed.
    /// The primary is the one `which` asks for: a standby there is promoted; with
    /// [`Primary::Either`] and both servers primaries (a test promoted the standby), the one
    /// on the newer timeline, and with neither, a standby is promoted as a failover would.
    /// The other is rebuilt from the primary with `pg_basebackup` when it is not its
    /// streaming standby, or has no data, or will not start.
    ///
    /// # Errors
    /// When no server can be made the primary, or a rebuilt standby does not stream.
    pub fn ensure(&self, which: Primary) -> Result<Ensured> {
        let started = Instant::now();
        let mut changes = Vec::new();
        let roles = self.nodes.each_ref().map(|node| self.bring_up(node, &mut changes));
        let p = match (which, roles) {
            (Primary::First, [Some(_), _]) => 0,
            (Primary::First, [None, _]) => {
                return Err(format!(
                    "the primary on {} will not run (see above)",
                    self.nodes[0].port
                ));
            }
            (Primary::Either, [Some(false), Some(true) | None]) => 0,
            (Primary::Either, [Some(true) | None, Some(false)]) => 1,
            (Primary::Either, [Some(false), Some(false)]) => {
                let [first, second] = self.nodes.each_ref().map(|node| self.timeline(node));
                let [first, second] = [first?, second?];
                self.servers.say(&format!(
                    "both servers are primaries (timelines {first} and {second}); keeping the newer"
                ));
                usize::from(second > first)
            }
            (Primary::Either, [Some(true), _]) => 0,
            (Primary::Either, [None, Some(true)]) => 1,
            (Primary::Either, [None, None]) => {
                return Err("neither HA server runs (see above); `cargo xtask services --ha` \
                            remakes the pair"
                    .to_owned());
            }
        };
        let (primary, standby) = (&self.nodes[p], &self.nodes[1 - p]);
        if roles[p] == Some(true) {
            // No primary where one is wanted: promotion ends recovery even when replay is
            // paused; the other server, a primary too now or a standby of nothing, is
            // rebuilt below.
            self.servers.say(&format!("promoting {}, a standby", primary.port));
            self.servers.promote(primary)?;
            changes.push(format!("promoted {}, which was left a standby", primary.port));
        }
        let problem = match roles[1 - p] {
            Some(true) => self.standby_problem(primary, standby, &mut changes),
            Some(false) => Some("it is a primary too".to_owned()),
            None => Some("it does not run".to_owned()),
        };
        if let Some(why) = problem {
            self.servers.say(&format!(
                "rebuilding {} as a standby of {}: {why}",
                standby.port, primary.port
            ));
            self.rebuild(primary, standby)?;
            changes
                .push(format!("rebuilt {} as a standby of {} ({why})", standby.port, primary.port));
        }
        self.wait_caught_up(primary, standby)?;
        self.servers.say(&format!(
            "pair ready after {:.1} s: primary {}, standby {}; {}",
            started.elapsed().as_secs_f64(),
            primary.port,
            standby.port,
            if changes.is_empty() { "nothing to repair".to_owned() } else { changes.join("; ") }
        ));
        Ok(Ensured { primary: primary.clone(), standby: standby.clone(), changes })
    }

    /// Waits until `standby` has replayed everything `primary` has written so far, so what
    /// was written on the primary is visible on the standby.
    ///
    /// # Errors
    /// After 30 s, with the standby's replay state and the end of its log.
    pub fn wait_caught_up(&self, primary: &Node, standby: &Node) -> Result<()> {
        let lsn = self.servers.ask(primary, "select pg_current_wal_lsn()", false)?;
        let sql = format!("select pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn");
        self.servers.say(&format!(
            "waiting up to {} s for {} to replay up to {lsn} (polling `{sql}`)",
            CATCH_UP_TIMEOUT.as_secs(),
            standby.port
        ));
        let caught_up = poll(CATCH_UP_TIMEOUT, || {
            self.servers.ask(standby, &sql, true).is_ok_and(|answer| answer == "t")
        });
        if caught_up {
            return Ok(());
        }
        let state = self.servers.ask(
            standby,
            "select pg_last_wal_replay_lsn(), pg_is_wal_replay_paused(), \
             (select status from pg_stat_wal_receiver)",
            false,
        );
        Err(format!(
            "{} did not replay up to {lsn} of {} within {} s; replayed, paused, receiver: \
             {state:?}\nlast lines of its log:\n{}",
            standby.port,
            primary.port,
            CATCH_UP_TIMEOUT.as_secs(),
            tail(&standby.log(), 15)
        ))
    }

    /// Makes `node` run if it can, and says what it is: `Some(true)` a standby, `Some(false)`
    /// a primary, `None` when it has no data or will not start or answer (it is rebuilt).
    fn bring_up(&self, node: &Node, changes: &mut Vec<String>) -> Option<bool> {
        if !node.has_data() {
            self.servers.say(&format!("{} has no data in {}", node.port, node.dir.display()));
            return None;
        }
        match self.servers.start(node) {
            Ok(true) => changes.push(format!("started {}", node.port)),
            Ok(false) => {}
            Err(e) => {
                self.servers.say(&format!("{} will not start: {e}", node.port));
                return None;
            }
        }
        let mut answer = None;
        poll(ANSWER_TIMEOUT, || {
            answer = self.servers.in_recovery(node);
            answer.is_some()
        });
        if answer.is_none() {
            self.servers.say(&format!("{} runs but does not answer", node.port));
        }
        answer
    }

    /// Why the running `standby` is not a standby streaming from `primary`, or `None`;
    /// resumes paused replay on the way.
    fn standby_problem(
        &self,
        primary: &Node,
        standby: &Node,
        changes: &mut Vec<String>,
    ) -> Option<String> {
        let ask = |node: &Node, sql: &str| self.servers.ask(node, sql, false);
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
            self.servers.say(&format!("{}'s replay is paused; resuming it", standby.port));
            if let Err(e) = ask(standby, "select pg_wal_replay_resume()") {
                return Some(e);
            }
            changes.push(format!("resumed {}'s paused replay", standby.port));
        }
        if !self.wait_streaming(primary, standby, STREAM_GRACE) {
            return Some(format!(
                "it does not stream from {} within {} s (a diverged timeline?)",
                primary.port,
                STREAM_GRACE.as_secs()
            ));
        }
        None
    }

    /// Stops `standby`, empties its data directory, fills it with a base backup of `primary`
    /// that starts as a standby of it (`-R`), starts it and waits until it streams.
    fn rebuild(&self, primary: &Node, standby: &Node) -> Result<()> {
        if self.servers.is_running(standby) {
            self.servers.stop(standby, "immediate")?;
        }
        let created = empty(&standby.dir)?;
        if let (true, Some(user)) = (created, &self.servers.run_as) {
            // We just made the directory (someone deleted it), so we own it, not the server.
            let mut chown = Command::new("chown");
            chown.arg(format!("{user}:")).arg(&standby.dir);
            self.servers.run(&mut chown, false)?;
        }
        let mut backup = self.servers.server("pg_basebackup");
        backup
            .args(["-h", "127.0.0.1", "-p", &primary.port.to_string(), "-U", "postgres", "-D"])
            .arg(&standby.dir)
            // A fast checkpoint: the default spread one makes the backup wait minutes.
            .args(["-R", "-X", "stream", "--checkpoint=fast", "--no-sync"])
            .current_dir(&standby.dir);
        self.servers.run(&mut backup, false)?;
        tidy_backup(&standby.dir)?;
        // PostgreSQL insists on a private data directory; the backup kept the directory's mode.
        fs::set_permissions(&standby.dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| format!("chmod 700 {}: {e}", standby.dir.display()))?;
        self.servers.start(standby)?;
        if self.wait_streaming(primary, standby, CATCH_UP_TIMEOUT) {
            return Ok(());
        }
        Err(format!(
            "{} rebuilt from {} does not stream after {} s; last lines of its log:\n{}",
            standby.port,
            primary.port,
            CATCH_UP_TIMEOUT.as_secs(),
            tail(&standby.log(), 15)
        ))
    }

    /// Polls until `standby`'s WAL receiver streams from `primary`; `false` after `timeout`.
    fn wait_streaming(&self, primary: &Node, standby: &Node, timeout: Duration) -> bool {
        let expected = format!("streaming|{}", primary.port);
        let sql = "select status, sender_port from pg_stat_wal_receiver";
        self.servers.say(&format!(
            "waiting up to {} s for {} to stream from {} (polling `{sql}`)",
            timeout.as_secs(),
            standby.port,
            primary.port
        ));
        poll(timeout, || self.servers.ask(standby, sql, true).is_ok_and(|a| a == expected))
    }

    /// The timeline `node` (a primary) writes on: a promotion starts a new, higher one.
    fn timeline(&self, node: &Node) -> Result<u32> {
        let file = self.servers.ask(node, "select pg_walfile_name(pg_current_wal_lsn())", false)?;
        // A WAL file name starts with its timeline, 8 hex digits.
        file.get(..8)
            .and_then(|hex| u32::from_str_radix(hex, 16).ok())
            .ok_or_else(|| format!("no timeline in WAL file name {file:?}"))
    }
}

/// Takes `ha.lock` beside `dir` (in its parent directory), waiting, and saying so even when
/// quiet (a silent wait looks like a hang), while another process holds it. The lock lasts
/// as long as the returned file: xtask holds it while it repairs the pair, a test binary for
/// its whole life.
///
/// # Errors
/// When the lock file cannot be opened or locked.
pub fn lock_beside(dir: &Path) -> Result<File> {
    let path = dir.parent().unwrap_or(dir).join("ha.lock");
    let failed = |e: std::io::Error| format!("locking {}: {e}", path.display());
    let file =
        OpenOptions::new().create(true).write(true).truncate(false).open(&path).map_err(failed)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            eprintln!("ha: waiting for {}: another process uses the HA pair", path.display());
            file.lock().map_err(failed)?;
        }
        Err(TryLockError::Error(e)) => return Err(failed(e)),
    }
    Ok(file)
}

/// Whether a libpq connection string such as `user=postgres host=127.0.0.1 port=54330` names
/// `port`.
fn names_port(conninfo: &str, port: u16) -> bool {
    let wanted = format!("port={port}");
    conninfo.split_whitespace().any(|word| word.trim_matches('\'') == wanted)
}

/// `command` as a shell line, so it can be pasted to replay it.
pub fn display(command: &Command) -> String {
    let envs = command.get_envs().filter_map(|(key, value)| {
        Some(format!("{}={}", key.to_string_lossy(), shell_quote(&value?.to_string_lossy())))
    });
    let program = std::iter::once(shell_quote(&command.get_program().to_string_lossy()));
    let args = command.get_args().map(|arg| shell_quote(&arg.to_string_lossy()));
    envs.chain(program).chain(args).collect::<Vec<_>>().join(" ")
}

/// Quotes `word` for a POSIX shell, leaving plain words as they are.
pub fn shell_quote(word: &str) -> String {
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

/// Empties `dir`, keeping the directory itself (and its owner); `Ok(true)` when it did not
/// exist and was made.
fn empty(dir: &Path) -> Result<bool> {
    let failed =
        |what: &str, path: &Path, e: std::io::Error| format!("{what} {}: {e}", path.display());
    if !dir.exists() {
        fs::create_dir_all(dir).map_err(|e| failed("creating", dir, e))?;
        return Ok(true);
    }
    for entry in fs::read_dir(dir).map_err(|e| failed("listing", dir, e))? {
        let path = entry.map_err(|e| failed("listing", dir, e))?.path();
        let removed =
            if path.is_dir() { fs::remove_dir_all(&path) } else { fs::remove_file(&path) };
        match removed {
            // Something the stopped server left may vanish on its own (its shared memory).
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(failed("removing", &path, e));
            }
            _ => {}
        }
    }
    Ok(false)
}

/// Tidies a base backup. It copied what belongs to the source server's process, not its
/// data: the server log, and the socket lock files (`.s.PGSQL.<port>.lock`, there because `-k`
/// puts the sockets in the data directory), which name the source's postmaster; should that
/// PID belong to a live process when the copy starts, the copy refuses to start. And `-R`
/// appended a `primary_conninfo` to the source's own `postgresql.auto.conf`, which holds one
/// from every earlier rebuild when the roles have swapped; only the last one counts.
fn tidy_backup(dir: &Path) -> Result<()> {
    let failed =
        |what: &str, path: &Path, e: std::io::Error| format!("{what} {}: {e}", path.display());
    for entry in fs::read_dir(dir).map_err(|e| failed("listing", dir, e))?.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name == "log" || name.starts_with(".s.PGSQL.") {
            let path = entry.path();
            fs::remove_file(&path).map_err(|e| failed("removing", &path, e))?;
        }
    }
    let auto_conf = dir.join("postgresql.auto.conf");
    let text = fs::read_to_string(&auto_conf).map_err(|e| failed("reading", &auto_conf, e))?;
    let is_conninfo = |line: &&str| line.trim_start().starts_with("primary_conninfo");
    let last = text.lines().rfind(is_conninfo);
    let kept: Vec<&str> = text.lines().filter(|line| !is_conninfo(line)).chain(last).collect();
    fs::write(&auto_conf, kept.join("\n") + "\n").map_err(|e| failed("writing", &auto_conf, e))
}

/// The last `lines` lines of a log file, or why it could not be read.
pub fn tail(path: &Path, lines: usize) -> String {
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
    fn names_port_matches_whole_words() {
        let cases = [
            ("user=postgres host=127.0.0.1 port=54330 sslmode=prefer", true),
            ("host=127.0.0.1 port=543301", false),
            ("host=127.0.0.1 port=54331", false),
            ("'port=54330'", true),
            ("", false),
        ];
        for (conninfo, expected) in cases {
            assert_eq!(names_port(conninfo, 54330), expected, "conninfo {conninfo:?}");
        }
    }

    #[test]
    fn shell_lines_can_be_pasted() {
        let mut command = Command::new("/usr/bin/pg_ctl");
        command.args(["-D", "/tmp/a dir", "-o", "-c x='y'"]).env("PGCONNECT_TIMEOUT", "5");
        assert_eq!(
            display(&command),
            r"PGCONNECT_TIMEOUT=5 /usr/bin/pg_ctl -D '/tmp/a dir' -o '-c x='\''y'\'''"
        );
    }
}
