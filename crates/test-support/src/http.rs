//! A minimal HTTP/1.1 client for the workers' `/readyz` and `/metrics` and the report server:
//! enough for a probe, with no client library between a test and what the server wrote.

use std::fmt::Display;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::ToSocketAddrs;

/// A GET: status and body; status 0 and no body when nothing answers (a worker not yet
/// listening is a state the callers wait through, not an error).
pub async fn get<A: ToSocketAddrs + Display>(addr: A, path: &str) -> (u16, String) {
    get_with(addr, path, &[]).await
}

/// A GET with extra request headers: status and body, as [`get`].
pub async fn get_with<A: ToSocketAddrs + Display>(
    addr: A,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let Some(text) = response(addr, path, headers).await else {
        return (0, String::new());
    };
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The whole response to a GET (status line, head and body) as text, for a test that reads
/// the headers; `None` when the connection or the request fails. What arrived before a read
/// error is kept: a server that closes early still said something a test may check.
pub async fn response<A: ToSocketAddrs + Display>(
    addr: A,
    path: &str,
    headers: &[(&str, &str)],
) -> Option<String> {
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Connection: close\r\n\r\n");
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    Some(String::from_utf8_lossy(&response).into_owned())
}

/// A free local address for a server a test or the benchmark starts (its HTTP port).
pub fn free_address() -> std::io::Result<SocketAddr> {
    std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()
}
