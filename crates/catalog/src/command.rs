//! Commands to the connector on `connector.catalog`: the operator's, and the bus's
//! activation.
//!
//! A full export is long (a million products); a message cannot stay unacknowledged that
//! long, and the replica that takes the command may die. So the command only creates the
//! export run (idempotently, under the run id the sender chose) and is acknowledged with
//! that commit; the run is driven by the exporter of whichever replica holds its lease.
//!
//! An activation (`magento.service_bus.activation_management.activate`) asks the connector
//! to register again: it does, forced, before the batch commits. The bus may send it any
//! number of times, and a redelivery registers once more, which is what the bus asked for.
//! It is consumed here, by one queue that every replica of the fleet shares, so a fleet
//! registers once per activation; and this queue is the quiet one (a few commands a day),
//! so an activation never waits behind a backlog of stock or orders (docs/ARCHITECTURE.md).

use deadpool_postgres::Transaction;
use protocol::Rejection;
use protocol::catalog::{self, ExportFull, methods};
use protocol::service_bus::{self, Activate};
use runtime::registration::RegistrationError;
use runtime::{ApplyError, Handler, Outcome, Shared};
use serde_json::value::RawValue;

use crate::MODULE;

/// What the module's queue is bound to: the operator's commands and the bus's activation.
pub const CONSUMED: &[&str] = &[methods::EXPORT_FULL, service_bus::methods::ACTIVATE];

#[derive(Debug)]
pub enum CatalogCommand {
    ExportFull(ExportFull),
    Activate(Activate),
}

pub struct CommandHandler {
    /// What an activation registers with: the process's configuration and topology.
    shared: Shared,
}

impl CommandHandler {
    pub fn new(shared: Shared) -> Self {
        Self { shared }
    }

    /// Registers once for the activations of a batch (one registration answers them all):
    /// the outcome of each.
    async fn activate(&self, activations: &[&Activate]) -> Outcome {
        let clients: Vec<&str> = activations.iter().map(|a| a.client_id.as_str()).collect();
        let clients = clients.join(",");
        match runtime::registration::activate(&self.shared, &clients).await {
            Ok(sent) => {
                tracing::info!(client = %clients, ?sent, "registered again: the bus asked (activation)");
                Outcome::Applied
            }
            Err(e) => match e.downcast_ref::<RegistrationError>() {
                Some(RegistrationError::NoModules) => Outcome::Reject(format!(
                    "cannot register on activation: {e} (with OMSC_REGISTER=false, run `omsc register` once)"
                )),
                _ => Outcome::Retry(format!("cannot register on activation yet: {e:#}")),
            },
        }
    }
}

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
        CONSUMED
    }

    fn parse(
        &self,
        method: &str,
        params: &RawValue,
        _limits: &protocol::Limits,
    ) -> Result<CatalogCommand, Rejection> {
        match method {
            methods::EXPORT_FULL => {
                catalog::parse_export_full(params).map(CatalogCommand::ExportFull)
            }
            service_bus::methods::ACTIVATE => {
                service_bus::parse_activate(params).map(CatalogCommand::Activate)
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
        let activations: Vec<&Activate> = batch
            .iter()
            .filter_map(|command| match command {
                CatalogCommand::Activate(activate) => Some(activate),
                CatalogCommand::ExportFull(_) => None,
            })
            .collect();
        let activated = if activations.is_empty() {
            None
        } else {
            Some(self.activate(&activations).await)
        };
        let mut outcomes = Vec::with_capacity(batch.len());
        for command in batch {
            let export = match command {
                CatalogCommand::ExportFull(export) => export,
                CatalogCommand::Activate(_) => {
                    outcomes.push(activated.clone().unwrap_or(Outcome::Applied));
                    continue;
                }
            };
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
