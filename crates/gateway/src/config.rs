//! The gateway's settings: where it listens for the bus, where the bus is, how it logs in.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;
use runtime::config::Secret;

#[derive(Debug, Clone, Args)]
pub struct GatewayConfig {
    /// Address of the gateway's HTTP server, where the bus delivers (the registered
    /// `OMSC_CALLBACK_URL` points here through the ingress; any path is accepted).
    #[arg(long, env = "OMSC_GATEWAY_ADDR", default_value = "0.0.0.0:9480")]
    pub gateway_addr: SocketAddr,

    /// Base URL of the OMS service bus (`https://bus.example/api`). Empty: no gateway.
    #[arg(long, env = "OMSC_OMS_URL", default_value = "")]
    pub oms_url: String,

    /// CA certificates (PEM) to trust for an `https://` bus (a private CA); the system's
    /// when unset.
    #[arg(long, env = "OMSC_OMS_CA_FILE")]
    pub oms_ca_file: Option<String>,

    /// OAuth 2 client id for calls to the bus (client credentials). Empty: no token is sent.
    #[arg(long, env = "OMSC_OMS_OAUTH_CLIENT_ID", default_value = "")]
    pub oauth_client_id: String,

    /// OAuth 2 client secret. Never logged.
    #[arg(
        long,
        env = "OMSC_OMS_OAUTH_CLIENT_SECRET",
        default_value = "",
        hide_env_values = true,
        hide_default_value = true
    )]
    pub oauth_client_secret: Secret,

    /// Token endpoint (default: `{OMSC_OMS_URL}/oauth/token`).
    #[arg(long, env = "OMSC_OMS_OAUTH_URL", default_value = "")]
    pub oauth_url: String,

    /// Longest a caller may take to send a request body; a slower one gets 408.
    #[arg(long, env = "OMSC_GATEWAY_READ_TIMEOUT_SECS", default_value_t = 10.0)]
    pub read_timeout_secs: f64,

    /// Requests from the bus handled at once; more get 503 with `Retry-After` (a bound on
    /// the memory held: at most this many bodies of `OMSC_MAX_MESSAGE_BYTES`).
    #[arg(long, env = "OMSC_GATEWAY_MAX_CONCURRENT", default_value_t = 256)]
    pub max_concurrent: usize,

    /// Longest the gateway waits for the bus to answer one call.
    #[arg(long, env = "OMSC_OMS_TIMEOUT_SECS", default_value_t = 15.0)]
    pub bus_timeout_secs: f64,

    /// How long a message the bus cannot take (5xx, timeout, refused) is held and tried
    /// again in place, keeping its subject's order, before it takes the retry queues.
    #[arg(long, env = "OMSC_GATEWAY_HOLD_SECS", default_value_t = 600.0)]
    pub hold_secs: f64,
}

impl GatewayConfig {
    /// Whether the gateway should run: a bus to talk to.
    pub fn enabled(&self) -> bool {
        !self.oms_url.trim().is_empty()
    }

    pub fn read_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.read_timeout_secs.max(0.001))
    }

    pub fn bus_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.bus_timeout_secs.max(0.001))
    }

    pub fn hold(&self) -> Duration {
        Duration::from_secs_f64(self.hold_secs.max(0.0))
    }
}
