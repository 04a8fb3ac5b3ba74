//! `omsc returns`: request a return of shipped lines (as a storefront does), and list
//! returns with what the OMS said about them.

use clap::Subcommand;
use comfy_table::Table;
use postsales::storefront::{self as returns, ReturnLineRequest, ReturnRequest};

#[derive(Subcommand)]
pub enum Command {
    /// Ask the OMS to authorize a return of shipped order lines. Fails, and changes nothing,
    /// when a line has not shipped or is already being returned.
    Request {
        /// The order.
        #[arg(long)]
        order: String,
        /// The return's id (RMA); `<order>-R<n>` when left out.
        #[arg(long)]
        rma: Option<String>,
        /// An order line to return (its id, as in postsales_returnable_lines); repeat for
        /// more.
        #[arg(long = "line", required = true)]
        lines: Vec<String>,
        /// The reason code, for every line.
        #[arg(long)]
        reason: String,
        /// The reason in the customer's words.
        #[arg(long, default_value = "")]
        description: String,
        /// The condition the customer declares.
        #[arg(long)]
        condition: Option<String>,
        /// Who asks (the OMS `user`).
        #[arg(long, default_value = "customer")]
        by: String,
    },
    /// The newest returns, of one order or of all.
    List {
        /// Only the returns of this order (its increment id).
        #[arg(long)]
        order: Option<String>,
        /// Most returns listed, newest first.
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
}

const NEXT_RMA: &str = "SELECT count(*) + 1 FROM postsales_returns WHERE order_id = $1";

pub async fn run(database_url: &str, command: Command) -> anyhow::Result<()> {
    let client = runtime::db::connect(database_url, "omsc-returns").await?;
    // As a storefront: the session gives up the connector's mark, so that every check a
    // storefront meets applies to the operator too.
    client.batch_execute("SET omsc.actor = 'operator'").await?;
    match command {
        Command::Request {
            order,
            rma,
            lines,
            reason,
            description,
            condition,
            by,
        } => {
            let id = match rma {
                Some(id) => id,
                None => {
                    let n: i64 = client.query_one(NEXT_RMA, &[&order]).await?.get(0);
                    format!("{order}-R{n}")
                }
            };
            let request = ReturnRequest {
                id: id.clone(),
                order_id: order,
                requested_at: None,
                requested_by: Some(by),
                source_id: None,
                tracking_number: None,
                tracking_carrier: None,
                attributes: Vec::new(),
                lines: lines
                    .into_iter()
                    .map(|line_id| ReturnLineRequest {
                        line_id,
                        reason: reason.clone(),
                        reason_description: description.clone(),
                        condition: condition.clone(),
                    })
                    .collect(),
            };
            returns::request(&client, &request).await.map_err(|e| {
                let message = e
                    .as_db_error()
                    .map(|d| d.message().to_owned())
                    .unwrap_or_else(|| e.to_string());
                anyhow::anyhow!("return not requested: {message}")
            })?;
            println!("requested return {id}; its authorization is on its way to the OMS");
            Ok(())
        }
        Command::List { order, limit } => {
            let rows = returns::list(&client, order.as_deref(), limit).await?;
            let mut table = Table::new();
            table.set_header([
                "return",
                "order",
                "origin",
                "state",
                "OMS status",
                "lines",
                "received",
                "refunded",
            ]);
            for r in rows {
                table.add_row([
                    r.id,
                    r.order_id,
                    r.origin,
                    r.state,
                    r.oms_status.unwrap_or_default(),
                    r.lines.to_string(),
                    r.received_at.map(|t| t.to_rfc3339()).unwrap_or_default(),
                    r.refunded.normalize().to_string(),
                ]);
            }
            println!("{table}");
            Ok(())
        }
    }
}
