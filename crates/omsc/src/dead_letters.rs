//! `omsc dead-letters`: see why messages failed, replay them once the cause is fixed, or
//! discard them. Selections by id, by queue, by endpoint, by reason, or all.

use clap::{Args, Subcommand, ValueEnum};
use comfy_table::Table;
use runtime::dead_letters::{self, DeadLetter, Selection};

use crate::terminal::{id_list, lines, one_line, truncate};

#[derive(Subcommand)]
pub enum Command {
    /// List dead letters (open ones unless --status says otherwise).
    List {
        #[command(flatten)]
        select: Select,
        /// Which dead letters by what became of them.
        #[arg(long, value_enum, default_value_t = StatusFilter::Open)]
        status: StatusFilter,
        /// Output as JSON lines.
        #[arg(long)]
        json: bool,
        /// Most dead letters listed, newest first.
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// Everything about one dead letter: reason, headers, body.
    Show {
        /// The dead letter's id (`omsc dead-letters list`).
        id: i64,
    },
    /// Publish open dead letters back to their queue, with their original message id.
    Replay {
        #[command(flatten)]
        select: Select,
    },
    /// Mark open dead letters discarded (they stay listed with --status discarded).
    Discard {
        #[command(flatten)]
        select: Select,
    },
}

/// What became of a dead letter, as `list --status` selects it. A value enum, so that a typo
/// is refused with the choices instead of listing nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StatusFilter {
    /// Waiting for an operator.
    Open,
    /// Published back to their queue.
    Replayed,
    /// Given up on by an operator.
    Discarded,
    /// Whatever became of them.
    All,
}

impl StatusFilter {
    /// The `dead_letters.status` value to match, or none for all.
    fn as_column(self) -> Option<String> {
        match self {
            Self::Open => Some("open".into()),
            Self::Replayed => Some("replayed".into()),
            Self::Discarded => Some("discarded".into()),
            Self::All => None,
        }
    }
}

#[derive(Args)]
pub struct Select {
    /// Dead letter ids.
    ids: Vec<i64>,
    /// Only from this queue (e.g. connector.inventory).
    #[arg(long)]
    queue: Option<String>,
    /// Only of this endpoint (method).
    #[arg(long)]
    endpoint: Option<String>,
    /// Only those whose reason contains this text (case-insensitive).
    #[arg(long)]
    reason: Option<String>,
    /// Everything the other options select (required when no id, queue, endpoint or reason
    /// is given, so that a bare command never touches every dead letter by accident).
    #[arg(long)]
    all: bool,
}

impl Select {
    fn selection(&self, status: Option<String>, limit: i64) -> anyhow::Result<Selection> {
        // An empty text matches everything: it narrows nothing.
        let given = |o: &Option<String>| o.as_deref().is_some_and(|t| !t.is_empty());
        let narrowed = !self.ids.is_empty()
            || given(&self.queue)
            || given(&self.endpoint)
            || given(&self.reason);
        anyhow::ensure!(
            narrowed || self.all,
            "say which dead letters: ids, --queue, --endpoint, --reason, or --all"
        );
        Ok(Selection {
            ids: self.ids.clone(),
            queue: self.queue.clone(),
            endpoint: self.endpoint.clone(),
            reason: self.reason.clone(),
            status,
            limit,
        })
    }
}

pub async fn run(
    database_url: &str,
    amqp_url: &str,
    prefix: &str,
    command: Command,
) -> anyhow::Result<()> {
    let client = runtime::db::connect(database_url, "omsc-cli").await?;
    match command {
        Command::List {
            mut select,
            status,
            json,
            limit,
        } => {
            select.all = true;
            let status = status.as_column();
            let letters = dead_letters::select(&client, &select.selection(status, limit)?).await?;
            if json {
                for letter in &letters {
                    println!("{}", summary_json(letter));
                }
            } else if letters.is_empty() {
                println!("no dead letters");
            } else {
                let mut table = Table::new();
                table.set_header([
                    "id", "queue", "endpoint", "dead at", "attempts", "status", "reason",
                ]);
                for l in &letters {
                    table.add_row([
                        l.id.to_string(),
                        one_line(&l.queue),
                        one_line(l.endpoint.as_deref().unwrap_or_default()),
                        l.dead_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                        l.attempts.to_string(),
                        one_line(&l.status),
                        truncate(&one_line(&l.reason), 100),
                    ]);
                }
                println!("{table}");
            }
        }
        Command::Show { id } => {
            let selection = Selection {
                ids: vec![id],
                ..Selection::default()
            };
            let Some(letter) = dead_letters::select(&client, &selection).await?.pop() else {
                anyhow::bail!("no dead letter {id}");
            };
            println!("dead letter {}", letter.id);
            println!("queue:       {}", one_line(&letter.queue));
            println!(
                "module:      {}",
                one_line(letter.module.as_deref().unwrap_or("-"))
            );
            println!(
                "endpoint:    {}",
                one_line(letter.endpoint.as_deref().unwrap_or("-"))
            );
            println!(
                "routing key: {}",
                one_line(letter.routing_key.as_deref().unwrap_or("-"))
            );
            println!(
                "message id:  {}",
                one_line(letter.message_id.as_deref().unwrap_or("-"))
            );
            println!("dead at:     {}", letter.dead_at.to_rfc3339());
            println!("attempts:    {}", letter.attempts);
            println!("status:      {}", one_line(&letter.status));
            println!("reason:      {}", one_line(&letter.reason));
            println!(
                "headers:     {}",
                lines(&serde_json::to_string_pretty(&letter.headers)?)
            );
            println!("body ({} bytes):", letter.body.len());
            match serde_json::from_slice::<serde_json::Value>(&letter.body) {
                Ok(value) => println!("{}", lines(&serde_json::to_string_pretty(&value)?)),
                Err(_) => println!("{}", lines(&String::from_utf8_lossy(&letter.body))),
            }
        }
        Command::Replay { select } => {
            let topology = runtime::Topology::new(prefix, runtime::config::QueueType::Quorum);
            let replayed =
                dead_letters::replay(&client, amqp_url, &topology, &select.selection(None, 0)?)
                    .await?;
            println!(
                "replayed {} dead letter(s){}",
                replayed.len(),
                id_list(&replayed)
            );
        }
        Command::Discard { select } => {
            let n = dead_letters::discard(&client, &select.selection(None, 0)?).await?;
            println!("discarded {n} dead letter(s)");
        }
    }
    Ok(())
}

fn summary_json(l: &DeadLetter) -> serde_json::Value {
    serde_json::json!({
        "id": l.id, "queue": l.queue, "module": l.module, "endpoint": l.endpoint,
        "reason": l.reason, "routing_key": l.routing_key, "message_id": l.message_id,
        "attempts": l.attempts, "dead_at": l.dead_at.to_rfc3339(), "status": l.status,
        "body_bytes": l.body.len(),
    })
}
