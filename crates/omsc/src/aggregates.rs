//! `omsc aggregates`: which stock aggregates exist and which websites sell from them.

use clap::Subcommand;
use comfy_table::Table;

#[derive(Subcommand)]
pub enum Command {
    /// List aggregates: SKUs, last stock update, websites.
    List,
    /// Make a website sell from an aggregate (creates the website if needed).
    Map {
        /// The OMS stock aggregate (`aggregate_id` of its stock messages).
        aggregate_id: String,
        /// The website's code.
        website: String,
        /// Display name of the website, when it is created.
        #[arg(long)]
        name: Option<String>,
    },
    /// Remove a website's aggregate.
    Unmap {
        /// The website's code.
        website: String,
    },
    /// Is `quantity` of `sku` sellable on `website`? Exits 1 when it is not.
    Sellable {
        /// The website's code.
        website: String,
        /// The product's SKU.
        sku: String,
        /// How many the customer wants.
        #[arg(long, default_value_t = 1)]
        quantity: i64,
    },
}

const LIST: &str = "
    WITH stocked AS (
        SELECT aggregate_id, count(*) AS skus, max(source_updated_at) AS last_update
          FROM stock_items GROUP BY aggregate_id
    ), mapped AS (
        SELECT aggregate_id, string_agg(website_code, ', ' ORDER BY website_code) AS websites
          FROM website_stock_aggregates GROUP BY aggregate_id
    )
    SELECT aggregate_id, coalesce(s.skus, 0), s.last_update, coalesce(m.websites, '')
      FROM stocked s FULL JOIN mapped m USING (aggregate_id)
     ORDER BY aggregate_id";

pub async fn run(database_url: &str, command: Command) -> anyhow::Result<()> {
    let client = runtime::db::connect(database_url, "omsc-cli").await?;
    match command {
        Command::List => {
            let rows = client.query(LIST, &[]).await?;
            let mut table = Table::new();
            table.set_header(["aggregate", "SKUs", "last stock update", "websites"]);
            for row in &rows {
                let last: Option<chrono::DateTime<chrono::Utc>> = row.get(2);
                table.add_row([
                    row.get::<_, String>(0),
                    row.get::<_, i64>(1).to_string(),
                    last.map(|t| t.to_rfc3339())
                        .unwrap_or_else(|| "never".into()),
                    row.get::<_, String>(3),
                ]);
            }
            if rows.is_empty() {
                println!("no stock aggregates yet: none has sent stock and none is mapped");
            } else {
                println!("{table}");
            }
        }
        Command::Map {
            aggregate_id,
            website,
            name,
        } => {
            client
                .execute(
                    "INSERT INTO websites (code, name) VALUES ($1, coalesce($2, $1))
                     ON CONFLICT (code) DO UPDATE SET name = coalesce($2, websites.name)",
                    &[&website, &name],
                )
                .await?;
            client
                .execute(
                    "INSERT INTO website_stock_aggregates (website_code, aggregate_id) VALUES ($1, $2)
                     ON CONFLICT (website_code) DO UPDATE SET aggregate_id = EXCLUDED.aggregate_id",
                    &[&website, &aggregate_id],
                )
                .await?;
            println!("website {website} now sells from stock aggregate {aggregate_id}");
        }
        Command::Unmap { website } => {
            let n = client
                .execute(
                    "DELETE FROM website_stock_aggregates WHERE website_code = $1",
                    &[&website],
                )
                .await?;
            if n == 0 {
                anyhow::bail!("website {website} has no stock aggregate");
            }
            println!("website {website} no longer sells from a stock aggregate");
        }
        Command::Sellable {
            website,
            sku,
            quantity,
        } => {
            let row = client
                .query_one(
                    "SELECT is_sellable($1, $2, $3)",
                    &[&website, &sku, &quantity],
                )
                .await?;
            let sellable: bool = row.get(0);
            println!(
                "{quantity} × {sku} is {}sellable on {website}",
                if sellable { "" } else { "not " }
            );
            if !sellable {
                std::process::exit(1);
            }
        }
    }
    Ok(())
}
