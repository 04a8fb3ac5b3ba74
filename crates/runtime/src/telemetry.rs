//! Logging: structured `tracing` events, as text for people or JSON for collectors; and, when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set, the same spans exported to OpenTelemetry
//! ([`crate::trace`]).

use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::{Level, Metadata, Subscriber};
use tracing_subscriber::filter::{FilterExt as _, filter_fn};
use tracing_subscriber::layer::Filter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::LogFormat;

/// The default filter: our own events at `info`; the libraries' chatter (migration notices,
/// connection traces, the OpenTelemetry crates' own) only when it is a warning: a failed
/// export (a collector down) is one.
const DEFAULT_FILTER: &str =
    "info,refinery_core=warn,tokio_postgres=warn,lapin=warn,opentelemetry=warn";

/// Events that print secrets, dropped whatever `RUST_LOG` says: lapin traces every frame
/// it writes, the connection's login (user and password) among them, and warns about every
/// message the broker returns as unroutable with its whole body, byte by byte (the
/// registration's carries its secret). The publisher reports returns itself, with the
/// exchange and routing key and never the body. The OTLP exporter logs what a collector
/// answered to a refused export at debug level, and that answer may echo the request's
/// credentials (`OTEL_EXPORTER_OTLP_HEADERS`).
fn prints_secrets(metadata: &Metadata<'_>) -> bool {
    let target = metadata.target();
    target.starts_with("lapin::returned_messages")
        || (target.starts_with("lapin") && *metadata.level() == Level::TRACE)
        || (target.starts_with("opentelemetry") && *metadata.level() >= Level::DEBUG)
}

/// What is logged: `RUST_LOG`, else the default; never what prints secrets.
fn filter<S: Subscriber>() -> impl Filter<S> {
    EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER))
        .and(filter_fn(|metadata| !prints_secrets(metadata)))
}

/// The spans exported by `provider`, when there is one: the connector's own (a batch, an
/// outbox round …) with the lines logged in them, at the default levels whatever `RUST_LOG`
/// says, so that quieting the log does not cut the traces.
fn spans<S>(provider: Option<&SdkTracerProvider>) -> Option<impl Layer<S>>
where
    S: Subscriber + for<'span> LookupSpan<'span>,
{
    provider.map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(crate::trace::tracer(provider))
            .with_filter(
                EnvFilter::new(DEFAULT_FILTER).and(filter_fn(|metadata| !prints_secrets(metadata))),
            )
    })
}

/// Installs the global subscriber. `RUST_LOG` overrides the default filter; the spans it
/// lets through are also exported when tracing is on (`OTEL_EXPORTER_OTLP_ENDPOINT`).
/// Calling it twice is harmless (tests build many apps in one process). Must run on the
/// tokio runtime: the span exporter is a task on it.
pub fn init(format: LogFormat) {
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let provider = crate::trace::provider();
    let installed = match format {
        LogFormat::Text => tracing_subscriber::registry()
            .with(layer.with_filter(filter()))
            .with(spans(provider.as_ref()))
            .try_init(),
        LogFormat::Json => tracing_subscriber::registry()
            .with(layer.json().flatten_event(true).with_filter(filter()))
            .with(spans(provider.as_ref()))
            .try_init(),
    };
    if installed.is_ok()
        && provider.is_some()
        && let Some(endpoint) = crate::trace::endpoint()
    {
        tracing::info!(%endpoint, "exporting spans over OTLP");
    }
}
