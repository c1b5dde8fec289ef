//! The benchmark report: a Markdown table per measurement, ucm's figures as ratios to the raw pools, and a JSON twin.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;

use super::load::Sample;
use super::{Results, Table, WORKLOADS};

/// The raw contender each ucm contender is judged against, and the target ratio.
const RATIOS: &[(&str, &str, f64)] = &[
    ("ucm-sqlx (neutral)", "sqlx PgPool (default)", 1.3),
    ("ucm-sqlx (native)", "sqlx PgPool (default)", 1.3),
    ("ucm-sqlx (native)", "sqlx PgPool (no ping)", 0.95),
    ("ucm-sqlx (native)", "deadpool-postgres", 0.95),
    ("ucm-sqlx (neutral)", "deadpool-postgres", 0.95),
    ("ucm-diesel (native)", "diesel-async deadpool", 0.97),
    ("ucm-diesel (neutral)", "diesel-async deadpool", 0.97),
    ("ucm-diesel (pipelined)", "deadpool-postgres", 1.5),
    ("ucm-diesel (pipelined)", "tokio-postgres, one shared connection", 0.0),
];

/// The contender judged against pgbench on `SELECT 1`, and the target ratio.
const AGAINST_PGBENCH: (&str, f64) = ("ucm-diesel (pipelined)", 1.0);

pub(crate) fn markdown(r: &Results) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# ucm bench\n\nAgainst {}; {} round(s) of {:.1}s per contender, contenders interleaved; two reads with their values decoded: a prepared `SELECT 1`, and a primary-key lookup in a 10 000-row table (`indexed read`); every pool holds at most 20 connections; ucm reads in `ReadOnly` mode. Transport: `sslmode={}` for every contender (the tokio-postgres ones through rustls with ucm-diesel's configuration for the URL when it asks for TLS).\n",
        r.url, r.rounds, r.seconds, r.transport
    );
    for table in &r.throughput {
        let pgbench = (table.workload == WORKLOADS[0]).then(|| {
            r.pgbench.iter().find(|(tasks, _)| *tasks == table.tasks).and_then(|(_, tps)| *tps)
        });
        write_table(&mut out, table, pgbench);
        let _ = writeln!(
            out,
            "| ratio | throughput | target | p99 (lower is better) |\n|---|---:|---:|---:|"
        );
        for &(ucm, raw, target) in RATIOS {
            if let (Some(a), Some(b)) = (find(&table.samples, ucm), find(&table.samples, raw)) {
                let ratio = a.per_second() / b.per_second();
                let p99 = a.micros(0.99) / b.micros(0.99);
                let _ = writeln!(
                    out,
                    "| {ucm} / {raw} | {ratio:.2} | {} | {p99:.2} |",
                    verdict(ratio, target)
                );
            }
        }
        let (ucm, target) = AGAINST_PGBENCH;
        if let (Some(Some(tps)), Some(a)) = (pgbench, find(&table.samples, ucm)) {
            let ratio = a.per_second() / tps;
            let _ =
                writeln!(out, "| {ucm} / pgbench | {ratio:.2} | {} | |", verdict(ratio, target));
        }
        out.push('\n');
    }
    write_memory(&mut out, r);
    let replica = match &r.replica {
        Some(replica) => format!("(The replica is {replica}, a streaming replica of the server.)"),
        None => "(The replica is the same server under another name, so the difference is ucm's routing alone.)".to_owned(),
    };
    let _ = writeln!(
        out,
        "## HA overhead: the indexed read routed to one configured replica, against a single endpoint\n\n{replica}\n"
    );
    write_table(&mut out, &r.ha, None);
    if let [(_, single), (_, routed)] = r.ha.samples.as_slice() {
        let _ = writeln!(
            out,
            "throughput with a replica / single endpoint: {:.2}; p99: {:.2}\n",
            routed.per_second() / single.per_second(),
            routed.micros(0.99) / single.micros(0.99)
        );
    }
    let _ = writeln!(
        out,
        "## Checkout without I/O (acquire + release of an idle connection, pool of 4)\n\n| contender | tasks | ns per checkout | ratio to raw deadpool |\n|---|---:|---:|---:|"
    );
    for c in &r.checkout {
        let base = r
            .checkout
            .iter()
            .find(|b| b.tasks == c.tasks && b.name.starts_with("deadpool"))
            .map_or(f64::NAN, |b| b.ns_per_op);
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} | {:.2} |",
            c.name,
            c.tasks,
            c.ns_per_op,
            c.ns_per_op / base
        );
    }
    let _ = writeln!(
        out,
        "\n## Connection storm: 1000 tasks at once on a pool of 20 (acquire timeout 5 s)\n\n| contender | completed | timeouts | p50 ms | p99 ms | p99/p50 | connections opened |\n|---|---:|---:|---:|---:|---:|---:|"
    );
    for s in &r.storm {
        let opened =
            if s.name.starts_with("ucm") { s.opened.to_string() } else { "n/a".to_owned() };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.1} | {:.1} | {:.1} | {opened} |",
            s.name,
            s.completed,
            s.timeouts,
            s.p50_ms,
            s.p99_ms,
            s.p99_ms / s.p50_ms
        );
    }
    out
}

/// The heap each task cost while it ran `SELECT 1` (most of them waiting for one of the pool's
/// 20 connections), per contender and concurrency.
fn write_memory(out: &mut String, r: &Results) {
    let tables: Vec<&Table> =
        r.throughput.iter().filter(|t| t.harness_heap_per_task.is_some()).collect();
    let Some(first) = tables.first() else { return };
    let _ = writeln!(
        out,
        "## Memory per task: `SELECT 1` in a loop on a pool of 20, heap bytes per task while they run\n\n(jemalloc's per-thread counts of bytes allocated less bytes freed, over every runtime thread: the heap while the tasks run, median of five readings, less the heap once they ended, median of three, over the number of tasks)\n"
    );
    let header: String = tables.iter().map(|t| format!(" {} tasks |", t.tasks)).collect();
    let rule: String = tables.iter().map(|_| "---:|").collect();
    let _ = writeln!(out, "| contender |{header}\n|---|{rule}");
    let bytes = |value: Option<f64>| value.map_or_else(String::new, |b| format!("{b:.0}"));
    for (name, _) in &first.samples {
        let row: String = tables
            .iter()
            .map(|t| format!(" {} |", bytes(find(&t.samples, name).and_then(|s| s.heap_per_task))))
            .collect();
        let _ = writeln!(out, "| {name} |{row}");
    }
    let row: String =
        tables.iter().map(|t| format!(" {} |", bytes(t.harness_heap_per_task))).collect();
    let _ = writeln!(out, "| the harness alone (an operation that only yields) |{row}\n");
}

/// A ratio against its target (`0.0`: for reference, no target).
fn verdict(ratio: f64, target: f64) -> String {
    if target <= 0.0 {
        "(reference)".to_owned()
    } else if ratio >= target {
        format!("≥ {target} (met)")
    } else {
        format!("≥ {target} (missed)")
    }
}

/// One workload's table of contenders; `pgbench` adds pgbench's row (`Some(None)`: it did not run).
fn write_table(out: &mut String, table: &Table, pgbench: Option<Option<f64>>) {
    let _ = writeln!(out, "## {}, {} task(s)\n", table.workload, table.tasks);
    let _ = writeln!(
        out,
        "| contender | queries/s | p50 µs | p99 µs | p99.9 µs | errors |\n|---|---:|---:|---:|---:|---:|"
    );
    for (name, s) in &table.samples {
        let _ = writeln!(
            out,
            "| {name} | {:.0} | {:.1} | {:.1} | {:.1} | {} |",
            s.per_second(),
            s.micros(0.5),
            s.micros(0.99),
            s.micros(0.999),
            s.errors
        );
    }
    match pgbench {
        Some(Some(tps)) => {
            let _ = writeln!(out, "| pgbench (C, `-M prepared`) | {tps:.0} | | | | |");
        }
        Some(None) => {
            let _ = writeln!(
                out,
                "| pgbench | not run (more clients than `max_connections` allows, not found, or it failed: see the run's output) | | | | |"
            );
        }
        None => {}
    }
    out.push('\n');
}

fn find<'a>(samples: &'a [(&'static str, Sample)], name: &str) -> Option<&'a Sample> {
    samples.iter().find(|(n, _)| *n == name).map(|(_, s)| s)
}

pub(crate) fn json(r: &Results) -> serde_json::Value {
    let table = |t: &Table| {
        serde_json::json!({
            "workload": t.workload,
            "tasks": t.tasks,
            "contenders": t.samples.iter().map(|(name, s)| serde_json::json!({
                "name": name, "queries_per_second": s.per_second(), "p50_us": s.micros(0.5),
                "p99_us": s.micros(0.99), "p999_us": s.micros(0.999), "errors": s.errors,
                "heap_bytes_per_task": s.heap_per_task,
            })).collect::<Vec<_>>(),
            "harness_heap_bytes_per_task": t.harness_heap_per_task,
        })
    };
    serde_json::json!({
        "url": r.url, "transport": r.transport, "seconds": r.seconds, "rounds": r.rounds,
        "throughput": r.throughput.iter().map(table).collect::<Vec<_>>(),
        "pgbench_select1_tps": r.pgbench.iter().map(|(tasks, tps)| serde_json::json!({"tasks": tasks, "tps": tps})).collect::<Vec<_>>(),
        "ha": table(&r.ha),
        "checkout": r.checkout.iter().map(|c| serde_json::json!({"name": c.name, "tasks": c.tasks, "ns_per_op": c.ns_per_op})).collect::<Vec<_>>(),
        "storm": r.storm.iter().map(|s| serde_json::json!({"name": s.name, "completed": s.completed, "timeouts": s.timeouts, "p50_ms": s.p50_ms, "p99_ms": s.p99_ms, "opened": s.opened})).collect::<Vec<_>>(),
    })
}

pub(crate) fn write(path: &Path, markdown: &str, json: &serde_json::Value) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, markdown).with_context(|| format!("writing {}", path.display()))?;
    let json_path = path.with_extension("json");
    std::fs::write(&json_path, serde_json::to_string_pretty(json)?)
        .with_context(|| format!("writing {}", json_path.display()))?;
    Ok(())
}
