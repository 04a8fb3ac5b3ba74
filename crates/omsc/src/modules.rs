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

/// What installing modules needs: the runtime's settings and those of the modules that have
/// their own (`omsc run`, `omsc register`).
#[derive(clap::Args)]
pub struct ModuleSettings {
    #[command(flatten)]
    pub runtime: runtime::RuntimeConfig,
    #[command(flatten)]
    pub inventory: inventory::InventoryConfig,
    #[command(flatten)]
    pub catalog: catalog::CatalogConfig,
}

/// Every module, as `omsc run --all` starts them.
pub const ALL: &[Module] = &[
    Module::Inventory,
    Module::Sales,
    Module::Postsales,
    Module::Catalog,
];

impl Module {
    /// The module's name, as its consumer, its outbox rows and its metrics carry it.
    pub fn name(self) -> &'static str {
        match self {
            Module::Inventory => "inventory",
            Module::Sales => sales::MODULE,
            Module::Postsales => postsales::MODULE,
            Module::Catalog => catalog::MODULE,
        }
    }

    /// Whether the module tells the OMS what changed in Commerce through an outbox relay.
    pub fn relays_an_outbox(self) -> bool {
        match self {
            Module::Inventory => false,
            Module::Sales | Module::Postsales | Module::Catalog => true,
        }
    }

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

/// The modules outbox rows belong to, as `omsc outbox --module` takes them: each module that
/// relays an outbox, then the error notifications to the OMS (written with the dead letters
/// of every module, `runtime::notify`).
pub fn outbox_modules() -> Vec<&'static str> {
    ALL.iter()
        .filter(|m| m.relays_an_outbox())
        .map(|m| m.name())
        .chain([runtime::notify::MODULE])
        .collect()
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    /// Installed in a runtime (which connects to nothing until it runs), each module consumes
    /// under its name and adds a relay exactly when it says it relays an outbox; every relay
    /// a worker adds is one `omsc outbox --module` takes.
    #[tokio::test]
    async fn each_module_is_named_and_relays_an_outbox_as_it_says() {
        #[derive(clap::Parser)]
        struct Flags {
            #[command(flatten)]
            settings: ModuleSettings,
        }
        let flags = Flags::try_parse_from([
            "omsc",
            "--database-url=postgres://omsc@127.0.0.1:1/omsc",
            "--amqp-url=amqp://127.0.0.1:1/%2f",
            "--http-addr=127.0.0.1:0",
        ])
        .unwrap()
        .settings;
        let takes = outbox_modules();
        for module in ALL {
            let mut app = runtime::Runtime::build(flags.runtime.clone())
                .await
                .unwrap();
            module
                .install(&mut app, &flags.inventory, &flags.catalog, None)
                .unwrap();
            let consumers: Vec<&str> = app.modules().iter().map(|(m, _)| *m).collect();
            assert_eq!(consumers, [module.name()], "{module:?}");
            let relays = app.relays();
            assert_eq!(
                relays.contains(&module.name()),
                module.relays_an_outbox(),
                "{module:?}: {relays:?}"
            );
            for relay in relays {
                assert!(takes.contains(relay), "{relay} is not in {takes:?}");
            }
        }
    }

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
