//! The report server as someone hostile or unlucky meets it: a token smuggling a header, a
//! cookie older than the token, a lower-case scheme, a shop table that looks like ours, a
//! page someone tries to frame or sniff, a server opened to the network without a token.

use std::net::SocketAddr;

use chrono::TimeDelta;

use crate::helpers::{TestEnv, binary};

const TOKEN: &str = "s3cret-Token";

/// A GET with extra headers: the status and the response head (header lines, lower-cased
/// names) and body.
async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (u16, String, String) {
    let text = test_support::http::response(addr, path, headers)
        .await
        .expect("the report server answers");
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap();
    let head = head
        .lines()
        .skip(1)
        .map(|l| match l.split_once(':') {
            Some((name, value)) => format!("{}:{value}", name.to_ascii_lowercase()),
            None => l.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    (status, head, body.to_owned())
}

async fn serve(env: &TestEnv) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let pool = runtime::db::pool(&env.database_url, "omsc-test", 2).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = report::serve::router(pool, Some(TOKEN.into()), TimeDelta::hours(1));
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, server)
}

fn cookie(value: &str) -> String {
    format!("omsc_report_token={value}")
}

#[tokio::test]
async fn only_the_configured_token_ever_reaches_a_header() {
    let env = TestEnv::new().await;
    let (addr, server) = serve(&env).await;
    let valid = cookie(TOKEN);

    // A link someone was tricked into opening, by a browser that holds a valid cookie.
    let (status, head, _) = get(
        addr,
        "/?token=junk%3B%20Domain%3Devil.example",
        &[("Cookie", &valid)],
    )
    .await;
    assert!(!head.contains("evil.example"), "{status}\n{head}");
    assert!(!head.contains("set-cookie"), "{status}\n{head}");
    assert_eq!(status, 401, "a wrong ?token= is refused\n{head}");
    let (status, head, _) = get(addr, "/?token=a%0d%0aX-Injected:%201", &[]).await;
    assert_eq!(status, 401);
    assert!(!head.contains("x-injected"), "{head}");

    // After a rotation, the browser's cookie is stale: the new ?token= wins and replaces it.
    let (status, head, _) = get(
        addr,
        &format!("/?since=1d&token={TOKEN}"),
        &[("Cookie", &cookie("the-old-token"))],
    )
    .await;
    assert_eq!(status, 303, "{head}");
    assert!(
        head.contains(&format!("set-cookie: omsc_report_token={TOKEN}; HttpOnly")),
        "{head}"
    );
    assert!(head.contains("location: ./?since=1d"), "{head}");
    let (status, _, _) = get(addr, "/", &[("Cookie", &cookie("the-old-token"))]).await;
    assert_eq!(status, 401, "a stale cookie alone still gets nothing");

    // RFC 7235: the scheme is case-insensitive.
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let (status, _, _) = get(
            addr,
            "/report.json",
            &[("Authorization", &format!("{scheme} {TOKEN}"))],
        )
        .await;
        assert_eq!(status, 200, "{scheme}");
    }
    let (status, _, _) = get(addr, "/report.json", &[("Authorization", "Basic czNjcmV0")]).await;
    assert_eq!(status, 401);
    server.abort();
    env.teardown().await;
}

#[tokio::test]
async fn every_answer_forbids_sniffing_framing_and_scripts() {
    let env = TestEnv::new().await;
    let (addr, server) = serve(&env).await;
    let bearer = format!("Bearer {TOKEN}");
    for (path, headers) in [
        ("/", vec![("Authorization", bearer.as_str())]),
        ("/report.json", vec![("Authorization", bearer.as_str())]),
        ("/", vec![]),
        (&*format!("/?token={TOKEN}"), vec![]),
        ("/?since=1y", vec![("Authorization", bearer.as_str())]),
    ] {
        let (status, head, _) = get(addr, path, &headers).await;
        for expected in [
            "x-content-type-options: nosniff",
            "x-frame-options: DENY",
            "content-security-policy: default-src 'none'; style-src 'unsafe-inline'",
            "frame-ancestors 'none'",
            "referrer-policy: no-referrer",
        ] {
            assert!(
                head.contains(expected),
                "{path} ({status}) lacks {expected}:\n{head}"
            );
        }
    }
    server.abort();
    env.teardown().await;
}

#[tokio::test]
async fn the_report_reads_the_connectors_registration_and_no_shop_table() {
    let env = TestEnv::new().await;
    env.db
        .batch_execute(
            "CREATE TABLE account_registrations (email text, api_token text);
             INSERT INTO account_registrations VALUES ('jane@shop.example', 'tok-9f8e7d');
             CREATE VIEW newsletter_registration AS SELECT 'joe@shop.example' AS email;",
        )
        .await
        .unwrap();
    let (addr, server) = serve(&env).await;
    let bearer = format!("Bearer {TOKEN}");
    let leaks = |text: &str| text.contains("shop.example") || text.contains("tok-9f8e7d");

    let (_, _, page) = get(addr, "/", &[("Authorization", &bearer)]).await;
    assert!(page.contains("not registered"), "{page}");
    assert!(!leaks(&page), "{page}");
    let json = omsc_report_json(&env).await;
    assert!(!leaks(&json), "{json}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&json).unwrap()["registration"],
        serde_json::Value::Null
    );

    env.db
        .batch_execute(
            "INSERT INTO connector_registration (state, connector_id, url, subscribes, labels,
                                                 secret_sha256, message_id, sent_by)
             VALUES ('registered', 'commerce-1', 'https://oms.example/callback', '{a.b}', '{}',
                     'digest-5e5e5e', 'm-1', 'omsc')",
        )
        .await
        .unwrap();
    let (_, _, page) = get(addr, "/", &[("Authorization", &bearer)]).await;
    assert!(page.contains("https://oms.example/callback"), "{page}");
    assert!(page.contains("connector_registration"), "{page}");
    assert!(!leaks(&page) && !page.contains("digest-5e5e5e"), "{page}");
    let json = omsc_report_json(&env).await;
    assert!(json.contains("https://oms.example/callback"), "{json}");
    assert!(!leaks(&json) && !json.contains("digest-5e5e5e"), "{json}");
    server.abort();
    env.teardown().await;
}

async fn omsc_report_json(env: &TestEnv) -> String {
    let output = tokio::process::Command::new(binary("omsc"))
        .args(["report", "--json"])
        .env("DATABASE_URL", &env.database_url)
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test]
async fn the_report_is_not_served_to_the_network_without_a_token() {
    let env = TestEnv::new().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let output = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        tokio::process::Command::new(binary("omsc"))
            .args(["report", "--serve", "--listen", &format!("0.0.0.0:{port}")])
            .env("DATABASE_URL", &env.database_url)
            .env_remove("OMSC_REPORT_TOKEN")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("omsc report --serve refuses at once")
    .unwrap();
    assert!(!output.status.success());
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(said.contains("without a token"), "{said}");
    assert!(said.contains("--allow-without-token"), "{said}");
    env.teardown().await;
}
