//! Publishing simulated traffic to the OMS exchange, as the OMS does: persistent messages,
//! routing key = method, confirmed by the broker.

use futures::future::try_join_all;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::ShortString;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

/// A confirm-mode channel on the OMS exchange.
pub struct OmsPublisher {
    _connection: Connection,
    channel: Channel,
    exchange: String,
}

impl OmsPublisher {
    pub async fn connect(amqp_url: &str, exchange: &str) -> lapin::Result<Self> {
        let connection = Connection::connect(
            amqp_url,
            ConnectionProperties::default().with_connection_name("omsc-simulate".into()),
        )
        .await?;
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Self {
            _connection: connection,
            channel,
            exchange: exchange.to_owned(),
        })
    }

    /// Publishes and waits for the broker to confirm every message. Messages leave in order;
    /// up to `window` are unconfirmed at once.
    pub async fn publish_all<'a>(
        &self,
        messages: impl IntoIterator<Item = (&'a str, Vec<u8>, String)>,
        window: usize,
    ) -> anyhow::Result<usize> {
        let mut pending = Vec::with_capacity(window);
        let mut sent = 0;
        for (routing_key, body, id) in messages {
            let confirm = self
                .channel
                .basic_publish(
                    ShortString::from(self.exchange.as_str()),
                    ShortString::from(routing_key),
                    BasicPublishOptions::default(),
                    &body,
                    BasicProperties::default()
                        .with_content_type("application/json".into())
                        .with_message_id(ShortString::from(id))
                        .with_delivery_mode(2),
                )
                .await?;
            pending.push(confirm);
            sent += 1;
            if pending.len() >= window.max(1) {
                confirm_all(std::mem::take(&mut pending)).await?;
            }
        }
        confirm_all(pending).await?;
        Ok(sent)
    }

    /// Publishes one raw body with a routing key (for malformed input and tests).
    pub async fn publish_raw(&self, routing_key: &str, body: &[u8]) -> anyhow::Result<()> {
        self.publish_all(
            [(routing_key, body.to_vec(), format!("raw-{}", body.len()))],
            1,
        )
        .await
        .map(|_| ())
    }
}

async fn confirm_all(pending: Vec<lapin::PublisherConfirm>) -> anyhow::Result<()> {
    for confirmation in try_join_all(pending).await? {
        anyhow::ensure!(!confirmation.is_nack(), "the broker refused a message");
    }
    Ok(())
}
