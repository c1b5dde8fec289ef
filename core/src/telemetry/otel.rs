//! OpenTelemetry metrics of one pool (feature `otel`), from the global meter provider: the database client conventions' `db.client.operation.duration` and `db.client.connection.*`, plus ucm's own counters.

use std::sync::{Arc, Weak};
use std::time::Duration;

use opentelemetry::metrics::{Counter, Histogram, Meter, ObservableUpDownCounter};
use opentelemetry::{KeyValue, global};

use super::EndpointAttributes;
use crate::error::Error;
use crate::telemetry::metrics::PoolStatus;

/// The conventions' bucket boundaries for `db.client.operation.duration`, in seconds.
const OPERATION_BUCKETS: [f64; 9] = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0];

/// The conventions' bucket boundaries for connection times, in seconds.
const CONNECTION_BUCKETS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// A string attribute value that clones by reference count, not by copying.
fn shared(text: &str) -> opentelemetry::StringValue {
    opentelemetry::StringValue::from(Arc::<str>::from(text))
}

fn meter() -> Meter {
    global::meter("ucm")
}

/// The synchronous instruments of one pool and the attributes every measurement carries.
pub(crate) struct Instruments {
    pool: [KeyValue; 1],
    operation: Vec<KeyValue>,
    /// The attributes of a successful statement, per operation (indexed as
    /// `summary::OPERATIONS`, the last entry for none), built once so that the hot path
    /// neither allocates nor clones strings.
    by_operation: Vec<Vec<KeyValue>>,
    operation_duration: Histogram<f64>,
    create_time: Histogram<f64>,
    wait_time: Histogram<f64>,
    use_time: Histogram<f64>,
    timeouts: Counter<u64>,
}

impl std::fmt::Debug for Instruments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instruments").field("pool", &self.pool).finish_non_exhaustive()
    }
}

fn seconds_histogram(
    meter: &Meter,
    name: &'static str,
    description: &'static str,
    buckets: &[f64],
) -> Histogram<f64> {
    meter
        .f64_histogram(name)
        .with_unit("s")
        .with_description(description)
        .with_boundaries(buckets.to_vec())
        .build()
}

impl Instruments {
    pub(crate) fn new(endpoint: &EndpointAttributes) -> Self {
        let meter = meter();
        let mut operation = vec![KeyValue::new("db.system.name", endpoint.system)];
        if let Some(namespace) = &endpoint.namespace {
            operation.push(KeyValue::new("db.namespace", shared(namespace)));
        }
        if let Some(address) = &endpoint.address {
            operation.push(KeyValue::new("server.address", shared(address)));
        }
        if let Some(port) = endpoint.port {
            operation.push(KeyValue::new("server.port", i64::from(port)));
        }
        let by_operation = super::summary::OPERATIONS
            .into_iter()
            .map(Some)
            .chain([None])
            .map(|name| {
                let mut attributes = operation.clone();
                attributes.extend(name.map(|name| KeyValue::new("db.operation.name", name)));
                attributes
            })
            .collect();
        Self {
            pool: [KeyValue::new("db.client.connection.pool.name", shared(&endpoint.pool))],
            operation,
            by_operation,
            operation_duration: seconds_histogram(
                &meter,
                "db.client.operation.duration",
                "Duration of database client operations.",
                &OPERATION_BUCKETS,
            ),
            create_time: seconds_histogram(
                &meter,
                "db.client.connection.create_time",
                "The time it took to create a new connection.",
                &CONNECTION_BUCKETS,
            ),
            wait_time: seconds_histogram(
                &meter,
                "db.client.connection.wait_time",
                "The time it took to obtain an open connection from the pool.",
                &CONNECTION_BUCKETS,
            ),
            use_time: seconds_histogram(
                &meter,
                "db.client.connection.use_time",
                "The time between borrowing a connection and returning it to the pool.",
                &CONNECTION_BUCKETS,
            ),
            timeouts: meter
                .u64_counter("db.client.connection.timeouts")
                .with_unit("{timeout}")
                .with_description("The number of connection timeouts that have occurred trying to obtain a connection from the pool.")
                .build(),
        }
    }

    pub(crate) fn operation(&self, took: Duration, sql: &str, error: Option<&Error>) {
        let index = super::summary::operation_index(sql);
        if error.is_none() {
            let attributes = &self.by_operation[index.unwrap_or(self.by_operation.len() - 1)];
            self.operation_duration.record(took.as_secs_f64(), attributes);
            return;
        }
        let operation = index.map(|i| super::summary::OPERATIONS[i]);
        let mut attributes = self.operation.clone();
        if let Some(operation) = operation {
            attributes.push(KeyValue::new("db.operation.name", operation));
        }
        if let Some(error) = error {
            attributes.push(KeyValue::new("error.type", error.kind().as_str()));
            if let Some(sqlstate) = error.sqlstate() {
                attributes.push(KeyValue::new("db.response.status_code", sqlstate.to_owned()));
            }
        }
        self.operation_duration.record(took.as_secs_f64(), &attributes);
    }

    pub(crate) fn create(&self, took: Duration) {
        self.create_time.record(took.as_secs_f64(), &self.pool);
    }

    pub(crate) fn wait(&self, waited: Duration) {
        self.wait_time.record(waited.as_secs_f64(), &self.pool);
    }

    pub(crate) fn use_time(&self, held: Duration) {
        self.use_time.record(held.as_secs_f64(), &self.pool);
    }

    pub(crate) fn timeout(&self) {
        self.timeouts.add(1, &self.pool);
    }
}

/// ucm's own counters, not tied to one pool: created from the global meter provider on
/// first use.
struct Counters {
    breaker_transitions: Counter<u64>,
    retries: Counter<u64>,
    read_fallbacks: Counter<u64>,
    topology_changes: Counter<u64>,
    long_holds: Counter<u64>,
}

fn counters() -> &'static Counters {
    static COUNTERS: std::sync::OnceLock<Counters> = std::sync::OnceLock::new();
    COUNTERS.get_or_init(|| {
        let meter = meter();
        Counters {
            breaker_transitions: meter
                .u64_counter("ucm.circuit_breaker.transitions")
                .with_unit("{transition}")
                .with_description("Circuit breaker state changes, by endpoint and the state entered.")
                .build(),
            retries: meter
                .u64_counter("ucm.retries")
                .with_unit("{retry}")
                .with_description("Operations re-run by the retry policy, by the error that caused it.")
                .build(),
            read_fallbacks: meter
                .u64_counter("ucm.routing.read_fallbacks")
                .with_unit("{checkout}")
                .with_description("Reads moved on from a replica whose checkout failed (to the next replica or the primary).")
                .build(),
            topology_changes: meter
                .u64_counter("ucm.topology.changes")
                .with_unit("{change}")
                .with_description("EndpointAttributes state changes seen by the health loop (down, banned, recovered) and failovers followed, by endpoint and change.")
                .build(),
            long_holds: meter
                .u64_counter("ucm.pool.long_holds")
                .with_unit("{connection}")
                .with_description("Connections held past the leak detection threshold, each counted once, by pool.")
                .build(),
        }
    })
}

/// Counts a connection of `endpoint` held past the leak detection threshold.
pub(crate) fn long_hold(endpoint: &str) {
    counters()
        .long_holds
        .add(1, &[KeyValue::new("db.client.connection.pool.name", endpoint.to_owned())]);
}

/// Counts a circuit breaker entering `state` on `endpoint`.
pub(crate) fn breaker_transition(endpoint: &str, state: &'static str) {
    counters().breaker_transitions.add(
        1,
        &[
            KeyValue::new("db.client.connection.pool.name", endpoint.to_owned()),
            KeyValue::new("ucm.circuit_breaker.state", state),
        ],
    );
}

/// Counts one retry after an error of kind `kind`.
pub(crate) fn retry(kind: &'static str) {
    counters().retries.add(1, &[KeyValue::new("error.type", kind)]);
}

/// Counts a topology change (`down`, `banned`, `recovered`, `failover`) of `endpoint`.
pub(crate) fn topology_change(endpoint: &str, change: &'static str) {
    counters().topology_changes.add(
        1,
        &[
            KeyValue::new("db.client.connection.pool.name", endpoint.to_owned()),
            KeyValue::new("ucm.topology.change", change),
        ],
    );
}

/// Counts a read moved on from replica `endpoint`.
pub(crate) fn read_fallback(endpoint: &str) {
    counters()
        .read_fallbacks
        .add(1, &[KeyValue::new("db.client.connection.pool.name", endpoint.to_owned())]);
}

/// The observable instruments of one pool: read from its status at each collection, for
/// as long as the pool lives. Dropping this stops nothing (the SDK keeps callbacks), so
/// each callback holds only a weak reference and reports nothing once the pool is gone.
pub(crate) struct Observed {
    _instruments: Vec<ObservableUpDownCounter<i64>>,
}

impl std::fmt::Debug for Observed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observed").finish_non_exhaustive()
    }
}

/// Registers the `db.client.connection.*` up-down counters for the pool whose status
/// `status` reads (through `source`, weakly held).
pub(crate) fn observe<S: Send + Sync + 'static>(
    endpoint: &EndpointAttributes,
    source: Weak<S>,
    status: fn(&S) -> PoolStatus,
) -> Observed {
    let meter = meter();
    let pool = KeyValue::new("db.client.connection.pool.name", shared(&endpoint.pool));
    let source = Arc::new(source);
    type Reading = fn(&PoolStatus) -> Vec<(i64, Option<&'static str>)>;
    let gauges: [(&'static str, &'static str, &'static str, Reading); 5] = [
        (
            "db.client.connection.count",
            "{connection}",
            "The number of connections that are currently in state described by the state attribute.",
            |s| vec![(s.idle as i64, Some("idle")), (s.in_use as i64, Some("used"))],
        ),
        (
            "db.client.connection.max",
            "{connection}",
            "The maximum number of open connections allowed.",
            |s| vec![(s.max_size as i64, None)],
        ),
        (
            "db.client.connection.idle.max",
            "{connection}",
            "The maximum number of idle open connections allowed.",
            |s| vec![(s.max_size as i64, None)],
        ),
        (
            "db.client.connection.idle.min",
            "{connection}",
            "The minimum number of idle open connections allowed.",
            |s| vec![(s.pool_size as i64, None)],
        ),
        (
            "db.client.connection.pending_requests",
            "{request}",
            "The number of current pending requests for an open connection.",
            |s| vec![(s.waiting as i64, None)],
        ),
    ];
    let instruments = gauges
        .into_iter()
        .map(|(name, unit, description, reading)| {
            let (source, pool) = (Arc::clone(&source), pool.clone());
            meter
                .i64_observable_up_down_counter(name)
                .with_unit(unit)
                .with_description(description)
                .with_callback(move |observer| {
                    let Some(inner) = source.upgrade() else { return };
                    for (value, state) in reading(&status(&inner)) {
                        match state {
                            Some(state) => observer.observe(
                                value,
                                &[pool.clone(), KeyValue::new("db.client.connection.state", state)],
                            ),
                            None => observer.observe(value, std::slice::from_ref(&pool)),
                        }
                    }
                })
                .build()
        })
        .collect();
    Observed { _instruments: instruments }
}
