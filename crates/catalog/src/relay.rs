//! The catalog's side of the outbox relay: a product row becomes the product's current state,
//! a shipping-method row the method's.

use protocol::catalog::methods;
use runtime::outbox::{BuildError, Built, OutboxHandler, OutboxRow, Outgoing};

use crate::products::{self, Found};
use crate::{MODULE, shipping};

/// Outbox topics of the catalog module.
pub mod topics {
    pub const PRODUCT: &str = "product";
    pub const SHIPPING_METHOD: &str = "shipping_method";
}

pub struct CatalogRelay;

impl OutboxHandler for CatalogRelay {
    fn module(&self) -> &'static str {
        MODULE
    }

    async fn build<'a>(
        &'a self,
        client: &'a deadpool_postgres::Client,
        row: &'a OutboxRow,
    ) -> Result<Built, BuildError> {
        let product = match row.topic.as_str() {
            topics::PRODUCT => match products::by_sku(client, &row.subject).await? {
                Found::Product(Ok(product)) | Found::Deleted(product) => product,
                Found::Product(Err(invalid)) => return Err(BuildError::Invalid(invalid.0)),
                // Neither there nor deleted: created and deleted before the relay ran.
                Found::Unknown => return Ok(Built::Nothing),
            },
            topics::SHIPPING_METHOD => {
                let Some((carrier, method)) = shipping::parse_subject(&row.subject) else {
                    return Err(BuildError::Invalid(format!(
                        "shipping method subject {:?} is not <carrier>/<method>",
                        row.subject
                    )));
                };
                shipping::method(client, carrier, method).await?
            }
            other => {
                return Err(BuildError::Invalid(format!(
                    "unknown catalog outbox topic {other:?}"
                )));
            }
        };
        // Stable across resends of this version of the row; a newer save is a new message.
        let message_id = format!("catalog-{}-{}", row.id, row.version);
        Ok(Built::Message(Outgoing {
            method: methods::PRODUCT_UPDATED.to_owned(),
            body: product.to_message(&message_id),
            message_id,
        }))
    }
}
