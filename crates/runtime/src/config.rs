//! Configuration shared by every worker: flags, each with an environment variable and a
//! default that works on a developer machine.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, ValueEnum};

/// Where the commerce database is: a worker's setting and that of every operator command
/// that reads or writes it.
#[derive(Clone, Args)]
pub struct DatabaseArgs {
    /// PostgreSQL connection URL of the commerce database (`sslmode` is honoured).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/omsc",
        hide_env_values = true
    )]
    pub database_url: String,
}

/// Where the broker is, and the prefix of the connector's exchanges and queues on it.
#[derive(Clone, Args)]
pub struct BrokerArgs {
    /// RabbitMQ connection URL (`amqp://` or `amqps://`; `?heartbeat=N` is honoured).
    #[arg(
        long,
        env = "AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f",
        hide_env_values = true
    )]
    pub amqp_url: String,

    /// Prefix of every exchange and queue name, so several environments can share a broker.
    #[arg(long, env = "OMSC_PREFIX", default_value = "")]
    pub prefix: String,
}

impl std::fmt::Debug for DatabaseArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseArgs")
            .field("database_url", &redact_url(&self.database_url))
            .finish()
    }
}

impl std::fmt::Debug for BrokerArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerArgs")
            .field("amqp_url", &redact_url(&self.amqp_url))
            .field("prefix", &self.prefix)
            .finish()
    }
}

/// Settings of the runtime. Module settings live in each module's own `Args`.
///
/// `Debug` hides the passwords of the connection URLs: a configuration printed in a log or an
/// error never carries a secret.
#[derive(Clone, Args)]
#[allow(
    clippy::struct_excessive_bools,
    reason = "command-line settings, each its own switch"
)]
pub struct RuntimeConfig {
    #[command(flatten)]
    pub db: DatabaseArgs,

    #[command(flatten)]
    pub broker: BrokerArgs,

    /// Address of the HTTP server for /metrics, /healthz and /readyz (port 0: any free port).
    #[arg(long, env = "OMSC_HTTP_ADDR", default_value = "0.0.0.0:9464")]
    pub http_addr: SocketAddr,

    /// Connections in the PostgreSQL pool of this process.
    #[arg(long, env = "OMSC_DB_POOL_SIZE", default_value_t = 8)]
    pub db_pool_size: usize,

    /// Longest a statement of the pool may run (0: no limit). A batch stuck behind a lock
    /// that someone else holds then fails, is held like a database outage and tried again,
    /// and the worker says so in /readyz, instead of hanging without a word.
    #[arg(long, env = "OMSC_STATEMENT_TIMEOUT_SECS", default_value_t = 60)]
    pub statement_timeout_secs: u64,

    /// How long an outbox row claimed by a relay stays its own: a relay that died with rows
    /// claimed leaves them to another after this long. Longer than any round takes.
    #[arg(long, env = "OMSC_OUTBOX_CLAIM_SECS", default_value_t = 60)]
    pub outbox_claim_secs: u64,

    /// Declare exchanges and queues at start (idempotent). Turn off for brokers whose
    /// topology is managed from deploy/rabbitmq/definitions.json.
    #[arg(long, env = "OMSC_DECLARE_TOPOLOGY", default_value_t = true, action = clap::ArgAction::Set)]
    pub declare_topology: bool,

    /// Queue type to declare. Quorum queues replicate and never lose a confirmed message;
    /// classic queues are for brokers without quorum support.
    #[arg(long, env = "OMSC_QUEUE_TYPE", value_enum, default_value_t = QueueType::Quorum)]
    pub queue_type: QueueType,

    /// Apply database migrations at start (every worker may; they take a lock).
    #[arg(long, env = "OMSC_MIGRATE", default_value_t = true, action = clap::ArgAction::Set)]
    pub migrate: bool,

    /// At start, keep retrying a database or broker that refused the configuration (a wrong
    /// password, an unknown role, database or virtual host) instead of exiting with an error.
    /// Outages (a server down or unreachable) are waited out either way.
    #[arg(long, env = "OMSC_RETRY_FOREVER")]
    pub retry_forever: bool,

    /// The OMS sales channel the connector sells as: the `store` of every exported order,
    /// the `sales_channel_id` of every command, and what tells a message about one of this
    /// shop's orders from one about another channel's (recorded as foreign, even when the
    /// order id is one of ours). Unset: each order's own store code (`sales_orders.store`),
    /// which the export sends as it is.
    #[arg(long, env = "OMSC_SALES_CHANNEL")]
    pub sales_channel: Option<String>,

    /// Tell the OMS (`magento.common.error_management.notify`: method, message id, reason,
    /// body) about every message of its that the connector dead-letters. The notification is
    /// written with the dead letter and sent by the outbox relay, so none is lost and none
    /// holds up a queue.
    #[arg(long, env = "OMSC_NOTIFY_ERRORS", default_value_t = true, action = clap::ArgAction::Set)]
    pub notify_errors: bool,

    #[command(flatten)]
    pub consume: ConsumeConfig,

    #[command(flatten)]
    pub stats: StatsConfig,

    #[command(flatten)]
    pub registration: RegistrationConfig,

    /// Log format.
    #[arg(long, env = "OMSC_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl std::fmt::Debug for RuntimeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeConfig")
            .field("db", &self.db)
            .field("broker", &self.broker)
            .field("http_addr", &self.http_addr)
            .field("db_pool_size", &self.db_pool_size)
            .field("statement_timeout_secs", &self.statement_timeout_secs)
            .field("outbox_claim_secs", &self.outbox_claim_secs)
            .field("declare_topology", &self.declare_topology)
            .field("queue_type", &self.queue_type)
            .field("migrate", &self.migrate)
            .field("retry_forever", &self.retry_forever)
            .field("sales_channel", &self.sales_channel)
            .field("notify_errors", &self.notify_errors)
            .field("consume", &self.consume)
            .field("registration", &self.registration)
            .field("log_format", &self.log_format)
            .finish_non_exhaustive()
    }
}

/// How the consume loop batches, retries and bounds what it holds.
#[derive(Debug, Clone, Args)]
pub struct ConsumeConfig {
    /// Most deliveries held unacknowledged at once (the AMQP prefetch), for small messages.
    #[arg(long, env = "OMSC_PREFETCH", default_value_t = 1000)]
    pub prefetch: u16,

    /// Bytes of message bodies the process aims to hold at once, all its modules together
    /// (`omsc run --all` shares one budget); the prefetch shrinks when messages are large (a
    /// 10,000-SKU snapshot is about half a megabyte), down to one message per consumer.
    #[arg(long, env = "OMSC_INFLIGHT_BYTES", default_value_t = 8 * 1024 * 1024)]
    pub inflight_bytes: usize,

    /// Most messages applied in one database transaction.
    #[arg(long, env = "OMSC_BATCH_MESSAGES", default_value_t = 500)]
    pub batch_messages: usize,

    /// Most rows (SKUs, lines) applied in one database transaction. One 10,000-SKU FULL
    /// chunk per transaction: as fast as two, with half the memory held per batch.
    #[arg(long, env = "OMSC_BATCH_ROWS", default_value_t = 10_000)]
    pub batch_rows: usize,

    /// How long a batch may wait for more messages while another batch is being applied.
    #[arg(long, env = "OMSC_BATCH_LINGER_MS", default_value_t = 2)]
    pub batch_linger_ms: u64,

    /// Batches applied at the same time (each in its own transaction); acknowledgements
    /// still leave in delivery order.
    #[arg(long, env = "OMSC_APPLY_CONCURRENCY", default_value_t = 2)]
    pub apply_concurrency: usize,

    /// Deliveries of a message that failed in a way that may pass (an order not there yet)
    /// before it is dead-lettered.
    #[arg(long, env = "OMSC_MAX_ATTEMPTS", default_value_t = 8)]
    pub max_attempts: u32,

    /// Largest message body accepted; larger ones are dead-lettered unread.
    #[arg(long, env = "OMSC_MAX_MESSAGE_BYTES", default_value_t = 8 * 1024 * 1024)]
    pub max_message_bytes: usize,

    /// Most lines (of an order update, shipment, return, refund) or SKUs one message may
    /// carry; a message with more is dead-lettered, whatever the module.
    #[arg(long, env = "OMSC_MAX_MESSAGE_ROWS", default_value_t = 10_000)]
    pub max_message_rows: usize,

    /// On SIGTERM, how long to wait for the batches in hand to commit and be acknowledged.
    #[arg(long, env = "OMSC_DRAIN_TIMEOUT_SECS", default_value_t = 10)]
    pub drain_timeout_secs: u64,
}

/// After the drain timeout, how long the runtime still waits for its tasks to close their
/// channels and connections before it gives up on them.
pub const STOP_MARGIN: Duration = Duration::from_secs(2);
/// Longest the last statistics flush (and, at the same time, the last spans' export) may
/// take at shutdown, once the tasks stopped.
pub const LAST_FLUSH_LIMIT: Duration = Duration::from_secs(5);

impl ConsumeConfig {
    pub fn batch_linger(&self) -> Duration {
        Duration::from_millis(self.batch_linger_ms)
    }

    pub fn drain_timeout(&self) -> Duration {
        Duration::from_secs(self.drain_timeout_secs)
    }

    /// Longest a process takes from SIGTERM to its exit: the drain, the margin for the
    /// tasks to stop, the last statistics flush. A pod's `terminationGracePeriodSeconds`
    /// must be above it (`make deploy-check` checks the manifests against the same sum).
    pub fn shutdown_budget(&self) -> Duration {
        self.drain_timeout() + STOP_MARGIN + LAST_FLUSH_LIMIT
    }

    pub fn limits(&self) -> protocol::Limits {
        protocol::Limits {
            max_body_bytes: self.max_message_bytes,
            max_message_rows: self.max_message_rows,
            ..protocol::Limits::default()
        }
    }
}

/// How the connector announces itself to the OMS (`magento.service_bus.remote.register`).
#[derive(Debug, Clone, Args)]
pub struct RegistrationConfig {
    /// Register with the OMS when a worker starts (the registration covers every module that
    /// ever started against this database; see `omsc status`). Sent again only when what it
    /// says changed.
    #[arg(long = "register", env = "OMSC_REGISTER", default_value_t = true, action = clap::ArgAction::Set)]
    pub register_on_start: bool,

    /// The connector's id at the OMS.
    #[arg(long, env = "OMSC_CONNECTOR_ID", default_value = "oms-connector")]
    pub connector_id: String,

    /// The URL the OMS calls back (left out of the registration when empty).
    #[arg(long, env = "OMSC_CALLBACK_URL", default_value = "")]
    pub callback_url: String,

    /// The secret the OMS signs its requests with. Never logged, never stored (only its
    /// SHA-256, to notice a change).
    #[arg(
        long,
        env = "OMSC_REGISTRATION_SECRET",
        default_value = "",
        hide_env_values = true,
        hide_default_value = true
    )]
    pub registration_secret: Secret,
}

/// A value that must never appear in logs: `Debug` and `Display` print `***`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "***" })
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum QueueType {
    Quorum,
    Classic,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Hides the password of a connection URL (or of a PostgreSQL `key=value` connection string),
/// for logs and errors.
///
/// The user information of a URL ends at the last `@` before the query, not at the first
/// `/`: a password with an unencoded `/`, `@` or `:` is hidden whole (PostgreSQL's own parser
/// reads the credentials up to an `@` wherever it is). When in doubt, more is hidden, never
/// less: an `@` in the path hides the host too.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once(':').filter(|(s, _)| is_scheme(s)) else {
        return redact_key_value(url);
    };
    let after_slashes = rest.trim_start_matches('/');
    let slashes = &rest[..rest.len() - after_slashes.len()];
    // `amqp:/user:pw@h` or `user:pw@h`: not a URL, so the user part is no user name either.
    let well_formed = slashes == "//";
    let rest = after_slashes;
    let Some(first_at) = rest.find('@') else {
        return format!("{scheme}:{slashes}{}", redact_query(rest));
    };
    let query_start = rest[first_at..]
        .find(['?', '#'])
        .map_or(rest.len(), |i| first_at + i);
    let last_at = rest[..query_start].rfind('@').unwrap_or(first_at);
    let (userinfo, after) = (&rest[..last_at], &rest[last_at + 1..]);
    let after = redact_query(after);
    match userinfo.split_once(':') {
        Some((user, _)) if well_formed && is_plain_user(user) => {
            format!("{scheme}://{user}:***@{after}")
        }
        None if well_formed && is_plain_user(userinfo) => format!("{scheme}://{userinfo}@{after}"),
        _ => format!("{scheme}:{slashes}***@{after}"),
    }
}

/// A URL scheme (`postgres`, `amqps`): a letter, then letters, digits, `+`, `-` or `.`.
fn is_scheme(text: &str) -> bool {
    let mut chars = text.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// A user name as a URL carries it; anything else before the `@` may be part of a
/// password or a query, and is hidden.
fn is_plain_user(text: &str) -> bool {
    !text.contains(['/', '?', '#', '&', '='])
}

/// Hides the value of every `password=` parameter after a `?` or an `&`, wherever they
/// stand (a malformed URL may have them where no query is expected). A value ends at the
/// next `&` or `#`.
fn redact_query(text: &str) -> String {
    const KEY: &str = "password=";
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut from = 0;
    while let Some(found) = lower[from..].find(KEY) {
        let key_at = from + found;
        let value_at = key_at + KEY.len();
        from = value_at;
        if !matches!(text[..key_at].chars().last(), Some('?' | '&')) {
            continue;
        }
        let value_end = text[value_at..]
            .find(['&', '#'])
            .map_or(text.len(), |i| value_at + i);
        out.push_str(&text[copied..value_at]);
        out.push_str("***");
        copied = value_end;
        from = value_end;
    }
    out.push_str(&text[copied..]);
    out
}

/// `host=db password='a b' user=x` → `host=db password=*** user=x`: the value of every
/// `password` key, quoted (with backslash escapes) or not, whatever the spaces around `=`.
fn redact_key_value(conninfo: &str) -> String {
    let mut out = String::with_capacity(conninfo.len());
    let mut rest = conninfo;
    while let Some(at) = rest.find('=') {
        let (before, after) = rest.split_at(at);
        let key = before
            .trim_end()
            .rsplit(char::is_whitespace)
            .next()
            .unwrap_or("");
        out.push_str(before);
        out.push('=');
        let after = &after[1..];
        let value_start = after.len() - after.trim_start().len();
        let value = &after[value_start..];
        let value_len = if let Some(quoted) = value.strip_prefix('\'') {
            let mut escaped = false;
            quoted
                .char_indices()
                .find(|&(_, c)| {
                    let end = c == '\'' && !escaped;
                    escaped = c == '\\' && !escaped;
                    end
                })
                .map_or(value.len(), |(i, _)| i + 2)
        } else {
            value.find(char::is_whitespace).unwrap_or(value.len())
        };
        out.push_str(&after[..value_start]);
        if key.eq_ignore_ascii_case("password") {
            out.push_str("***");
        } else {
            out.push_str(&value[..value_len]);
        }
        rest = &value[value_len..];
    }
    out.push_str(rest);
    out
}

/// How statistics are flushed and how long they are kept (the store: `stats`).
#[derive(Debug, Clone, Args)]
pub struct StatsConfig {
    /// Seconds between two flushes of this worker's statistics to the database (and at
    /// shutdown). The report's finest resolution is the minute whatever this is.
    #[arg(long, env = "OMSC_STATS_FLUSH_SECS", default_value_t = 60.0)]
    pub stats_flush_secs: f64,

    /// Days the hourly and daily statistics are kept.
    #[arg(long, env = "OMSC_STATS_RETENTION_DAYS", default_value_t = 30)]
    pub stats_retention_days: u32,

    /// Hours the per-minute statistics are kept (the report reads hours beyond that).
    #[arg(long, env = "OMSC_STATS_MINUTE_RETENTION_HOURS", default_value_t = 48)]
    pub stats_minute_retention_hours: u32,
}

impl StatsConfig {
    pub fn flush_every(&self) -> Duration {
        Duration::from_secs_f64(self.stats_flush_secs.clamp(0.05, 3600.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_printed_configuration_carries_no_password() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            runtime: RuntimeConfig,
        }
        let cli = Cli::parse_from([
            "omsc",
            "--database-url=postgres://app:pg-Secret-1@db/omsc",
            "--amqp-url=amqps://app:mq-Secret-2@mq/%2f",
        ]);
        let printed = format!("{:?}", cli.runtime);
        assert!(
            !printed.contains("pg-Secret-1") && !printed.contains("mq-Secret-2"),
            "{printed}"
        );
        assert!(printed.contains("postgres://app:***@db/omsc"), "{printed}");
    }

    #[test]
    fn the_deploy_check_allows_for_the_whole_shutdown() {
        // The manifests' grace period is checked against the drain time plus this margin
        // (scripts/deploy_check.py); it must be the runtime's own.
        let check = include_str!("../../../scripts/deploy_check.py");
        let margin = (STOP_MARGIN + LAST_FLUSH_LIMIT).as_secs();
        assert!(
            check.contains(&format!("\nRUNTIME_SHUTDOWN_MARGIN_SECS = {margin}\n")),
            "scripts/deploy_check.py must say RUNTIME_SHUTDOWN_MARGIN_SECS = {margin}"
        );
    }

    #[test]
    fn a_secret_prints_as_stars() {
        let secret: Secret = "hunter2".parse().unwrap();
        assert_eq!(format!("{secret:?} {secret}"), "*** ***");
        assert_eq!(secret.expose(), "hunter2");
    }

    #[test]
    fn redaction_hides_passwords_and_keeps_the_rest() {
        assert_eq!(
            redact_url("amqp://guest:secret@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(
            redact_url("postgres://postgres@db/omsc?sslmode=require&password=hunter2"),
            "postgres://postgres@db/omsc?sslmode=require&password=***"
        );
        assert_eq!(redact_url("postgres://db/omsc"), "postgres://db/omsc");
        assert_eq!(redact_url("not a url"), "not a url");
        // Not quite URLs: whatever stands before the `@` may be a password.
        assert_eq!(
            redact_url("amqp:/guest:Secret1@127.0.0.1:5672"),
            "amqp:/***@127.0.0.1:5672"
        );
        assert_eq!(redact_url("guest:Secret1@127.0.0.1"), "guest:***@127.0.0.1");
    }

    /// Passwords with the characters that end a part of a URL, written as people write
    /// them: raw, or percent-encoded as they should be.
    const AWKWARD_PASSWORDS: [&str; 6] = [
        "sEc/rEt",
        "sEc@rEt",
        "sEc:rE/t1@x9Z",
        "sEc%2FrEt%40x9Z",
        "sEc rEt/ x9Z",
        "aQ1/bQ2?cQ3@dQ4",
    ];

    #[test]
    fn a_password_with_reserved_characters_is_hidden_whole() {
        for password in AWKWARD_PASSWORDS {
            for url in [
                format!("postgres://app:{password}@db.example:5432/omsc?sslmode=require"),
                format!("amqps://app:{password}@mq.example/%2f"),
                format!("postgresql://app:{password}@db.example"),
            ] {
                let shown = redact_url(&url);
                for part in password.split(['/', '@', ':', '%', ' ', '?']) {
                    if part.len() > 2 {
                        assert!(!shown.contains(part), "{url} shows as {shown}");
                    }
                }
                assert!(shown.contains("app:***@"), "{url} shows as {shown}");
                assert!(shown.contains(".example"), "the host stays: {shown}");
            }
        }
        assert_eq!(
            redact_url("postgres://app:pa/ss@db/omsc"),
            "postgres://app:***@db/omsc"
        );
        assert_eq!(
            redact_url("amqp://guest:p@ss@127.0.0.1:5672/%2f?heartbeat=5"),
            "amqp://guest:***@127.0.0.1:5672/%2f?heartbeat=5"
        );
    }

    #[test]
    fn a_query_password_is_hidden_even_where_no_query_is_expected() {
        assert_eq!(
            redact_url("postgres://db/omsc?user=me@srv&password=hunter2"),
            "postgres://***@srv&password=***"
        );
        assert_eq!(
            redact_url("postgres://db/omsc?Password=a?b&sslmode=require#x"),
            "postgres://db/omsc?Password=***&sslmode=require#x"
        );
        assert_eq!(
            redact_url("postgres://db/omsc?application_name=mypassword=x"),
            "postgres://db/omsc?application_name=mypassword=x"
        );
    }

    #[test]
    fn a_key_value_password_with_reserved_characters_is_hidden_whole() {
        for password in AWKWARD_PASSWORDS {
            let quoted = password.replace('\\', "\\\\").replace('\'', "\\'");
            for conninfo in [
                format!("host=db password='{quoted}' user=app"),
                format!("host=db user=app password = '{quoted}'"),
            ] {
                let shown = redact_url(&conninfo);
                assert!(
                    shown.contains("password") && shown.contains("***"),
                    "{shown}"
                );
                for part in password.split(['/', '@', ':', '%', ' ', '?']) {
                    if part.len() > 2 {
                        assert!(!shown.contains(part), "{conninfo} shows as {shown}");
                    }
                }
            }
        }
        assert_eq!(
            redact_url("host=db password=a/b@c:d%e user=app"),
            "host=db password=*** user=app"
        );
        // A `://` inside a value does not make a key-value string a URL.
        assert_eq!(
            redact_url("host=db password=x://y@z user=app"),
            "host=db password=*** user=app"
        );
    }

    #[test]
    fn redaction_hides_passwords_of_key_value_connection_strings() {
        assert_eq!(
            redact_url("host=db password=hunter2 user=app"),
            "host=db password=*** user=app"
        );
        assert_eq!(
            redact_url("host=db password = 'a \\' b' dbname=omsc"),
            "host=db password = *** dbname=omsc"
        );
        assert_eq!(
            redact_url("host=db user=app PASSWORD='x y'"),
            "host=db user=app PASSWORD=***"
        );
        assert_eq!(redact_url("host=db user=app"), "host=db user=app");
    }
}
