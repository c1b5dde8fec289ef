//! The closed-loop load runner: N tasks repeat one operation until a deadline, latencies into an HDR histogram.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::ThreadId;
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
    /// Heap bytes per task while they ran ([`heap_per_task`]), where measured.
    pub(crate) heap_per_task: Option<f64>,
}

impl Sample {
    pub(crate) fn empty() -> Self {
        Self {
            ops: 0,
            errors: 0,
            elapsed: Duration::ZERO,
            latency: new_histogram(),
            heap_per_task: None,
        }
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

/// Set while [`heap_per_task`] measures: the runtime's threads then publish their counts.
static MEASURING: AtomicBool = AtomicBool::new(false);

/// One thread's (allocated, freed) byte counts when first seen during a measurement, and now.
type Counts = [(u64, u64); 2];

/// Every thread's [`Counts`] in the measurement under way.
static THREADS: Mutex<Option<HashMap<ThreadId, Counts>>> = Mutex::new(None);

/// The bytes this thread ever allocated and freed: jemalloc's per-thread counters, which
/// count every allocation (its thread caches included, unlike its arena statistics).
fn thread_counts() -> Option<(u64, u64)> {
    let allocated = tikv_jemalloc_ctl::thread::allocatedp::read().ok()?.get();
    let freed = tikv_jemalloc_ctl::thread::deallocatedp::read().ok()?.get();
    Some((allocated, freed))
}

/// Publishes this thread's counts while a measurement runs (the runtime's park and unpark
/// hook, so a worker's counts are current whenever it goes idle or wakes); one atomic load
/// otherwise.
pub(crate) fn publish_thread_heap() {
    if !MEASURING.load(Ordering::Relaxed) {
        return;
    }
    let Some(counts) = thread_counts() else { return };
    let mut threads = THREADS.lock().unwrap_or_else(PoisonError::into_inner);
    let entry = threads.get_or_insert_with(HashMap::new).entry(std::thread::current().id());
    entry.and_modify(|[_, now]| *now = counts).or_insert([counts, counts]);
}

/// Net bytes allocated since the measurement began, over every thread that published.
fn heap_growth() -> i64 {
    publish_thread_heap();
    let threads = THREADS.lock().unwrap_or_else(PoisonError::into_inner);
    threads
        .iter()
        .flat_map(HashMap::values)
        .map(|[(allocated, freed), (allocated_now, freed_now)]| {
            (allocated_now - allocated) as i64 - (freed_now - freed) as i64
        })
        .sum()
}

/// Heap bytes per task while `tasks` tasks each repeat `op` without measuring it (past the
/// pool's size, most of them are waiting for a connection): the heap while they run (the
/// median of five readings) less the heap once they have ended and everything they held is
/// given back (the median of three), over `tasks`, so memory the process frees or grows
/// for other reasons as they start is left out. What a task costs the process: its spawned
/// future (the operation's state, a waiting checkout's included), whatever the pool
/// allocates for a waiter, and a share of the buffers of the statements in flight. `None`
/// when the allocator cannot tell.
pub(crate) async fn heap_per_task(op: &Op, tasks: usize) -> Option<f64> {
    thread_counts()?;
    *THREADS.lock().unwrap_or_else(PoisonError::into_inner) = None;
    MEASURING.store(true, Ordering::Relaxed);
    let stop = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let (op, stop) = (Arc::clone(op), Arc::clone(&stop));
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let _ = op().await;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let running = median_growth(5).await;
    stop.store(true, Ordering::Relaxed);
    for handle in handles {
        let _ = handle.await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let ended = median_growth(3).await;
    MEASURING.store(false, Ordering::Relaxed);
    Some((running - ended).max(0) as f64 / tasks as f64)
}

/// The median of `readings` readings of [`heap_growth`], 40 ms apart.
async fn median_growth(readings: usize) -> i64 {
    let mut values = Vec::with_capacity(readings);
    for _ in 0..readings {
        values.push(heap_growth());
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    values.sort_unstable();
    values.get(values.len() / 2).copied().unwrap_or(0)
}
