//! The service-bus gateway: the connector speaking the OMS's own transport.
//!
//! The OMS talks to its integrations through a service bus, JSON-RPC 2.0 over HTTP in both
//! directions. The gateway carries messages between that bus and the broker, so the modules
//! never know which transport the OMS uses:
//!
//! - inbound ([`inbound`]): an HTTP server at the URL the connector registers; each request
//!   the bus POSTs is verified and published, byte for byte, to `oms.events`;
//! - outbound: a consumer of `connector.gateway` (bound to `commerce.events` for every
//!   method the connector sends) that POSTs each message to the bus.
//!
//! It keeps no state of its own beyond what the runtime gives: the broker's queues, the
//! dead-letter store, metrics and the system report.

pub mod broker;
pub mod bus;
pub mod config;
pub mod inbound;
pub mod jsonrpc;
pub mod metrics;
pub mod outbound;
pub mod signature;
pub mod topology;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use runtime::Runtime;

pub use config::GatewayConfig;
pub use topology::QUEUE;

/// Where an installed gateway listens.
#[derive(Debug, Clone, Copy)]
pub struct Installed {
    pub inbound_addr: SocketAddr,
}

/// Adds the gateway to a runtime: binds its HTTP server now (so a bad address fails at
/// start), serves once the runtime runs; with a bus URL, also carries what the connector
/// sends to the bus.
pub fn install(runtime: &mut Runtime, config: &GatewayConfig) -> anyhow::Result<Installed> {
    let metrics = metrics::GatewayMetrics::register(&runtime.shared().registry)
        .context("registering the gateway's metrics")?;
    let listener = std::net::TcpListener::bind(config.gateway_addr)
        .with_context(|| format!("binding the gateway to {}", config.gateway_addr))?;
    listener.set_nonblocking(true)?;
    let inbound_addr = listener.local_addr()?;
    let shared = runtime.shared().clone();
    shared.stats.add_module(inbound::MODULE);
    let inbound = Arc::new(inbound::Inbound::new(shared, config, metrics.clone()));
    runtime.add_service("gateway inbound", move |_, shutdown| async move {
        match tokio::net::TcpListener::from_std(listener) {
            Ok(listener) => inbound::serve(inbound, listener, shutdown).await,
            Err(e) => tracing::error!(error = %e, "the gateway cannot serve"),
        }
    });
    if config.enabled() {
        let client = Arc::new(
            bus::BusClient::new(&config.bus)
                .context("setting up the HTTP client for the bus")?
                .observe(move |status| metrics.http("outbound", status)),
        );
        runtime.shared().stats.add_module(outbound::MODULE);
        let limits = outbound::Limits {
            hold: config.hold(),
            concurrent_calls: config.bus_concurrency.max(1),
        };
        runtime.add_service("gateway outbound", move |shared, shutdown| {
            outbound::run(shared, client, limits, shutdown)
        });
    } else {
        tracing::warn!(
            "OMSC_OMS_URL is not set: the gateway takes what the bus sends but sends nothing to it"
        );
    }
    // Requests no module consumes, and messages the bus refused, are kept by the keeper of
    // the gateway's dead-letter queue like every module's.
    runtime.add_dead_letter_keeper(QUEUE);
    Ok(Installed { inbound_addr })
}
