//! `RUST_LOG` logging and `--otel stdout|otlp`: the CLI is an application, so it installs the subscriber and the OpenTelemetry exporters that ucm's library crates only emit into.

use anyhow::Context;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Level;
use tracing_subscriber::filter::{EnvFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, registry};

/// Where `--otel` sends ucm's spans and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum OtelExport {
    /// Printed on standard output (spans as they end, metrics at exit).
    Stdout,
    /// OTLP over HTTP to `OTEL_EXPORTER_OTLP_ENDPOINT` (default http://localhost:4318).
    Otlp,
}

/// The installed providers, flushed and shut down at exit.
#[must_use = "call shutdown() at exit, or the last spans and metrics are lost"]
pub(crate) struct Telemetry {
    providers: Option<(SdkTracerProvider, SdkMeterProvider)>,
}

/// The log filter without `RUST_LOG`: warnings, but not sqlx's per-statement ones.
const DEFAULT_LOG_FILTER: &str = "warn,sqlx::query=error";

/// Installs logging to standard error, filtered by `RUST_LOG` (default: warnings, sqlx's
/// slow-statement warnings excepted), uncoloured unless standard error is a terminal, and with
/// `otel` the OpenTelemetry exporters for ucm's spans (targets `ucm::*` at INFO) and metrics.
///
/// # Errors
/// When a subscriber is already installed or an exporter cannot be built.
pub(crate) fn install(otel: Option<OtelExport>) -> anyhow::Result<Telemetry> {
    // Colours only for a terminal: piped into a file or another program, escape codes are
    // noise. sqlx's own "slow statement" warnings are left out by default: ucm times every
    // statement itself (the SLA share, `db.client.operation.duration`), and the demo's
    // deliberate lock waits would interleave them with its tables. `RUST_LOG` overrides.
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_FILTER)),
        );
    let Some(export) = otel else {
        registry().with(logs).try_init().context("installing the log subscriber")?;
        return Ok(Telemetry { providers: None });
    };
    let (tracer, meter) = match export {
        OtelExport::Stdout => (
            SdkTracerProvider::builder()
                .with_simple_exporter(opentelemetry_stdout::SpanExporter::default())
                .build(),
            SdkMeterProvider::builder()
                .with_reader(
                    PeriodicReader::builder(opentelemetry_stdout::MetricExporter::default())
                        .build(),
                )
                .build(),
        ),
        OtelExport::Otlp => (
            SdkTracerProvider::builder()
                .with_batch_exporter(
                    opentelemetry_otlp::SpanExporter::builder()
                        .with_http()
                        .build()
                        .context("building the OTLP span exporter")?,
                )
                .build(),
            SdkMeterProvider::builder()
                .with_periodic_exporter(
                    opentelemetry_otlp::MetricExporter::builder()
                        .with_http()
                        .build()
                        .context("building the OTLP metric exporter")?,
                )
                .build(),
        ),
    };
    // Metrics are recorded through the global provider: it must be in place before the
    // first manager is built.
    opentelemetry::global::set_meter_provider(meter.clone());
    let _ = METER.set(meter.clone());
    let spans = tracing_opentelemetry::layer()
        .with_tracer(tracer.tracer("ucm"))
        .with_filter(Targets::new().with_target("ucm", Level::INFO));
    registry().with(logs).with(spans).try_init().context("installing the subscriber")?;
    Ok(Telemetry { providers: Some((tracer, meter)) })
}

/// The installed meter provider, for [`flush_metrics`].
static METER: std::sync::OnceLock<SdkMeterProvider> = std::sync::OnceLock::new();

/// Exports the metrics now, when `--otel` is on: the pool gauges
/// (`db.client.connection.count`...) are read from live pools, so a command flushes before
/// it closes a manager.
pub(crate) fn flush_metrics() {
    if let Some(meter) = METER.get()
        && let Err(e) = meter.force_flush()
    {
        eprintln!("warning: exporting metrics: {e}");
    }
}

impl Telemetry {
    /// Flushes what is buffered and shuts the exporters down.
    pub(crate) fn shutdown(self) {
        if let Some((tracer, meter)) = self.providers {
            if let Err(e) = tracer.shutdown() {
                eprintln!("warning: flushing spans at exit: {e}");
            }
            if let Err(e) = meter.shutdown() {
                eprintln!("warning: flushing metrics at exit: {e}");
            }
        }
    }
}
