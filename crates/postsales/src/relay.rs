//! The post-sales outbox relay's side: building `return_management.authorize` from the
//! current rows.
//!
//! The envelope id (also the AMQP `message_id`) is the return's id, the rma, so a resend
//! after a crash is recognisably the same message; it is built from rows no one but the
//! connector changes once the return is requested, so a resend also carries the same
//! content.

use protocol::OutgoingEnvelope;
use protocol::postsales::methods;
use runtime::outbox::{BuildError, Built, OutboxHandler, OutboxRow, Outgoing};

use crate::authorize;
use orders::SalesChannel;

/// Outbox topics of the post-sales module (`omsc_outbox_add('postsales', <topic>, <id>)`).
pub mod topics {
    /// A requested return; the subject is the return's id.
    pub const RETURN_AUTHORIZE: &str = "return.authorize";
}

/// Authorizes returns as the shop's sales channel (`OMSC_SALES_CHANNEL`, else the order's
/// store), the channel the order was exported as.
#[derive(Default)]
pub struct PostsalesOutbox {
    channel: SalesChannel,
}

impl PostsalesOutbox {
    pub fn new(channel: SalesChannel) -> Self {
        Self { channel }
    }
}

impl OutboxHandler for PostsalesOutbox {
    fn module(&self) -> &'static str {
        crate::MODULE
    }

    async fn build<'a>(
        &'a self,
        client: &'a deadpool_postgres::Client,
        row: &'a OutboxRow,
    ) -> Result<Built, BuildError> {
        match row.topic.as_str() {
            topics::RETURN_AUTHORIZE => build_authorize(client, &self.channel, &row.subject).await,
            other => Err(BuildError::Invalid(format!(
                "the post-sales module has no outbox topic {other:?}"
            ))),
        }
    }
}

async fn build_authorize(
    client: &deadpool_postgres::Client,
    channel: &SalesChannel,
    return_id: &str,
) -> Result<Built, BuildError> {
    let Some(rows) = authorize::load(client, return_id).await? else {
        return Ok(Built::Nothing);
    };
    if rows.lines.is_empty() {
        return Err(BuildError::Invalid(format!(
            "return {return_id} has no lines that were exported with its order"
        )));
    }
    let mut params = authorize::build(&rows);
    params.return_authorize.sales_channel_id = channel.of_order(&rows.of.store).to_owned();
    Ok(Built::Message(Outgoing {
        method: methods::AUTHORIZE.into(),
        message_id: return_id.to_owned(),
        body: OutgoingEnvelope::new(Some(return_id), methods::AUTHORIZE, &params).to_vec(),
    }))
}
