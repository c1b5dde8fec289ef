//! The demo's report for one mode: operations and their latency percentiles, errors by kind, re-runs, the pool and the health of every endpoint.

use std::sync::atomic::Ordering;
use std::time::Duration;

use ucm::{ConnectionManagerProtocol, Manager, ManagerMode};
use ucm_kernel::backend::Backend;

use super::workload::Stats;

pub(super) async fn print_mode<B: Backend>(
    mode: ManagerMode,
    stats: &Stats,
    manager: &Manager<B>,
    seconds: f64,
) {
    let info = manager.connection_info();
    let health = manager.health_check().await;
    let total: u64 = stats.ops.values().map(|h| h.snapshot().count).sum();
    println!("\n== {mode}: {total} operations, {:.0}/s ==", total as f64 / seconds);
    println!(
        "  {:<9} {:>8} {:>9} {:>9} {:>9} {:>9}",
        "operation", "count", "p50", "p95", "p99", "max"
    );
    for (name, histogram) in &stats.ops {
        let s = histogram.snapshot();
        println!(
            "  {name:<9} {:>8} {:>9} {:>9} {:>9} {:>9}",
            s.count,
            ms(s.quantile(0.50)),
            ms(s.quantile(0.95)),
            ms(s.quantile(0.99)),
            ms(s.max)
        );
    }
    let errors: Vec<String> = stats
        .errors
        .iter()
        .map(|(k, n)| (k, n.load(Ordering::Relaxed)))
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    println!(
        "  errors by kind: {}",
        if errors.is_empty() { "none".to_owned() } else { errors.join(", ") }
    );
    println!("  transactions re-run after a conflict: {}", stats.retries.load(Ordering::Relaxed));
    if let Some(primary) = info.primary() {
        let st = primary.status;
        let m = &primary.metrics;
        println!(
            "  pool: {} open ({} idle, {} in use) of {} kept + {} overflow; {} acquires, wait p99 {}, {} opened",
            st.size,
            st.idle,
            st.in_use,
            st.pool_size,
            st.max_size - st.pool_size,
            m.acquires,
            ms(m.wait_time.quantile(0.99)),
            m.connections_created
        );
        if let Some(breaker) = &primary.breaker {
            println!("  breaker: {}", breaker.state);
        }
    }
    let components: Vec<String> = health
        .components
        .iter()
        .map(|c| {
            format!("{} {} {}", c.role.as_str(), c.status, c.latency.map(ms).unwrap_or_default())
        })
        .collect();
    println!("  health: {} ({})", health.status, components.join("; "));
}

fn ms(d: Duration) -> String {
    format!("{:.2}ms", d.as_secs_f64() * 1000.0)
}
