//! Tracing a message across the broker: OpenTelemetry spans exported over OTLP/HTTP, and the
//! W3C trace context (`traceparent`, `tracestate`) carried in AMQP headers.
//!
//! Off unless `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set:
//! then nothing of OpenTelemetry runs, no span carries an OpenTelemetry context, and the
//! connector adds no trace header to what it publishes. What it forwards keeps the headers it
//! came with either way (a retry, a dead letter, a replay, the gateway's messages), so an
//! OMS that sends `traceparent` finds it again on them.
//!
//! On, the spans that [`crate::telemetry`] lets through (a batch, an outbox round, a catalog
//! export chunk) are exported in batches by the SDK's processor, which runs on the process's
//! tokio runtime; the HTTP client is the connector's own (hyper over [`HttpsConnector`], the
//! rustls of the broker and database connections). A batch continues the context of the
//! messages it consumed (the parent of a one-message batch, links otherwise); what the
//! connector publishes carries the context of the span it was published in.

use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::client::legacy::Client;
use lapin::types::{AMQPValue, FieldTable, LongString};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator as _};
use opentelemetry::trace::{SpanContext, TraceContextExt as _, TracerProvider as _};
use opentelemetry_http::{HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::https::HttpsConnector;

/// The W3C trace context header: version, trace id, parent span id, flags.
pub const TRACEPARENT: &str = "traceparent";
/// The W3C header of vendor-specific trace state, carried with `traceparent`.
pub const TRACESTATE: &str = "tracestate";

/// The name the tracer gives the spans' instrumentation scope.
const SCOPE: &str = "oms-connector";
/// The longest an export request may take unless `OTEL_EXPORTER_OTLP_TIMEOUT` says otherwise
/// (the specification's default).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// A collector's answer is a few bytes; more is not read.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// The provider of this process, once the exporter is set up.
static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();
/// Why the exporter the environment asks for cannot be set up; [`crate::Runtime::build`]
/// refuses to start with it rather than run without the traces an operator asked for.
static REFUSED: OnceLock<String> = OnceLock::new();

/// Whether spans are exported (and so carry contexts worth propagating).
pub fn enabled() -> bool {
    PROVIDER.get().is_some()
}

/// Why the trace exporter the environment asks for could not be set up, if it could not.
pub fn refused() -> Option<&'static str> {
    REFUSED.get().map(String::as_str)
}

/// The provider for the `tracing` layer, when the environment asks for an exporter and one
/// could be built (once per process; later calls give the same one). Needs a tokio runtime:
/// the batch processor is a task on it.
pub(crate) fn provider() -> Option<SdkTracerProvider> {
    if let Some(provider) = PROVIDER.get() {
        return Some(provider.clone());
    }
    let settings = match Settings::from_env(&|name| std::env::var(name).ok()) {
        Ok(Some(settings)) => settings,
        Ok(None) => return None,
        Err(reason) => {
            let _ = REFUSED.set(reason);
            return None;
        }
    };
    match build(&settings) {
        Ok(provider) => Some(PROVIDER.get_or_init(|| provider).clone()),
        Err(reason) => {
            let _ = REFUSED.set(reason);
            None
        }
    }
}

/// The tracer the `tracing` layer records with.
pub(crate) fn tracer(provider: &SdkTracerProvider) -> opentelemetry_sdk::trace::Tracer {
    provider.tracer(SCOPE)
}

/// Sends the spans still buffered (at shutdown: the last batches and outbox rounds), waiting
/// at most `within`.
pub async fn flush(within: Duration) {
    let Some(provider) = PROVIDER.get().cloned() else {
        return;
    };
    // The processor's flush blocks its caller until the processor task, on this runtime, has
    // exported: it must not block a worker thread that task may need.
    let flushing = tokio::task::spawn_blocking(move || provider.force_flush());
    match tokio::time::timeout(within, flushing).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "the last spans could not be exported"),
        Ok(Err(e)) => tracing::warn!(error = %e, "the last spans could not be exported"),
        Err(_) => tracing::warn!("the last spans could not be exported in time"),
    }
}

/// What the environment says about the exporter (the OpenTelemetry SDK's usual variables).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Settings {
    /// Where spans go, as given (for the log line; the exporter reads the variables itself).
    endpoint: String,
    protocol: Protocol,
    service_name: Option<String>,
    timeout: Duration,
    /// `OTEL_EXPORTER_OTLP_CERTIFICATE`: the CA certificates (PEM) an `https://` collector is
    /// checked against, instead of the system's.
    ca_file: Option<String>,
}

impl Settings {
    /// `None` when no exporter is asked for. `var` reads a variable (the environment, or a
    /// table in tests); an empty value counts as unset, as the specification asks.
    fn from_env(var: &dyn Fn(&str) -> Option<String>) -> Result<Option<Self>, String> {
        let get = |name: &str| {
            var(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        if get("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
            || get("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"))
        {
            return Ok(None);
        }
        let Some(endpoint) = get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .or_else(|| get("OTEL_EXPORTER_OTLP_ENDPOINT"))
        else {
            return Ok(None);
        };
        let scheme = endpoint
            .split_once("://")
            .map(|(scheme, _)| scheme.to_ascii_lowercase());
        if !matches!(scheme.as_deref(), Some("http" | "https")) {
            return Err(format!(
                "the OTLP endpoint {} is not an http:// or https:// URL",
                crate::config::redact_url(&endpoint)
            ));
        }
        if let Some(exporter) = get("OTEL_TRACES_EXPORTER")
            && !exporter.eq_ignore_ascii_case("otlp")
        {
            return Err(format!(
                "OTEL_TRACES_EXPORTER={exporter} is not supported: the connector exports spans \
                 over OTLP (otlp) or not at all (none)"
            ));
        }
        let (protocol_var, protocol) = [
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ]
        .into_iter()
        .find_map(|name| get(name).map(|value| (name, value)))
        .unwrap_or(("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf".into()));
        let protocol = match protocol.to_ascii_lowercase().as_str() {
            "http/protobuf" => Protocol::HttpBinary,
            "http/json" => Protocol::HttpJson,
            "grpc" => {
                return Err(format!(
                    "{protocol_var}=grpc is not supported: the connector exports OTLP over HTTP \
                     (http/protobuf, the default, or http/json; a collector takes it on port 4318)"
                ));
            }
            other => {
                return Err(format!(
                    "{protocol_var}={other} is not one of http/protobuf, http/json"
                ));
            }
        };
        let timeout = match get("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT")
            .or_else(|| get("OTEL_EXPORTER_OTLP_TIMEOUT"))
        {
            None => DEFAULT_TIMEOUT,
            Some(ms) => ms
                .parse::<u64>()
                .ok()
                .filter(|ms| *ms > 0)
                .map(Duration::from_millis)
                .ok_or_else(|| {
                    format!("OTEL_EXPORTER_OTLP_TIMEOUT={ms} is not a number of milliseconds")
                })?,
        };
        // Unless named, the service is the program: omsc-sales, omsc-catalog … (omsc for
        // `omsc run`), so each worker binary is a service of its own in a trace.
        let named = get("OTEL_SERVICE_NAME").is_some()
            || get("OTEL_RESOURCE_ATTRIBUTES").is_some_and(|a| {
                a.split(',')
                    .any(|kv| kv.trim().starts_with("service.name="))
            });
        let service_name = (!named).then(program_name);
        Ok(Some(Self {
            endpoint,
            protocol,
            service_name,
            timeout,
            ca_file: get("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE")
                .or_else(|| get("OTEL_EXPORTER_OTLP_CERTIFICATE")),
        }))
    }
}

/// This program's file name (`omsc-sales`), else `omsc`.
fn program_name() -> String {
    std::env::current_exe()
        .ok()
        .and_then(|path| path.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "omsc".into())
}

fn build(settings: &Settings) -> Result<SdkTracerProvider, String> {
    let client = ExportClient::new(settings.ca_file.as_deref(), settings.timeout)
        .map_err(|e| format!("the OTLP exporter's HTTP client: {e:#}"))?;
    // The endpoint, its path, the headers (`OTEL_EXPORTER_OTLP_HEADERS`) and the compression
    // come from the variables, read by the exporter as the specification describes them.
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_protocol(settings.protocol)
        .with_timeout(settings.timeout)
        .build()
        .map_err(|e| {
            format!(
                "the OTLP exporter for {}: {e}",
                crate::config::redact_url(&settings.endpoint)
            )
        })?;
    let processor =
        BatchSpanProcessor::builder(exporter, opentelemetry_sdk::runtime::Tokio).build();
    let mut resource = opentelemetry_sdk::Resource::builder();
    if let Some(name) = &settings.service_name {
        resource = resource.with_service_name(name.clone());
    }
    Ok(SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(resource.build())
        .build())
}

/// The endpoint that [`provider`] exports to, for the line that says so at start.
pub(crate) fn endpoint() -> Option<String> {
    Settings::from_env(&|name| std::env::var(name).ok())
        .ok()
        .flatten()
        .map(|s| crate::config::redact_url(&s.endpoint))
}

/// The exporter's HTTP client: hyper with the connector's TLS, one request at a time per
/// connection, bounded by the export timeout.
#[derive(Clone)]
struct ExportClient {
    client: Client<HttpsConnector, Full<Bytes>>,
    timeout: Duration,
}

impl std::fmt::Debug for ExportClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExportClient")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl ExportClient {
    fn new(ca_file: Option<&str>, timeout: Duration) -> anyhow::Result<Self> {
        let connector = HttpsConnector::new(ca_file)?;
        let client = Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector);
        Ok(Self { client, timeout })
    }

    async fn send(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let exchange = async {
            let response = self.client.request(request.map(Full::new)).await?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_ANSWER_BYTES).collect().await?;
            Ok::<_, HttpError>(Response::from_parts(parts, body.to_bytes()))
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| format!("no answer within {:?}", self.timeout))?
    }
}

// `HttpClient` is declared with `async_trait`; this is the signature it expands to.
impl HttpClient for ExportClient {
    fn send_bytes<'life0, 'async_trait>(
        &'life0 self,
        request: Request<Bytes>,
    ) -> Pin<Box<dyn Future<Output = Result<Response<Bytes>, HttpError>> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(self.send(request))
    }
}

/// Reads a context from AMQP headers.
struct HeaderReader<'a>(&'a FieldTable);

impl Extractor for HeaderReader<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match self.0.inner().get(key)? {
            AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok(),
            AMQPValue::ShortString(s) => Some(s.as_str()),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        self.0.inner().keys().map(|k| k.as_str()).collect()
    }
}

/// Writes a context into AMQP headers.
struct HeaderWriter<'a>(&'a mut FieldTable);

impl Injector for HeaderWriter<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0
            .insert(key.into(), AMQPValue::LongString(LongString::from(value)));
    }
}

/// The sender's span that a message's headers name, when they carry a valid `traceparent`.
pub fn remote_context(headers: &FieldTable) -> Option<SpanContext> {
    let context = TraceContextPropagator::new().extract(&HeaderReader(headers));
    let span = context.span().span_context().clone();
    span.is_valid().then_some(span)
}

/// Makes `span` continue the senders' traces: the child of the one context of a one-message
/// batch, linked to each context otherwise (a batch has many parents, which a span cannot).
/// Call it before the span is first entered. Nothing when spans are not exported.
pub fn continue_from(span: &tracing::Span, contexts: impl IntoIterator<Item = SpanContext>) {
    if !enabled() {
        return;
    }
    let mut contexts: Vec<SpanContext> = contexts.into_iter().collect();
    if contexts.len() == 1 {
        let parent = opentelemetry::Context::new().with_remote_span_context(contexts.remove(0));
        if let Err(e) = span.set_parent(parent) {
            tracing::debug!(error = %e, "the span could not continue its message's trace");
        }
    } else {
        for context in contexts {
            span.add_link(context);
        }
    }
}

/// Writes `span`'s context into `headers` (replacing a `traceparent` there), when spans are
/// exported and `span` is recorded.
pub fn inject(span: &tracing::Span, headers: &mut FieldTable) {
    if !enabled() {
        return;
    }
    let context = span.context();
    if context.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(&context, &mut HeaderWriter(headers));
    }
}

/// Headers holding `span`'s context, for a message published without headers of its own;
/// `None` when there is nothing to carry (spans not exported), so its properties stay as
/// they were.
pub fn headers(span: &tracing::Span) -> Option<FieldTable> {
    let mut headers = FieldTable::default();
    inject(span, &mut headers);
    (!headers.inner().is_empty()).then_some(headers)
}

/// The trace headers of an HTTP request (the service bus's), as AMQP headers: what the
/// gateway publishes carries them unchanged, exporter or not. Empty when there are none.
pub fn amqp_from_http(headers: &hyper::HeaderMap) -> FieldTable {
    let mut table = FieldTable::default();
    for name in [TRACEPARENT, TRACESTATE] {
        if let Some(value) = headers.get(name).and_then(|v| v.to_str().ok()) {
            table.insert(name.into(), AMQPValue::LongString(LongString::from(value)));
        }
    }
    table
}

/// The trace headers of a message, as HTTP headers: what the gateway POSTs to the bus
/// carries them unchanged, exporter or not.
pub fn http_from_amqp(headers: &FieldTable) -> Vec<(&'static str, String)> {
    let reader = HeaderReader(headers);
    [TRACEPARENT, TRACESTATE]
        .into_iter()
        .filter_map(|name| reader.get(name).map(|value| (name, value.to_owned())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(vars: &[(&str, &str)]) -> Result<Option<Settings>, String> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Settings::from_env(&move |name| {
            vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn nothing_is_exported_unless_an_endpoint_is_set() {
        assert_eq!(settings(&[]), Ok(None));
        assert_eq!(settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")]), Ok(None));
        assert_eq!(
            settings(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
                ("OTEL_SDK_DISABLED", "true")
            ]),
            Ok(None)
        );
        assert_eq!(
            settings(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
                ("OTEL_TRACES_EXPORTER", "none")
            ]),
            Ok(None)
        );
    }

    #[test]
    fn the_protocol_is_protobuf_unless_json_is_asked_for_and_grpc_is_refused() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318");
        let set = settings(&[endpoint]).unwrap().unwrap();
        assert_eq!(set.protocol, Protocol::HttpBinary);
        assert_eq!(set.timeout, DEFAULT_TIMEOUT);
        assert_eq!(set.service_name, Some(program_name()));
        let json = settings(&[endpoint, ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]);
        assert_eq!(json.unwrap().unwrap().protocol, Protocol::HttpJson);
        // The signal's own variable wins over the general one.
        let traces = settings(&[
            endpoint,
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json"),
        ]);
        assert_eq!(traces.unwrap().unwrap().protocol, Protocol::HttpJson);
        let grpc = settings(&[endpoint, ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]).unwrap_err();
        assert!(grpc.contains("grpc is not supported"), "{grpc}");
        let typo = settings(&[endpoint, ("OTEL_EXPORTER_OTLP_PROTOCOL", "http")]).unwrap_err();
        assert!(
            typo.contains("not one of http/protobuf, http/json"),
            "{typo}"
        );
        let timeout = settings(&[endpoint, ("OTEL_EXPORTER_OTLP_TIMEOUT", "ten")]).unwrap_err();
        assert!(timeout.contains("milliseconds"), "{timeout}");
        let schemeless =
            settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318")]).unwrap_err();
        assert!(
            schemeless.contains("not an http:// or https:// URL"),
            "{schemeless}"
        );
        let zipkin = settings(&[endpoint, ("OTEL_TRACES_EXPORTER", "zipkin")]).unwrap_err();
        assert!(zipkin.contains("not supported"), "{zipkin}");
    }

    #[test]
    fn a_service_name_given_in_the_environment_is_kept() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318");
        let named = settings(&[endpoint, ("OTEL_SERVICE_NAME", "shop-connector")]);
        assert_eq!(named.unwrap().unwrap().service_name, None);
        let attributes = settings(&[
            endpoint,
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "deployment.environment=prod, service.name=x",
            ),
        ]);
        assert_eq!(attributes.unwrap().unwrap().service_name, None);
    }

    #[test]
    fn a_traceparent_header_reads_as_the_senders_span() {
        let mut headers = FieldTable::default();
        headers.insert(
            TRACEPARENT.into(),
            AMQPValue::LongString("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
        );
        let context = remote_context(&headers).unwrap();
        assert_eq!(
            context.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(context.span_id().to_string(), "00f067aa0ba902b7");
        assert!(context.is_remote() && context.is_sampled());
        // A short string is read too; garbage and absence are no context.
        headers.insert(
            TRACEPARENT.into(),
            AMQPValue::ShortString(
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00".into(),
            ),
        );
        assert!(!remote_context(&headers).unwrap().is_sampled());
        headers.insert(TRACEPARENT.into(), AMQPValue::LongString("00-zz".into()));
        assert_eq!(remote_context(&headers), None);
        assert_eq!(remote_context(&FieldTable::default()), None);
    }

    #[test]
    fn trace_headers_cross_between_http_and_amqp_unchanged() {
        let mut http = hyper::HeaderMap::new();
        let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        http.insert(TRACEPARENT, parent.parse().unwrap());
        http.insert(TRACESTATE, "oms=1".parse().unwrap());
        http.insert("authorization", "Bearer secret".parse().unwrap());
        let amqp = amqp_from_http(&http);
        assert_eq!(amqp.inner().len(), 2, "only the trace headers: {amqp:?}");
        assert_eq!(
            http_from_amqp(&amqp),
            [
                (TRACEPARENT, parent.to_owned()),
                (TRACESTATE, "oms=1".to_owned())
            ]
        );
        assert!(amqp_from_http(&hyper::HeaderMap::new()).inner().is_empty());
        assert!(http_from_amqp(&FieldTable::default()).is_empty());
    }

    #[test]
    fn without_an_exporter_nothing_is_injected() {
        // Unit tests never set up an exporter.
        let span = tracing::info_span!("round");
        assert!(headers(&span).is_none());
    }
}
