//! `omsc report --serve`: the page and its JSON over HTTP, read from the database at each
//! request. Bound to 127.0.0.1 by default; with a token, every request must carry it: as
//! `Authorization: Bearer <token>` (scripts), or once as `?token=<token>` (a browser), which
//! is answered with a redirect to the same page without it and an HttpOnly cookie, so the
//! token stays out of the page, its links, the address bar and the history.
//!
//! A `?token=` decides by itself when present (a browser whose cookie is older than the
//! token gets in with the new one), and the cookie set is always the configured token, never
//! the text the request carried. Every answer forbids sniffing, framing, scripts and loads
//! from elsewhere.

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{TimeDelta, Utc};
use deadpool_postgres::Pool;
use serde::Deserialize;

use crate::page::Refresh;
use crate::{History, Report, page, parse_span, text};

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
    /// `off` pauses the page's refresh (`page::Refresh`).
    refresh: Option<String>,
}

/// `/` (the page) and `/report.json`, both taking `?since=1h|1d|7d|30d|…`.
pub fn router(pool: Pool, token: Option<String>, default_since: TimeDelta) -> Router {
    Router::new()
        .route("/", get(html))
        .route("/report.json", get(json))
        .layer(axum::middleware::map_response(with_safety_headers))
        .with_state(AppState {
            pool,
            token: token.filter(|t| !t.is_empty()),
            default_since,
        })
}

/// The page is one document with an inline style sheet and inline SVG: no script, no
/// frame, nothing loaded from elsewhere, no form. The policy allows exactly that.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'unsafe-inline'; \
     img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

async fn with_safety_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
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
    if params.token.is_some() {
        if let Some(token) = &state.token {
            // Authorised, so the `?token=` was the configured token: that is what the cookie
            // carries, never the request's own text.
            return keep_token_in_a_cookie(token, &params);
        }
        return without_the_token(&params);
    }
    let refresh = Refresh::from_query(params.refresh.as_deref());
    let built = async {
        let client = state.pool.get().await?;
        let report = Report::load(&client, since, Utc::now()).await?;
        let history = History::load(&client, &report.window).await?;
        anyhow::Ok(page::render(&report, &history, refresh))
    }
    .await;
    fresh("text/html; charset=utf-8", built)
}

/// A report just built, never cached (it is out of date within the minute), or 503 with why
/// it could not be built.
fn fresh(content_type: &'static str, built: anyhow::Result<String>) -> Response {
    match built {
        Ok(body) => (
            [
                (header::CONTENT_TYPE, content_type),
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
    fresh("application/json", built)
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

/// Answers a `?token=` request with the same page without it, the configured token in a
/// cookie (replacing whatever cookie the browser had).
fn keep_token_in_a_cookie(configured: &str, params: &Params) -> Response {
    let mut response = without_the_token(params);
    // A token that is not a header value cannot become one; the page then asks again.
    if let Ok(cookie) = HeaderValue::from_str(&format!(
        "{COOKIE}={configured}; HttpOnly; SameSite=Strict; Path=/"
    )) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

/// A redirect to the same page without `?token=` (with the span and the pause asked for).
fn without_the_token(params: &Params) -> Response {
    let mut location = match params.since.as_deref() {
        Some(span) if span.bytes().all(|b| b.is_ascii_alphanumeric()) => format!("./?since={span}"),
        _ => "./".to_owned(),
    };
    if Refresh::from_query(params.refresh.as_deref()) == Refresh::Paused {
        location.push(if location.contains('?') { '&' } else { '?' });
        location.push_str(Refresh::PAUSE);
    }
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, location),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
    )
        .into_response()
}

/// Checks the token (when one is set) and reads the span asked for. A `?token=` decides
/// alone when present; otherwise a bearer token or the cookie must match.
fn authorise(state: &AppState, headers: &HeaderMap, params: &Params) -> Result<TimeDelta, Refusal> {
    if let Some(expected) = &state.token {
        let matches = |given: &str| same(given.as_bytes(), expected.as_bytes());
        let authorised = match params.token.as_deref() {
            Some(given) => matches(given),
            None => bearer(headers).is_some_and(matches) || cookies(headers).any(matches),
        };
        if !authorised {
            return Err(Refusal::Unauthorised);
        }
    }
    match &params.since {
        None => Ok(state.default_since),
        Some(text) => parse_span(text).map_err(Refusal::BadSpan),
    }
}

/// The credentials of `Authorization: Bearer <token>`; the scheme is case-insensitive
/// (RFC 7235).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, credentials) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| credentials.trim())
}

/// Every value of the report's cookie the request carries.
fn cookies(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().strip_prefix(COOKIE)?.strip_prefix('='))
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
