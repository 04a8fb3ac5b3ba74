//! Parsing and applying the inventory methods.

use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use protocol::Rejection;
use protocol::inventory::{self, Source, StockScope, StockSnapshot, methods};
use runtime::{ApplyError, Handler, Outcome};
use serde_json::value::RawValue;
use stock_filter::BatchPlan;

use crate::StockMetrics;
use crate::sources;

/// A valid inventory message.
#[derive(Debug)]
pub enum InventoryMessage {
    /// An aggregate or a source stock snapshot, by its scope.
    Stock(StockSnapshot),
    SourceSaved(Source),
    SourceDeleted(String),
}

pub struct InventoryHandler {
    metrics: StockMetrics,
}

impl InventoryHandler {
    pub fn new(metrics: StockMetrics) -> Self {
        Self { metrics }
    }
}

impl Handler for InventoryHandler {
    type Message = InventoryMessage;

    fn module(&self) -> &'static str {
        "inventory"
    }

    fn methods(&self) -> &'static [&'static str] {
        methods::ALL
    }

    fn parse(
        &self,
        method: &str,
        params: Option<&RawValue>,
        limits: &protocol::Limits,
    ) -> Result<InventoryMessage, Rejection> {
        let params = || params.ok_or_else(|| Rejection::new("envelope has no \"params\""));
        // Routing is by method, never by shape: a source message (which has no `mode`) can
        // never reach the stock filter.
        match method {
            methods::AGGREGATE_STOCK_UPDATED => {
                inventory::parse_stock_snapshot(params()?, StockScope::Aggregate, limits)
                    .map(InventoryMessage::Stock)
            }
            methods::SOURCE_STOCK_UPDATED => {
                inventory::parse_stock_snapshot(params()?, StockScope::Source, limits)
                    .map(InventoryMessage::Stock)
            }
            methods::SOURCE_CREATED | methods::SOURCE_UPDATED => {
                inventory::parse_source(params()?).map(InventoryMessage::SourceSaved)
            }
            methods::SOURCE_DELETED => {
                inventory::parse_source_deleted(params()?).map(InventoryMessage::SourceDeleted)
            }
            other => Err(Rejection::new(format!(
                "method {other:?} is not handled by the inventory module"
            ))),
        }
    }

    fn weight(&self, message: &InventoryMessage) -> usize {
        match message {
            InventoryMessage::Stock(s) => s.stock.len(),
            _ => 1,
        }
    }

    fn produced_at(&self, message: &InventoryMessage) -> Option<DateTime<Utc>> {
        match message {
            InventoryMessage::Stock(s) => Some(s.created_on),
            _ => None,
        }
    }

    async fn apply<'a>(
        &'a self,
        tx: &'a Transaction<'a>,
        batch: &'a [&'a InventoryMessage],
    ) -> Result<Vec<Outcome>, ApplyError> {
        let mut outcomes = vec![Outcome::Applied; batch.len()];
        for ledger in [StockScope::Aggregate, StockScope::Source] {
            let mut plan = BatchPlan::new(ledger);
            let mut members = Vec::new();
            for (i, message) in batch.iter().enumerate() {
                if let InventoryMessage::Stock(s) = message
                    && s.scope == ledger
                {
                    plan.add(s, i);
                    members.push(i);
                }
            }
            if members.is_empty() {
                continue;
            }
            let plan = plan.finish();
            let applied = stock_filter::apply(tx, &plan).await?;
            self.metrics
                .rows
                .with_label_values(&["applied"])
                .inc_by(applied.written);
            self.metrics
                .rows
                .with_label_values(&["stale"])
                .inc_by(applied.stale);
            for i in members {
                // A NONZERO chunk always counts: its arrival schedules the zeroing.
                let nonzero = matches!(batch[i], InventoryMessage::Stock(s) if s.mode == inventory::SnapshotMode::NonZero);
                if !nonzero && applied.writers.binary_search(&i).is_err() {
                    outcomes[i] = Outcome::Stale;
                }
            }
        }
        // Source events carry no version: they apply in arrival order, last one wins.
        for (i, message) in batch.iter().enumerate() {
            outcomes[i] = match message {
                InventoryMessage::SourceSaved(source) => {
                    sources::save(tx, source).await?;
                    Outcome::Applied
                }
                InventoryMessage::SourceDeleted(id) => {
                    if sources::delete(tx, id).await? {
                        Outcome::Applied
                    } else {
                        Outcome::Ignored("unknown_source")
                    }
                }
                InventoryMessage::Stock(_) => continue,
            };
        }
        Ok(outcomes)
    }
}
