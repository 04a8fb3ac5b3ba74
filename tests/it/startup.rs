//! A worker whose configuration can never work says so once and exits non-zero; one whose
//! servers are merely away waits for them; `--retry-forever` keeps even the first waiting.
//! Each case runs the real `omsc run --all`.

use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncBufReadExt;

use crate::helpers::{AMQP_URL, PATIENCE, TestEnv, binary, wait_until};

/// Long enough for a connection refused by a local server, far shorter than any backoff
/// that retries forever would take to give up (it never does).
const DEADLINE: Duration = Duration::from_secs(30);

/// `omsc run --all` with this environment's settings and `env` over them; its standard
/// error is collected line by line as it is written.
struct Run {
    child: tokio::process::Child,
    said: Arc<Mutex<Vec<String>>>,
    reader: Option<tokio::task::JoinHandle<()>>,
}

impl Run {
    fn start(test: &TestEnv, env: &[(&str, &str)]) -> Self {
        let mut command = tokio::process::Command::new(binary("omsc"));
        command
            .args(["run", "--all"])
            .env("DATABASE_URL", &test.database_url)
            .env("AMQP_URL", AMQP_URL)
            .env("OMSC_PREFIX", &test.prefix)
            .env("OMSC_HTTP_ADDR", "127.0.0.1:0")
            .env("OMSC_REGISTER", "false")
            // The log filter a deployment has.
            .env_remove("RUST_LOG")
            .env_remove("OMSC_RETRY_FOREVER")
            .env_remove("RUST_BACKTRACE")
            .env_remove("RUST_LIB_BACKTRACE")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let said = Arc::new(Mutex::new(Vec::new()));
        let lines = said.clone();
        let reader = tokio::spawn(async move {
            let mut reader = tokio::io::BufReader::new(stderr).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                lines.lock().unwrap().push(line);
            }
        });
        Self {
            child,
            said,
            reader: Some(reader),
        }
    }

    fn said(&self) -> Vec<String> {
        self.said.lock().unwrap().clone()
    }

    async fn exit(&mut self) -> ExitStatus {
        tokio::time::timeout(DEADLINE, self.child.wait())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "still running after {DEADLINE:?}; it said:\n{}",
                    self.said().join("\n")
                )
            })
            .unwrap()
    }

    /// Waits for the process to exit; returns everything it said, once the pipe is drained.
    async fn refused(&mut self) -> String {
        let status = self.exit().await;
        // The reader gets the last lines after the exit, until the pipe closes.
        if let Some(reader) = self.reader.take() {
            tokio::time::timeout(DEADLINE, reader)
                .await
                .expect("standard error closes when the process is gone")
                .unwrap();
        }
        let said = self.said().join("\n");
        assert!(!status.success(), "{status}: {said}");
        said
    }
}

/// How many lines name `needle`.
fn lines_naming(said: &str, needle: &str) -> usize {
    said.lines().filter(|l| l.contains(needle)).count()
}

#[tokio::test]
async fn an_unknown_database_role_stops_the_worker_with_one_clear_error() {
    let test = TestEnv::new().await;
    let url = test.database_url.replace("postgres@", "no_such_role_omsc@");
    let mut run = Run::start(&test, &[("DATABASE_URL", &url)]);
    let said = run.refused().await;
    assert_eq!(
        lines_naming(&said, "no_such_role_omsc\" does not exist"),
        1,
        "{said}"
    );
    assert!(said.contains("will not change"), "{said}");
    assert!(said.contains("--retry-forever"), "{said}");
    assert!(said.lines().count() < 10, "not a flood:\n{said}");
    test.teardown().await;
}

#[tokio::test]
async fn a_wrong_broker_password_stops_the_worker_with_one_clear_error() {
    let test = TestEnv::new().await;
    let url = AMQP_URL.replace("guest:guest", "guest:wrong-password");
    let mut run = Run::start(&test, &[("AMQP_URL", &url)]);
    let said = run.refused().await;
    // lapin logs the closed connection itself (two lines); the connector says it once.
    assert_eq!(lines_naming(&said, "the broker refused"), 1, "{said}");
    assert!(said.contains("ACCESS_REFUSED"), "{said}");
    assert!(!said.contains("wrong-password"), "{said}");
    assert!(said.lines().count() < 10, "not a flood:\n{said}");
    test.teardown().await;
}

#[tokio::test]
async fn a_malformed_broker_url_is_refused_before_anything_starts() {
    let test = TestEnv::new().await;
    for (url, why) in [
        ("http://guest:guest@127.0.0.1:15672/", "not http"),
        (
            "amqp:/guest:guest@127.0.0.1:5672",
            "amqp: must be followed by //",
        ),
    ] {
        let mut run = Run::start(&test, &[("AMQP_URL", url)]);
        let said = run.refused().await;
        assert_eq!(lines_naming(&said, why), 1, "{url}: {said}");
        assert!(said.contains("***@127.0.0.1"), "{said}");
        assert!(!said.contains("guest:guest"), "{said}");
    }
    test.teardown().await;
}

#[tokio::test]
async fn retry_forever_keeps_a_refused_worker_waiting() {
    let test = TestEnv::new().await;
    let url = AMQP_URL.replace("guest:guest", "guest:wrong-password");
    let mut run = Run::start(&test, &[("AMQP_URL", &url), ("OMSC_RETRY_FOREVER", "true")]);
    // Two attempts, each said once, and the process is still there.
    wait_until("a second refused attempt", PATIENCE, || async {
        lines_naming(&run.said().join("\n"), "retrying as --retry-forever says") >= 2
    })
    .await;
    assert!(run.child.try_wait().unwrap().is_none(), "it kept running");
    run.child.kill().await.unwrap();
    test.teardown().await;
}
