//! Parsing and applying the post-sales methods.
//!
//! Every message is about one order. A batch first locks its orders' rows in id order (as
//! the sales module does, so a post-sales and a sales batch about one order take turns and
//! never deadlock), then the store credit accounts its releases may credit, in customer
//! order. What a message reads of its order (lines, returns, earlier credit memos) stays true
//! until it commits.
//!
//! An order is in the database from the moment the storefront places it, long before any
//! return or refund: a message about an order that is not here is dead-lettered when it is of
//! this shop's sales channel (or names none), and recorded and ignored when it is of
//! another sales channel sharing the OMS. A message naming another channel than its order's
//! is that channel's, even when the order id is one of ours (`orders::SalesChannel`).

use std::collections::{HashMap, HashSet};

use deadpool_postgres::Transaction;
use orders::SalesChannel;
use protocol::Rejection;
use protocol::postsales::{
    self, Refund, RefundAttributesUpdate, ReturnAttributesOf, ReturnAttributesUpdate,
    ReturnDuplicated, ReturnEvent, ReturnEventKind, methods,
};
use runtime::{ApplyError, Handler, Outcome};
use serde_json::value::RawValue;

use crate::status::is_released;
use crate::{duplicates, refunds, returns};

/// A valid post-sales message.
#[derive(Debug)]
pub enum PostsalesMessage {
    Return(ReturnEvent),
    ReturnAttributes(ReturnAttributesUpdate),
    ReturnDuplicated(ReturnDuplicated),
    Refund(Refund),
    RefundAttributes(RefundAttributesUpdate),
}

impl PostsalesMessage {
    pub fn order_id(&self) -> &str {
        match self {
            PostsalesMessage::Return(r) => &r.order_id,
            PostsalesMessage::ReturnAttributes(a) => &a.order_id,
            PostsalesMessage::ReturnDuplicated(d) => &d.order_id,
            PostsalesMessage::Refund(r) => &r.order_id,
            PostsalesMessage::RefundAttributes(a) => &a.order_id,
        }
    }

    /// The sales channel the message says the order is of, when it says.
    pub fn channel(&self) -> Option<&str> {
        match self {
            PostsalesMessage::Return(r) => r.sales_channel_id.as_deref(),
            PostsalesMessage::ReturnDuplicated(d) => d.sales_channel_id.as_deref(),
            PostsalesMessage::Refund(r) => r.store.as_deref(),
            PostsalesMessage::ReturnAttributes(_) | PostsalesMessage::RefundAttributes(_) => None,
        }
    }
}

/// Locks the store credit accounts a batch's releases may credit, in customer order.
pub(crate) const LOCK_ACCOUNTS: &str = "
    SELECT customer_id FROM store_credit_accounts WHERE customer_id = ANY ($1::text[])
     ORDER BY customer_id FOR NO KEY UPDATE";

#[derive(Debug, Default)]
pub struct PostsalesHandler {
    channel: SalesChannel,
    /// Apply each message with its own statements ([`PostsalesHandler::one_by_one`]).
    one_by_one: bool,
}

impl PostsalesHandler {
    /// The handler the module runs: a batch in a constant number of round trips
    /// (`crate::batch`).
    pub fn new(channel: SalesChannel) -> Self {
        Self {
            channel,
            one_by_one: false,
        }
    }

    /// The reference the batch path is checked against: every message applied by its own
    /// compare-and-set statements, in order, in the batch's transaction.
    pub fn one_by_one(channel: SalesChannel) -> Self {
        Self {
            channel,
            one_by_one: true,
        }
    }
}

impl Handler for PostsalesHandler {
    type Message = PostsalesMessage;

    fn module(&self) -> &'static str {
        crate::MODULE
    }

    fn methods(&self) -> &'static [&'static str] {
        methods::CONSUMED
    }

    fn parse(
        &self,
        method: &str,
        params: &RawValue,
        _limits: &protocol::Limits,
    ) -> Result<PostsalesMessage, Rejection> {
        match method {
            methods::RETURN_UPDATED => {
                postsales::parse_return_event(params, ReturnEventKind::Updated)
                    .map(PostsalesMessage::Return)
            }
            methods::RETURN_RECEIVED => {
                postsales::parse_return_event(params, ReturnEventKind::Received)
                    .map(PostsalesMessage::Return)
            }
            methods::RETURN_CUSTOM_ATTRIBUTES_UPDATED => {
                postsales::parse_return_attributes(params, ReturnAttributesOf::Return)
                    .map(PostsalesMessage::ReturnAttributes)
            }
            methods::RETURN_LINE_CUSTOM_ATTRIBUTES_UPDATED => {
                postsales::parse_return_attributes(params, ReturnAttributesOf::Line)
                    .map(PostsalesMessage::ReturnAttributes)
            }
            methods::RETURN_DUPLICATED => {
                postsales::parse_return_duplicated(params).map(PostsalesMessage::ReturnDuplicated)
            }
            methods::REFUND_UPDATED => {
                postsales::parse_refund(params).map(PostsalesMessage::Refund)
            }
            methods::REFUND_CUSTOM_ATTRIBUTES_UPDATED => {
                postsales::parse_refund_attributes(params).map(PostsalesMessage::RefundAttributes)
            }
            other => Err(Rejection::new(format!(
                "method {other:?} is not handled by the postsales module"
            ))),
        }
    }

    fn weight(&self, message: &PostsalesMessage) -> usize {
        match message {
            PostsalesMessage::Return(r) => r.lines.len().max(1),
            PostsalesMessage::Refund(r) => r.lines.len().max(1),
            _ => 1,
        }
    }

    fn produced_at(&self, message: &PostsalesMessage) -> Option<chrono::DateTime<chrono::Utc>> {
        match message {
            PostsalesMessage::Return(r) => r.status.as_ref().map(|s| s.date),
            PostsalesMessage::Refund(r) => Some(r.status.date),
            _ => None,
        }
    }

    async fn apply<'a>(
        &'a self,
        tx: &'a Transaction<'a>,
        batch: &'a [&'a PostsalesMessage],
    ) -> Result<Vec<Outcome>, ApplyError> {
        if !self.one_by_one {
            return Ok(crate::batch::apply(tx, &self.channel, batch).await?);
        }
        let mut ids: Vec<&str> = batch.iter().map(|m| m.order_id()).collect();
        ids.sort_unstable();
        ids.dedup();
        let orders = orders::orders::lock(tx, &ids).await?;
        // Each known order's store.
        let known: HashMap<&str, &str> = orders
            .iter()
            .map(|o| (o.id.as_str(), o.store.as_str()))
            .collect();
        // The accounts a release of this batch may credit, locked in one order.
        let releasing: HashSet<&str> = batch
            .iter()
            .filter_map(|m| match m {
                PostsalesMessage::Refund(r) if is_released(&r.status.code) => {
                    Some(r.order_id.as_str())
                }
                _ => None,
            })
            .collect();
        let customers: Vec<&str> = orders
            .iter()
            .filter(|o| releasing.contains(o.id.as_str()))
            .filter_map(|o| o.customer_id.as_deref())
            .collect();
        if !customers.is_empty() {
            let lock = tx.prepare_cached(LOCK_ACCOUNTS).await?;
            tx.execute(&lock, &[&customers]).await?;
        }
        let mut outcomes = Vec::with_capacity(batch.len());
        for message in batch {
            let outcome = match known.get(message.order_id()) {
                Some(store) if self.channel.is_foreign(message.channel(), store) => {
                    orders::record_foreign_order(tx, message.order_id(), message.channel()).await?;
                    Outcome::Ignored("foreign_order")
                }
                Some(_) => apply_one(tx, message).await?,
                None => unknown_order(tx, &self.channel, message).await?,
            };
            outcomes.push(outcome);
        }
        Ok(outcomes)
    }
}

async fn apply_one(
    tx: &Transaction<'_>,
    message: &PostsalesMessage,
) -> Result<Outcome, tokio_postgres::Error> {
    match message {
        PostsalesMessage::Return(r) => returns::apply_event(tx, r).await,
        PostsalesMessage::ReturnAttributes(a) => returns::apply_attributes(tx, a).await,
        PostsalesMessage::ReturnDuplicated(d) => duplicates::record(tx, d).await,
        PostsalesMessage::Refund(r) => refunds::apply(tx, r).await,
        PostsalesMessage::RefundAttributes(a) => refunds::apply_attributes(tx, a).await,
    }
}

async fn unknown_order(
    tx: &Transaction<'_>,
    channel: &SalesChannel,
    message: &PostsalesMessage,
) -> Result<Outcome, tokio_postgres::Error> {
    let order_id = message.order_id();
    match message.channel() {
        Some(said) if !channel.is_ours(tx, said).await? => {
            orders::record_foreign_order(tx, order_id, Some(said)).await?;
            Ok(Outcome::Ignored("foreign_order"))
        }
        _ => Ok(Outcome::Reject(format!(
            "order {order_id} is not in this Commerce: a return or refund is only ever about an order placed here, which is in the database before it is exported"
        ))),
    }
}
