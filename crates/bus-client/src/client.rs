//! Calls to the bus: a JSON-RPC request POSTed to a path under the bus's base URL, with an
//! OAuth 2 client-credentials token when the connector has credentials.
//!
//! What the bus answers decides what becomes of a message:
//! - 2xx with a JSON-RPC `result` (or the `"error": ""` some buses send for success): taken;
//! - a JSON-RPC error (an object, or a non-empty `error` string), or a 4xx: refused, with
//!   the bus's own words;
//! - a 5xx, 408, 429, a timeout or a refused connection: unavailable, try again; so is a
//!   401 (after one fresh token) or 407, since wrong credentials are not the message's fault.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use runtime::config::Secret;
use runtime::https::HttpsConnector;
use serde_json::Value;
use tokio::sync::Mutex;

use crate::config::BusConfig;

/// How much of a body is quoted in a reason.
const QUOTE: usize = 300;
/// A token is fetched again this long before the bus said it expires.
const REFRESH_MARGIN: Duration = Duration::from_secs(30);

/// The bus took the call and said this.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// Taken; the JSON-RPC `result`.
    Taken(Value),
    /// Refused for good, in the bus's words.
    Refused(String),
}

/// The bus could not be asked, or asked to be asked again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unavailable(pub String);

/// Told the HTTP status of every answer of the bus (0: none came: a timeout, a refused
/// connection), for a caller's metrics.
pub type ResponseObserver = Arc<dyn Fn(u16) + Send + Sync>;

pub struct BusClient {
    client: Client<HttpsConnector, Full<Bytes>>,
    base: String,
    timeout: Duration,
    oauth: Option<OAuth>,
    observer: Option<ResponseObserver>,
}

struct OAuth {
    url: String,
    client_id: String,
    client_secret: Secret,
    token: Mutex<Option<Token>>,
}

#[derive(Clone)]
struct Token {
    value: String,
    /// When to fetch a new one; `None`: until the bus says 401.
    refresh_at: Option<Instant>,
}

impl BusClient {
    /// A client of the bus at `config.oms_url`; fails on a CA file that cannot be read.
    pub fn new(config: &BusConfig) -> anyhow::Result<Self> {
        let base = config.oms_url.trim().trim_end_matches('/').to_owned();
        let connector = HttpsConnector::new(config.oms_ca_file.as_deref())?;
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        let oauth = (!config.oauth_client_id.is_empty()).then(|| OAuth {
            url: if config.oauth_url.is_empty() {
                format!("{base}/oauth/token")
            } else {
                config.oauth_url.clone()
            },
            client_id: config.oauth_client_id.clone(),
            client_secret: config.oauth_client_secret.clone(),
            token: Mutex::new(None),
        });
        Ok(Self {
            client,
            base,
            timeout: config.bus_timeout(),
            oauth,
            observer: None,
        })
    }

    /// Tells `observer` the status of every answer (the gateway counts them by class).
    pub fn observe(mut self, observer: impl Fn(u16) + Send + Sync + 'static) -> Self {
        self.observer = Some(Arc::new(observer));
        self
    }

    fn observed(&self, status: u16) {
        if let Some(observer) = &self.observer {
            observer(status);
        }
    }

    /// `{base}{path}`; `path` starts with `/`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// POSTs the JSON-RPC request `method` with `params`, under an id of its own, to `path`
    /// (a synchronous query: `/remote/oms`) and reads the answer.
    pub async fn request(
        &self,
        path: &str,
        method: &str,
        params: Value,
    ) -> Result<Answer, Unavailable> {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let id = format!(
            "omsc-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let body =
            serde_json::json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        self.call(path, Bytes::from(body.to_string())).await
    }

    /// POSTs a JSON-RPC request to `path` and reads the answer.
    pub async fn call(&self, path: &str, body: Bytes) -> Result<Answer, Unavailable> {
        self.call_with_headers(path, body, &[]).await
    }

    /// Sends `OPTIONS` to `path`, as the bus probes an endpoint before it delivers to it:
    /// the status and the `X-Magento-Service-Bus` header of the answer.
    pub async fn options(&self, path: &str) -> Result<(StatusCode, Option<String>), Unavailable> {
        let url = self.url(path);
        let request = Request::builder()
            .method(Method::OPTIONS)
            .uri(&url)
            .body(Full::new(Bytes::new()))
            .map_err(|e| Unavailable(format!("cannot build a request to {url}: {e}")))?;
        let exchange = async {
            let response = self.client.request(request).await?;
            let header = response
                .headers()
                .get("x-magento-service-bus")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            Ok::<_, hyper_util::client::legacy::Error>((response.status(), header))
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(e)) => Err(Unavailable(format!("cannot reach {url}: {}", chain(&e)))),
            Err(_) => Err(Unavailable(format!(
                "{url} did not answer within {:.1}s",
                self.timeout.as_secs_f64()
            ))),
        }
    }

    /// [`Self::call`] with more request headers (the message's trace context).
    pub async fn call_with_headers(
        &self,
        path: &str,
        body: Bytes,
        headers: &[(&str, String)],
    ) -> Result<Answer, Unavailable> {
        let token = self.token(false).await?;
        let (status, reply) = self
            .post(path, body.clone(), token.as_deref(), headers)
            .await?;
        if status == StatusCode::UNAUTHORIZED && self.oauth.is_some() {
            // The token expired early or was revoked: one more try with a fresh one.
            let token = self.token(true).await?;
            let (status, reply) = self.post(path, body, token.as_deref(), headers).await?;
            return classify(status, &reply);
        }
        classify(status, &reply)
    }

    async fn post(
        &self,
        path: &str,
        body: Bytes,
        token: Option<&str>,
        headers: &[(&str, String)],
    ) -> Result<(StatusCode, Bytes), Unavailable> {
        let url = self.url(path);
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(&url)
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, "application/json");
        for (name, value) in headers {
            request = request.header(*name, value.as_str());
        }
        if let Some(token) = token {
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request
            .body(Full::new(body))
            .map_err(|e| Unavailable(format!("cannot build a request to {url}: {e}")))?;
        self.send(&url, request).await
    }

    async fn send(
        &self,
        url: &str,
        request: Request<Full<Bytes>>,
    ) -> Result<(StatusCode, Bytes), Unavailable> {
        let exchange = async {
            let response = self.client.request(request).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>((status, body))
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(Ok((status, body))) => {
                self.observed(status.as_u16());
                Ok((status, body))
            }
            Ok(Err(e)) => {
                self.observed(0);
                Err(Unavailable(format!(
                    "cannot reach the bus at {url}: {}",
                    chain(&*e)
                )))
            }
            Err(_) => {
                self.observed(0);
                Err(Unavailable(format!(
                    "the bus at {url} did not answer within {:.1}s",
                    self.timeout.as_secs_f64()
                )))
            }
        }
    }

    /// The bearer token, fetched when there is none, when it is about to expire, or when
    /// `renew` (after a 401).
    async fn token(&self, renew: bool) -> Result<Option<String>, Unavailable> {
        let Some(oauth) = &self.oauth else {
            return Ok(None);
        };
        let mut cached = oauth.token.lock().await;
        if !renew
            && let Some(token) = cached.as_ref()
            && token.refresh_at.is_none_or(|at| Instant::now() < at)
        {
            return Ok(Some(token.value.clone()));
        }
        let form = format!(
            "grant_type=client_credentials&client_id={}&client_secret={}",
            form_encode(&oauth.client_id),
            form_encode(oauth.client_secret.expose())
        );
        let request = Request::builder()
            .method(Method::POST)
            .uri(&oauth.url)
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(ACCEPT, "application/json")
            .body(Full::new(Bytes::from(form)))
            .map_err(|e| {
                Unavailable(format!(
                    "cannot build a token request to {}: {e}",
                    oauth.url
                ))
            })?;
        let (status, body) = self.send(&oauth.url, request).await?;
        if !status.is_success() {
            // Wrong credentials are an operator's to fix; messages wait rather than being
            // dead-lettered one by one.
            return Err(Unavailable(format!(
                "the token endpoint {} answered {status}: {}",
                oauth.url,
                quote(&body)
            )));
        }
        let answer: Value = serde_json::from_slice(&body).map_err(|_| {
            Unavailable(format!(
                "the token endpoint {} answered without JSON: {}",
                oauth.url,
                quote(&body)
            ))
        })?;
        let Some(value) = answer["access_token"].as_str().filter(|t| !t.is_empty()) else {
            return Err(Unavailable(format!(
                "the token endpoint {} answered without an access_token",
                oauth.url
            )));
        };
        let lifetime = match &answer["expires_in"] {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        };
        let refresh_at = lifetime.filter(|s| *s > 0.0).map(|seconds| {
            let lifetime = Duration::from_secs_f64(seconds);
            Instant::now() + lifetime.saturating_sub(REFRESH_MARGIN.min(lifetime / 2))
        });
        let token = Token {
            value: value.to_owned(),
            refresh_at,
        };
        *cached = Some(token.clone());
        Ok(Some(token.value))
    }
}

/// What an answer means (see the module's documentation).
pub fn classify(status: StatusCode, body: &[u8]) -> Result<Answer, Unavailable> {
    // A 401 (still, after a fresh token) or a 407 says the connector's credentials are
    // wrong, not the message: the message waits and is retried, in its order, while the
    // operator mends the credentials, rather than every message being dead-lettered.
    if status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::UNAUTHORIZED
        || status == StatusCode::PROXY_AUTHENTICATION_REQUIRED
    {
        return Err(Unavailable(format!(
            "the bus answered {status}: {}",
            quote(body)
        )));
    }
    if !status.is_success() {
        return Ok(Answer::Refused(format!(
            "the bus answered {status}: {}",
            quote(body)
        )));
    }
    let Ok(Value::Object(reply)) = serde_json::from_slice::<Value>(body) else {
        return Ok(Answer::Refused(format!(
            "the bus answered {status} without a JSON-RPC reply: {}",
            quote(body)
        )));
    };
    match reply.get("error") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s.is_empty() => {}
        Some(Value::String(s)) => return Ok(Answer::Refused(format!("the bus refused it: {s}"))),
        Some(Value::Object(error)) => {
            let code = error.get("code").map(Value::to_string).unwrap_or_default();
            let message = error
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let data = error
                .get("data")
                .map(|d| format!(" ({d})"))
                .unwrap_or_default();
            return Ok(Answer::Refused(format!(
                "the bus refused it: {code} {message}{data}"
            )));
        }
        Some(other) => return Ok(Answer::Refused(format!("the bus refused it: {other}"))),
    }
    match reply.get("result") {
        Some(result) => Ok(Answer::Taken(result.clone())),
        // `"error": ""` with no result: the simulators' way of saying it went well.
        None if reply.contains_key("error") => Ok(Answer::Taken(Value::Null)),
        None => Ok(Answer::Refused(format!(
            "the bus answered {status} with neither a result nor an error: {}",
            quote(body)
        ))),
    }
}

fn quote(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return "(no body)".into();
    }
    match text.char_indices().nth(QUOTE) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

/// `application/x-www-form-urlencoded` encoding of one value.
fn form_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_classified_as_the_bus_means_them() {
        let ok = StatusCode::OK;
        assert_eq!(
            classify(ok, br#"{"jsonrpc":"2.0","id":"1","result":{"a":1}}"#),
            Ok(Answer::Taken(serde_json::json!({"a":1})))
        );
        assert_eq!(
            classify(
                ok,
                br#"{"jsonrpc":"2.0","id":"1","result":null,"error":""}"#
            ),
            Ok(Answer::Taken(Value::Null))
        );
        assert_eq!(
            classify(ok, br#"{"error":""}"#),
            Ok(Answer::Taken(Value::Null))
        );
        let Ok(Answer::Refused(reason)) = classify(ok, br#"{"error":"unknown sku X"}"#) else {
            panic!("an error string is a refusal");
        };
        assert!(reason.contains("unknown sku X"), "{reason}");
        let Ok(Answer::Refused(reason)) = classify(
            ok,
            br#"{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"bad order"}}"#,
        ) else {
            panic!("an error object is a refusal");
        };
        assert!(reason.contains("-32602 bad order"), "{reason}");
        assert!(matches!(
            classify(StatusCode::BAD_REQUEST, b"nope"),
            Ok(Answer::Refused(r)) if r.contains("400") && r.contains("nope")
        ));
        assert!(classify(StatusCode::BAD_GATEWAY, b"").is_err());
        assert!(classify(StatusCode::TOO_MANY_REQUESTS, b"").is_err());
        assert!(
            classify(StatusCode::UNAUTHORIZED, b"bad token").is_err(),
            "wrong credentials hold the message, they do not dead-letter it"
        );
        assert!(matches!(
            classify(StatusCode::FORBIDDEN, b"not this order"),
            Ok(Answer::Refused(r)) if r.contains("403")
        ));
        assert!(matches!(classify(ok, b"<html>"), Ok(Answer::Refused(_))));
    }

    #[test]
    fn form_values_are_encoded() {
        assert_eq!(form_encode("a b&c=d"), "a%20b%26c%3Dd");
        assert_eq!(form_encode("plain-1.x_~"), "plain-1.x_~");
    }
}
