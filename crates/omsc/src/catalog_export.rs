//! `omsc catalog`: the full-catalog export, sent as a command to the catalog module's queue
//! and followed, with a progress bar, through the run it creates in the database.

use std::time::Duration;

use anyhow::Context as _;
use clap::Subcommand;
use comfy_table::Table;
use indicatif::{ProgressBar, ProgressStyle};
use lapin::BasicProperties;
use lapin::types::ShortString;
use protocol::catalog::{EXPORT_CHUNK_SIZE, ExportFull, methods};
use runtime::RuntimeConfig;
use runtime::amqp::{self, Publisher};

#[derive(Subcommand)]
pub enum Command {
    /// Export the catalog to the OMS: a catalog worker takes the command and streams every
    /// product in chunks; this follows its progress until it is done.
    Export {
        /// The whole catalog (the only kind of export).
        #[arg(long, required = true)]
        full: bool,
        /// Products per chunk.
        #[arg(long, default_value_t = EXPORT_CHUNK_SIZE)]
        chunk_size: u32,
        /// Send the command and return without following the export.
        #[arg(long)]
        detach: bool,
    },
    /// Follow a running export until it is done.
    Watch {
        /// The export's run id (`omsc catalog exports`).
        run_id: String,
    },
    /// Recent exports and their progress.
    Exports,
    /// Stop an export; the worker driving it leaves it at its next chunk.
    Cancel {
        /// The export's run id (`omsc catalog exports`).
        run_id: String,
    },
}

pub async fn run(config: &RuntimeConfig, command: Command) -> anyhow::Result<()> {
    let client = runtime::db::connect(&config.db.database_url, "omsc-cli").await?;
    match command {
        Command::Export {
            full: _,
            chunk_size,
            detach,
        } => {
            let run_id = new_run_id();
            send_export(config, &run_id, chunk_size).await?;
            println!("full catalog export requested: run {run_id}");
            if !detach {
                watch(&client, &run_id).await?;
            }
        }
        Command::Watch { run_id } => watch(&client, &run_id).await?,
        Command::Exports => print_runs(&client).await?,
        Command::Cancel { run_id } => {
            if catalog::runs::cancel(&client, &run_id).await? {
                println!("export {run_id} cancelled");
            } else {
                anyhow::bail!("no open export {run_id}");
            }
        }
    }
    Ok(())
}

fn new_run_id() -> String {
    format!(
        "export-{}-{:08x}",
        chrono::Utc::now().format("%Y%m%dT%H%M%SZ"),
        rand::random::<u32>()
    )
}

/// Publishes the command to `oms.events` (where `connector.catalog` is bound) and waits for
/// the broker's confirm.
async fn send_export(config: &RuntimeConfig, run_id: &str, chunk_size: u32) -> anyhow::Result<()> {
    let command = ExportFull {
        run_id: run_id.to_owned(),
        requested_by: format!("omsc catalog export ({})", whoami()),
        chunk_size,
    };
    let topology = runtime::Topology::new(&config.broker.prefix, config.queue_type);
    let connection = amqp::connect(&config.broker.amqp_url, "omsc-cli")
        .await
        .context("connecting to the broker")?;
    let publisher = amqp::within("opening a channel", Publisher::open(&connection)).await?;
    let sent = publisher
        .publish(
            &topology.oms_exchange(),
            methods::EXPORT_FULL,
            &command.to_message(),
            BasicProperties::default()
                .with_content_type(ShortString::from("application/json"))
                .with_message_id(ShortString::from(run_id))
                .with_app_id(ShortString::from("omsc")),
        )
        .await;
    let _ = amqp::within("closing", connection.close(200, "sent".into())).await;
    sent.with_context(|| {
        format!(
            "sending the export command to {} (has a catalog worker ever started? it declares {}connector.catalog)",
            topology.oms_exchange(),
            config.broker.prefix
        )
    })
}

fn whoami() -> String {
    std::env::var("USER").unwrap_or_else(|_| "operator".to_owned())
}

/// Follows the run in the database until it is over.
async fn watch(client: &tokio_postgres::Client, run_id: &str) -> anyhow::Result<()> {
    let bar = ProgressBar::new_spinner();
    bar.set_message("waiting for a catalog worker to take the command");
    bar.enable_steady_tick(Duration::from_millis(120));
    let mut sized = false;
    let progress = loop {
        let Some(progress) = catalog::runs::one(client, run_id).await? else {
            tokio::time::sleep(Duration::from_millis(250)).await;
            continue;
        };
        if progress.total > 0 && !sized {
            bar.set_length(progress.total as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} products ({per_sec}, eta {eta}) {msg}",
                )
                .expect("a valid template"),
            );
            sized = true;
        }
        bar.set_position(progress.exported.max(0) as u64);
        let note = match (&progress.last_error, progress.state.as_str()) {
            (Some(error), _) => format!("retrying: {error}"),
            (None, "pending") => "waiting for the exports before it".to_owned(),
            (None, _) if progress.resumes > 0 => format!("resumed {}x", progress.resumes),
            _ => String::new(),
        };
        bar.set_message(note);
        if progress.is_over() {
            break progress;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    bar.finish_and_clear();
    println!(
        "export {} {}: {} products in {} chunks{}",
        progress.id,
        progress.state,
        progress.exported,
        progress.chunks,
        progress
            .rate()
            .map(|r| format!(", {r:.0} products/s"))
            .unwrap_or_default()
    );
    Ok(())
}

pub async fn print_runs(client: &tokio_postgres::Client) -> anyhow::Result<()> {
    let runs = catalog::runs::recent(client, 10).await?;
    if runs.is_empty() {
        println!("no catalog export has been requested");
        return Ok(());
    }
    let mut table = Table::new();
    table.set_header([
        "export",
        "state",
        "exported",
        "chunks",
        "resumes",
        "requested",
        "finished",
        "note",
    ]);
    for run in runs {
        table.add_row([
            run.id.clone(),
            run.state.clone(),
            format!("{}/{}", run.exported, run.total),
            run.chunks.to_string(),
            run.resumes.to_string(),
            run.requested_at.format("%Y-%m-%d %H:%M:%S").to_string(),
            run.finished_at
                .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                .unwrap_or_default(),
            run.last_error.unwrap_or_default(),
        ]);
    }
    println!("{table}");
    Ok(())
}
