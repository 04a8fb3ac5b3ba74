//! Broker connections and confirmed publishing.

use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::ShortString;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use thiserror::Error;

/// Heartbeat interval asked for unless the URL sets one: a dead or stalled broker
/// connection is noticed within two intervals.
pub const DEFAULT_HEARTBEAT_SECS: u16 = 10;

/// Largest frame asked for unless the URL sets one (`frame_max=`). The client keeps a send
/// and a receive buffer of 32 frames per connection, written through when the connection
/// opens: at the broker's default of 128 KiB that is 8 MiB resident per connection, and
/// `omsc run --all` opens about a dozen (idle: 94 MiB; at 32 KiB: 26 MiB). Bodies are cut
/// into frames of this size, so a half-megabyte stock snapshot travels in 16 frames instead
/// of 4, which costs nothing measurable (see docs/benchmarks.md).
pub const DEFAULT_FRAME_MAX: u32 = 32 * 1024;

/// The longest a broker operation may take before the connection is considered lost. An
/// acknowledgement or a confirm normally takes well under a millisecond; a connection that
/// died between two heartbeats can leave an operation without an answer, and a worker must
/// never wait on it forever.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(15);

/// Awaits a broker operation, turning silence into an error.
pub async fn within<T>(
    what: &str,
    operation: impl std::future::Future<Output = lapin::Result<T>>,
) -> anyhow::Result<T> {
    match tokio::time::timeout(OPERATION_TIMEOUT, operation).await {
        Ok(result) => result.map_err(|source| {
            anyhow::Error::new(OperationFailed {
                what: what.to_owned(),
                source,
            })
        }),
        Err(_) => Err(anyhow::anyhow!(
            "{what}: no answer from the broker within {}s",
            OPERATION_TIMEOUT.as_secs()
        )),
    }
}

/// The most bytes an AMQP short string (message id, routing key, exchange, header name) holds.
pub const SHORT_STRING_MAX_BYTES: usize = lapin::types::MAX_SHORT_STRING_LENGTH;

/// A value that does not fit an AMQP short string.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "{field} is {bytes} bytes long, over the AMQP limit of {SHORT_STRING_MAX_BYTES} bytes: {value:?}"
)]
pub struct TooLong {
    pub field: String,
    pub bytes: usize,
    /// The value's first characters, enough to find it.
    pub value: String,
}

/// An AMQP short string made from data. `ShortString::from` panics on a value over 255 bytes
/// (UTF-8 bytes, not characters: 64 emoji are 256); a value from a row or a message goes
/// through here so it becomes an error naming `field` instead.
pub fn short_string(field: &str, value: &str) -> Result<ShortString, TooLong> {
    ShortString::try_new(value).map_err(|_| TooLong {
        field: field.to_owned(),
        bytes: value.len(),
        value: value.chars().take(40).collect(),
    })
}

/// A broker operation that failed, keeping the client's error for whoever classifies it.
#[derive(Debug, Error)]
#[error("{what}: {source}")]
pub struct OperationFailed {
    what: String,
    source: lapin::Error,
}

#[derive(Debug, Error)]
pub enum PublishError {
    /// A name or property does not fit the wire; publishing it again will not help.
    #[error("{0}")]
    TooLong(#[from] TooLong),
    /// The channel or connection failed.
    #[error("broker error: {0}")]
    Broker(#[from] lapin::Error),
    /// The broker refused the message (publisher confirm nack).
    #[error("the broker refused the message (nack) for {routing_key}")]
    Nacked { routing_key: String },
    /// The broker did not confirm in time; the connection is presumed lost.
    #[error("the broker did not confirm a message within {}s", OPERATION_TIMEOUT.as_secs())]
    Timeout,
    /// Nothing was bound to take the message; with `mandatory` it came back.
    #[error("no queue took the message published to {exchange:?} with routing key {routing_key}")]
    Unroutable {
        exchange: String,
        routing_key: String,
    },
}

/// Connects with a connection name that shows up in the broker's management UI. An
/// `amqps://` URL may carry RabbitMQ's `cacertfile=<PEM file>` option to trust a private CA
/// besides the system's (see [`crate::tls`]).
pub async fn connect(url: &str, connection_name: &str) -> anyhow::Result<Connection> {
    check_url(url)?;
    let (url, ca_file) = split_tls_options(url)?;
    let tls = lapin::tcp::OwnedTLSConfig {
        identity: None,
        cert_chain: ca_file
            .as_deref()
            .map(crate::tls::read_ca_file)
            .transpose()?,
    };
    let props = ConnectionProperties::default().with_connection_name(connection_name.into());
    let runtime = lapin::runtime::default_runtime()?;
    within(
        "connecting",
        Connection::connect_with_config(&with_client_defaults(&url), props, tls, runtime),
    )
    .await
}

/// Refuses a broker URL the client would misread rather than reject: `amqp:/guest:guest@h`
/// (one slash) is a URL without a host whose path would become the virtual host, `http://`
/// is not a broker, a password with an unencoded `/` or `@` moves the host. The error shows
/// the URL with its password hidden.
pub fn check_url(url: &str) -> anyhow::Result<()> {
    let refuse = |why: &str| {
        anyhow::anyhow!(
            "AMQP_URL {} is malformed: {why}",
            crate::config::redact_url(url)
        )
    };
    const SHAPE: &str = "write amqp://user:password@host:port/vhost (or amqps://), with / @ : % ? # \
                         in the user name or password percent-encoded (/ as %2F, @ as %40)";
    let scheme = url.split_once(':').map_or("", |(scheme, _)| scheme);
    if !scheme.eq_ignore_ascii_case("amqp") && !scheme.eq_ignore_ascii_case("amqps") {
        return Err(refuse(&format!(
            "the scheme must be amqp:// or amqps://, not {}; {SHAPE}",
            if scheme.is_empty() || scheme.len() > 16 {
                "missing"
            } else {
                scheme
            }
        )));
    }
    if !url[scheme.len()..].starts_with("://") {
        return Err(refuse(&format!(
            "{scheme}: must be followed by //; {SHAPE}"
        )));
    }
    let parsed = url::Url::parse(url).map_err(|e| refuse(&format!("{e}; {SHAPE}")))?;
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(refuse(&format!("it names no host; {SHAPE}")));
    }
    // The parser ends the host at the first `/`: an `@` after it was meant to end a password.
    if parsed.path().contains('@') {
        return Err(refuse(&format!(
            "an @ after the host (a password with an unencoded / or @?); {SHAPE}"
        )));
    }
    Ok(())
}

/// Takes RabbitMQ's TLS URI options off the URL: `cacertfile` is honoured; client
/// certificates (`certfile`, `keyfile`) are refused rather than silently ignored.
fn split_tls_options(url: &str) -> anyhow::Result<(String, Option<String>)> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_owned(), None));
    };
    let mut ca_file = None;
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("cacertfile", value)) => ca_file = Some(value.to_owned()),
            Some(("certfile" | "keyfile", _)) => anyhow::bail!(
                "client certificates (certfile, keyfile) are not supported for the broker connection"
            ),
            Some(("verify", "verify_none")) => anyhow::bail!(
                "verify=verify_none is not supported: the broker's certificate is always checked"
            ),
            Some(("verify" | "server_name_indication", _)) => {}
            _ => kept.push(pair),
        }
    }
    let url = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((url, ca_file))
}

/// The URL with the heartbeat and the frame size the connector asks for, unless it sets them.
fn with_client_defaults(url: &str) -> String {
    let mut url = url.to_owned();
    let defaults = [
        ("heartbeat", DEFAULT_HEARTBEAT_SECS.to_string()),
        ("frame_max", DEFAULT_FRAME_MAX.to_string()),
    ];
    for (key, value) in defaults {
        let set = url.split_once('?').is_some_and(|(_, query)| {
            query
                .split('&')
                .any(|pair| pair.starts_with(&format!("{key}=")))
        });
        if !set {
            let separator = if url.contains('?') { '&' } else { '?' };
            url = format!("{url}{separator}{key}={value}");
        }
    }
    url
}

/// A channel in confirm mode: a publish returns once the broker has taken responsibility for
/// the message (written it to the queue's log for quorum queues).
#[derive(Clone)]
pub struct Publisher {
    channel: Channel,
}

impl Publisher {
    pub async fn open(connection: &Connection) -> lapin::Result<Self> {
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Self { channel })
    }

    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// Publishes one persistent message and waits for the broker's confirm. `mandatory`
    /// publishing makes a message that no queue takes an error, not a silent drop.
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<(), PublishError> {
        let exchange_name = short_string("exchange", exchange)?;
        let key = short_string("routing key", routing_key)?;
        let publish = async {
            self.channel
                .basic_publish(
                    exchange_name,
                    key,
                    BasicPublishOptions {
                        mandatory: true,
                        ..BasicPublishOptions::default()
                    },
                    body,
                    properties.with_delivery_mode(2),
                )
                .await?
                .await
        };
        let confirm = tokio::time::timeout(OPERATION_TIMEOUT, publish)
            .await
            .map_err(|_| PublishError::Timeout)??;
        if confirm.is_nack() {
            return Err(PublishError::Nacked {
                routing_key: routing_key.to_owned(),
            });
        }
        if confirm.take_message().is_some() {
            return Err(PublishError::Unroutable {
                exchange: exchange.to_owned(),
                routing_key: routing_key.to_owned(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_string_counts_bytes_and_names_the_field() {
        assert_eq!(
            short_string("message id", &"a".repeat(255))
                .unwrap()
                .as_str()
                .len(),
            255
        );
        // 64 characters, 256 bytes: what a character-counting limit let through.
        let emoji = "😀".repeat(64);
        let e = short_string("message id", &emoji).unwrap_err();
        assert_eq!(e.bytes, 256);
        assert!(
            e.to_string()
                .starts_with("message id is 256 bytes long, over the AMQP limit of 255 bytes"),
            "{e}"
        );
    }

    #[test]
    fn a_malformed_broker_url_is_refused_without_its_password() {
        for (url, why) in [
            (
                "amqp:/guest:Secret1@127.0.0.1:5672",
                "must be followed by //",
            ),
            ("http://guest:Secret1@127.0.0.1:15672/", "not http"),
            ("guest:Secret1@127.0.0.1", "not guest"),
            ("amqp://guest:Se/cret1@127.0.0.1:5672/%2f", "invalid port"),
            ("amqp://guest:1234/Secret1@mq/%2f", "an @ after the host"),
            ("amqp:///%2f", "host"),
        ] {
            let error = format!("{:#}", check_url(url).unwrap_err());
            assert!(error.contains(why), "{url}: {error}");
            assert!(!error.contains("Secret1"), "{url}: {error}");
            assert!(error.contains("amqp://user:password@host"), "{error}");
        }
        for url in [
            "amqp://guest:guest@127.0.0.1:5672/%2f",
            "amqps://app:Se%2Fc%40r%3At%25%20@mq.example/prod?heartbeat=5",
            "AMQP://mq",
            "amqp://guest:p@ss@127.0.0.1/%2f",
        ] {
            check_url(url).unwrap_or_else(|e| panic!("{url}: {e:#}"));
        }
    }

    #[test]
    fn the_ca_file_option_is_taken_off_the_url() {
        let (url, ca) =
            split_tls_options("amqps://u:p@h/%2f?cacertfile=/ca.pem&heartbeat=5").unwrap();
        assert_eq!(url, "amqps://u:p@h/%2f?heartbeat=5");
        assert_eq!(ca.as_deref(), Some("/ca.pem"));
        assert!(split_tls_options("amqps://h/%2f?certfile=/c.pem").is_err());
        assert_eq!(
            split_tls_options("amqp://h/%2f").unwrap(),
            ("amqp://h/%2f".to_owned(), None)
        );
    }

    #[test]
    fn a_heartbeat_and_a_frame_size_are_added_unless_the_url_sets_them() {
        assert_eq!(
            with_client_defaults("amqp://h/%2f"),
            "amqp://h/%2f?heartbeat=10&frame_max=32768"
        );
        assert_eq!(
            with_client_defaults("amqp://h/%2f?frame_max=8192"),
            "amqp://h/%2f?frame_max=8192&heartbeat=10"
        );
        assert_eq!(
            with_client_defaults("amqp://h/%2f?heartbeat=3&frame_max=131072"),
            "amqp://h/%2f?heartbeat=3&frame_max=131072"
        );
        // A password that spells a key is not a query.
        assert_eq!(
            with_client_defaults("amqp://u:heartbeat=1@h/%2f"),
            "amqp://u:heartbeat=1@h/%2f?heartbeat=10&frame_max=32768"
        );
    }
}
