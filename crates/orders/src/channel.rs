//! The OMS sales channel the connector sells as.
//!
//! Several sales channels may share one OMS, and their order ids may collide: the OMS keys an
//! order by channel and id. The connector sells as one channel, `OMSC_SALES_CHANNEL`; unset,
//! an order's channel is its own store code (`sales_orders.store`, what the export sends as
//! the order's `store`), so a shop with several store views is several channels, as before.
//! A message naming a channel that is not its order's is another channel's, whatever its
//! order id.

use deadpool_postgres::Transaction;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SalesChannel {
    configured: Option<String>,
}

const STORE_IS_OURS: &str = "SELECT EXISTS (SELECT 1 FROM sales_orders WHERE store = $1)";

impl SalesChannel {
    /// The channel from the setting; a blank setting is no setting.
    pub fn new(configured: Option<String>) -> Self {
        Self {
            configured: configured
                .map(|c| c.trim().to_owned())
                .filter(|c| !c.is_empty()),
        }
    }

    pub fn configured(&self) -> Option<&str> {
        self.configured.as_deref()
    }

    /// The channel of an order of store `store`: what the connector tells the OMS.
    pub fn of_order<'a>(&'a self, store: &'a str) -> &'a str {
        self.configured.as_deref().unwrap_or(store)
    }

    /// Whether a message that names channel `said` about our order of store `store` is in
    /// fact about another channel's order of the same id. A message that names no channel
    /// is about ours.
    pub fn is_foreign(&self, said: Option<&str>, store: &str) -> bool {
        said.is_some_and(|said| said != self.of_order(store))
    }

    /// Whether channel `said` is this shop's, for a message about an order that is not here:
    /// the configured channel, or else the store of any order of this Commerce.
    pub async fn is_ours(
        &self,
        tx: &Transaction<'_>,
        said: &str,
    ) -> Result<bool, tokio_postgres::Error> {
        match &self.configured {
            Some(channel) => Ok(channel == said),
            None => {
                let ours = tx.prepare_cached(STORE_IS_OURS).await?;
                Ok(tx.query_one(&ours, &[&said]).await?.get(0))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_an_orders_channel_is_its_store() {
        let channel = SalesChannel::new(None);
        assert_eq!(channel.of_order("default"), "default");
        assert!(!channel.is_foreign(Some("default"), "default"));
        assert!(channel.is_foreign(Some("marketplace"), "default"));
        assert!(!channel.is_foreign(None, "default"));
        assert_eq!(SalesChannel::new(Some("  ".into())), channel);
    }

    #[test]
    fn set_every_order_is_of_the_one_channel() {
        let channel = SalesChannel::new(Some("WEB-EU".into()));
        assert_eq!(channel.of_order("default"), "WEB-EU");
        assert!(!channel.is_foreign(Some("WEB-EU"), "default"));
        assert!(
            channel.is_foreign(Some("default"), "default"),
            "the store code is not the channel once one is set"
        );
    }
}
