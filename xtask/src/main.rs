//! `cargo xtask`: ucm's project automation (services, test, tidy, package, ci, bench); see `cargo xtask help`.
//!
//! Modelled on rust-analyzer's xtask: plain Rust instead of shell scripts, one module per
//! task, and every external command printed before it runs so any step can be replayed by hand.

mod bench;
mod ci;
mod cmd;
mod package;
mod services;
mod test;
mod tidy;

use std::{
    env,
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{Result, bail};

const USAGE: &str = "\
usage: cargo xtask <task> [options]

tasks:
  services [--quiet]          find or start PostgreSQL, MariaDB, Redis and SQLite and print
                              their URLs as `export VAR=url` lines on standard output
      --quiet                 print only those lines, e.g. eval \"$(cargo xtask services --quiet)\"
      --force-throwaway-pg    for testing the fallback only: ignore 127.0.0.1:5432 and the
                              machine's cluster and use the throwaway cluster on 54329
      --ha                    also start a PostgreSQL primary (54330) and a streaming replica
                              of it (54331) under target/ucm-services, as the postgres user,
                              repairing what the HA tests left (a stopped node, a promoted
                              replica, swapped roles, paused replay), and print HA_PRIMARY_URL,
                              HA_REPLICA_URL, HA_PG_BIN, HA_PRIMARY_DIR, HA_REPLICA_DIR and
                              HA_RUN_AS for the HA tests
  test [-- <cargo test args>] services --ha, then every test run with the URLs exported; package
                              (-p) and target (--lib, --test x) selections replace the
                              defaults, and args after a second `--` go to the test binaries
  tidy                        cargo fmt --check, clippy -D warnings, doc -D warnings, a `//!`
                              first line in every .rs file, no import cycle between core's
                              modules, and ucm's export list as its crate docs give it
  package                     cargo publish --workspace --dry-run: every published crate
                              packaged and built from its package alone
  ci                          tidy, package, then test: what .ci/run does
  bench [-- <ucm bench args>] services, then `ucm bench` from a release build: ucm beside raw
                              sqlx, deadpool-postgres and pgbench, as ratios; the report goes
                              to target/bench/report.md and report.json
  help                        this text

environment: PG_DATABASE_URL, MYSQL_DATABASE_URL, SQLITE_DATABASE_URL and REDIS_URL, when set,
are used instead of discovering; CI (set, not `false`) makes missing services an error.";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root: the parent of this crate's directory.
pub(crate) fn project_root() -> PathBuf {
    // `cargo run` sets CARGO_MANIFEST_DIR at run time too; preferring it keeps a binary built
    // in a target directory shared by several worktrees pointed at the worktree running it.
    let manifest_dir = env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest_dir.parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

fn run() -> Result<()> {
    let args: Vec<String> = env::args().skip(1).collect();
    let Some((task, rest)) = args.split_first() else {
        println!("{USAGE}");
        return Ok(());
    };
    match task.as_str() {
        "services" => {
            let mut options = services::Options::default();
            for arg in rest {
                match arg.as_str() {
                    "--quiet" | "-q" => options.quiet = true,
                    "--force-throwaway-pg" => options.force_throwaway_pg = true,
                    "--ha" => options.ha = true,
                    other => bail!("unknown option `{other}` for `services`\n\n{USAGE}"),
                }
            }
            services::run(options).map(drop)
        }
        "test" => match rest.split_first() {
            None => test::run(&[]),
            Some((dashes, extra)) if dashes == "--" => test::run(extra),
            Some((other, _)) => {
                bail!("unexpected `{other}`: pass cargo test arguments after `--`\n\n{USAGE}")
            }
        },
        "bench" => match rest.split_first() {
            None => bench::run(&[]),
            Some((dashes, extra)) if dashes == "--" => bench::run(extra),
            Some((other, _)) => {
                bail!("unexpected `{other}`: pass ucm bench arguments after `--`\n\n{USAGE}")
            }
        },
        "tidy" => no_options(task, rest).and_then(|()| tidy::run()),
        "package" => no_options(task, rest).and_then(|()| package::run()),
        "ci" => no_options(task, rest).and_then(|()| ci::run()),
        "help" | "--help" | "-h" => {
            println!("{USAGE}");
            Ok(())
        }
        other => bail!("unknown task `{other}`\n\n{USAGE}"),
    }
}

fn no_options(task: &str, rest: &[String]) -> Result<()> {
    match rest.first() {
        Some(arg) => bail!("`{task}` takes no options, got `{arg}`\n\n{USAGE}"),
        None => Ok(()),
    }
}
