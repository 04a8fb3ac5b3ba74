//! A minimal AMQP 0-9-1 publisher over plain TCP, for publishing what no client library will
//! encode: short strings (content_type, header names …) that are not UTF-8. It speaks just
//! enough of the protocol for that: the connection handshake, one channel in confirm mode,
//! `basic.publish` with its content header and body, and an orderly close.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const FRAME_METHOD: u8 = 1;
const FRAME_HEADER: u8 = 2;
const FRAME_BODY: u8 = 3;
const FRAME_HEARTBEAT: u8 = 8;
const FRAME_END: u8 = 0xCE;
const CHANNEL: u16 = 1;

/// Properties as raw bytes: each short string is sent exactly as given.
#[derive(Debug, Default, Clone)]
pub struct RawProperties {
    pub content_type: Option<Vec<u8>>,
    pub message_id: Option<Vec<u8>>,
    /// Header name (raw bytes) and long-string value.
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
}

pub struct RawPublisher {
    stream: TcpStream,
    frame_max: u32,
}

impl RawPublisher {
    /// Connects as guest to the default virtual host and opens a channel in confirm mode.
    pub async fn connect(addr: &str) -> Self {
        let mut stream = TcpStream::connect(addr)
            .await
            .expect("the broker accepts TCP");
        stream.write_all(b"AMQP\x00\x00\x09\x01").await.unwrap();
        let mut publisher = Self {
            stream,
            frame_max: 4096,
        };
        publisher.expect_method(0, (10, 10)).await; // connection.start

        let mut start_ok = method(10, 11);
        start_ok.extend(0u32.to_be_bytes()); // client properties: an empty table
        short(&mut start_ok, b"PLAIN");
        long(&mut start_ok, b"\0guest\0guest");
        short(&mut start_ok, b"en_US");
        publisher.send(FRAME_METHOD, 0, &start_ok).await;

        let tune = publisher.expect_method(0, (10, 30)).await;
        let channel_max = u16::from_be_bytes([tune[4], tune[5]]);
        let server_frame_max = u32::from_be_bytes([tune[6], tune[7], tune[8], tune[9]]);
        if server_frame_max != 0 {
            publisher.frame_max = server_frame_max.min(131_072);
        }
        let mut tune_ok = method(10, 31);
        tune_ok.extend(channel_max.to_be_bytes());
        tune_ok.extend(publisher.frame_max.to_be_bytes());
        tune_ok.extend(0u16.to_be_bytes()); // no heartbeats
        publisher.send(FRAME_METHOD, 0, &tune_ok).await;

        let mut open = method(10, 40);
        short(&mut open, b"/");
        short(&mut open, b"");
        open.push(0);
        publisher.send(FRAME_METHOD, 0, &open).await;
        publisher.expect_method(0, (10, 41)).await;

        let mut channel_open = method(20, 10);
        short(&mut channel_open, b"");
        publisher.send(FRAME_METHOD, CHANNEL, &channel_open).await;
        publisher.expect_method(CHANNEL, (20, 11)).await;

        let mut select = method(85, 10);
        select.push(0); // wait for select-ok
        publisher.send(FRAME_METHOD, CHANNEL, &select).await;
        publisher.expect_method(CHANNEL, (85, 11)).await;
        publisher
    }

    /// Publishes one message and waits until the broker confirms it.
    pub async fn publish(
        &mut self,
        exchange: &str,
        routing_key: &str,
        properties: &RawProperties,
        body: &[u8],
    ) {
        let mut publish = method(60, 40);
        publish.extend(0u16.to_be_bytes());
        short(&mut publish, exchange.as_bytes());
        short(&mut publish, routing_key.as_bytes());
        publish.push(0); // neither mandatory nor immediate
        self.send(FRAME_METHOD, CHANNEL, &publish).await;

        let mut header = Vec::new();
        header.extend(60u16.to_be_bytes());
        header.extend(0u16.to_be_bytes());
        header.extend((body.len() as u64).to_be_bytes());
        let mut flags = 0u16;
        let mut list = Vec::new();
        if let Some(content_type) = &properties.content_type {
            flags |= 1 << 15;
            short(&mut list, content_type);
        }
        if !properties.headers.is_empty() {
            flags |= 1 << 13;
            let mut table = Vec::new();
            for (name, value) in &properties.headers {
                short(&mut table, name);
                table.push(b'S');
                long(&mut table, value);
            }
            long(&mut list, &table);
        }
        flags |= 1 << 12; // delivery mode: persistent
        list.push(2);
        if let Some(message_id) = &properties.message_id {
            flags |= 1 << 7;
            short(&mut list, message_id);
        }
        header.extend(flags.to_be_bytes());
        header.extend(list);
        self.send(FRAME_HEADER, CHANNEL, &header).await;

        let chunk = (self.frame_max as usize - 8).max(1);
        for part in body.chunks(chunk) {
            self.send(FRAME_BODY, CHANNEL, part).await;
        }
        self.expect_method(CHANNEL, (60, 80)).await; // basic.ack
    }

    pub async fn close(mut self) {
        let mut close = method(10, 50);
        close.extend(200u16.to_be_bytes());
        short(&mut close, b"bye");
        close.extend(0u32.to_be_bytes()); // class and method that failed: none
        self.send(FRAME_METHOD, 0, &close).await;
        self.expect_method(0, (10, 51)).await;
    }

    async fn send(&mut self, kind: u8, channel: u16, payload: &[u8]) {
        let mut frame = Vec::with_capacity(payload.len() + 8);
        frame.push(kind);
        frame.extend(channel.to_be_bytes());
        frame.extend((payload.len() as u32).to_be_bytes());
        frame.extend(payload);
        frame.push(FRAME_END);
        self.stream.write_all(&frame).await.unwrap();
    }

    /// Reads the next method frame, which must be `class.method` on `channel`; returns its
    /// payload. A close from the broker fails the test with the broker's reason.
    async fn expect_method(&mut self, channel: u16, (class, id): (u16, u16)) -> Vec<u8> {
        loop {
            let mut head = [0u8; 7];
            self.stream.read_exact(&mut head).await.unwrap();
            let size = u32::from_be_bytes([head[3], head[4], head[5], head[6]]) as usize;
            let mut payload = vec![0u8; size + 1];
            self.stream.read_exact(&mut payload).await.unwrap();
            assert_eq!(payload.pop(), Some(FRAME_END), "a frame must end with 0xCE");
            if head[0] == FRAME_HEARTBEAT {
                continue;
            }
            assert_eq!(head[0], FRAME_METHOD, "expected a method frame");
            let got = (
                u16::from_be_bytes([payload[0], payload[1]]),
                u16::from_be_bytes([payload[2], payload[3]]),
            );
            if matches!(got, (10, 50) | (20, 40)) {
                let text_len = payload[6] as usize;
                panic!(
                    "the broker closed: {}",
                    String::from_utf8_lossy(&payload[7..7 + text_len])
                );
            }
            assert_eq!(
                (u16::from_be_bytes([head[1], head[2]]), got),
                (channel, (class, id)),
                "unexpected method frame"
            );
            return payload;
        }
    }
}

fn method(class: u16, id: u16) -> Vec<u8> {
    let mut payload = Vec::new();
    payload.extend(class.to_be_bytes());
    payload.extend(id.to_be_bytes());
    payload
}

fn short(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(u8::try_from(bytes.len()).expect("a short string is at most 255 bytes"));
    out.extend(bytes);
}

fn long(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend((bytes.len() as u32).to_be_bytes());
    out.extend(bytes);
}
