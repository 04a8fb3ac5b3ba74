//! A TCP proxy for fault tests: it can cut every connection (and refuse new ones) or stall
//! them (hold every byte), then heal, without touching the shared servers behind it.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Open,
    /// Connections are closed; new ones are accepted and closed at once.
    Cut,
    /// Connections stay open but no byte moves.
    Stalled,
}

pub struct Proxy {
    pub addr: SocketAddr,
    mode: watch::Sender<Mode>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (mode, watcher) = watch::channel(Mode::Open);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if *watcher.borrow() == Mode::Cut {
                    drop(client);
                    continue;
                }
                tokio::spawn(relay(client, upstream, watcher.clone()));
            }
        });
        Self { addr, mode }
    }

    /// A proxy in front of the local broker.
    pub async fn to_broker() -> Self {
        Self::start("127.0.0.1:5672".parse().unwrap()).await
    }

    /// The test broker's URL through this proxy (for one made by [`Proxy::to_broker`]).
    pub fn amqp_url(&self) -> String {
        crate::helpers::AMQP_URL.replace("127.0.0.1:5672", &self.addr.to_string())
    }

    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }
}

async fn relay(client: TcpStream, upstream: SocketAddr, mode: watch::Receiver<Mode>) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::select! {
        () = pipe(client_read, server_write, mode.clone()) => {}
        () = pipe(server_read, client_write, mode) => {}
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut mode: watch::Receiver<Mode>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // Wait while stalled; give up when cut.
        loop {
            let current = *mode.borrow_and_update();
            match current {
                Mode::Open => break,
                Mode::Cut => return,
                Mode::Stalled => {
                    if mode.changed().await.is_err() {
                        return;
                    }
                }
            }
        }
        tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if to.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            },
            changed = mode.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}
