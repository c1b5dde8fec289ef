//! What ucm emits, read back through the OpenTelemetry SDK's in-memory exporters against a real PostgreSQL (and, with the `redis` feature, Redis): CLIENT spans named per the database conventions with their attributes (and never a parameter or a password), the `db.client.*` metrics with their units, buckets and attributes, and the query cache's `ucm.cache.*` counters.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use opentelemetry::trace::{SpanKind, Status, TracerProvider as _};
use opentelemetry::{KeyValue, Value as OtelValue};
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData, ResourceMetrics};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tracing_subscriber::layer::SubscriberExt;
use ucm::{ConnectionManagerProtocol, ConnectionMode, ManagerConfig, ManagerMode, UnifiedManager};

const SECRET_PARAMETER: &str = "parameter-value-never-exported";

fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a OtelValue> {
    attributes.iter().find(|kv| kv.key.as_str() == key).map(|kv| &kv.value)
}

fn span<'a>(spans: &'a [SpanData], name: &str) -> &'a SpanData {
    spans.iter().find(|s| s.name == name).unwrap_or_else(|| {
        let names: Vec<_> = spans.iter().map(|s| s.name.to_string()).collect();
        panic!("no span named {name:?} among {names:?}")
    })
}

fn metric<'a>(
    metrics: &'a [ResourceMetrics],
    name: &str,
) -> &'a opentelemetry_sdk::metrics::data::Metric {
    metrics
        .iter()
        .flat_map(|r| r.scope_metrics())
        .flat_map(|s| s.metrics())
        .filter(|m| m.name() == name)
        .last()
        .unwrap_or_else(|| panic!("no metric named {name}"))
}

// One test: it installs the process-wide subscriber and meter provider.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_and_metrics_follow_the_database_conventions() {
    let Some(url) = std::env::var("PG_DATABASE_URL").ok().filter(|u| !u.is_empty()) else {
        let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false");
        assert!(!ci, "PG_DATABASE_URL is not set and CI is: run `cargo xtask test`");
        eprintln!("skipped: PG_DATABASE_URL is not set (run `cargo xtask test`)");
        return;
    };
    // The application's side: an SDK with in-memory exporters, installed before ucm runs.
    let metric_exporter = InMemoryMetricExporter::default();
    let meter_provider = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(metric_exporter.clone()).build())
        .build();
    opentelemetry::global::set_meter_provider(meter_provider.clone());
    let span_exporter = InMemorySpanExporter::default();
    let tracer_provider =
        SdkTracerProvider::builder().with_simple_exporter(span_exporter.clone()).build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(tracer_provider.tracer("test")));
    tracing::subscriber::set_global_default(subscriber).unwrap();

    // ucm's side: ordinary work, one failure.
    let config = ManagerConfig::builder(ManagerMode::AsyncModern).primary(&url).build().unwrap();
    let manager = UnifiedManager::connect(config).await.unwrap();
    let table = format!("ucm_otel_{}", std::process::id());
    manager
        .execute(
            ConnectionMode::ReadWrite,
            &format!("CREATE TABLE {table} (id BIGINT, note TEXT)"),
            &[],
        )
        .await
        .unwrap();
    manager
        .execute(
            ConnectionMode::ReadWrite,
            &format!("INSERT INTO {table} (id, note) VALUES ($1, $2)"),
            &[1.into(), SECRET_PARAMETER.into()],
        )
        .await
        .unwrap();
    let rows = manager
        .fetch_all(
            ConnectionMode::ReadOnly,
            &format!("SELECT note FROM {table} WHERE id = $1"),
            &[1.into()],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    let failed = manager
        .fetch_all(ConnectionMode::ReadOnly, &format!("SELECT no_such_column FROM {table}"), &[])
        .await
        .unwrap_err();
    assert_eq!(failed.sqlstate(), Some("42703"));
    manager.execute(ConnectionMode::ReadWrite, &format!("DROP TABLE {table}"), &[]).await.unwrap();
    #[cfg(feature = "redis")]
    let cache_namespace = redis_work().await;

    // Spans.
    tracer_provider.force_flush().unwrap();
    let spans = span_exporter.get_finished_spans().unwrap();
    let select = span(&spans, &format!("SELECT {table}"));
    assert_eq!(select.span_kind, SpanKind::Client);
    let attributes = &select.attributes;
    assert_eq!(attribute(attributes, "db.system.name"), Some(&OtelValue::from("postgresql")));
    assert_eq!(attribute(attributes, "db.operation.name"), Some(&OtelValue::from("SELECT")));
    assert_eq!(
        attribute(attributes, "db.query.summary"),
        Some(&OtelValue::from(format!("SELECT {table}")))
    );
    let database = ucm::DatabaseUrl::parse(&url).unwrap();
    assert_eq!(
        attribute(attributes, "db.namespace"),
        database.database().map(|d| OtelValue::from(d.to_owned())).as_ref()
    );
    assert_eq!(
        attribute(attributes, "server.address"),
        database.host().map(|h| OtelValue::from(h.to_owned())).as_ref()
    );
    assert_eq!(
        attribute(attributes, "server.port"),
        Some(&OtelValue::I64(i64::from(database.port().unwrap())))
    );
    assert!(attribute(attributes, "error.type").is_none());
    let insert = span(&spans, &format!("INSERT {table}"));
    assert_eq!(insert.span_kind, SpanKind::Client);
    let failing = spans
        .iter()
        .find(|s| attribute(&s.attributes, "db.response.status_code").is_some())
        .expect("a span for the failing statement");
    assert_eq!(
        attribute(&failing.attributes, "db.response.status_code"),
        Some(&OtelValue::from("42703"))
    );
    assert_eq!(attribute(&failing.attributes, "error.type"), Some(&OtelValue::from("query")));
    assert!(matches!(failing.status, Status::Error { .. }), "{:?}", failing.status);
    #[cfg(feature = "redis")]
    if cache_namespace.is_some() {
        let redis = OtelValue::from("redis");
        let set = spans
            .iter()
            .find(|s| s.name == "SET" && attribute(&s.attributes, "db.system.name") == Some(&redis))
            .expect("a span for the Redis SET");
        assert_eq!(set.span_kind, SpanKind::Client);
        assert_eq!(attribute(&set.attributes, "db.operation.name"), Some(&OtelValue::from("SET")));
    }
    let acquire = spans.iter().find(|s| s.name.starts_with("acquire ")).expect("an acquire span");
    assert_eq!(acquire.span_kind, SpanKind::Client);
    assert!(attribute(&acquire.attributes, "db.client.connection.pool.name").is_some());
    // No parameter value and no password in any span.
    let everything = format!("{spans:?}");
    assert!(!everything.contains(SECRET_PARAMETER), "a parameter value was exported");
    if let Some(password) = database.password() {
        assert!(!everything.contains(password.expose()), "the password was exported");
    }

    // Metrics.
    meter_provider.force_flush().unwrap();
    let metrics = metric_exporter.get_finished_metrics().unwrap();
    #[cfg(feature = "redis")]
    if let Some(namespace) = &cache_namespace {
        // Two reads of one key (a miss, then a hit in process) and one invalidation.
        for (name, level, expected) in [
            ("ucm.cache.hits", Some("l1"), 1),
            ("ucm.cache.hits", Some("l2"), 0),
            ("ucm.cache.misses", None, 1),
            ("ucm.cache.invalidations", None, 1),
        ] {
            let AggregatedMetrics::U64(MetricData::Sum(sum)) = metric(&metrics, name).data() else {
                panic!("{name} is not a u64 sum")
            };
            let has = |p: &opentelemetry_sdk::metrics::data::SumDataPoint<u64>,
                       key: &str,
                       value: &str| {
                p.attributes().any(|kv| {
                    kv.key.as_str() == key && kv.value == OtelValue::from(value.to_owned())
                })
            };
            let value: u64 = sum
                .data_points()
                .filter(|p| has(p, "ucm.cache.namespace", namespace))
                .filter(|p| level.is_none_or(|level| has(p, "ucm.cache.level", level)))
                .map(|p| p.value())
                .sum();
            assert_eq!(value, expected, "{name} {level:?}");
        }
    }
    let duration = metric(&metrics, "db.client.operation.duration");
    assert_eq!(duration.unit(), "s");
    let AggregatedMetrics::F64(MetricData::Histogram(histogram)) = duration.data() else {
        panic!("db.client.operation.duration is not an f64 histogram: {:?}", duration.data())
    };
    let points: Vec<_> = histogram.data_points().collect();
    let bounds: Vec<f64> = points[0].bounds().collect();
    assert_eq!(bounds, [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0]);
    let selects: u64 = points
        .iter()
        .filter(|p| {
            p.attributes().any(|kv| {
                kv.key.as_str() == "db.operation.name" && kv.value == OtelValue::from("SELECT")
            })
        })
        .filter(|p| p.attributes().all(|kv| kv.key.as_str() != "error.type"))
        .map(|p| p.count())
        .sum();
    assert!(selects >= 1, "the successful SELECT was recorded");
    assert!(
        points
            .iter()
            .any(|p| p.attributes().any(|kv| kv.key.as_str() == "db.response.status_code"
                && kv.value == OtelValue::from("42703"))),
        "the failure was recorded with its SQLSTATE"
    );
    let count = metric(&metrics, "db.client.connection.count");
    assert_eq!(count.unit(), "{connection}");
    let AggregatedMetrics::I64(MetricData::Sum(sum)) = count.data() else {
        panic!("db.client.connection.count is not an i64 sum: {:?}", count.data())
    };
    let states: Vec<String> = sum
        .data_points()
        .flat_map(|p| {
            p.attributes()
                .filter(|kv| kv.key.as_str() == "db.client.connection.state")
                .map(|kv| kv.value.to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(
        states.contains(&"idle".to_owned()) && states.contains(&"used".to_owned()),
        "{states:?}"
    );
    for name in [
        "db.client.connection.max",
        "db.client.connection.idle.max",
        "db.client.connection.idle.min",
        "db.client.connection.pending_requests",
    ] {
        let AggregatedMetrics::I64(MetricData::Sum(sum)) = metric(&metrics, name).data() else {
            panic!("{name} is not an i64 sum")
        };
        assert!(
            sum.data_points().all(|p| p
                .attributes()
                .any(|kv| kv.key.as_str() == "db.client.connection.pool.name")),
            "{name}"
        );
    }
    for name in [
        "db.client.connection.create_time",
        "db.client.connection.wait_time",
        "db.client.connection.use_time",
    ] {
        assert_eq!(metric(&metrics, name).unit(), "s", "{name}");
    }
    manager.close().await.unwrap();
}

/// Redis commands and a query cache, with the `redis` feature and `REDIS_URL`: the cache's
/// namespace, to find its counters, or `None` when skipped.
#[cfg(feature = "redis")]
async fn redis_work() -> Option<String> {
    let Some(url) = std::env::var("REDIS_URL").ok().filter(|u| !u.is_empty()) else {
        let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false");
        assert!(!ci, "REDIS_URL is not set and CI is: run `cargo xtask test`");
        return None;
    };
    let redis = ucm::RedisManager::connect(&url, ManagerMode::AsyncModern).await.unwrap();
    let namespace = format!("ucm:otel:{}", std::process::id());
    let config = ucm::CacheConfig {
        namespace: namespace.clone(),
        ..ucm::CacheConfig::for_mode(ManagerMode::AsyncModern)
    };
    let cache = ucm::QueryCache::new(config, Some(redis.clone()));
    for _ in 0..2 {
        let n: i64 = cache.get_or_compute("answer", &["t"], || async { Ok(42) }).await.unwrap();
        assert_eq!(n, 42);
    }
    let () = redis
        .query(ucm::ucm_redis::redis::cmd("SET").arg(&namespace).arg(SECRET_PARAMETER))
        .await
        .unwrap();
    let _: i64 = redis.query(ucm::ucm_redis::redis::cmd("DEL").arg(&namespace)).await.unwrap();
    cache.invalidate_table("t").await;
    // Kept alive until the metrics are collected.
    std::mem::forget(cache);
    Some(namespace)
}
