//! The closed-loop load runner: N tasks repeat one operation until a deadline, latencies into an HDR histogram.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// One operation under test, boxed so that every contender pays the same indirection.
pub(crate) type Op =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>> + Send + Sync>;

/// What one run measured.
pub(crate) struct Sample {
    pub(crate) ops: u64,
    pub(crate) errors: u64,
    pub(crate) elapsed: Duration,
    /// Latencies in nanoseconds.
    pub(crate) latency: Histogram<u64>,
}

impl Sample {
    pub(crate) fn empty() -> Self {
        Self { ops: 0, errors: 0, elapsed: Duration::ZERO, latency: new_histogram() }
    }

    pub(crate) fn per_second(&self) -> f64 {
        if self.elapsed.is_zero() { 0.0 } else { self.ops as f64 / self.elapsed.as_secs_f64() }
    }

    /// Adds another run of the same contender (rounds are pooled).
    pub(crate) fn merge(&mut self, other: &Sample) {
        self.ops += other.ops;
        self.errors += other.errors;
        self.elapsed += other.elapsed;
        let _ = self.latency.add(&other.latency);
    }

    /// A latency quantile in microseconds.
    pub(crate) fn micros(&self, q: f64) -> f64 {
        self.latency.value_at_quantile(q) as f64 / 1_000.0
    }
}

#[allow(clippy::expect_used)] // Constant, valid bounds: 1 ns to 60 s at 3 significant figures.
pub(crate) fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}

/// Runs `op` from `tasks` tasks for `duration` and pools their measurements.
pub(crate) async fn run(op: &Op, tasks: usize, duration: Duration) -> Sample {
    let start = Instant::now();
    let deadline = start + duration;
    let mut handles = Vec::with_capacity(tasks);
    for _ in 0..tasks {
        let op = Arc::clone(op);
        handles.push(tokio::spawn(async move {
            let mut sample = Sample::empty();
            while Instant::now() < deadline {
                let t = Instant::now();
                match op().await {
                    Ok(()) => {
                        sample.ops += 1;
                        let _ = sample.latency.record(t.elapsed().as_nanos().max(1) as u64);
                    }
                    Err(_) => sample.errors += 1,
                }
            }
            sample
        }));
    }
    let mut total = Sample::empty();
    for handle in handles {
        if let Ok(sample) = handle.await {
            total.merge(&sample);
        }
    }
    total.elapsed = start.elapsed();
    total
}
