//! `omsc outbox`: what Commerce still has to tell the OMS, or could not. List rows, see one,
//! send failed or stuck rows again, or give up on them; like `omsc dead-letters`, a bare
//! command touches nothing, and each action stays written on the row.

use std::time::Duration;

use clap::builder::PossibleValuesParser;
use clap::{Args, Subcommand, ValueEnum};
use comfy_table::Table;
use indicatif::{ProgressBar, ProgressStyle};
use runtime::outbox_rows::{self, OutboxRow, Retried, RowSelection, RowState};

use crate::terminal::{id_list, one_line, truncate};

/// Rows per statement of a bulk action: big selections advance a progress bar.
const CHUNK: usize = 500;

#[derive(Subcommand)]
pub enum Command {
    /// List outbox rows (failed ones unless --state says otherwise), oldest first.
    List {
        #[command(flatten)]
        select: Select,
        /// Output as JSON lines.
        #[arg(long)]
        json: bool,
        /// At most this many rows.
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// Everything about one row: state, attempts, the last error, the operator's actions.
    Show {
        /// The row's id (the first column of `list`).
        id: i64,
    },
    /// Send rows again now (failed ones unless --state says otherwise): the retry window
    /// starts over. Fix the cause first (the last error says what it was).
    Retry {
        #[command(flatten)]
        select: Select,
    },
    /// Give up on rows for good (failed ones unless --state says otherwise): they are never
    /// sent and no longer count as failed.
    Discard {
        #[command(flatten)]
        select: Select,
    },
}

/// Where a row stands, as the commands select it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StateFilter {
    /// Waiting for a relay, or retried after a failure that may pass ("stuck" when its
    /// attempts grow).
    Pending,
    /// Published and confirmed.
    Sent,
    /// Given up on by the relay.
    Failed,
    /// Given up on by an operator.
    Discarded,
    /// Whatever their state.
    All,
}

impl StateFilter {
    fn state(self) -> Option<RowState> {
        match self {
            Self::Pending => Some(RowState::Pending),
            Self::Sent => Some(RowState::Sent),
            Self::Failed => Some(RowState::Failed),
            Self::Discarded => Some(RowState::Discarded),
            Self::All => None,
        }
    }
}

#[derive(Args)]
pub struct Select {
    /// Row ids.
    ids: Vec<i64>,
    /// Only rows of this module (errors: the error notifications to the OMS).
    #[arg(long, value_parser = PossibleValuesParser::new(omsc::modules::outbox_modules()))]
    module: Option<String>,
    /// Only rows of this topic (order.create, order.cancel, return.authorize, product, …).
    #[arg(long)]
    topic: Option<String>,
    /// Only rows about this subject (an order id, a return id, a SKU).
    #[arg(long)]
    subject: Option<String>,
    /// Only rows created at least this long ago (e.g. 30m, 2h, 3days).
    #[arg(long, value_parser = humantime::parse_duration)]
    older_than: Option<Duration>,
    /// Only rows in this state.
    #[arg(long, value_enum, default_value_t = StateFilter::Failed)]
    state: StateFilter,
    /// Everything the other options select (required when no id, module, topic, subject or
    /// age is given, so that a bare command never touches every row by accident).
    #[arg(long)]
    all: bool,
}

impl Select {
    fn selection(&self, limit: i64) -> anyhow::Result<RowSelection> {
        let narrowed = !self.ids.is_empty()
            || self.module.is_some()
            || self.topic.is_some()
            || self.subject.is_some()
            || self.older_than.is_some();
        anyhow::ensure!(
            narrowed || self.all,
            "say which outbox rows: ids, --module, --topic, --subject, --older-than, or --all"
        );
        Ok(RowSelection {
            ids: self.ids.clone(),
            module: self.module.clone(),
            topic: self.topic.clone(),
            subject: self.subject.clone(),
            state: self.state.state(),
            older_than: self.older_than,
            limit,
        })
    }
}

pub async fn run(database_url: &str, command: Command) -> anyhow::Result<()> {
    let mut client = runtime::db::connect(database_url, "omsc-cli").await?;
    match command {
        Command::List {
            mut select,
            json,
            limit,
        } => {
            select.all = true;
            let rows = outbox_rows::select(&client, &select.selection(limit)?).await?;
            if json {
                for row in &rows {
                    println!("{}", row_json(row));
                }
            } else if rows.is_empty() {
                println!("no outbox rows");
            } else {
                print_table(&rows);
            }
        }
        Command::Show { id } => {
            let selection = RowSelection {
                ids: vec![id],
                ..RowSelection::default()
            };
            let Some(row) = outbox_rows::select(&client, &selection).await?.pop() else {
                anyhow::bail!("no outbox row {id}");
            };
            print_row(&row);
        }
        Command::Retry { select } => {
            let ids = chosen(&client, &select).await?;
            let mut done = Retried::default();
            let bar = progress(ids.len(), "retrying");
            for chunk in ids.chunks(CHUNK) {
                let step = outbox_rows::retry(&mut client, chunk).await?;
                done.ids.extend(step.ids);
                done.superseded.extend(step.superseded);
                done.overtaken.extend(step.overtaken);
                bar.inc(chunk.len() as u64);
            }
            bar.finish_and_clear();
            println!(
                "retried {} outbox row(s){}",
                done.ids.len(),
                id_list(&done.ids)
            );
            for (row, newer) in &done.superseded {
                println!("  row {row} left alone: row {newer} carries a newer state of it");
            }
            for (row, later) in &done.overtaken {
                println!(
                    "  row {row} goes out after row {later} about the same subject, which was \
                     already sent: retry that one too if its order matters"
                );
            }
        }
        Command::Discard { select } => {
            let ids = chosen(&client, &select).await?;
            let mut discarded = Vec::new();
            let bar = progress(ids.len(), "discarding");
            for chunk in ids.chunks(CHUNK) {
                discarded.extend(outbox_rows::discard(&client, chunk).await?);
                bar.inc(chunk.len() as u64);
            }
            bar.finish_and_clear();
            println!(
                "discarded {} outbox row(s){}",
                discarded.len(),
                id_list(&discarded)
            );
        }
    }
    Ok(())
}

/// The ids a retry or discard applies to.
async fn chosen(client: &tokio_postgres::Client, select: &Select) -> anyhow::Result<Vec<i64>> {
    let rows = outbox_rows::select(client, &select.selection(0)?).await?;
    Ok(rows.iter().map(|r| r.id).collect())
}

/// A bar on the terminal for selections of more than one statement; nothing otherwise (and
/// nothing when standard error is not a terminal).
fn progress(rows: usize, what: &'static str) -> ProgressBar {
    if rows <= CHUNK {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(rows as u64).with_message(what);
    if let Ok(style) = ProgressStyle::with_template("{msg} {wide_bar} {pos}/{len} rows") {
        bar.set_style(style);
    }
    bar
}

fn time(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

fn print_table(rows: &[OutboxRow]) {
    let mut table = Table::new();
    table.set_header([
        "id",
        "module",
        "topic",
        "subject",
        "created",
        "state",
        "attempts",
        "last error",
    ]);
    for r in rows {
        table.add_row([
            r.id.to_string(),
            r.module.clone(),
            r.topic.clone(),
            one_line(&r.subject),
            time(r.created_at),
            r.state().as_str().to_owned(),
            r.attempts.to_string(),
            one_line(&truncate(r.last_error.as_deref().unwrap_or(""), 80)),
        ]);
    }
    println!("{table}");
}

fn print_row(r: &OutboxRow) {
    let when =
        |t: Option<chrono::DateTime<chrono::Utc>>| t.map_or("-".to_owned(), |t| t.to_rfc3339());
    println!("outbox row {}", r.id);
    println!("state:           {}", r.state().as_str());
    println!("module:          {}", r.module);
    println!("topic:           {}", r.topic);
    println!("subject:         {}", one_line(&r.subject));
    println!("version:         {}", r.version);
    println!("created at:      {}", r.created_at.to_rfc3339());
    println!("attempts:        {}", r.attempts);
    println!("next attempt at: {}", r.next_attempt_at.to_rfc3339());
    println!("claimed until:   {}", when(r.claimed_until));
    println!(
        "last error:      {}",
        one_line(r.last_error.as_deref().unwrap_or("-"))
    );
    println!(
        "message id:      {}",
        one_line(r.message_id.as_deref().unwrap_or("-"))
    );
    println!("sent at:         {}", when(r.sent_at));
    println!("failed at:       {}", when(r.failed_at));
    println!(
        "retried:         {} time(s), last at {}",
        r.retries,
        when(r.retried_at)
    );
    println!("discarded at:    {}", when(r.discarded_at));
}

fn row_json(r: &OutboxRow) -> serde_json::Value {
    let when = |t: Option<chrono::DateTime<chrono::Utc>>| t.map(|t| t.to_rfc3339());
    serde_json::json!({
        "id": r.id, "module": r.module, "topic": r.topic, "subject": r.subject,
        "state": r.state().as_str(), "version": r.version,
        "created_at": r.created_at.to_rfc3339(), "attempts": r.attempts,
        "next_attempt_at": r.next_attempt_at.to_rfc3339(), "last_error": r.last_error,
        "message_id": r.message_id, "sent_at": when(r.sent_at),
        "failed_at": when(r.failed_at), "retried_at": when(r.retried_at),
        "retries": r.retries, "discarded_at": when(r.discarded_at),
    })
}
