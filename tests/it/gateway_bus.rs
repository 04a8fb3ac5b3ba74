//! A bus for the gateway's tests, behaving as TRANSPORT.md describes: JSON-RPC over HTTP,
//! `{base}/`, `{base}/delegate/{app}`, `{base}/events`, `{base}/oauth/token`, and
//! `{base}/remote/oms` for `source_repository.search` (pages of the sources it was given, in
//! the shape of `magento.inventory.source_collection`); it answers 200 with a result, or in
//! the error-string style of the public simulators. It records what it
//! was sent and what it answered, and can be taken down and brought back.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// One call the bus received.
#[derive(Debug, Clone)]
pub struct Call {
    pub path: String,
    pub body: Value,
    pub raw: Vec<u8>,
    pub authorization: Option<String>,
    /// The W3C trace context the call carried.
    pub traceparent: Option<String>,
    /// HTTP status the bus answered.
    pub status: u16,
}

impl Call {
    pub fn method(&self) -> &str {
        self.body["method"].as_str().unwrap_or_default()
    }

    pub fn id(&self) -> String {
        match &self.body["id"] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    }
}

#[derive(Default)]
struct BusState {
    calls: Vec<Call>,
    /// Answer 503 to everything until brought back.
    down: bool,
    /// Ids refused with `"error": "<text>"` (the simulators' style).
    refuse: Vec<(String, String)>,
    /// Tokens handed out; the bus accepts only the last one when `require_token`.
    tokens: Vec<String>,
    require_token: bool,
    /// The next call with this token gets 401 (the bus revoked it).
    revoked: Option<String>,
    /// What `source_repository.search` pages through.
    sources: Vec<Value>,
    /// Methods refused with `"error": "<text>"`, whatever the id.
    refuse_method: Vec<(String, String)>,
    /// How long the bus takes to answer: a real bus is not instant, and a gateway killed
    /// mid-stream must have calls in flight.
    delay: std::time::Duration,
    /// Calls being answered now, and the most there ever were at once.
    in_flight: usize,
    most_in_flight: usize,
    /// Where tokens are handed out (under the base): `/oauth/token` unless set.
    token_path: Option<String>,
    /// The `expires_in` of the tokens handed out: 3600 unless set.
    token_lifetime: Option<f64>,
    /// Answer 401 to every call but the token endpoint's (the connector's credentials are
    /// wrong, say its client secret was rotated).
    deny: bool,
}

#[derive(Clone)]
pub struct TestBus {
    /// The base URL, with a path as one public simulator has it (`/api`).
    pub base: String,
    state: Arc<Mutex<BusState>>,
    stop: CancellationToken,
}

impl TestBus {
    pub async fn start() -> Self {
        Self::start_on("127.0.0.1:0").await
    }

    /// A bus listening on `addr` (a gateway may have been calling there while nothing
    /// listened).
    pub async fn start_on(addr: &str) -> Self {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(BusState::default()));
        let stop = CancellationToken::new();
        let router = Router::new().fallback(answer).with_state(state.clone());
        let stopped = stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move { stopped.cancelled().await })
                .await
                .unwrap();
        });
        Self {
            base: format!("http://{addr}/api"),
            state,
            stop,
        }
    }

    pub fn calls(&self) -> Vec<Call> {
        self.state.lock().unwrap().calls.clone()
    }

    /// Calls at `path` (under the base) whose method is `method`.
    pub fn calls_of(&self, method: &str) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.method() == method)
            .collect()
    }

    pub fn set_down(&self, down: bool) {
        self.state.lock().unwrap().down = down;
    }

    pub fn refuse(&self, id: &str, text: &str) {
        self.state
            .lock()
            .unwrap()
            .refuse
            .push((id.to_owned(), text.to_owned()));
    }

    pub fn require_token(&self) {
        self.state.lock().unwrap().require_token = true;
    }

    pub fn revoke(&self, token: &str) {
        self.state.lock().unwrap().revoked = Some(token.to_owned());
    }

    /// The sources the OMS knows, for `source_repository.search`.
    pub fn set_sources(&self, sources: Vec<Value>) {
        self.state.lock().unwrap().sources = sources;
    }

    /// Refuses every call of `method` with `"error": text`.
    pub fn refuse_method(&self, method: &str, text: &str) {
        self.state
            .lock()
            .unwrap()
            .refuse_method
            .push((method.to_owned(), text.to_owned()));
    }

    pub fn set_delay(&self, delay: std::time::Duration) {
        self.state.lock().unwrap().delay = delay;
    }

    /// The most calls the bus was answering at the same time.
    pub fn most_in_flight(&self) -> usize {
        self.state.lock().unwrap().most_in_flight
    }

    /// Hands tokens out at `path` (under the base) instead of `/oauth/token`.
    pub fn set_token_path(&self, path: &str) {
        self.state.lock().unwrap().token_path = Some(path.to_owned());
    }

    /// Hands out tokens that expire after `seconds`.
    pub fn set_token_lifetime(&self, seconds: f64) {
        self.state.lock().unwrap().token_lifetime = Some(seconds);
    }

    /// Answers 401 to every call but the token endpoint's while `deny`.
    pub fn set_deny(&self, deny: bool) {
        self.state.lock().unwrap().deny = deny;
    }

    pub fn tokens(&self) -> Vec<String> {
        self.state.lock().unwrap().tokens.clone()
    }

    pub fn stop(&self) {
        self.stop.cancel();
    }
}

async fn answer(
    State(state): State<Arc<Mutex<BusState>>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri
        .path()
        .strip_prefix("/api")
        .unwrap_or(uri.path())
        .to_owned();
    let delay = {
        let mut state = state.lock().unwrap();
        state.in_flight += 1;
        state.most_in_flight = state.most_in_flight.max(state.in_flight);
        state.delay
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let mut state = state.lock().unwrap();
    state.in_flight -= 1;
    if path == state.token_path.as_deref().unwrap_or("/oauth/token") {
        let token = format!("token-{}", state.tokens.len() + 1);
        state.tokens.push(token.clone());
        let lifetime = state.token_lifetime.unwrap_or(3600.0);
        return (
            StatusCode::CREATED,
            [("content-type", "application/json")],
            json!({"access_token": token, "token_type": "Bearer", "expires_in": lifetime})
                .to_string(),
        )
            .into_response();
    }
    let authorization = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let id = parsed["id"].clone();
    let bearer = authorization
        .as_deref()
        .and_then(|a| a.strip_prefix("Bearer "))
        .map(str::to_owned);
    let (status, reply) = if state.down {
        (StatusCode::SERVICE_UNAVAILABLE, json!({"error": "down"}))
    } else if state.deny {
        (StatusCode::UNAUTHORIZED, json!({"error": "invalid client"}))
    } else if state.revoked.is_some() && state.revoked == bearer {
        state.revoked = None;
        (StatusCode::UNAUTHORIZED, json!({"error": "token revoked"}))
    } else if state.require_token && bearer.as_ref() != state.tokens.last() {
        (StatusCode::UNAUTHORIZED, json!({"error": "no valid token"}))
    } else if let Some((_, text)) = state
        .refuse
        .iter()
        .find(|(refused, _)| id == refused.as_str())
        .or_else(|| {
            state
                .refuse_method
                .iter()
                .find(|(method, _)| parsed["method"] == method.as_str())
        })
    {
        (
            StatusCode::OK,
            json!({"jsonrpc": "2.0", "id": id, "result": null, "error": text}),
        )
    } else if path == "/" && parsed["method"] == protocol::service_bus::methods::REGISTER {
        let params = &parsed["params"];
        let endpoint = json!({
            "id": params["id"],
            "peer_url": params["url"],
            "remote_url": format!("/remote/{}", params["id"].as_str().unwrap_or_default()),
            "delegate_url": format!("/delegate/{}", params["id"].as_str().unwrap_or_default()),
            "contracts": [],
            "subscribes": params["subscribes"],
            "labels": params["labels"],
        });
        (
            StatusCode::OK,
            json!({"jsonrpc": "2.0", "id": id, "result": endpoint}),
        )
    } else if path == "/remote/oms"
        && parsed["method"] == protocol::inventory::methods::SOURCE_SEARCH
    {
        // magento.common.query in, magento.inventory.source_collection out.
        let query = &parsed["params"]["query"];
        let offset = query["offset"].as_u64().unwrap_or(0) as usize;
        let size = query["size"].as_u64().unwrap_or(1000) as usize;
        let items: Vec<Value> = state
            .sources
            .iter()
            .skip(offset)
            .take(size)
            .cloned()
            .collect();
        let page = json!({
            "items": items,
            "offset": offset,
            "size": size,
            "total": state.sources.len(),
        });
        (
            StatusCode::OK,
            json!({"jsonrpc": "2.0", "id": id, "result": page}),
        )
    } else {
        (
            StatusCode::OK,
            json!({"jsonrpc": "2.0", "id": id, "result": null, "error": ""}),
        )
    };
    state.calls.push(Call {
        path,
        body: parsed,
        raw: body.to_vec(),
        authorization,
        traceparent: headers
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        status: status.as_u16(),
    });
    (
        status,
        [("content-type", "application/json")],
        reply.to_string(),
    )
        .into_response()
}
