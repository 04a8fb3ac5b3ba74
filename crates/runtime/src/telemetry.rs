//! Logging: structured `tracing` events, as text for people or JSON for collectors.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// The default filter: our own events at `info`; the libraries' chatter (migration notices,
/// connection traces) only when it is a warning.
const DEFAULT_FILTER: &str = "info,refinery_core=warn,tokio_postgres=warn,lapin=warn";

/// Installs the global subscriber. `RUST_LOG` overrides the default filter.
/// Calling it twice is harmless (tests build many apps in one process).
pub fn init(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
