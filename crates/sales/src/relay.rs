//! The sales outbox relay's side: building `order_management.create`, `.cancel`,
//! `.cancel_line` and `.create_comment` from the current rows.
//!
//! Every row names its order as its subject, so the outbox sends an order's commands after
//! its export, never before. The envelope id (also the AMQP `message_id`) is the order id for
//! the export, `<order id>:cancel` for a cancellation, `<order id>:cancel_line:<line id>` for a
//! line's and `<order id>:comment:<comment id>` for a comment, so a resend after a crash is
//! recognisably the same message (and the part before the first `:` keeps the order's
//! subject on the way to a service bus). The export is built from rows that no one but the
//! connector may change once the order is placed, and a request is never changed once made,
//! so a resend also carries the same content.

use std::collections::HashMap;

use protocol::OutgoingEnvelope;
use protocol::outbound::format_datetime;
use protocol::sales::{
    CancelLineParams, CancelParams, CreateCommentParams, WireOrderComment, methods,
};
use runtime::outbox::{BuildError, Built, OutboxHandler, OutboxRow, Outgoing};

use crate::export;
use orders::SalesChannel;

/// Outbox topics of the sales module (`omsc_outbox_add('sales', <topic>, <order id>, …)`).
pub mod topics {
    pub const ORDER_CREATE: &str = "order.create";
    pub const ORDER_CANCEL: &str = "order.cancel";
    /// Coalesce key `<order id>/<line id>`: the line whose cancellation was asked for.
    pub const ORDER_CANCEL_LINE: &str = "order.cancel_line";
    /// Coalesce key: the comment's id.
    pub const ORDER_COMMENT: &str = "order.comment";
}

const CANCEL_REQUEST: &str = "
    SELECT r.requested_by, o.store
      FROM sales_order_cancel_requests r JOIN sales_orders o ON o.id = r.order_id
     WHERE r.order_id = $1";

const LINE_CANCEL_REQUEST: &str = "
    SELECT r.reason, r.requested_by, o.store, l.line_number
      FROM sales_order_line_cancel_requests r
      JOIN sales_orders o ON o.id = r.order_id
      LEFT JOIN sales_order_lines l ON l.order_id = r.order_id AND l.line_id = r.line_id
     WHERE r.order_id = $1 AND r.line_id = $2";

const COMMENT: &str = "
    SELECT c.author, c.comment, c.created_at, o.store
      FROM sales_order_comments c JOIN sales_orders o ON o.id = c.order_id
     WHERE c.order_id = $1 AND c.id = $2";

pub struct SalesOutbox {
    channel: SalesChannel,
}

impl SalesOutbox {
    pub fn new(channel: SalesChannel) -> Self {
        Self { channel }
    }
}

impl OutboxHandler for SalesOutbox {
    fn module(&self) -> &'static str {
        crate::MODULE
    }

    async fn build<'a>(
        &'a self,
        client: &'a deadpool_postgres::Client,
        row: &'a OutboxRow,
    ) -> Result<Built, BuildError> {
        match row.topic.as_str() {
            topics::ORDER_CREATE => self.build_create(client, &row.subject).await,
            topics::ORDER_CANCEL => self.build_cancel(client, &row.subject).await,
            topics::ORDER_CANCEL_LINE => self.build_cancel_line(client, row).await,
            topics::ORDER_COMMENT => self.build_comment(client, row).await,
            other => Err(BuildError::Invalid(format!(
                "the sales module has no outbox topic {other:?}"
            ))),
        }
    }

    /// The round's exports read together ([`SalesOutbox::build_creates`]), its other rows
    /// (requests, each a single row of its own table) one by one.
    async fn build_round<'a>(
        &'a self,
        client: &'a deadpool_postgres::Client,
        rows: &'a [OutboxRow],
    ) -> Vec<Result<Built, BuildError>> {
        let creates: Vec<&OutboxRow> = rows
            .iter()
            .filter(|row| row.topic == topics::ORDER_CREATE)
            .collect();
        let mut exports = self.build_creates(client, &creates).await;
        let mut built = Vec::with_capacity(rows.len());
        for row in rows {
            built.push(match exports.remove(&row.id) {
                Some(export) => export,
                None => self.build(client, row).await,
            });
        }
        built
    }
}

impl SalesOutbox {
    /// The exports of `rows` (order ids as subjects, one row per order), by row id: one query
    /// per table for all of them ([`export::load_orders`]) and their lines kept in two
    /// statements. When the orders cannot be read or their lines kept together, each is built
    /// alone, so that one order's failure stays its own.
    async fn build_creates(
        &self,
        client: &deadpool_postgres::Client,
        rows: &[&OutboxRow],
    ) -> HashMap<i64, Result<Built, BuildError>> {
        let mut built = HashMap::with_capacity(rows.len());
        if rows.is_empty() {
            return built;
        }
        let ids: Vec<&str> = rows.iter().map(|row| row.subject.as_str()).collect();
        let mut orders = match export::load_orders(client, &ids).await {
            Ok(orders) => orders,
            Err(e) => {
                tracing::warn!(error = %e, rows = rows.len(), "reading a round of exports failed; building each alone");
                return built;
            }
        };
        let mut exports = Vec::new();
        for row in rows {
            let result = match orders.remove(row.subject.as_str()) {
                None => Ok(Built::Nothing),
                Some(order) => match self.export(&row.subject, &order) {
                    Ok((outgoing, lines)) => {
                        exports.push((row.subject.as_str(), lines));
                        Ok(Built::Message(outgoing))
                    }
                    Err(reason) => Err(BuildError::Invalid(reason)),
                },
            };
            built.insert(row.id, result);
        }
        let lines: Vec<(&str, &[export::ExportedLine])> =
            exports.iter().map(|(o, l)| (*o, l.as_slice())).collect();
        if let Err(e) = export::save_lines_of(client, &lines).await {
            tracing::warn!(error = %e, rows = rows.len(), "keeping the lines of a round of exports failed; building each alone");
            built.clear();
        }
        built
    }

    /// The export of one order from its rows, with the lines to keep before it leaves.
    fn export(
        &self,
        order_id: &str,
        rows: &export::OrderRows,
    ) -> Result<(Outgoing, Vec<export::ExportedLine>), String> {
        let mut export = export::build(rows).map_err(|e| e.0)?;
        // The order's `store` is the channel the OMS files it under, and names it in every
        // message about it.
        export.params.order.store = self.channel.of_order(&rows.order.store).to_owned();
        let outgoing = Outgoing {
            method: methods::CREATE.into(),
            message_id: create_message_id(order_id),
            body: OutgoingEnvelope::new(Some(order_id), methods::CREATE, &export.params).to_vec(),
        };
        Ok((outgoing, export.lines))
    }

    /// An order's export, read and built on its own.
    async fn build_create(
        &self,
        client: &deadpool_postgres::Client,
        order_id: &str,
    ) -> Result<Built, BuildError> {
        let Some(rows) = export::load_order(client, order_id).await? else {
            return Ok(Built::Nothing);
        };
        let (outgoing, lines) = self.export(order_id, &rows).map_err(BuildError::Invalid)?;
        export::save_lines(client, order_id, &lines).await?;
        Ok(Built::Message(outgoing))
    }

    async fn build_cancel(
        &self,
        client: &deadpool_postgres::Client,
        order_id: &str,
    ) -> Result<Built, BuildError> {
        let statement = client.prepare_cached(CANCEL_REQUEST).await?;
        let Some(request) = client.query_opt(&statement, &[&order_id]).await? else {
            return Ok(Built::Nothing);
        };
        let id = cancel_message_id(order_id);
        let params = CancelParams {
            order_id: order_id.to_owned(),
            sales_channel_id: self.channel.of_order(request.get(1)).to_owned(),
            user: request.get(0),
        };
        Ok(Built::Message(Outgoing {
            method: methods::CANCEL.into(),
            body: OutgoingEnvelope::new(Some(&id), methods::CANCEL, &params).to_vec(),
            message_id: id,
        }))
    }

    async fn build_cancel_line(
        &self,
        client: &deadpool_postgres::Client,
        row: &OutboxRow,
    ) -> Result<Built, BuildError> {
        let order_id = row.subject.as_str();
        let line_id = row
            .key
            .as_deref()
            .and_then(|key| key.strip_prefix(order_id)?.strip_prefix('/'))
            .ok_or_else(|| {
                BuildError::Invalid(format!(
                    "outbox row {}: a line cancellation's key must be <order id>/<line id>, got {:?}",
                    row.id, row.key
                ))
            })?;
        let statement = client.prepare_cached(LINE_CANCEL_REQUEST).await?;
        let Some(request) = client.query_opt(&statement, &[&order_id, &line_id]).await? else {
            return Ok(Built::Nothing);
        };
        // The export saved its lines before it left, and this row waited for the export.
        let Some(line_number) = request.get::<_, Option<i32>>(3) else {
            return Err(BuildError::Invalid(format!(
                "order {order_id} has no exported line {line_id:?}: sales_order_line_cancel_requests names a line the OMS never received"
            )));
        };
        let id = cancel_line_message_id(order_id, line_id);
        let params = CancelLineParams {
            order_id: order_id.to_owned(),
            sales_channel_id: self.channel.of_order(request.get(2)).to_owned(),
            line_number,
            reason: request.get(0),
            user: request.get(1),
        };
        Ok(Built::Message(Outgoing {
            method: methods::CANCEL_LINE.into(),
            body: OutgoingEnvelope::new(Some(&id), methods::CANCEL_LINE, &params).to_vec(),
            message_id: id,
        }))
    }

    async fn build_comment(
        &self,
        client: &deadpool_postgres::Client,
        row: &OutboxRow,
    ) -> Result<Built, BuildError> {
        let order_id = row.subject.as_str();
        let comment_id: i64 = row
            .key
            .as_deref()
            .and_then(|key| key.parse().ok())
            .ok_or_else(|| {
                BuildError::Invalid(format!(
                    "outbox row {}: a comment's key must be the comment's id, got {:?}",
                    row.id, row.key
                ))
            })?;
        let statement = client.prepare_cached(COMMENT).await?;
        let Some(comment) = client
            .query_opt(&statement, &[&order_id, &comment_id])
            .await?
        else {
            return Ok(Built::Nothing);
        };
        let id = comment_message_id(order_id, comment_id);
        let params = CreateCommentParams {
            order_comment: WireOrderComment {
                order_id: order_id.to_owned(),
                sales_channel_id: self.channel.of_order(comment.get(3)).to_owned(),
                created_date: format_datetime(&comment.get(2)),
                user: comment.get(0),
                comment: comment.get(1),
            },
        };
        Ok(Built::Message(Outgoing {
            method: methods::CREATE_COMMENT.into(),
            body: OutgoingEnvelope::new(Some(&id), methods::CREATE_COMMENT, &params).to_vec(),
            message_id: id,
        }))
    }
}

/// The message id of an order's export: the order id.
pub fn create_message_id(order_id: &str) -> String {
    order_id.to_owned()
}

/// The message id of an order's cancellation request.
pub fn cancel_message_id(order_id: &str) -> String {
    format!("{order_id}:cancel")
}

/// The message id of the cancellation request of one line of an order.
pub fn cancel_line_message_id(order_id: &str, line_id: &str) -> String {
    format!("{order_id}:cancel_line:{line_id}")
}

/// The message id of a comment on an order.
pub fn comment_message_id(order_id: &str, comment_id: i64) -> String {
    format!("{order_id}:comment:{comment_id}")
}
