//! The gateway's settings: where it listens for the bus, where the bus is, how it logs in.

use std::net::SocketAddr;
use std::time::Duration;

use bus_client::BusConfig;
use clap::Args;

#[derive(Debug, Clone, Args)]
pub struct GatewayConfig {
    /// Address of the gateway's HTTP server, where the bus delivers (the registered
    /// `OMSC_CALLBACK_URL` points here through the ingress; any path is accepted).
    #[arg(long, env = "OMSC_GATEWAY_ADDR", default_value = "0.0.0.0:9480")]
    pub gateway_addr: SocketAddr,

    /// Where the bus is and how to log in to it (`OMSC_OMS_URL`, the OAuth credentials, …).
    #[command(flatten)]
    pub bus: BusConfig,

    /// Longest a caller may take to send a request body; a slower one gets 408.
    #[arg(long, env = "OMSC_GATEWAY_READ_TIMEOUT_SECS", default_value_t = 10.0)]
    pub read_timeout_secs: f64,

    /// Requests from the bus handled at once; more get 503 with `Retry-After` (a bound on
    /// the memory held: at most this many bodies of `OMSC_MAX_MESSAGE_BYTES`).
    #[arg(long, env = "OMSC_GATEWAY_MAX_CONCURRENT", default_value_t = 256)]
    pub max_concurrent: usize,

    /// How long a message the bus cannot take (5xx, timeout, refused) is held and tried
    /// again in place, keeping its subject's order, before it takes the retry queues.
    #[arg(long, env = "OMSC_GATEWAY_HOLD_SECS", default_value_t = 600.0)]
    pub hold_secs: f64,

    /// Calls to the bus in flight at once, all subjects together. Each subject's messages
    /// still go one after the other; this bounds the connections to the bus and the memory
    /// they hold when a backlog of many subjects is drained (a prefetch of 1,000 subjects
    /// would otherwise open 1,000 connections at once).
    #[arg(long, env = "OMSC_GATEWAY_BUS_CONCURRENCY", default_value_t = 64)]
    pub bus_concurrency: usize,
}

impl GatewayConfig {
    /// Whether the gateway should run: a bus to talk to.
    pub fn enabled(&self) -> bool {
        self.bus.enabled()
    }

    pub fn read_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.read_timeout_secs.max(0.001))
    }

    pub fn hold(&self) -> Duration {
        Duration::from_secs_f64(self.hold_secs.max(0.0))
    }
}
