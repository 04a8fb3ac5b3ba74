//! Dead letters: kept in PostgreSQL where a person can search, replay or discard them.
//!
//! A worker dead-letters a message to `<queue>.dead` with its reason in headers (see
//! `incoming.rs`); the broker does the same with a message delivered more than the queue's
//! delivery limit. Each module's *keeper* moves them into the `dead_letters` table and
//! acknowledges only after the insert committed, so a dead letter is never lost and, thanks
//! to its fingerprint, never stored twice. A replay publishes the body back to the module's
//! queue with its original message id and routing key: it goes through the same parsing and
//! the same filters as the first time (a replayed stale stock update is still discarded).

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::{FutureExt as _, SinkExt as _, StreamExt as _};
use lapin::BasicProperties;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use crate::Shared;
use crate::amqp::{self, Publisher};
use crate::backoff::Backoff;
use crate::db::classify_pool;
use crate::incoming::{
    ATTEMPT_HEADER, DEAD_AT_HEADER, ENDPOINT_HEADER, MODULE_HEADER, QUEUE_HEADER, REASON_HEADER,
    ROUTING_KEY_HEADER, header_string, header_u32,
};
use crate::storable;
use crate::topology::{QueueSpec, Topology};

/// Header on a replayed message: the dead letter it came from.
pub const REPLAY_OF_HEADER: &str = "x-omsc-replay-of";

/// Headers that describe a failure; a replay starts without them.
const FAILURE_HEADERS: &[&str] = &[
    ATTEMPT_HEADER,
    REASON_HEADER,
    ENDPOINT_HEADER,
    MODULE_HEADER,
    QUEUE_HEADER,
    DEAD_AT_HEADER,
    REPLAY_OF_HEADER,
    "x-death",
    "x-first-death-exchange",
    "x-first-death-queue",
    "x-first-death-reason",
    "x-last-death-exchange",
    "x-last-death-queue",
    "x-last-death-reason",
    "x-delivery-count",
];

/// A stored dead letter.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub id: i64,
    pub queue: String,
    pub module: Option<String>,
    pub endpoint: Option<String>,
    pub reason: String,
    pub routing_key: Option<String>,
    pub message_id: Option<String>,
    pub attempts: i32,
    pub headers: Value,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
    pub dead_at: DateTime<Utc>,
    pub status: String,
    pub settled_at: Option<DateTime<Utc>>,
}

/// Which dead letters an operation applies to. Empty fields select everything.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub ids: Vec<i64>,
    pub queue: Option<String>,
    pub endpoint: Option<String>,
    /// A case-insensitive substring of the reason, taken literally (`_` and `%` are not
    /// wildcards).
    pub reason: Option<String>,
    /// `open`, `replayed`, `discarded`, or `None` for all.
    pub status: Option<String>,
    pub limit: i64,
}

/// Stores a dead letter and, when `$11`, the outbox row of its notification to the OMS
/// (`notify.rs`), in one statement: the notification exists exactly when the dead letter
/// does, and a dead letter delivered to the keeper twice (a crash before its acknowledgement)
/// inserts neither the second time. `$1`–`$10` are the letter's identity and reason, its body
/// is `$14` or the row staged by [`insert_streamed`].
macro_rules! store_sql {
    ($body:literal, $from:literal) => {
        concat!(
            "WITH stored AS (
                 INSERT INTO dead_letters (queue, module, endpoint, reason, routing_key,
                                           message_id, attempts, headers, content_type, dead_at,
                                           body, fingerprint)
                 SELECT $1::text, $2, $3, $4, $5, $6::text, $7, $8, $9, $10::timestamptz, ",
            $body,
            ", encode(sha256(convert_to($1::text || '/' || $10::timestamptz::text || '/'
                                            || coalesce($6::text, ''), 'UTF8') || ",
            $body,
            "), 'hex') ",
            $from,
            " ON CONFLICT (queue, fingerprint) DO NOTHING
                 RETURNING id)
             INSERT INTO outbox (module, topic, subject)
             SELECT $12::text, $13::text, id::text FROM stored WHERE $11::bool"
        )
    };
}

const STORE: &str = store_sql!("$14::bytea", "");

/// The same, with the body streamed into a temporary table first (see [`insert_streamed`]).
const STORE_STAGED: &str = store_sql!("staged.body", "FROM pg_temp.omsc_dead_letter_body staged");

const STAGE_TABLE: &str = "
    CREATE TEMP TABLE IF NOT EXISTS omsc_dead_letter_body (body bytea) ON COMMIT DELETE ROWS";

const STAGE_BODY: &str = "COPY pg_temp.omsc_dead_letter_body (body) FROM STDIN (FORMAT binary)";

/// Bodies larger than this are streamed to PostgreSQL in pieces of this size. Sent as a
/// query parameter, a body is copied twice on its way out (the encoded message, then the
/// connection's write buffer, which keeps its size for as long as the pooled connection
/// lives): 24 MiB of memory for an 8 MiB body, kept afterwards.
const STREAMED_BODY_BYTES: usize = 256 * 1024;

const SELECT: &str = "
    SELECT id, queue, module, endpoint, reason, routing_key, message_id, attempts, headers,
           content_type, body, dead_at, status, settled_at
      FROM dead_letters
     WHERE (cardinality($1::int8[]) = 0 OR id = ANY ($1))
       AND ($2::text IS NULL OR queue = $2)
       AND ($3::text IS NULL OR endpoint = $3)
       AND ($4::text IS NULL OR strpos(lower(reason), lower($4)) > 0)
       AND ($5::text IS NULL OR status = $5)
     ORDER BY id
     LIMIT $6";

const SETTLE: &str = "
    UPDATE dead_letters SET status = $2, settled_at = now()
     WHERE id = ANY ($1) AND status = 'open'";

const COUNT_OPEN: &str = "SELECT count(*) FROM dead_letters WHERE queue = $1 AND status = 'open'";

/// Dead letters the keeper stores before it acknowledges them, at most: its largest prefetch.
/// The prefetch is what the process's in-flight byte budget holds of bodies as large as the
/// size limit (one, with the defaults), so a backlog of large dead bodies is not held fifty
/// at a time beside the consumers' own.
const KEEPER_BATCH: u16 = 50;

/// The open dead letters are counted (a scan of the queue's rows) when the keeper has nothing
/// more to store, or after this long while a backlog goes through: not once per letter, which
/// made a backlog of 20,000 spend most of its time counting.
const COUNT_EVERY: Duration = Duration::from_secs(1);

/// How long without a new dead letter counts as having nothing more to store.
const IDLE: Duration = Duration::from_millis(50);

/// A session that lasted this long resets the reconnection backoff.
const HEALTHY_SESSION: Duration = Duration::from_secs(30);

/// The keeper's line in `/readyz` while it consumes its queue.
const KEEPING: &str = "running";

/// Runs the keeper of `spec`'s dead-letter queue until `shutdown`. `name` is its `/readyz`
/// line: not ready, with the reason, from a failed session until the next one consumes
/// again, since it waits on deliveries for as long as none come and has no beat to miss.
pub async fn keep(shared: Shared, spec: QueueSpec, name: String, shutdown: CancellationToken) {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    while !shutdown.is_cancelled() {
        let started = tokio::time::Instant::now();
        match keeper_session(&shared, &spec, &name, &shutdown).await {
            Ok(()) => return,
            Err(e) => {
                // After a session that lasted, a failure is a new outage: start small again.
                if started.elapsed() > HEALTHY_SESSION {
                    backoff.reset();
                }
                let delay = backoff.next_delay();
                let reason = format!("{e:#}");
                shared
                    .health
                    .set(&name, false, format!("reconnecting: {reason}"));
                tracing::warn!(queue = spec.name, error = %reason, ?delay, "dead-letter keeper reconnects");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

async fn keeper_session(
    shared: &Shared,
    spec: &QueueSpec,
    name: &str,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let dead = shared.topology.dead_queue(spec);
    let connection = amqp::connect(
        &shared.config.broker.amqp_url,
        &format!("omsc-{}-dead-letters", spec.name),
    )
    .await?;
    let channel = amqp::within("opening a channel", connection.create_channel()).await?;
    // The keeper may start before the module's consumer has declared the queues: declaring
    // them here (idempotent) spares a start-up round of "no queue" channel errors.
    if shared.config.declare_topology {
        amqp::within(
            "declaring the topology",
            shared.topology.declare(&channel, spec),
        )
        .await?;
    }
    let largest = shared.config.consume.limits().max_body_bytes.max(1);
    let prefetch =
        (shared.config.consume.inflight_bytes / largest).clamp(1, usize::from(KEEPER_BATCH));
    let prefetch = u16::try_from(prefetch).unwrap_or(KEEPER_BATCH);
    amqp::within(
        "setting the prefetch",
        channel.basic_qos(prefetch, BasicQosOptions { global: false }),
    )
    .await?;
    let consume = channel.basic_consume(
        ShortString::from(dead.as_str()),
        ShortString::from(format!("omsc-keeper-{}", std::process::id())),
        BasicConsumeOptions::default(),
        FieldTable::default(),
    );
    let mut consumer = amqp::within("subscribing to the dead-letter queue", consume).await?;
    shared.health.set(name, true, KEEPING);
    tracing::debug!(queue = %dead, "keeping dead letters");
    refresh_gauge(shared, spec).await;
    let mut counted = tokio::time::Instant::now();
    let mut uncounted = false;
    loop {
        let first = tokio::select! {
            biased;
            () = shutdown.cancelled() => {
                let _ = amqp::within("closing", connection.close(200, "keeper stops".into())).await;
                return Ok(());
            }
            next = consumer.next() => next,
            // Nothing more came for a moment: the backlog is through, count what is open.
            () = tokio::time::sleep(IDLE), if uncounted => {
                refresh_gauge(shared, spec).await;
                (counted, uncounted) = (tokio::time::Instant::now(), false);
                continue;
            }
        };
        // What else has already arrived joins the batch; the keeper never waits for more.
        let mut batch = Vec::new();
        let mut next = first;
        let ended = loop {
            match next {
                Some(delivery) => batch.push(delivery?),
                None => break true,
            }
            if batch.len() >= usize::from(prefetch) {
                break false;
            }
            match consumer.next().now_or_never() {
                Some(more) => next = more,
                None => break false,
            }
        };
        for delivery in &batch {
            store_until_stored(shared, spec, delivery, shutdown).await?;
        }
        if let Some(last) = batch.last() {
            amqp::within(
                "acknowledging dead letters",
                last.acker.ack(BasicAckOptions { multiple: true }),
            )
            .await?;
            uncounted = true;
            if counted.elapsed() >= COUNT_EVERY {
                refresh_gauge(shared, spec).await;
                (counted, uncounted) = (tokio::time::Instant::now(), false);
            }
        }
        if ended {
            anyhow::bail!("the dead-letter consumer was cancelled");
        }
    }
}

async fn store_until_stored(
    shared: &Shared,
    spec: &QueueSpec,
    delivery: &lapin::message::Delivery,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    let letter = Letter::read(
        delivery,
        spec,
        shared.config.consume.limits().max_body_bytes,
    );
    let notify = crate::notify::notifies(
        shared.config.notify_errors,
        spec,
        letter.routing_key.as_deref().or(letter.endpoint.as_deref()),
        delivery
            .properties
            .app_id()
            .as_ref()
            .map(ShortString::as_str),
    );
    loop {
        match store(shared, spec, &letter, &delivery.data, notify).await {
            Ok(()) => return Ok(()),
            Err(e) => {
                let delay = backoff.next_delay();
                tracing::warn!(
                    queue = spec.name,
                    message_id = letter.message_id.as_deref().unwrap_or("-"),
                    error = %format!("{e:#}"),
                    ?delay,
                    "cannot store a dead letter yet"
                );
                tokio::select! {
                    () = shutdown.cancelled() => anyhow::bail!("stopped before storing a dead letter"),
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

/// A dead letter as read from its delivery, every text made storable (see `storable.rs`).
#[derive(Debug, Clone, PartialEq)]
struct Letter {
    module: Option<String>,
    endpoint: Option<String>,
    reason: String,
    routing_key: Option<String>,
    message_id: Option<String>,
    attempts: i32,
    headers: Value,
    content_type: Option<String>,
    dead_at: DateTime<Utc>,
}

impl Letter {
    /// `size_limit` is this process's `OMSC_MAX_MESSAGE_BYTES`, which names why a consumer
    /// refused a body unread.
    fn read(delivery: &lapin::message::Delivery, spec: &QueueSpec, size_limit: usize) -> Self {
        let headers = delivery.properties.headers().clone().unwrap_or_default();
        let reason = header_string(&headers, REASON_HEADER)
            .unwrap_or_else(|| broker_reason(&headers, delivery.data.len(), size_limit));
        let dead_at = header_string(&headers, DEAD_AT_HEADER)
            .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_else(Utc::now);
        let routing_key = header_string(&headers, ROUTING_KEY_HEADER)
            .or_else(|| {
                Some(delivery.routing_key.as_str().to_owned()).filter(|k| !k.ends_with(".dead"))
            })
            // Dead-lettered by the broker (delivery limit): it travelled with the dead-letter
            // queue's name; the method it was sent with is in its death record.
            .or_else(|| crate::notify::death_routing_key(&headers, spec));
        let short = |s: &Option<ShortString>| s.as_ref().map(|s| s.as_str().to_owned());
        Self {
            module: storable::optional(header_string(&headers, MODULE_HEADER)),
            // Dead-lettered by the broker, the method it was sent with is the endpoint (it is
            // one the queue is bound to, so one of the closed set).
            endpoint: storable::optional(
                header_string(&headers, ENDPOINT_HEADER)
                    .or_else(|| crate::notify::death_routing_key(&headers, spec)),
            ),
            reason: storable::text(&reason).into_owned(),
            routing_key: storable::optional(routing_key),
            message_id: storable::optional(short(delivery.properties.message_id())),
            attempts: header_u32(&headers, ATTEMPT_HEADER).unwrap_or(0) as i32,
            headers: storable::json(table_to_json(&headers)),
            content_type: storable::optional(short(delivery.properties.content_type())),
            dead_at,
        }
    }

    /// `$1`–`$13` of the store statements: the letter, and whether to notify the OMS.
    fn params<'a>(
        &'a self,
        spec: &'a QueueSpec,
        notify: &'a bool,
    ) -> Vec<&'a (dyn tokio_postgres::types::ToSql + Sync)> {
        vec![
            &spec.name,
            &self.module,
            &self.endpoint,
            &self.reason,
            &self.routing_key,
            &self.message_id,
            &self.attempts,
            &self.headers,
            &self.content_type,
            &self.dead_at,
            notify,
            &crate::notify::MODULE,
            &crate::notify::TOPIC,
        ]
    }

    /// What is left when PostgreSQL refuses the letter's values: the reason, with why the rest
    /// is missing, the attempts and the time. The body is kept (bytes are always storable).
    fn minimal(&self, refused: &tokio_postgres::Error) -> Self {
        Self {
            module: None,
            endpoint: None,
            reason: storable::text(&format!(
                "{} (stored in a minimal form: the database refused its identity and headers: {})",
                self.reason,
                db_error_text(refused)
            ))
            .into_owned(),
            routing_key: None,
            message_id: None,
            attempts: self.attempts,
            headers: Value::Object(Map::new()),
            content_type: None,
            dead_at: self.dead_at,
        }
    }
}

/// Stores a dead letter; when PostgreSQL refuses its values (they can never be stored as they
/// are), stores its minimal form instead, and if even that is refused, the minimal form
/// without its body. Only failures that may pass (an outage, a privilege) are returned.
async fn store(
    shared: &Shared,
    spec: &QueueSpec,
    letter: &Letter,
    body: &[u8],
    notify: bool,
) -> anyhow::Result<()> {
    let client = shared
        .pool
        .get()
        .await
        .map_err(|e| anyhow::anyhow!("database ({:?}): {e}", classify_pool(&e)))?;
    let mut client = client;
    let refused = match insert(&mut client, spec, letter, body, notify).await {
        Ok(()) => return Ok(()),
        Err(e) if storable::refused_for_its_values(&e) => e,
        Err(e) => return Err(e.into()),
    };
    tracing::warn!(
        queue = spec.name,
        message_id = letter.message_id.as_deref().unwrap_or("-"),
        error = %db_error_text(&refused),
        "the database refused a dead letter; storing its minimal form"
    );
    let minimal = letter.minimal(&refused);
    let refused = match insert(&mut client, spec, &minimal, body, notify).await {
        Ok(()) => return Ok(()),
        Err(e) if storable::refused_for_its_values(&e) => e,
        Err(e) => return Err(e.into()),
    };
    tracing::error!(
        queue = spec.name,
        message_id = letter.message_id.as_deref().unwrap_or("-"),
        error = %db_error_text(&refused),
        bytes = body.len(),
        "the database refused a dead letter's body; storing it without"
    );
    let bare = Letter {
        reason: storable::text(&format!(
            "{} (and its body of {} bytes was refused too: {})",
            minimal.reason,
            body.len(),
            db_error_text(&refused)
        ))
        .into_owned(),
        ..minimal
    };
    insert(&mut client, spec, &bare, &[], notify).await?;
    Ok(())
}

async fn insert(
    client: &mut deadpool_postgres::Client,
    spec: &QueueSpec,
    letter: &Letter,
    body: &[u8],
    notify: bool,
) -> Result<(), tokio_postgres::Error> {
    if body.len() > STREAMED_BODY_BYTES {
        return insert_streamed(client, spec, letter, body, notify).await;
    }
    let statement = client.prepare_cached(STORE).await?;
    let mut params = letter.params(spec, &notify);
    params.push(&body);
    client.execute(&statement, &params).await?;
    Ok(())
}

/// Inserts a dead letter whose body goes to PostgreSQL in pieces, by `COPY` into a temporary
/// table and from there into `dead_letters` with the same statement (and so the same
/// fingerprint) as a small one: what the keeper holds of a body is the delivery itself.
async fn insert_streamed(
    client: &mut deadpool_postgres::Client,
    spec: &QueueSpec,
    letter: &Letter,
    body: &[u8],
    notify: bool,
) -> Result<(), tokio_postgres::Error> {
    let tx = client.transaction().await?;
    tx.batch_execute(STAGE_TABLE).await?;
    let sink = tx.copy_in::<_, bytes::Bytes>(STAGE_BODY).await?;
    futures::pin_mut!(sink);
    for piece in binary_copy_of_one_bytea(body) {
        sink.send(piece).await?;
    }
    sink.finish().await?;
    let statement = tx.prepare_cached(STORE_STAGED).await?;
    tx.execute(&statement, &letter.params(spec, &notify))
        .await?;
    tx.commit().await
}

/// The end of a binary `COPY`: a row of -1 fields.
const COPY_TRAILER: &[u8] = &(-1i16).to_be_bytes();

/// `body` as the binary `COPY` format's one row of one `bytea` column: the header, the row's
/// field count and length, the body in pieces of [`STREAMED_BODY_BYTES`], the trailer.
fn binary_copy_of_one_bytea(body: &[u8]) -> impl Iterator<Item = bytes::Bytes> + '_ {
    let mut head = Vec::with_capacity(25);
    head.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
    head.extend_from_slice(&0i32.to_be_bytes()); // flags
    head.extend_from_slice(&0i32.to_be_bytes()); // header extension length
    head.extend_from_slice(&1i16.to_be_bytes()); // fields in the row
    let length = i32::try_from(body.len()).expect("a body fits in a bytea");
    head.extend_from_slice(&length.to_be_bytes());
    std::iter::once(bytes::Bytes::from(head))
        .chain(
            body.chunks(STREAMED_BODY_BYTES)
                .map(bytes::Bytes::copy_from_slice),
        )
        .chain(std::iter::once(bytes::Bytes::from_static(COPY_TRAILER)))
}

/// The server's own message when there is one ("unsupported Unicode escape sequence").
fn db_error_text(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => error.to_string(),
    }
}

/// The reason of a message the broker dead-lettered by itself, or that a consumer rejected
/// without reading it (only a body over the size limit is rejected so, see `consume.rs`).
fn broker_reason(headers: &FieldTable, body_bytes: usize, size_limit: usize) -> String {
    match header_string(headers, "x-first-death-reason").as_deref() {
        Some("delivery_limit") => format!(
            "delivered more than {} times without being acknowledged: each worker that took it stopped before finishing (a crash or a kill while holding it)",
            crate::topology::DELIVERY_LIMIT
        ),
        Some("rejected") if body_bytes > size_limit => format!(
            "message body is {body_bytes} bytes, over the limit of {size_limit} bytes (OMSC_MAX_MESSAGE_BYTES): refused unread"
        ),
        Some("rejected") => format!(
            "refused unread by a consumer: its body of {body_bytes} bytes was over that consumer's OMSC_MAX_MESSAGE_BYTES"
        ),
        Some(other) => format!("dead-lettered by the broker ({other})"),
        None => "dead-lettered without a reason".into(),
    }
}

async fn refresh_gauge(shared: &Shared, spec: &QueueSpec) {
    if let Ok(client) = shared.pool.get().await
        && let Ok(row) = client.query_one(COUNT_OPEN, &[&spec.name]).await
    {
        shared
            .metrics
            .dead_letters
            .with_label_values(&[spec.name])
            .set(row.get(0));
    }
}

/// The dead letters of a selection, oldest first.
pub async fn select(
    client: &tokio_postgres::Client,
    selection: &Selection,
) -> Result<Vec<DeadLetter>, tokio_postgres::Error> {
    let limit = if selection.limit > 0 {
        selection.limit
    } else {
        i64::MAX
    };
    let rows = client
        .query(
            SELECT,
            &[
                &selection.ids,
                &selection.queue,
                &selection.endpoint,
                &selection.reason,
                &selection.status,
                &limit,
            ],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| DeadLetter {
            id: r.get(0),
            queue: r.get(1),
            module: r.get(2),
            endpoint: r.get(3),
            reason: r.get(4),
            routing_key: r.get(5),
            message_id: r.get(6),
            attempts: r.get(7),
            headers: r.get(8),
            content_type: r.get(9),
            body: r.get(10),
            dead_at: r.get(11),
            status: r.get(12),
            settled_at: r.get(13),
        })
        .collect())
}

/// Marks the open dead letters of a selection discarded; returns how many.
pub async fn discard(
    client: &tokio_postgres::Client,
    selection: &Selection,
) -> Result<u64, tokio_postgres::Error> {
    let open = Selection {
        status: Some("open".into()),
        ..selection.clone()
    };
    let ids: Vec<i64> = select(client, &open).await?.iter().map(|d| d.id).collect();
    client.execute(SETTLE, &[&ids, &"discarded"]).await
}

/// Publishes the open dead letters of a selection back to their queues, confirmed, and marks
/// each replayed as soon as the broker took it. Returns the ids replayed.
pub async fn replay(
    client: &tokio_postgres::Client,
    amqp_url: &str,
    topology: &Topology,
    selection: &Selection,
) -> anyhow::Result<Vec<i64>> {
    let open = Selection {
        status: Some("open".into()),
        ..selection.clone()
    };
    let letters = select(client, &open).await?;
    if letters.is_empty() {
        return Ok(Vec::new());
    }
    let connection = amqp::connect(amqp_url, "omsc-dead-letters-replay").await?;
    let publisher = amqp::within("opening a channel", Publisher::open(&connection)).await?;
    let mut replayed = Vec::new();
    for letter in &letters {
        let queue = format!("{}{}", topology.prefix, letter.queue);
        publisher
            .publish("", &queue, &letter.body, replay_properties(letter))
            .await?;
        client
            .execute(SETTLE, &[&vec![letter.id], &"replayed"])
            .await?;
        // Named like its dead-letter line (the attempt at which it was dead-lettered, counting
        // from 1; the stored count is the failures before that one), so the log follows a
        // message from its failure to its replay.
        tracing::info!(
            module = letter.module.as_deref().unwrap_or("-"),
            queue = %queue,
            dead_letter = letter.id,
            message_id = letter.message_id.as_deref().unwrap_or("-"),
            routing_key = letter.routing_key.as_deref().unwrap_or("-"),
            attempt = letter.attempts + 1,
            "replayed"
        );
        replayed.push(letter.id);
    }
    let _ = amqp::within("closing", connection.close(200, "replayed".into())).await;
    Ok(replayed)
}

fn replay_properties(letter: &DeadLetter) -> BasicProperties {
    let mut headers = json_to_table(&letter.headers);
    let mut clean = FieldTable::default();
    for (key, value) in headers.inner() {
        if !FAILURE_HEADERS.contains(&key.as_str()) {
            clean.insert(key.clone(), value.clone());
        }
    }
    headers = clean;
    if let Some(key) = &letter.routing_key {
        headers.insert(
            ROUTING_KEY_HEADER.into(),
            AMQPValue::LongString(LongString::from(key.as_str())),
        );
    }
    headers.insert(REPLAY_OF_HEADER.into(), AMQPValue::LongLongInt(letter.id));
    let mut properties = BasicProperties::default().with_headers(headers);
    if let Some(id) = &letter.message_id {
        properties = properties.with_message_id(ShortString::from(id.as_str()));
    }
    if let Some(content_type) = &letter.content_type {
        properties = properties.with_content_type(ShortString::from(content_type.as_str()));
    }
    properties
}

/// AMQP headers as JSON, for storage and display.
pub fn table_to_json(table: &FieldTable) -> Value {
    Value::Object(
        table
            .inner()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), value_to_json(v)))
            .collect::<Map<_, _>>(),
    )
}

fn value_to_json(value: &AMQPValue) -> Value {
    match value {
        AMQPValue::Boolean(b) => Value::Bool(*b),
        AMQPValue::ShortShortInt(v) => Value::from(*v),
        AMQPValue::ShortShortUInt(v) => Value::from(*v),
        AMQPValue::ShortInt(v) => Value::from(*v),
        AMQPValue::ShortUInt(v) => Value::from(*v),
        AMQPValue::LongInt(v) => Value::from(*v),
        AMQPValue::LongUInt(v) => Value::from(*v),
        AMQPValue::LongLongInt(v) => Value::from(*v),
        AMQPValue::Float(v) => Value::from(f64::from(*v)),
        AMQPValue::Double(v) => Value::from(*v),
        AMQPValue::ShortString(s) => Value::from(s.as_str()),
        AMQPValue::LongString(s) => Value::from(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::FieldArray(items) => {
            Value::Array(items.as_slice().iter().map(value_to_json).collect())
        }
        AMQPValue::FieldTable(t) => table_to_json(t),
        AMQPValue::Timestamp(t) => Value::from(*t),
        AMQPValue::ByteArray(b) => Value::from(String::from_utf8_lossy(b.as_slice()).into_owned()),
        AMQPValue::DecimalValue(d) => Value::from(format!("{d:?}")),
        AMQPValue::Void => Value::Null,
    }
}

/// JSON back to AMQP headers, for a replay.
pub fn json_to_table(value: &Value) -> FieldTable {
    let mut table = FieldTable::default();
    if let Value::Object(map) = value {
        for (k, v) in map {
            table.insert(ShortString::from(k.as_str()), json_to_value(v));
        }
    }
    table
}

fn json_to_value(value: &Value) -> AMQPValue {
    match value {
        Value::Null => AMQPValue::Void,
        Value::Bool(b) => AMQPValue::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => AMQPValue::LongLongInt(i),
            None => AMQPValue::Double(n.as_f64().unwrap_or(0.0)),
        },
        Value::String(s) => AMQPValue::LongString(LongString::from(s.as_str())),
        Value::Array(items) => AMQPValue::FieldArray(FieldArray::from(
            items.iter().map(json_to_value).collect::<Vec<_>>(),
        )),
        Value::Object(_) => AMQPValue::FieldTable(json_to_table(value)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_survive_the_trip_through_json() {
        let mut table = FieldTable::default();
        table.insert("a".into(), AMQPValue::LongString("text".into()));
        table.insert("b".into(), AMQPValue::LongLongInt(42));
        table.insert("c".into(), AMQPValue::Boolean(true));
        let json = table_to_json(&table);
        assert_eq!(json, serde_json::json!({"a": "text", "b": 42, "c": true}));
        assert_eq!(table_to_json(&json_to_table(&json)), json);
    }

    #[test]
    fn a_replay_drops_the_failure_and_keeps_identity_and_route() {
        let letter = DeadLetter {
            id: 7,
            queue: "connector.inventory".into(),
            module: Some("inventory".into()),
            endpoint: Some("e".into()),
            reason: "bad".into(),
            routing_key: Some("magento.inventory.x".into()),
            message_id: Some("m-1".into()),
            attempts: 3,
            headers: serde_json::json!({"x-omsc-reason": "bad", "x-omsc-attempt": 3, "x-custom": "kept"}),
            content_type: Some("application/json".into()),
            body: b"{}".to_vec(),
            dead_at: Utc::now(),
            status: "open".into(),
            settled_at: None,
        };
        let properties = replay_properties(&letter);
        let headers = properties.headers().clone().unwrap();
        assert!(!headers.contains_key(REASON_HEADER));
        assert!(!headers.contains_key(ATTEMPT_HEADER));
        assert_eq!(header_string(&headers, "x-custom").as_deref(), Some("kept"));
        assert_eq!(
            header_string(&headers, ROUTING_KEY_HEADER).as_deref(),
            Some("magento.inventory.x")
        );
        assert_eq!(
            properties.message_id().as_ref().map(|m| m.as_str()),
            Some("m-1")
        );
    }
}
