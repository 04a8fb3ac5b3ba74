//! `omsc report --serve`: the page and its JSON over HTTP, read from the database at each
//! request. Bound to 127.0.0.1 by default; with a token, every request must carry it: as
//! `Authorization: Bearer <token>` (scripts), or once as `?token=<token>` (a browser), which
//! is answered with a redirect to the same page without it and an HttpOnly cookie, so the
//! token stays out of the page, its links, the address bar and the history.

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{TimeDelta, Utc};
use deadpool_postgres::Pool;
use serde::Deserialize;

use super::{History, Report, page, parse_span, text};

#[derive(Clone)]
struct AppState {
    pool: Pool,
    token: Option<String>,
    default_since: TimeDelta,
}

#[derive(Debug, Deserialize)]
struct Params {
    since: Option<String>,
    token: Option<String>,
}

/// `/` (the page) and `/report.json`, both taking `?since=1h|1d|7d|30d|…`.
pub fn router(pool: Pool, token: Option<String>, default_since: TimeDelta) -> Router {
    Router::new()
        .route("/", get(html))
        .route("/report.json", get(json))
        .with_state(AppState {
            pool,
            token: token.filter(|t| !t.is_empty()),
            default_since,
        })
}

async fn html(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(params): Query<Params>,
) -> Response {
    let since = match authorise(&state, &headers, &params) {
        Ok(since) => since,
        Err(refusal) => return refusal.into_response(),
    };
    if let Some(token) = &params.token {
        return keep_token_in_a_cookie(token, params.since.as_deref());
    }
    let built = async {
        let client = state.pool.get().await?;
        let report = Report::load(&client, since, Utc::now()).await?;
        let history = History::load(&client, &report.window).await?;
        anyhow::Ok(page::render(&report, &history))
    }
    .await;
    match built {
        Ok(body) => (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            body,
        )
            .into_response(),
        Err(e) => unavailable(&e),
    }
}

async fn json(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(params): Query<Params>,
) -> Response {
    let since = match authorise(&state, &headers, &params) {
        Ok(since) => since,
        Err(refusal) => return refusal.into_response(),
    };
    let built = async {
        let client = state.pool.get().await?;
        let report = Report::load(&client, since, Utc::now()).await?;
        Ok::<_, anyhow::Error>(text::json(&report)?)
    }
    .await;
    match built {
        Ok(body) => (
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            body,
        )
            .into_response(),
        Err(e) => unavailable(&e),
    }
}

/// Why a request is turned away.
enum Refusal {
    Unauthorised,
    BadSpan(String),
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::Unauthorised => (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "a token is required: Authorization: Bearer <token>, or ?token=<token>\n",
            )
                .into_response(),
            Refusal::BadSpan(e) => (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
        }
    }
}

/// The name of the cookie that carries the token for a browser.
const COOKIE: &str = "omsc_report_token";

/// Answers a `?token=` request with the same page without it, the token in a cookie.
fn keep_token_in_a_cookie(token: &str, since: Option<&str>) -> Response {
    let location = match since {
        Some(span) if span.bytes().all(|b| b.is_ascii_alphanumeric()) => format!("./?since={span}"),
        _ => "./".to_owned(),
    };
    let cookie = format!("{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/");
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, location),
            (header::SET_COOKIE, cookie),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
    )
        .into_response()
}

/// Checks the token (when one is set) and reads the span asked for.
fn authorise(state: &AppState, headers: &HeaderMap, params: &Params) -> Result<TimeDelta, Refusal> {
    if let Some(expected) = &state.token {
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let cookie = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|pair| pair.trim().strip_prefix(COOKIE)?.strip_prefix('='));
        let given = bearer.or(cookie).or(params.token.as_deref()).unwrap_or("");
        if !same(given.as_bytes(), expected.as_bytes()) {
            return Err(Refusal::Unauthorised);
        }
    }
    match &params.since {
        None => Ok(state.default_since),
        Some(text) => parse_span(text).map_err(Refusal::BadSpan),
    }
}

/// Compares in time independent of where the first difference is.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn unavailable(e: &anyhow::Error) -> Response {
    tracing::warn!(error = %format!("{e:#}"), "cannot build the report");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        format!("cannot read the statistics: {e:#}\n"),
    )
        .into_response()
}
