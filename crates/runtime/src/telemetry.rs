//! Logging: structured `tracing` events, as text for people or JSON for collectors.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// The default filter: our own events at `info`; the libraries' chatter (migration notices,
/// connection traces) only when it is a warning.
const DEFAULT_FILTER: &str = "info,refinery_core=warn,tokio_postgres=warn,lapin=warn";

/// Caps that hold whatever `RUST_LOG` says, because the events below them print secrets:
/// lapin traces every frame it writes, the connection's login (user and password) among
/// them, and warns about every message the broker returns as unroutable with its whole
/// body, byte by byte (the registration's carries its secret). The publisher reports returns
/// itself, with the exchange and routing key and never the body.
const ALWAYS: [&str; 2] = ["lapin=debug", "lapin::returned_messages=off"];

/// Installs the global subscriber. `RUST_LOG` overrides the default filter.
/// Calling it twice is harmless (tests build many apps in one process).
pub fn init(format: LogFormat) {
    let filter = ALWAYS.iter().fold(
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER)),
        |filter, cap| filter.add_directive(cap.parse().expect("a valid directive")),
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
