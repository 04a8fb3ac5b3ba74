//! `omsc dead-letters`: see why messages failed, replay them once the cause is fixed, or
//! discard them. Selections by id, by queue, by endpoint, by reason, or all.

use clap::{Args, Subcommand};
use comfy_table::Table;
use runtime::dead_letters::{self, DeadLetter, Selection};

#[derive(Subcommand)]
pub enum Command {
    /// List dead letters (open ones unless --status says otherwise).
    List {
        #[command(flatten)]
        select: Select,
        /// open, replayed, discarded or all.
        #[arg(long, default_value = "open")]
        status: String,
        /// Output as JSON lines.
        #[arg(long)]
        json: bool,
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// Everything about one dead letter: reason, headers, body.
    Show { id: i64 },
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
            let status = (status != "all").then_some(status);
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
                ids(&replayed)
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

/// Text from a message, safe to print on a terminal: control characters (escape sequences
/// that could rewrite the screen or the title, carriage returns that hide a line) and the
/// characters that reorder text are shown as `\u{1b}`, line breaks as `\n`.
pub fn one_line(text: &str) -> String {
    escape_controls(text, false)
}

/// As [`one_line`], keeping line breaks (a pretty-printed body).
pub fn lines(text: &str) -> String {
    escape_controls(text, true)
}

fn escape_controls(text: &str, keep_newlines: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let reorders = matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
        match c {
            '\n' if keep_newlines => out.push('\n'),
            '\n' => out.push_str("\\n"),
            '\t' => out.push('\t'),
            c if c.is_control() || reorders => {
                out.extend(c.escape_unicode());
            }
            c => out.push(c),
        }
    }
    out
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        format!("{}…", text.chars().take(max).collect::<String>())
    }
}

fn ids(ids: &[i64]) -> String {
    if ids.is_empty() || ids.len() > 20 {
        String::new()
    } else {
        format!(
            ": {}",
            ids.iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_sequences_are_shown_not_obeyed() {
        assert_eq!(
            one_line("id\u{1b}]0;pwned\u{7}\u{1b}[2J\r\u{9b}31m"),
            "id\\u{1b}]0;pwned\\u{7}\\u{1b}[2J\\u{d}\\u{9b}31m"
        );
        assert_eq!(one_line("a\nb\tc"), "a\\nb\tc");
        assert_eq!(lines("{\n  \"a\": 1\u{7f}\n}"), "{\n  \"a\": 1\\u{7f}\n}");
        assert_eq!(one_line("abc\u{202e}fed"), "abc\\u{202e}fed");
        assert_eq!(one_line("plain ünïcode ✓"), "plain ünïcode ✓");
    }
}
