//! The outbox relay of the runtime, with a probe module: rows in, confirmed messages out on
//! `commerce.events`, in order per subject, coalesced, kept while no queue takes them.

use futures::StreamExt;
use lapin::options::BasicAckOptions;
use runtime::outbox::{BuildError, Built, OutboxHandler, OutboxRow, Outgoing};
use tokio_util::sync::CancellationToken;

use crate::helpers::{PATIENCE, TestEnv, binary, wait_until};

struct Probe;

impl OutboxHandler for Probe {
    fn module(&self) -> &'static str {
        "probe"
    }

    async fn build<'a>(
        &'a self,
        client: &'a deadpool_postgres::Client,
        row: &'a OutboxRow,
    ) -> Result<Built, BuildError> {
        let Some(found) = client
            .query_opt(
                "SELECT payload, hold FROM outbox_probe WHERE subject = $1",
                &[&row.subject],
            )
            .await?
        else {
            return Ok(Built::Nothing);
        };
        let (payload, hold): (String, bool) = (found.get(0), found.get(1));
        // A module's bug, as the relay must survive it.
        assert!(
            payload != "unbuildable",
            "the probe cannot build {}",
            row.subject
        );
        if hold {
            return Err(BuildError::NotYet(format!("{} is on hold", row.subject)));
        }
        Ok(Built::Message(Outgoing {
            method: "magento.probe.echo".into(),
            message_id: format!("{}-{}", row.subject, row.id),
            body:
                serde_json::json!({"subject": row.subject, "payload": payload, "topic": row.topic})
                    .to_string()
                    .into_bytes(),
        }))
    }
}

struct Relay {
    token: CancellationToken,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
}

async fn start_relay(env: &TestEnv) -> Relay {
    let (config, _) = env.flags(&[]);
    let mut app = runtime::Runtime::build(config).await.unwrap();
    app.add_outbox_relay(Probe);
    let token = CancellationToken::new();
    let stop = token.clone();
    let handle = tokio::spawn(app.run_until(async move { stop.cancelled().await }));
    Relay { token, handle }
}

impl Relay {
    async fn stop(self) {
        self.token.cancel();
        self.handle.await.unwrap().unwrap();
    }
}

/// A queue bound to everything on the commerce exchange, as the OMS would bind one.
async fn oms_inbox(env: &TestEnv) -> (lapin::Connection, lapin::Consumer) {
    let (connection, _, consumer) = crate::helpers::oms_listener(env, "#", None).await;
    (connection, consumer)
}

async fn next_message(consumer: &mut lapin::Consumer) -> serde_json::Value {
    let delivery = tokio::time::timeout(PATIENCE, consumer.next())
        .await
        .expect("a message from the relay")
        .unwrap()
        .unwrap();
    delivery.ack(BasicAckOptions::default()).await.unwrap();
    serde_json::from_slice(&delivery.data).unwrap()
}

async fn setup(env: &TestEnv) {
    env.db
        .batch_execute(
            "CREATE TABLE outbox_probe (subject text PRIMARY KEY, payload text NOT NULL, hold boolean NOT NULL DEFAULT false)",
        )
        .await
        .unwrap();
}

async fn save(env: &TestEnv, subject: &str, payload: &str, coalesce: bool) {
    env.db
        .execute(
            "INSERT INTO outbox_probe (subject, payload) VALUES ($1, $2)
             ON CONFLICT (subject) DO UPDATE SET payload = EXCLUDED.payload",
            &[&subject, &payload],
        )
        .await
        .unwrap();
    let key = coalesce.then_some(subject);
    env.db
        .execute(
            "SELECT omsc_outbox_add('probe', 'save', $1, $2)",
            &[&subject, &key],
        )
        .await
        .unwrap();
}

async fn pending(env: &TestEnv) -> i64 {
    env.db
        .query_one(
            "SELECT count(*) FROM outbox WHERE module = 'probe' AND sent_at IS NULL AND failed_at IS NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn rows_are_published_confirmed_and_marked_sent() {
    let env = TestEnv::new().await;
    setup(&env).await;
    let (_connection, mut inbox) = oms_inbox(&env).await;
    let relay = start_relay(&env).await;
    save(&env, "a", "first", false).await;
    assert_eq!(next_message(&mut inbox).await["payload"], "first");
    save(&env, "b", "second", false).await;
    assert_eq!(next_message(&mut inbox).await["payload"], "second");
    wait_until("both rows sent", PATIENCE, || async {
        pending(&env).await == 0
    })
    .await;
    let ids: Vec<String> = env
        .db
        .query("SELECT message_id FROM outbox ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids.len(), 2);
    assert!(ids[0].starts_with("a-"), "{ids:?}");
    relay.stop().await;
    env.teardown().await;
}

/// A round built together panics on one row: the relay builds that round again row by row, so
/// the row fails alone, with the panic's words, and the rows beside it go out.
#[tokio::test]
async fn a_row_whose_build_panics_fails_alone_and_its_round_goes_out() {
    let env = TestEnv::new().await;
    setup(&env).await;
    let (_connection, mut inbox) = oms_inbox(&env).await;
    save(&env, "a", "first", false).await;
    save(&env, "b", "unbuildable", false).await;
    save(&env, "c", "third", false).await;
    let relay = start_relay(&env).await;
    let mut payloads = vec![
        next_message(&mut inbox).await["payload"].clone(),
        next_message(&mut inbox).await["payload"].clone(),
    ];
    payloads.sort_by_key(ToString::to_string);
    assert_eq!(payloads, ["first", "third"]);
    wait_until("the unbuildable row failed", PATIENCE, || async {
        pending(&env).await == 0
    })
    .await;
    let (failed, reason): (bool, String) = {
        let row = env
            .db
            .query_one(
                "SELECT failed_at IS NOT NULL, last_error FROM outbox WHERE subject = 'b'",
                &[],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert!(failed);
    assert!(
        reason.contains("building the message failed")
            && reason.contains("the probe cannot build b"),
        "{reason}"
    );
    relay.stop().await;
    env.teardown().await;
}

#[tokio::test]
async fn many_saves_before_the_relay_runs_export_the_latest_state_once() {
    let env = TestEnv::new().await;
    setup(&env).await;
    let (_connection, mut inbox) = oms_inbox(&env).await;
    for payload in ["v1", "v2", "v3"] {
        save(&env, "sku-1", payload, true).await;
    }
    save(&env, "marker", "end", false).await;
    let relay = start_relay(&env).await;
    let first = next_message(&mut inbox).await;
    let second = next_message(&mut inbox).await;
    assert_eq!(
        (first["payload"].as_str(), second["payload"].as_str()),
        (Some("v3"), Some("end"))
    );
    let rows: i64 = env
        .db
        .query_one("SELECT count(*) FROM outbox", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 2, "three saves of one product made one row");
    relay.stop().await;
    env.teardown().await;
}

#[tokio::test]
async fn a_message_no_queue_takes_stays_in_the_outbox_until_one_does() {
    let env = TestEnv::new().await;
    setup(&env).await;
    let relay = start_relay(&env).await;
    save(&env, "a", "kept", false).await;
    wait_until("the first attempt to fail", PATIENCE, || async {
        let row = env
            .db
            .query_one("SELECT attempts, coalesce(last_error, '') FROM outbox", &[])
            .await
            .unwrap();
        row.get::<_, i32>(0) >= 1
            && row
                .get::<_, String>(1)
                .contains("no queue took the message")
    })
    .await;
    assert_eq!(pending(&env).await, 1);
    let (_connection, mut inbox) = oms_inbox(&env).await;
    assert_eq!(next_message(&mut inbox).await["payload"], "kept");
    wait_until("the row sent", PATIENCE, || async {
        pending(&env).await == 0
    })
    .await;
    relay.stop().await;
    env.teardown().await;
}

#[tokio::test]
async fn a_row_waits_for_the_older_row_of_the_same_subject() {
    let env = TestEnv::new().await;
    setup(&env).await;
    let (_connection, mut inbox) = oms_inbox(&env).await;
    env.db
        .batch_execute(
            "INSERT INTO outbox_probe VALUES ('order-1', 'create', true), ('order-2', 'other', false);
             SELECT omsc_outbox_add('probe', 'create', 'order-1');
             SELECT omsc_outbox_add('probe', 'cancel', 'order-1');
             SELECT omsc_outbox_add('probe', 'create', 'order-2');",
        )
        .await
        .unwrap();
    let relay = start_relay(&env).await;
    // order-2 is not held up by order-1; order-1's cancel waits for its create.
    let first = next_message(&mut inbox).await;
    assert_eq!(first["subject"], "order-2");
    wait_until("the create to be retried", PATIENCE, || async {
        env.db
            .query_one(
                "SELECT attempts FROM outbox WHERE topic = 'create' AND subject = 'order-1'",
                &[],
            )
            .await
            .unwrap()
            .get::<_, i32>(0)
            >= 1
    })
    .await;
    let cancel_attempts: i32 = env
        .db
        .query_one("SELECT attempts FROM outbox WHERE topic = 'cancel'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        cancel_attempts, 0,
        "the cancel must not be tried before the create is sent"
    );
    env.db
        .execute(
            "UPDATE outbox_probe SET hold = false WHERE subject = 'order-1'",
            &[],
        )
        .await
        .unwrap();
    let (a, b) = (
        next_message(&mut inbox).await,
        next_message(&mut inbox).await,
    );
    assert_eq!(
        (a["topic"].as_str(), b["topic"].as_str()),
        (Some("create"), Some("cancel"))
    );
    relay.stop().await;
    env.teardown().await;
}

/// Runs `omsc outbox …` against the environment; returns (exit code, stdout, stderr).
async fn omsc_outbox(env: &TestEnv, args: &[&str]) -> (i32, String, String) {
    let output = tokio::process::Command::new(binary("omsc"))
        .arg("outbox")
        .args(args)
        .env("DATABASE_URL", &env.database_url)
        .output()
        .await
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

async fn row_state(env: &TestEnv, subject: &str) -> String {
    let (_, out, _) = omsc_outbox(
        env,
        &["list", "--json", "--state", "all", "--subject", subject],
    )
    .await;
    let row: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    row["state"].as_str().unwrap().to_owned()
}

/// A row the relay gave up on three days after it was saved (what 48 hours of a refusing OMS
/// leave behind).
async fn given_up(env: &TestEnv, subject: &str, coalesce: bool) {
    save(env, subject, "v1", coalesce).await;
    env.db
        .execute(
            "UPDATE outbox SET failed_at = now(), attempts = 40,
                               created_at = now() - interval '3 days',
                               last_error = 'the broker refused: \x1b[31mNOT_FOUND\x1b[0m'
              WHERE subject = $1",
            &[&subject],
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn an_operator_lists_retries_and_discards_failed_rows_with_the_cli() {
    let env = TestEnv::new().await;
    setup(&env).await;
    given_up(&env, "order-1", false).await;
    given_up(&env, "order-2", false).await;
    given_up(&env, "product-3", true).await;
    let (_connection, mut inbox) = oms_inbox(&env).await;
    let relay = start_relay(&env).await;

    // Listed with their reason, its escape sequences shown, not obeyed.
    let (code, out, _) = omsc_outbox(&env, &["list"]).await;
    assert_eq!(code, 0);
    for subject in ["order-1", "order-2", "product-3"] {
        assert!(out.contains(subject), "{out}");
    }
    assert!(out.contains("\\u{1b}[31mNOT_FOUND"), "{out}");
    assert!(!out.contains('\x1b'), "{out}");

    // A bare action touches nothing; a typo of a state is refused.
    let (code, _, err) = omsc_outbox(&env, &["retry"]).await;
    assert_ne!(code, 0);
    assert!(err.contains("say which outbox rows"), "{err}");
    let (code, _, err) = omsc_outbox(&env, &["list", "--state", "faild"]).await;
    assert_eq!(code, 2, "{err}");
    assert_eq!(row_state(&env, "order-1").await, "failed");

    // A retry while the cause persists: the row is retried again, not failed at once, because
    // the retry window starts over at the retry (the row itself is three days old).
    env.db
        .execute(
            "UPDATE outbox_probe SET hold = true WHERE subject = 'order-1'",
            &[],
        )
        .await
        .unwrap();
    let (code, out, _) = omsc_outbox(&env, &["retry", "--subject", "order-1"]).await;
    assert_eq!(code, 0);
    assert!(out.starts_with("retried 1 outbox row(s)"), "{out}");
    wait_until("the retried row to be tried again", PATIENCE, || async {
        env.db
            .query_one("SELECT attempts FROM outbox WHERE subject = 'order-1'", &[])
            .await
            .unwrap()
            .get::<_, i32>(0)
            >= 1
    })
    .await;
    assert_eq!(row_state(&env, "order-1").await, "pending");
    // The cause fixed, it goes out.
    env.db
        .execute(
            "UPDATE outbox_probe SET hold = false WHERE subject = 'order-1'",
            &[],
        )
        .await
        .unwrap();
    let sent = next_message(&mut inbox).await;
    assert_eq!(sent["subject"], "order-1");
    wait_until("the row to be marked sent", PATIENCE, || async {
        row_state(&env, "order-1").await == "sent"
    })
    .await;
    let (_, shown, _) = omsc_outbox(&env, &["show", &row_id(&env, "order-1").await]).await;
    assert!(shown.contains("retried:         1 time(s)"), "{shown}");

    // A product saved again after its row failed: the newer pending row carries the latest
    // state, so the failed one is left alone, and says so.
    env.db
        .execute(
            "UPDATE outbox_probe SET hold = true WHERE subject = 'product-3'",
            &[],
        )
        .await
        .unwrap();
    save(&env, "product-3", "v2", true).await;
    let (_, out, _) = omsc_outbox(&env, &["retry", "--subject", "product-3"]).await;
    assert!(out.starts_with("retried 0 outbox row(s)"), "{out}");
    assert!(out.contains("carries a newer state of it"), "{out}");
    env.db
        .execute(
            "UPDATE outbox_probe SET hold = false WHERE subject = 'product-3'",
            &[],
        )
        .await
        .unwrap();
    let newer = next_message(&mut inbox).await;
    assert_eq!(
        (newer["subject"].as_str(), newer["payload"].as_str()),
        (Some("product-3"), Some("v2"))
    );

    // Discarded: never sent, and no longer counted as failed anywhere.
    let (code, out, _) = omsc_outbox(&env, &["discard", "--subject", "order-2"]).await;
    assert_eq!(code, 0);
    assert!(out.starts_with("discarded 1 outbox row(s)"), "{out}");
    assert_eq!(row_state(&env, "order-2").await, "discarded");
    let (_, again, _) =
        omsc_outbox(&env, &["retry", "--subject", "order-2", "--state", "all"]).await;
    assert!(again.starts_with("retried 0 outbox row(s)"), "{again}");
    let failed: i64 = env
        .db
        .query_one(
            "SELECT count(*) FROM outbox WHERE module = 'probe' AND sent_at IS NULL
                AND failed_at IS NOT NULL AND discarded_at IS NULL AND subject <> 'product-3'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(failed, 0);
    relay.stop().await;
    env.teardown().await;
}

async fn row_id(env: &TestEnv, subject: &str) -> String {
    env.db
        .query_one("SELECT min(id) FROM outbox WHERE subject = $1", &[&subject])
        .await
        .unwrap()
        .get::<_, i64>(0)
        .to_string()
}

/// Failed rows of several modules, topics and ages (no relay runs, so they stay as written):
/// `(module, topic, subject, age in hours)`.
const FILTERED: &[(&str, &str, &str, i32)] = &[
    ("sales", "order.create", "S-old", 72),
    ("sales", "order.cancel", "S-new", 0),
    ("postsales", "return.authorize", "P-old", 72),
    ("errors", "error.notify", "E-new", 0),
];

/// The subjects `omsc outbox list --json` prints with `args` (`--state all` unless they say).
async fn listed_subjects(env: &TestEnv, args: &[&str]) -> Vec<String> {
    let mut all = vec!["list", "--json"];
    if !args.contains(&"--state") {
        all.extend(["--state", "all"]);
    }
    all.extend_from_slice(args);
    let (code, out, err) = omsc_outbox(env, &all).await;
    assert_eq!(code, 0, "{args:?}: {err}");
    let mut subjects: Vec<String> = out
        .lines()
        .map(|l| {
            let row: serde_json::Value = serde_json::from_str(l).unwrap();
            row["subject"].as_str().unwrap().to_owned()
        })
        .collect();
    subjects.sort();
    subjects
}

#[tokio::test]
async fn outbox_rows_are_selected_by_age_topic_and_module_and_a_module_typo_is_refused() {
    let env = TestEnv::new().await;
    for (module, topic, subject, hours) in FILTERED {
        env.db
            .execute(
                "SELECT omsc_outbox_add($1, $2, $3)",
                &[module, topic, subject],
            )
            .await
            .unwrap();
        env.db
            .execute(
                "UPDATE outbox SET failed_at = now(), attempts = 3, last_error = 'refused',
                                   created_at = now() - make_interval(hours => $2)
                  WHERE subject = $1",
                &[subject, hours],
            )
            .await
            .unwrap();
    }

    // Each filter selects its rows and no other; together they narrow each other.
    let cases: &[(&[&str], &[&str])] = &[
        (&["--older-than", "2days"], &["P-old", "S-old"]),
        (&["--older-than", "4days"], &[]),
        (&["--topic", "order.create"], &["S-old"]),
        (&["--topic", "error.notify"], &["E-new"]),
        (&["--module", "sales"], &["S-new", "S-old"]),
        (&["--module", "postsales"], &["P-old"]),
        (&["--module", "errors"], &["E-new"]),
        (&["--module", "catalog"], &[]),
        (&["--module", "sales", "--older-than", "1h"], &["S-old"]),
        (
            &["--module", "sales", "--topic", "order.cancel"],
            &["S-new"],
        ),
    ];
    for (args, expected) in cases {
        assert_eq!(listed_subjects(&env, args).await, *expected, "{args:?}");
    }

    // An action takes the same filters: only the old post-sales row is retried.
    let (code, out, err) = omsc_outbox(&env, &["retry", "--module", "postsales"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("retried 1 outbox row(s)"), "{out}");
    assert_eq!(
        listed_subjects(&env, &["--state", "failed"]).await,
        ["E-new", "S-new", "S-old"]
    );
    assert_eq!(row_state(&env, "P-old").await, "pending");

    // A module that is not one is refused with the choices (a usage error, status 2), not
    // answered with an empty list.
    let (code, out, err) = omsc_outbox(&env, &["list", "--module", "slaes"]).await;
    assert_eq!(code, 2, "{out}{err}");
    assert!(out.is_empty(), "{out}");
    assert!(err.contains("invalid value 'slaes'"), "{err}");
    let choices = omsc::modules::outbox_modules().join(", ");
    assert!(
        err.contains(&format!("[possible values: {choices}]")),
        "{err}"
    );
    env.teardown().await;
}

#[tokio::test]
async fn a_bulk_retry_on_a_terminal_shows_its_progress_and_without_one_prints_only_the_result() {
    let env = TestEnv::new().await;
    env.db
        .batch_execute(
            "SELECT omsc_outbox_add('sales', 'order.create', 'bulk-' || g)
               FROM generate_series(1, 600) AS g;
             UPDATE outbox SET failed_at = now(), attempts = 3, last_error = 'refused';",
        )
        .await
        .unwrap();

    // On a terminal (`script` gives the command a pseudo-terminal): a bar with the count.
    let command = format!(
        "{} outbox retry --module sales --topic order.create",
        binary("omsc").display()
    );
    let output = tokio::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("DATABASE_URL", &env.database_url)
        .env("TERM", "xterm")
        .output()
        .await
        .unwrap();
    let shown = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{shown}");
    assert!(shown.contains("retrying"), "{shown:?}");
    assert!(shown.contains("/600 rows"), "{shown:?}");
    assert!(shown.contains("retried 600 outbox row(s)"), "{shown:?}");

    // Piped (a script, a log): the result alone, no bar drawn into it.
    env.db
        .batch_execute("UPDATE outbox SET failed_at = now(), attempts = 3")
        .await
        .unwrap();
    let (code, out, err) = omsc_outbox(&env, &["retry", "--module", "sales"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("retried 600 outbox row(s)"), "{out}");
    assert!(!err.contains("rows"), "{err:?}");
    env.teardown().await;
}
