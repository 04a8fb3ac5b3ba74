//! Where the bus is and how the connector logs in to it.

use std::time::Duration;

use clap::Args;
use runtime::config::Secret;

#[derive(Debug, Clone, Args)]
pub struct BusConfig {
    /// Base URL of the OMS service bus (`https://bus.example/api`). Empty: the OMS does not
    /// talk through a bus (no gateway, no source sync).
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

    /// Longest the connector waits for the bus to answer one call.
    #[arg(long, env = "OMSC_OMS_TIMEOUT_SECS", default_value_t = 15.0)]
    pub bus_timeout_secs: f64,
}

impl BusConfig {
    /// Whether there is a bus to talk to.
    pub fn enabled(&self) -> bool {
        !self.oms_url.trim().is_empty()
    }

    pub fn bus_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.bus_timeout_secs.max(0.001))
    }
}
