//! A Redis Sentinel set for the tests: a master (6390), a replica (6391) and one sentinel (26390, quorum 1) watching them as `ucm-master`, started afresh by each run with `redis-server` and `redis-server --sentinel` (no extra package), nothing persisted.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result, bail};

use super::{Ctx, Outcome, START_TIMEOUT, port_open, wait_for_port};
use crate::cmd::which;

/// The data nodes' ports: the first starts as master, the second as its replica.
const NODES: [u16; 2] = [6390, 6391];

/// The sentinel's port.
const SENTINEL: u16 = 26390;

/// The service name the sentinel watches.
pub(super) const SERVICE: &str = "ucm-master";

/// Starts the set afresh (a failover test leaves the roles swapped; every run begins with
/// 6390 as master).
pub(super) fn discover(ctx: &Ctx) -> Outcome {
    if which("redis-server").is_none() {
        return Outcome::Missing("redis-server is not installed".to_owned());
    }
    let dir = ctx.state_dir.join("redis-sentinel");
    match start(ctx, &dir) {
        Ok(()) => Outcome::Started {
            url: format!("redis+sentinel://127.0.0.1:{SENTINEL}/{SERVICE}"),
            note: format!(
                "master 127.0.0.1:{}, replica 127.0.0.1:{}, sentinel 127.0.0.1:{SENTINEL}",
                NODES[0], NODES[1]
            ),
            stop: NODES
                .iter()
                .chain([&SENTINEL])
                .map(|port| format!("redis-cli -p {port} shutdown nosave"))
                .collect::<Vec<_>>()
                .join("; "),
        },
        Err(e) => Outcome::Missing(format!("{e:#}")),
    }
}

fn start(ctx: &Ctx, dir: &Path) -> Result<()> {
    for port in [SENTINEL, NODES[1], NODES[0]] {
        if port_open(port) {
            // `shutdown nosave` answers with a closed connection, which redis-cli reports.
            let _ =
                ctx.cmd("redis-cli").args(["-p", &port.to_string(), "shutdown", "nosave"]).run();
            if !wait_closed(port) {
                bail!("something that is not ours listens on 127.0.0.1:{port}");
            }
        }
    }
    fs::create_dir_all(dir).with_context(|| format!("could not create {}", dir.display()))?;
    let dir_text = dir.display().to_string();
    for (i, port) in NODES.iter().enumerate() {
        let master = NODES[0].to_string();
        let replica_of = if i == 1 { vec!["--replicaof", "127.0.0.1", &master] } else { vec![] };
        let node = ctx
            .cmd("redis-server")
            .args(["--daemonize", "yes", "--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--dir", &dir_text])
            .args(["--logfile", &format!("{dir_text}/node-{port}.log")])
            .args(["--pidfile", &format!("{dir_text}/node-{port}.pid")])
            .args(replica_of);
        node.run().with_context(|| format!("starting redis-server on {port}"))?;
        if !wait_for_port(*port, START_TIMEOUT) {
            bail!("started redis-server but nothing answers on 127.0.0.1:{port}");
        }
    }
    // The sentinel rewrites its own file: a fresh one each run.
    let conf = dir.join("sentinel.conf");
    fs::write(
        &conf,
        format!(
            "port {SENTINEL}\nbind 127.0.0.1\ndaemonize yes\ndir {dir_text}\n\
             logfile {dir_text}/sentinel.log\npidfile {dir_text}/sentinel.pid\n\
             sentinel monitor {SERVICE} 127.0.0.1 {} 1\n\
             sentinel down-after-milliseconds {SERVICE} 1000\n\
             sentinel failover-timeout {SERVICE} 3000\n\
             sentinel parallel-syncs {SERVICE} 1\n",
            NODES[0]
        ),
    )
    .context("writing sentinel.conf")?;
    ctx.cmd("redis-server").arg(&conf).arg("--sentinel").run().context("starting the sentinel")?;
    if !wait_for_port(SENTINEL, START_TIMEOUT) {
        bail!("started the sentinel but nothing answers on 127.0.0.1:{SENTINEL}");
    }
    Ok(())
}

fn wait_closed(port: u16) -> bool {
    for _ in 0..40 {
        if !port_open(port) {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    false
}
