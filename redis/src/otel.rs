//! OpenTelemetry metrics of a query cache (feature `otel`), from the global meter provider: hits by level, misses, evictions, Redis errors and invalidations, read from its counters when the provider collects.

use std::sync::{Arc, Weak};

use opentelemetry::metrics::ObservableCounter;
use opentelemetry::{KeyValue, global};

use crate::cache::CacheStats;

/// The cache's instruments, kept alive as long as the cache.
pub(crate) struct CacheInstruments {
    _counters: Vec<ObservableCounter<u64>>,
}

impl std::fmt::Debug for CacheInstruments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheInstruments").finish_non_exhaustive()
    }
}

/// Registers the counters of the cache named `namespace`, read through `stats` while the
/// cache lives.
pub(crate) fn observe_cache<S: Send + Sync + 'static>(
    namespace: &str,
    source: Weak<S>,
    stats: fn(&S) -> CacheStats,
) -> CacheInstruments {
    let meter = global::meter("ucm");
    let namespace = KeyValue::new("ucm.cache.namespace", namespace.to_owned());
    let source = Arc::new(source);
    type Reading = fn(&CacheStats) -> Vec<(u64, Option<&'static str>)>;
    let counters: [(&'static str, &'static str, &'static str, Reading); 5] = [
        (
            "ucm.cache.hits",
            "{hit}",
            "Answers from the cache, by level (l1: process, l2: Redis).",
            |s| vec![(s.l1_hits, Some("l1")), (s.l2_hits, Some("l2"))],
        ),
        ("ucm.cache.misses", "{miss}", "Reads that neither level could answer.", |s| {
            vec![(s.misses, None)]
        }),
        ("ucm.cache.evictions", "{entry}", "Entries dropped from process memory for room.", |s| {
            vec![(s.evictions, None)]
        }),
        ("ucm.cache.redis_errors", "{error}", "Redis calls that failed and were bypassed.", |s| {
            vec![(s.redis_errors, None)]
        }),
        ("ucm.cache.invalidations", "{write}", "Writes that made cached tables stale.", |s| {
            vec![(s.invalidations, None)]
        }),
    ];
    let counters = counters
        .into_iter()
        .map(|(name, unit, description, reading)| {
            let (source, namespace) = (Arc::clone(&source), namespace.clone());
            meter
                .u64_observable_counter(name)
                .with_unit(unit)
                .with_description(description)
                .with_callback(move |observer| {
                    let Some(cache) = source.upgrade() else { return };
                    for (value, level) in reading(&stats(&cache)) {
                        match level {
                            Some(level) => observer.observe(
                                value,
                                &[namespace.clone(), KeyValue::new("ucm.cache.level", level)],
                            ),
                            None => observer.observe(value, std::slice::from_ref(&namespace)),
                        }
                    }
                })
                .build()
        })
        .collect();
    CacheInstruments { _counters: counters }
}
