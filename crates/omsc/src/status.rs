//! `omsc status`: what the connector told the OMS (registration), the modules that recorded
//! themselves, the outbox, and the catalog exports.

use comfy_table::Table;

const MODULES: &str = "
    SELECT module, version, started_at, methods
      FROM connector_modules ORDER BY module";

const OUTBOX: &str = "
    SELECT module,
           count(*) FILTER (WHERE sent_at IS NULL AND failed_at IS NULL),
           count(*) FILTER (WHERE failed_at IS NOT NULL AND sent_at IS NULL AND discarded_at IS NULL),
           min(created_at) FILTER (WHERE sent_at IS NULL AND failed_at IS NULL)
      FROM outbox GROUP BY module ORDER BY module";

/// What the service bus answered to the registration (stored by the gateway).
const BUS_ANSWER: &str = "
    SELECT remote_endpoint::text, remote_endpoint_at FROM connector_registration
     WHERE remote_endpoint IS NOT NULL";

const SECRET_SET: &str = "
    SELECT secret_sha256 <> encode(sha256(''::bytea), 'hex') FROM connector_registration";

pub async fn run(database_url: &str) -> anyhow::Result<()> {
    let client = runtime::db::connect(database_url, "omsc-cli").await?;
    print_registration(&client).await?;
    println!();
    print_modules(&client).await?;
    println!();
    print_outbox(&client).await?;
    println!();
    println!("Catalog exports");
    crate::catalog_export::print_runs(&client).await
}

fn time(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

pub async fn print_registration(client: &tokio_postgres::Client) -> anyhow::Result<()> {
    let Some(state) = runtime::registration::state(client).await? else {
        println!("Registration: never sent (workers send it when they start; or: omsc register)");
        return Ok(());
    };
    let confirmation = match (&state.confirmed_at, &state.last_error) {
        (Some(at), _) => format!("confirmed by the broker at {}", time(*at)),
        (None, Some(error)) => format!("NOT confirmed: {error}"),
        (None, None) => "not confirmed".to_owned(),
    };
    println!("Registration: {} ({confirmation})", state.state);
    println!("  id:         {}", state.connector_id);
    if !state.url.is_empty() {
        println!("  url:        {}", state.url);
    }
    let secret_set: bool = client
        .query_one(SECRET_SET, &[])
        .await?
        .get::<_, Option<bool>>(0)
        .unwrap_or(false);
    println!(
        "  secret:     {}",
        if secret_set {
            "set (not shown)"
        } else {
            "none"
        }
    );
    println!(
        "  sent:       {} by {} (message {})",
        time(state.attempted_at),
        state.sent_by,
        state.message_id
    );
    println!("  labels:     {}", state.labels);
    println!("  subscribes: {} methods", state.subscribes.len());
    for method in &state.subscribes {
        println!("    {method}");
    }
    match client.query_opt(BUS_ANSWER, &[]).await? {
        Some(row) => {
            let at: chrono::DateTime<chrono::Utc> = row.get(1);
            println!(
                "  bus answer: {} (received {})",
                row.get::<_, String>(0),
                time(at)
            );
        }
        None => println!("  bus answer: none (no service-bus gateway has carried it yet)"),
    }
    Ok(())
}

async fn print_modules(client: &tokio_postgres::Client) -> anyhow::Result<()> {
    let rows = client.query(MODULES, &[]).await?;
    if rows.is_empty() {
        println!("Modules: none recorded yet (each worker records its modules when it starts)");
        return Ok(());
    }
    println!("Modules (recorded by the workers that started)");
    let mut table = Table::new();
    table.set_header(["module", "version", "last start", "methods"]);
    for row in &rows {
        let methods: Vec<String> = row.get(3);
        table.add_row([
            row.get::<_, String>(0),
            row.get::<_, String>(1),
            time(row.get(2)),
            methods.join("\n"),
        ]);
    }
    println!("{table}");
    Ok(())
}

async fn print_outbox(client: &tokio_postgres::Client) -> anyhow::Result<()> {
    let rows = client.query(OUTBOX, &[]).await?;
    if rows.is_empty() {
        println!("Outbox: empty");
        return Ok(());
    }
    println!("Outbox");
    let mut table = Table::new();
    table.set_header(["module", "pending", "failed", "oldest pending"]);
    for row in &rows {
        let oldest: Option<chrono::DateTime<chrono::Utc>> = row.get(3);
        table.add_row([
            row.get::<_, String>(0),
            row.get::<_, i64>(1).to_string(),
            row.get::<_, i64>(2).to_string(),
            oldest.map(time).unwrap_or_default(),
        ]);
    }
    println!("{table}");
    Ok(())
}
