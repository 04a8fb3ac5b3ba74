//! The dead-letter workflow end to end, through the real `omsc` command line: a person sees
//! why each message failed, fixes the cause, replays; a replay keeps the message id and goes
//! through the same filters.

use std::process::Stdio;
use std::sync::{Arc, Mutex};

use protocol::inventory::{SnapshotMode, StockEntry, StockScope, StockSnapshot, methods};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, BufReader};

use crate::helpers::{INVENTORY_QUEUE, PATIENCE, TestEnv, binary, wait_until};

fn snapshot(mode: SnapshotMode, secs: i64, entries: &[(&str, i64)]) -> StockSnapshot {
    StockSnapshot {
        scope: StockScope::Aggregate,
        scope_id: "EU".into(),
        mode,
        created_on: chrono::DateTime::from_timestamp(1_780_000_000 + secs, 0).unwrap(),
        stock: entries
            .iter()
            .map(|(sku, quantity)| StockEntry {
                sku: (*sku).into(),
                quantity: *quantity,
                unlimited: false,
                inflight_backorders: None,
            })
            .collect(),
        batch: None,
    }
}

/// Runs `omsc dead-letters …` against the environment; returns stdout.
async fn omsc(env: &TestEnv, args: &[&str]) -> String {
    let args: Vec<&str> = std::iter::once("dead-letters")
        .chain(args.iter().copied())
        .collect();
    env.omsc(&args, &[]).await
}

fn listed(json_lines: &str) -> Vec<Value> {
    json_lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn fix_the_cause_replay_and_the_filters_still_apply() {
    let env = TestEnv::new().await;
    // The cause: a message size limit set too low for bigger messages.
    let worker = env.start_worker_with(&["--max-message-bytes=400"]).await;
    let publisher = env.publisher().await;
    let skus: Vec<(String, i64)> = (0..10).map(|i| (format!("sku-{i}"), 1)).collect();
    let skus: Vec<(&str, i64)> = skus.iter().map(|(s, q)| (s.as_str(), *q)).collect();
    let old_full = snapshot(SnapshotMode::Full, 10, &skus);
    let newer_small = snapshot(SnapshotMode::Delta, 20, &[("sku-0", 5)]);
    let mut big_entries = skus.clone();
    big_entries[0] = ("sku-0", 7);
    let newest_big = snapshot(SnapshotMode::Delta, 30, &big_entries);
    env.publish_snapshots(&publisher, &[&old_full, &newer_small, &newest_big])
        .await;
    let letters = env.expect_dead_letters(2).await;
    assert!(
        letters
            .iter()
            .all(|l| l.reason.contains("over the limit of 400 bytes"))
    );
    // The small DELTA between them applies in its own batch, which may commit after the
    // big ones were dead-lettered on arrival.
    wait_until("the small DELTA to apply", PATIENCE, || async {
        env.sku("EU", "sku-0").await == Some((5, false))
    })
    .await;

    // A person looks.
    let open = listed(&omsc(&env, &["list", "--json"]).await);
    assert_eq!(open.len(), 2);
    // Too big to be read: the endpoint comes from the routing key.
    assert_eq!(
        open[0]["endpoint"],
        "magento.inventory.aggregate_stock_management.updated"
    );
    let shown = omsc(&env, &["show", &open[0]["id"].to_string()]).await;
    assert!(shown.contains("over the limit of 400 bytes"), "{shown}");
    assert!(
        shown.contains("\"mode\": \"FULL\""),
        "the body is shown: {shown}"
    );

    // Replaying before fixing the cause dead-letters it again, with the same message id.
    let first_id = open[0]["id"].as_i64().unwrap();
    let first_message = open[0]["message_id"].clone();
    omsc(&env, &["replay", &first_id.to_string()]).await;
    wait_until("the replay to fail again", PATIENCE, || async {
        let open = env.dead_letters().await;
        open.len() == 2 && open.iter().all(|l| l.id != first_id)
    })
    .await;
    let again = env.dead_letters().await;
    assert!(
        again
            .iter()
            .any(|l| l.message_id.as_ref().map(|m| Value::from(m.as_str()))
                == Some(first_message.clone()))
    );

    // The cause is fixed: a worker with the default limit. Replay everything that failed on size.
    worker.stop().await;
    let worker = env.start_worker().await;
    let replayed = omsc(&env, &["replay", "--reason", "over the limit"]).await;
    assert!(
        replayed.starts_with("replayed 2 dead letter(s)"),
        "{replayed}"
    );
    wait_until("the replayed messages to apply", PATIENCE, || async {
        env.sku("EU", "sku-9").await == Some((1, false))
            && env.sku("EU", "sku-0").await == Some((7, false))
    })
    .await;
    // The old FULL went through the filter: its sku-0 (T10) lost to the DELTAs (T20, T30).
    assert_eq!(env.sku("EU", "sku-0").await, Some((7, false)));
    assert!(env.dead_letters().await.is_empty());
    let history = listed(&omsc(&env, &["list", "--json", "--status", "replayed"]).await);
    assert_eq!(
        history.len(),
        3,
        "every replayed dead letter stays on record"
    );
    worker.stop().await;
    env.teardown().await;
}

#[tokio::test]
async fn discarded_dead_letters_leave_the_open_list_and_a_bare_command_touches_nothing() {
    let env = TestEnv::new().await;
    let worker = env.start_worker().await;
    let publisher = env.publisher().await;
    let bad = snapshot(SnapshotMode::Delta, 1, &[("a", -1)]);
    let good = snapshot(SnapshotMode::Delta, 2, &[("b", 1)]);
    env.publish_snapshots(&publisher, &[&bad, &good]).await;
    env.expect_dead_letters(1).await;

    let refused = tokio::process::Command::new(binary("omsc"))
        .args(["dead-letters", "discard"])
        .env("DATABASE_URL", &env.database_url)
        .output()
        .await
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("say which dead letters"));
    assert_eq!(env.dead_letters().await.len(), 1);

    let out = omsc(&env, &["discard", "--reason", "negative"]).await;
    assert_eq!(out.trim(), "discarded 1 dead letter(s)");
    assert!(env.dead_letters().await.is_empty());
    let discarded = listed(&omsc(&env, &["list", "--json", "--status", "discarded"]).await);
    assert_eq!(discarded.len(), 1);
    // A status that does not exist is refused with the choices, not answered "no dead letters".
    let typo = tokio::process::Command::new(binary("omsc"))
        .args(["dead-letters", "list", "--status", "discarted"])
        .env("DATABASE_URL", &env.database_url)
        .output()
        .await
        .unwrap();
    let said = String::from_utf8_lossy(&typo.stderr);
    assert_eq!(typo.status.code(), Some(2), "{said}");
    assert!(
        said.contains("possible values: open, replayed, discarded, all"),
        "{said}"
    );
    assert!(
        typo.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&typo.stdout)
    );
    assert!(
        discarded[0]["reason"]
            .as_str()
            .unwrap()
            .contains("\"quantity\" is negative")
    );
    worker.stop().await;
    env.teardown().await;
}

/// Stores a dead letter as the keeper would, with whatever a sender put in it.
async fn store(env: &TestEnv, reason: &str, message_id: &str, headers: Value, body: &[u8]) -> i64 {
    env.db
        .query_one(
            "INSERT INTO dead_letters (queue, module, endpoint, reason, routing_key, message_id,
                                       attempts, headers, body, dead_at, fingerprint)
             VALUES ('connector.inventory', 'inventory', 'magento.inventory.x', $1, 'rk', $2, 1,
                     $3, $4, now(), md5(random()::text))
             RETURNING id",
            &[&reason, &message_id, &headers, &body],
        )
        .await
        .unwrap()
        .get(0)
}

/// Bytes that make a terminal act rather than show: ESC sequences (clear the screen, set the
/// window title, hide text), BEL, a carriage return that overwrites the line, the 8-bit CSI.
const TERMINAL_TRICKS: [&str; 5] = [
    "\u{1b}[2J",
    "\u{1b}]0;owned\u{7}",
    "\r",
    "\u{9b}8m",
    "\u{202e}",
];

#[tokio::test]
async fn show_and_list_print_control_characters_escaped() {
    let env = TestEnv::new().await;
    let trick = TERMINAL_TRICKS.concat();
    let id = store(
        &env,
        &format!("bad {trick} reason"),
        &format!("msg-{trick}"),
        serde_json::json!({ "x-custom": format!("h{trick}") }),
        format!("not json {trick}\nsecond line").as_bytes(),
    )
    .await;
    let json_body_id = store(
        &env,
        "bad",
        "plain",
        serde_json::json!({}),
        serde_json::json!({ "sku": format!("s{trick}") })
            .to_string()
            .as_bytes(),
    )
    .await;

    let mut printed = String::new();
    for args in [
        vec!["show".to_owned(), id.to_string()],
        vec!["show".to_owned(), json_body_id.to_string()],
        vec!["list".to_owned()],
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        printed.push_str(&omsc(&env, &args).await);
    }
    for trick in TERMINAL_TRICKS {
        for c in trick.chars().filter(|c| c.is_control() || *c == '\u{202e}') {
            assert!(
                !printed.contains(c),
                "{:?} is printed raw:\n{}",
                c,
                printed.escape_debug()
            );
        }
    }
    assert!(printed.contains("msg-\\u{1b}[2J"), "{printed}");
    assert!(printed.contains("\\u{9b}8m"), "{printed}");
    assert!(printed.contains("not json"), "{printed}");
    assert!(
        printed.contains("\nsecond line"),
        "a body keeps its lines: {printed}"
    );
    env.teardown().await;
}

#[tokio::test]
async fn a_reason_is_matched_as_text_not_as_a_pattern() {
    let env = TestEnv::new().await;
    let negative = store(
        &env,
        "\"quantity\" is negative",
        "m1",
        serde_json::json!({}),
        b"{}",
    )
    .await;
    let percent = store(
        &env,
        "took 100% of the limit",
        "m2",
        serde_json::json!({}),
        b"{}",
    )
    .await;
    let backslash = store(
        &env,
        "path C:\\tmp is odd",
        "m3",
        serde_json::json!({}),
        b"{}",
    )
    .await;

    let ids = |out: String| -> Vec<i64> {
        listed(&out)
            .iter()
            .map(|l| l["id"].as_i64().unwrap())
            .collect()
    };
    for (reason, expected) in [
        ("_", vec![]),
        ("%", vec![percent]),
        ("100%", vec![percent]),
        ("0%_", vec![]),
        ("\\", vec![backslash]),
        ("NEGATIVE", vec![negative]),
    ] {
        let listed = ids(omsc(&env, &["list", "--json", "--reason", reason]).await);
        assert_eq!(listed, expected, "--reason {reason:?}");
    }
    // Neither a wildcard nor an empty text discards everything.
    let out = omsc(&env, &["discard", "--reason", "_"]).await;
    assert_eq!(out.trim(), "discarded 0 dead letter(s)");
    let refused = tokio::process::Command::new(binary("omsc"))
        .args(["dead-letters", "discard", "--reason", ""])
        .env("DATABASE_URL", &env.database_url)
        .output()
        .await
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("say which dead letters"));
    assert_eq!(env.dead_letters().await.len(), 3, "nothing was discarded");
    env.teardown().await;
}

/// A worker's log as it writes it, one JSON object a line (`OMSC_LOG_FORMAT=json`), read as
/// it comes so that a full pipe never stalls the worker.
struct JsonLog {
    lines: Arc<Mutex<Vec<Value>>>,
    reader: tokio::task::JoinHandle<()>,
}

impl JsonLog {
    fn read(stderr: tokio::process::ChildStderr) -> Self {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let mut input = BufReader::new(stderr).lines();
        let reader = {
            let lines = lines.clone();
            tokio::spawn(async move {
                while let Ok(Some(line)) = input.next_line().await {
                    if let Ok(value) = serde_json::from_str::<Value>(&line) {
                        lines.lock().unwrap().push(value);
                    }
                }
            })
        };
        Self { lines, reader }
    }

    fn find(&self, message: &str) -> Option<Value> {
        let lines = self.lines.lock().unwrap();
        lines.iter().find(|l| l["message"] == message).cloned()
    }

    /// The first line saying `message`, once it was written.
    async fn line(&self, message: &str) -> Value {
        wait_until(&format!("the {message:?} log line"), PATIENCE, || async {
            self.find(message).is_some()
        })
        .await;
        self.find(message).unwrap()
    }

    /// Every line, once the process that wrote them ended.
    async fn all(self) -> Vec<Value> {
        self.reader.await.unwrap();
        Arc::try_unwrap(self.lines).unwrap().into_inner().unwrap()
    }
}

/// A worker process writing JSON log lines at `info`, and its log.
fn logging_worker(
    env: &TestEnv,
    binary: &str,
    extra_env: &[(&str, &str)],
) -> (tokio::process::Child, JsonLog) {
    let mut vars = vec![("OMSC_LOG_FORMAT", "json"), ("RUST_LOG", "info")];
    vars.extend_from_slice(extra_env);
    let mut worker = env
        .binary_command(binary, &[], &vars)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = JsonLog::read(worker.stderr.take().unwrap());
    (worker, log)
}

/// A dead-lettered message's log line names the message (its AMQP message id, routing key,
/// module and attempt) and carries the span of the batch it came in (module, queue, message
/// count), in the JSON log format a collector reads.
#[tokio::test]
async fn a_dead_letter_log_line_names_its_message_and_its_batch() {
    let env = TestEnv::new().await;
    let (mut worker, log) = logging_worker(&env, "omsc-inventory", &[]);
    // A snapshot in the vendor's shape with a negative quantity: refused by the parser.
    let body = json!({
        "jsonrpc": "2.0",
        "id": "f7a4c1d2",
        "method": methods::AGGREGATE_STOCK_UPDATED,
        "params": {"snapshot": {
            "aggregate_id": "EU",
            "mode": "DELTA",
            "created_on": "2026-01-01 00:00:00",
            "stock": [{"sku": "A-1", "quantity": -3}]
        }}
    });
    let publisher = env.publisher().await;
    publisher
        .publish_all(
            [(
                methods::AGGREGATE_STOCK_UPDATED,
                body.to_string().into_bytes(),
                "log-me-7f3a".to_owned(),
            )],
            1,
        )
        .await
        .unwrap();
    env.expect_dead_letters(1).await;

    let line = log.line("dead-lettered").await;
    assert_eq!(line["message_id"], "log-me-7f3a", "{line}");
    assert_eq!(
        line["routing_key"],
        methods::AGGREGATE_STOCK_UPDATED,
        "{line}"
    );
    assert_eq!(line["module"], "inventory", "{line}");
    // Refused at its first delivery: attempt 1.
    assert_eq!(line["attempt"], 1, "{line}");
    assert_eq!(line["level"], "WARN", "{line}");
    assert!(
        line["reason"].as_str().unwrap_or("").contains("quantity"),
        "{line}"
    );
    let span = &line["span"];
    assert_eq!(span["name"], "batch", "{line}");
    assert_eq!(span["module"], "inventory", "{line}");
    assert_eq!(span["queue"], env.queue(INVENTORY_QUEUE).as_str(), "{line}");
    assert_eq!(span["messages"], 1, "{line}");

    worker.kill().await.unwrap();
    log.all().await;
    env.teardown().await;
}

/// Followed through the log by its message id: an update that races ahead of its order is
/// retried (attempt 1), given up on at the last attempt (attempt 2 of 2) and, replayed by an
/// operator, said replayed (the attempt it was dead-lettered at); every line names its
/// routing key and module.
#[tokio::test]
async fn retry_give_up_and_replay_lines_name_the_message_its_routing_key_and_attempt() {
    let env = TestEnv::new().await;
    let (mut worker, log) = logging_worker(
        &env,
        "omsc-sales",
        &[
            ("OMSC_MAX_ATTEMPTS", "2"),
            ("OMSC_SALES_CHANNEL", "default"),
        ],
    );
    let publisher = crate::sales_support::oms_publisher(&env).await;
    // An order of this Commerce's sales channel that is not here (yet): retried.
    let update = json!({
        "jsonrpc": "2.0",
        "id": "u-1",
        "method": protocol::sales::methods::UPDATED,
        "params": {"order": {"id": "LATE-1", "store": "default", "status": "LOGISTICS",
                             "status_reason": "", "status_date": "2026-03-01 10:00:00"}}
    });
    publisher
        .publish_all(
            [(
                protocol::sales::methods::UPDATED,
                update.to_string().into_bytes(),
                "late-7c1e".to_owned(),
            )],
            1,
        )
        .await
        .unwrap();

    let named = |line: &Value, attempt: u32| {
        assert_eq!(line["message_id"], "late-7c1e", "{line}");
        assert_eq!(
            line["routing_key"],
            protocol::sales::methods::UPDATED,
            "{line}"
        );
        assert_eq!(line["module"], "sales", "{line}");
        assert_eq!(line["attempt"], attempt, "{line}");
    };
    let retry = log.line("will retry").await;
    named(&retry, 1);
    assert!(
        retry["reason"]
            .as_str()
            .unwrap_or("")
            .contains("not in this Commerce yet"),
        "{retry}"
    );
    let gave_up = log.line("dead-lettered: gave up retrying").await;
    named(&gave_up, 2);
    let letter = env.expect_dead_letters(1).await.remove(0);
    worker.kill().await.unwrap();
    let worker_lines = log.all().await;
    assert_eq!(
        worker_lines
            .iter()
            .filter(|l| l["message"] == "will retry")
            .count(),
        1,
        "one retry before the last attempt"
    );

    let mut replay = tokio::process::Command::new(binary("omsc"))
        .args(["dead-letters", "replay", &letter.id.to_string()])
        .env("DATABASE_URL", &env.database_url)
        .env("AMQP_URL", crate::helpers::AMQP_URL)
        .env("OMSC_PREFIX", &env.prefix)
        .env("OMSC_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let replay_log = JsonLog::read(replay.stderr.take().unwrap());
    let output = replay.wait_with_output().await.unwrap();
    assert!(output.status.success(), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stdout).starts_with("replayed 1 dead letter(s)"),
        "{output:?}"
    );
    let replayed: Vec<Value> = replay_log
        .all()
        .await
        .into_iter()
        .filter(|l| l["message"] == "replayed")
        .collect();
    assert_eq!(replayed.len(), 1, "{replayed:?}");
    let line = &replayed[0];
    named(line, 2);
    assert_eq!(line["level"], "INFO", "{line}");
    assert_eq!(line["dead_letter"], letter.id, "{line}");
    assert_eq!(
        line["queue"],
        env.queue("connector.sales").as_str(),
        "{line}"
    );
    env.teardown().await;
}
