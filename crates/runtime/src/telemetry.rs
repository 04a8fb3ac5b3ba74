//! Logging: structured `tracing` events, as text for people or JSON for collectors.

use tracing::{Level, Metadata};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::{FilterExt as _, filter_fn};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::config::LogFormat;

/// The default filter: our own events at `info`; the libraries' chatter (migration notices,
/// connection traces) only when it is a warning.
const DEFAULT_FILTER: &str = "info,refinery_core=warn,tokio_postgres=warn,lapin=warn";

/// Events that print secrets, dropped whatever `RUST_LOG` says: lapin traces every frame
/// it writes, the connection's login (user and password) among them, and warns about every
/// message the broker returns as unroutable with its whole body, byte by byte (the
/// registration's carries its secret). The publisher reports returns itself, with the
/// exchange and routing key and never the body.
fn prints_secrets(metadata: &Metadata<'_>) -> bool {
    let target = metadata.target();
    target.starts_with("lapin::returned_messages")
        || (target.starts_with("lapin") && *metadata.level() == Level::TRACE)
}

/// Installs the global subscriber. `RUST_LOG` overrides the default filter.
/// Calling it twice is harmless (tests build many apps in one process).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER))
        .and(filter_fn(|metadata| !prints_secrets(metadata)));
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => tracing_subscriber::registry()
            .with(layer.with_filter(filter))
            .try_init(),
        LogFormat::Json => tracing_subscriber::registry()
            .with(layer.json().flatten_event(true).with_filter(filter))
            .try_init(),
    };
}
