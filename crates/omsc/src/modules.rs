//! The one list of the connector's modules. `omsc run`, `omsc topology` (and through its
//! definitions the broker's definitions file and every deploy/ rendering that
//! `make deploy-check` compares with it) and the tests' cleanup all derive from [`ALL`] and
//! [`queues`]: adding a module is adding it here (and its crate).

use runtime::QueueSpec;

/// A module that consumes its own queue on `oms.events`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Module {
    Inventory,
    Sales,
    Postsales,
    Catalog,
}

/// Every module, as `omsc run --all` starts them.
pub const ALL: &[Module] = &[
    Module::Inventory,
    Module::Sales,
    Module::Postsales,
    Module::Catalog,
];

impl Module {
    /// The module's queue (its name and bindings).
    pub fn queue(self) -> QueueSpec {
        match self {
            Module::Inventory => inventory::QUEUE,
            Module::Sales => sales::QUEUE,
            Module::Postsales => postsales::QUEUE,
            Module::Catalog => catalog::QUEUE,
        }
    }

    /// Adds the module to a runtime; with `bus` (the OMS talks through its service bus),
    /// the inventory module reads the sources from it at start.
    pub fn install(
        self,
        app: &mut runtime::Runtime,
        inventory_config: &inventory::InventoryConfig,
        catalog_config: &catalog::CatalogConfig,
        bus: Option<&bus_client::BusConfig>,
    ) -> anyhow::Result<()> {
        match self {
            Module::Inventory => inventory::install_with_bus(app, inventory_config, bus),
            Module::Sales => sales::install(app),
            Module::Postsales => postsales::install(app),
            Module::Catalog => catalog::install(app, catalog_config),
        }
    }
}

/// Every queue the connector declares: the modules' and the service-bus gateway's (bound
/// to `commerce.events`), each with its retry and dead-letter queues.
pub fn queues() -> Vec<QueueSpec> {
    ALL.iter()
        .map(|m| m.queue())
        .chain([gateway::QUEUE])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_queue_is_listed_once_and_the_gateway_last() {
        let names: Vec<&str> = queues().iter().map(|q| q.name).collect();
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "{names:?}");
        assert_eq!(names.last(), Some(&"connector.gateway"));
        assert_eq!(names.len(), ALL.len() + 1);
    }
}
