//! Bus → broker: the HTTP server the bus delivers to.
//!
//! Every POSTed request is verified (size, signature, JSON-RPC shape), then its exact bytes
//! are published to `oms.events` with the method as routing key, persistent and mandatory,
//! and the bus is answered only once the broker confirmed. A request no module consumes
//! comes back from the broker (mandatory): it is stored as a dead letter and answered
//! `-32601`. When the broker cannot take it the answer is 503 with `Retry-After`: nothing is
//! acknowledged to the bus that is not in the broker.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::serve::ListenerExt as _;
use chrono::Utc;
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use runtime::Shared;
use runtime::amqp::PublishError;
use runtime::incoming::{
    ATTEMPT_HEADER, DEAD_AT_HEADER, ENDPOINT_HEADER, MODULE_HEADER, QUEUE_HEADER, REASON_HEADER,
    ROUTING_KEY_HEADER,
};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::broker::BrokerLink;
use crate::config::GatewayConfig;
use crate::jsonrpc::{self, Body as RpcBody, Request as RpcRequest, codes};
use crate::metrics::{GatewayMetrics, endpoint_label};
use crate::signature;
use crate::topology::QUEUE;

/// The module label of what the gateway takes from the bus (metrics, report).
pub const MODULE: &str = "gateway.inbound";
/// The response header a service-bus endpoint answers a probe with.
pub const PROBE_HEADER: &str = "x-magento-service-bus";
/// Seconds the bus is told to wait before it tries again.
const RETRY_AFTER_SECS: &str = "5";

pub struct Inbound {
    shared: Shared,
    broker: BrokerLink,
    secret: Option<Vec<u8>>,
    max_body: usize,
    read_timeout: Duration,
    permits: Arc<Semaphore>,
    metrics: GatewayMetrics,
}

impl Inbound {
    pub fn new(shared: Shared, config: &GatewayConfig, metrics: GatewayMetrics) -> Self {
        let secret = &shared.config.registration.registration_secret;
        let secret = (!secret.is_empty()).then(|| secret.expose().as_bytes().to_vec());
        if secret.is_none() {
            tracing::warn!(
                "OMSC_REGISTRATION_SECRET is not set: the gateway accepts unsigned requests from anyone who can reach it"
            );
        }
        Self {
            broker: BrokerLink::new(shared.clone(), "omsc-gateway-inbound"),
            max_body: shared.config.consume.max_message_bytes,
            secret,
            read_timeout: config.read_timeout(),
            permits: Arc::new(Semaphore::new(config.max_concurrent.max(1))),
            metrics,
            shared,
        }
    }
}

/// Serves the bus on `listener` until `shutdown`.
pub async fn serve(inbound: Arc<Inbound>, listener: TcpListener, shutdown: CancellationToken) {
    const COMPONENT: &str = "gateway.inbound";
    let health = inbound.shared.health.clone();
    health.register(COMPONENT);
    let addr = listener.local_addr().ok();
    let router = Router::new().fallback(handle).with_state(inbound);
    health.set(COMPONENT, true, "listening");
    tracing::info!(?addr, "gateway listening for the bus");
    // Each answer is one small write the bus waits for: Nagle's algorithm would only hold
    // it back behind the acknowledgement of the previous one.
    let listener = listener.tap_io(|stream| {
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY could not be set on a bus connection");
        }
    });
    let served = axum::serve(listener, router)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await;
    if let Err(e) = served {
        tracing::error!(error = %e, "the gateway's HTTP server failed");
    }
    health.set(COMPONENT, false, "stopped");
}

async fn handle(State(inbound): State<Arc<Inbound>>, request: Request) -> Response {
    match *request.method() {
        Method::OPTIONS => probe(),
        Method::POST => {
            let response = post(&inbound, request).await;
            inbound.metrics.http("inbound", response.status().as_u16());
            response
        }
        _ => (
            StatusCode::METHOD_NOT_ALLOWED,
            [(header::ALLOW, "OPTIONS, POST")],
            "the service-bus endpoint takes POST (and OPTIONS probes)\n",
        )
            .into_response(),
    }
}

/// The bus probes an endpoint before it delivers to it.
fn probe() -> Response {
    (
        StatusCode::OK,
        [(PROBE_HEADER, HeaderValue::from_static("*"))],
    )
        .into_response()
}

async fn post(inbound: &Inbound, request: Request) -> Response {
    let Ok(_permit) = inbound.permits.clone().try_acquire_owned() else {
        // Bounded: a burst beyond the bound is turned away at once, holding no body.
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            codes::SERVER_ERROR,
            "too many requests at once; try again shortly",
        );
    };
    let started = Instant::now();
    let (parts, body) = request.into_parts();
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > inbound.max_body as u64) {
        return too_large(inbound.max_body);
    }
    // The bus's trace context, carried onto what is published (`trace::amqp_from_http`).
    let trace = runtime::trace::amqp_from_http(&parts.headers);
    let trace = &trace;
    let body = match read_body(body, inbound.max_body, inbound.read_timeout).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    if let Some(secret) = &inbound.secret {
        let claimed = parts.headers.get(signature::HEADER).map(|v| v.as_bytes());
        if let Err(e) = signature::verify(secret, &body, claimed) {
            tracing::warn!(reason = %e, "refused a request from the bus");
            return refuse(
                StatusCode::UNAUTHORIZED,
                codes::SERVER_ERROR,
                &e.to_string(),
            );
        }
    }
    match jsonrpc::read(&body) {
        Err(invalid) => reply(StatusCode::BAD_REQUEST, &rpc_error(&invalid)),
        Ok(RpcBody::Single(Err(invalid))) => {
            inbound.record("unparsed", "refused", started);
            reply(StatusCode::BAD_REQUEST, &rpc_error(&invalid))
        }
        Ok(RpcBody::Single(Ok(request))) => {
            let taken = inbound.take(&request, trace, started).await;
            match taken {
                Taken::Unavailable(_) => unavailable(&request.id),
                _ => reply(StatusCode::OK, &taken.answer(&request.id)),
            }
        }
        Ok(RpcBody::Batch(elements)) => {
            // Published in order on one channel, confirmed together.
            let answers = futures::future::join_all(elements.iter().map(|element| async {
                match element {
                    Ok(request) => {
                        let taken = inbound.take(request, trace, started).await;
                        (taken.answer(&request.id), taken.is_unavailable())
                    }
                    Err(invalid) => {
                        inbound.record("unparsed", "refused", started);
                        (rpc_error(invalid), false)
                    }
                }
            }))
            .await;
            if answers.iter().any(|(_, unavailable)| *unavailable) {
                // The bus sends the whole batch again; what was taken already is published
                // again with the same message ids, and the modules apply it once.
                return unavailable(&Value::Null);
            }
            let answers: Vec<Value> = answers.into_iter().map(|(a, _)| a).collect();
            reply(StatusCode::OK, &Value::Array(answers))
        }
    }
}

/// Reads at most `max` bytes, within `timeout`.
async fn read_body(body: Body, max: usize, timeout: Duration) -> Result<Vec<u8>, Response> {
    match tokio::time::timeout(timeout, Limited::new(body, max).collect()).await {
        Err(_) => Err(refuse(
            StatusCode::REQUEST_TIMEOUT,
            codes::SERVER_ERROR,
            &format!(
                "the request body did not arrive within {:.1}s",
                timeout.as_secs_f64()
            ),
        )),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large(max)),
        Ok(Err(e)) => Err(refuse(
            StatusCode::BAD_REQUEST,
            codes::SERVER_ERROR,
            &format!("the request body could not be read: {e}"),
        )),
        Ok(Ok(collected)) => Ok(collected.to_bytes().to_vec()),
    }
}

/// What became of one request.
enum Taken {
    /// Confirmed by the broker.
    Published,
    /// No module consumes the method; stored as a dead letter.
    Unrouted(String),
    /// The broker could not take it (or the dead letter of an unrouted one).
    Unavailable(String),
}

impl Taken {
    fn answer(&self, id: &Value) -> Value {
        match self {
            Taken::Published => jsonrpc::success(id),
            Taken::Unrouted(reason) => jsonrpc::error(id, codes::METHOD_NOT_FOUND, reason),
            Taken::Unavailable(reason) => jsonrpc::error(id, codes::SERVER_ERROR, reason),
        }
    }

    fn is_unavailable(&self) -> bool {
        matches!(self, Taken::Unavailable(_))
    }
}

impl Inbound {
    async fn take(&self, request: &RpcRequest<'_>, trace: &FieldTable, started: Instant) -> Taken {
        let endpoint = endpoint_label(&request.method);
        let taken = self.publish(request, trace).await;
        let outcome = match &taken {
            Taken::Published => "applied",
            Taken::Unrouted(_) => "dead",
            Taken::Unavailable(reason) => {
                tracing::warn!(method = %request.method, %reason, "the broker could not take a request from the bus");
                "unavailable"
            }
        };
        self.record(endpoint, outcome, started);
        taken
    }

    async fn publish(&self, request: &RpcRequest<'_>, trace: &FieldTable) -> Taken {
        let publisher = match self.broker.publisher().await {
            Ok(publisher) => publisher,
            Err(e) => return Taken::Unavailable(format!("broker unavailable: {e:#}")),
        };
        let exchange = self.shared.topology.oms_exchange();
        let mut properties = BasicProperties::default()
            .with_content_type(ShortString::from("application/json"))
            .with_message_id(ShortString::from(request.message_id()))
            .with_app_id(ShortString::from("oms-service-bus"));
        if !trace.inner().is_empty() {
            properties = properties.with_headers(trace.clone());
        }
        let published = publisher
            .publish(
                &exchange,
                &request.method,
                request.raw.as_bytes(),
                properties.clone(),
            )
            .await;
        match published {
            Ok(()) => Taken::Published,
            Err(PublishError::Unroutable { .. }) => {
                let reason = format!(
                    "no module consumes method {:?}: nothing is bound to it on oms.events",
                    request.method
                );
                match self
                    .dead_letter(&publisher, request, properties, &reason)
                    .await
                {
                    Ok(()) => {
                        tracing::warn!(
                            module = MODULE,
                            message_id = %request.message_id(),
                            routing_key = %request.method,
                            attempt = 1,
                            "dead-lettered a request no module consumes"
                        );
                        Taken::Unrouted(reason)
                    }
                    Err(e) => Taken::Unavailable(format!("storing the dead letter failed: {e}")),
                }
            }
            Err(e) => {
                if !matches!(e, PublishError::Nacked { .. }) {
                    self.broker.reset().await;
                }
                Taken::Unavailable(e.to_string())
            }
        }
    }

    /// Sends the request to the gateway's dead-letter queue, whose keeper stores it with
    /// its reason (`omsc dead-letters list`).
    async fn dead_letter(
        &self,
        publisher: &runtime::amqp::Publisher,
        request: &RpcRequest<'_>,
        properties: BasicProperties,
        reason: &str,
    ) -> Result<(), PublishError> {
        // The request's own headers (its trace context) stay on its dead letter.
        let mut headers = properties.headers().clone().unwrap_or_default();
        let mut text = |key: &str, value: &str| {
            headers.insert(
                ShortString::from(key),
                AMQPValue::LongString(LongString::from(value)),
            );
        };
        text(REASON_HEADER, reason);
        text(ENDPOINT_HEADER, &request.method);
        text(MODULE_HEADER, MODULE);
        text(QUEUE_HEADER, QUEUE.name);
        text(ROUTING_KEY_HEADER, &request.method);
        text(DEAD_AT_HEADER, &Utc::now().to_rfc3339());
        headers.insert(ATTEMPT_HEADER.into(), AMQPValue::LongLongInt(0));
        let dead = self.shared.topology.dead_queue(&QUEUE);
        publisher
            .publish(
                "",
                &dead,
                request.raw.as_bytes(),
                properties.with_headers(headers),
            )
            .await
    }

    fn record(&self, endpoint: &'static str, outcome: &'static str, started: Instant) {
        let took = started.elapsed();
        let metrics = &self.shared.metrics;
        metrics
            .messages
            .with_label_values(&[MODULE, endpoint, outcome])
            .inc();
        metrics
            .message_duration
            .with_label_values(&[MODULE, endpoint])
            .observe(took.as_secs_f64());
        self.shared
            .stats
            .batch()
            .message(MODULE, endpoint, outcome, took, None);
    }
}

fn rpc_error(invalid: &jsonrpc::Invalid) -> Value {
    jsonrpc::error(&invalid.id, invalid.code, &invalid.message)
}

fn reply(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn refuse(status: StatusCode, code: i64, message: &str) -> Response {
    let mut response = reply(status, &jsonrpc::error(&Value::Null, code, message));
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from_static(RETRY_AFTER_SECS),
        );
    }
    response
}

fn too_large(max: usize) -> Response {
    refuse(
        StatusCode::PAYLOAD_TOO_LARGE,
        codes::SERVER_ERROR,
        &format!("the request body is larger than {max} bytes (OMSC_MAX_MESSAGE_BYTES)"),
    )
}

fn unavailable(id: &Value) -> Response {
    let mut response = reply(
        StatusCode::SERVICE_UNAVAILABLE,
        &jsonrpc::error(
            id,
            codes::SERVER_ERROR,
            "the connector cannot take messages right now; try again",
        ),
    );
    response.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from_static(RETRY_AFTER_SECS),
    );
    response
}
