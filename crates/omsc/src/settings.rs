//! `omsc settings`: switches stored in the database, read by every worker and trigger.

use clap::{Subcommand, ValueEnum};

#[derive(Subcommand)]
pub enum Command {
    /// Whether people (not only the connector) may change OMS-owned tables such as
    /// stock_items. For development only: the next OMS message overwrites hand edits.
    HandEdits {
        /// Allow or deny; without it, the current state is shown.
        #[arg(value_enum)]
        state: Option<HandEdits>,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum HandEdits {
    Allow,
    Forbid,
}

pub async fn run(database_url: &str, command: Command) -> anyhow::Result<()> {
    let client = runtime::db::connect(database_url, "omsc-cli").await?;
    match command {
        Command::HandEdits { state } => {
            match state {
                Some(HandEdits::Allow) => {
                    client
                        .execute(
                            "INSERT INTO omsc_settings (key, value) VALUES ('hand_edits', 'allow')
                             ON CONFLICT (key) DO UPDATE SET value = 'allow'",
                            &[],
                        )
                        .await?;
                }
                Some(HandEdits::Forbid) => {
                    client
                        .execute("DELETE FROM omsc_settings WHERE key = 'hand_edits'", &[])
                        .await?;
                }
                None => {}
            }
            let allowed = client
                .query_opt(
                    "SELECT 1 FROM omsc_settings WHERE key = 'hand_edits' AND value = 'allow'",
                    &[],
                )
                .await?
                .is_some();
            println!(
                "hand edits of OMS-owned tables are {}",
                if allowed {
                    "allowed (development only)"
                } else {
                    "forbidden"
                }
            );
        }
    }
    Ok(())
}
