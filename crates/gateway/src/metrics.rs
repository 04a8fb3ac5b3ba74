//! The gateway's own metrics (HTTP status classes both ways) and its endpoint labels.

use std::collections::BTreeSet;
use std::sync::Mutex;

use prometheus::{IntCounterVec, Opts, Registry};

/// Distinct methods given a label of their own; any further one is counted as `other`, so
/// a caller sending made-up methods cannot grow the metrics without bound.
const MAX_ENDPOINTS: usize = 256;

#[derive(Debug, Clone)]
pub struct GatewayMetrics {
    /// `omsc_gateway_http_responses_total{direction,class}`: `inbound` (what the gateway
    /// answered the bus) and `outbound` (what the bus answered the gateway); class `2xx` …
    /// `5xx`, or `none` when no answer came (timeout, refused).
    pub responses: IntCounterVec,
}

impl GatewayMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let responses = IntCounterVec::new(
            Opts::new(
                "omsc_gateway_http_responses_total",
                "HTTP responses of the service-bus gateway, by direction and status class",
            ),
            &["direction", "class"],
        )?;
        registry.register(Box::new(responses.clone()))?;
        Ok(Self { responses })
    }

    /// Counts one response (`status` 0: none came).
    pub fn http(&self, direction: &str, status: u16) {
        let class = match status {
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            500..=599 => "5xx",
            _ => "none",
        };
        self.responses.with_label_values(&[direction, class]).inc();
    }
}

/// The endpoint label of a method: the method itself (kept for the life of the process) for
/// the first [`MAX_ENDPOINTS`] methods seen, `other` after that.
pub fn endpoint_label(method: &str) -> &'static str {
    static SEEN: Mutex<BTreeSet<&'static str>> = Mutex::new(BTreeSet::new());
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(known) = seen.get(method) {
        return known;
    }
    if seen.len() >= MAX_ENDPOINTS {
        return "other";
    }
    let label: &'static str = Box::leak(method.to_owned().into_boxed_str());
    seen.insert(label);
    label
}
