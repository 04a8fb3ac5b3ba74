//! Operator commands on `connector.catalog`.
//!
//! A full export is long (a million products); a message cannot stay unacknowledged that
//! long, and the replica that takes the command may die. So the command only creates the
//! export run (idempotently, under the run id the sender chose) and is acknowledged with
//! that commit; the run is driven by the exporter of whichever replica holds its lease.

use deadpool_postgres::Transaction;
use protocol::Rejection;
use protocol::catalog::{self, ExportFull, methods};
use runtime::{ApplyError, Handler, Outcome};
use serde_json::value::RawValue;

use crate::MODULE;

#[derive(Debug)]
pub enum CatalogCommand {
    ExportFull(ExportFull),
}

pub struct CommandHandler;

/// Creates the run; a redelivered command finds it and does nothing.
const CREATE_RUN: &str = "
    INSERT INTO catalog_export_runs (id, requested_by, chunk_size)
    VALUES ($1, $2, $3)
    ON CONFLICT (id) DO NOTHING
    RETURNING id";

/// A full export also resends every enabled shipping method (through the outbox, merged with
/// any pending export of the same method).
const QUEUE_SHIPPING_METHODS: &str = "
    SELECT count(omsc_outbox_add('catalog', 'shipping_method',
                                 m.carrier_code || '/' || m.method_code,
                                 m.carrier_code || '/' || m.method_code))
      FROM shipping_methods m
      JOIN shipping_carriers c ON c.code = m.carrier_code
     WHERE m.active AND c.active";

impl Handler for CommandHandler {
    type Message = CatalogCommand;

    fn module(&self) -> &'static str {
        MODULE
    }

    fn methods(&self) -> &'static [&'static str] {
        methods::COMMANDS
    }

    fn parse(
        &self,
        method: &str,
        params: Option<&RawValue>,
        _limits: &protocol::Limits,
    ) -> Result<CatalogCommand, Rejection> {
        let params = || params.ok_or_else(|| Rejection::new("envelope has no \"params\""));
        match method {
            methods::EXPORT_FULL => {
                catalog::parse_export_full(params()?).map(CatalogCommand::ExportFull)
            }
            other => Err(Rejection::new(format!(
                "method {other:?} is not a command of the catalog module"
            ))),
        }
    }

    async fn apply<'a>(
        &'a self,
        tx: &'a Transaction<'a>,
        batch: &'a [&'a CatalogCommand],
    ) -> Result<Vec<Outcome>, ApplyError> {
        let mut outcomes = Vec::with_capacity(batch.len());
        for command in batch {
            let CatalogCommand::ExportFull(export) = command;
            let chunk_size = export.chunk_size as i32;
            let created = tx
                .query_opt(
                    CREATE_RUN,
                    &[&export.run_id, &export.requested_by, &chunk_size],
                )
                .await?
                .is_some();
            if created {
                tx.query_one(QUEUE_SHIPPING_METHODS, &[]).await?;
                tracing::info!(run = %export.run_id, chunk_size, "full catalog export requested");
                outcomes.push(Outcome::Applied);
            } else {
                outcomes.push(Outcome::Ignored("duplicate"));
            }
        }
        Ok(outcomes)
    }
}
