//! Secrets never appear in logs, metrics, health answers, errors or the report: a worker runs
//! with passwords in both of its URLs and a registration secret, at the most verbose log
//! level, through failures that make it log errors, and everything it and the command line
//! say, and what it stored about its registration, is searched for them. The passwords carry
//! the characters that end a part of a URL (`/`, `@`, `:`, `%`, a space), so a redaction that
//! cuts the URL in the wrong place shows.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;

use crate::helpers::{PATIENCE, TestEnv, binary, http_get, wait_until};
use crate::proxy::{Mode, Proxy};

/// A broker user with a password of its own, removed when dropped.
struct BrokerUser {
    name: String,
    password: String,
}

impl BrokerUser {
    fn create() -> Self {
        let tag = format!("{:08x}", rand::random::<u32>());
        let user = Self {
            name: format!("omsc_it_{tag}"),
            password: awkward_password("Mq", &tag),
        };
        rabbitmqctl(&["add_user", &user.name, &user.password]);
        rabbitmqctl(&["set_permissions", "-p", "/", &user.name, ".*", ".*", ".*"]);
        user
    }
}

impl Drop for BrokerUser {
    fn drop(&mut self) {
        let _ = std::process::Command::new("rabbitmqctl")
            .args(["-q", "delete_user", &self.name])
            .output();
    }
}

fn rabbitmqctl(args: &[&str]) {
    let output = std::process::Command::new("rabbitmqctl")
        .arg("-q")
        .args(args)
        .output()
        .expect("rabbitmqctl manages the local broker's users for this test");
    assert!(
        output.status.success(),
        "rabbitmqctl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `MqA1234abcd/MqB1234abcd@MqC…:MqD…%MqE… MqF…`: every piece long and unique enough to be
/// searched for on its own.
fn awkward_password(kind: &str, tag: &str) -> String {
    format!("{kind}A{tag}/{kind}B{tag}@{kind}C{tag}:{kind}D{tag}%{kind}E{tag} {kind}F{tag}")
}

/// `text` with each of `reserved` percent-encoded.
fn encode(text: &str, reserved: &[char]) -> String {
    text.chars()
        .map(|c| {
            if reserved.contains(&c) {
                format!("%{:02X}", c as u32)
            } else {
                c.to_string()
            }
        })
        .collect()
}

fn free_port() -> u16 {
    test_support::http::free_address().unwrap().port()
}

#[tokio::test]
async fn passwords_never_appear_in_logs_metrics_health_or_the_report() {
    let env = TestEnv::new().await;
    let user = BrokerUser::create();
    let pg_password = awkward_password("Pg", &format!("{:08x}", rand::random::<u32>()));
    // As people write it: PostgreSQL reads a raw `/`, `:` or space in a password; `@` and `%`
    // must be encoded.
    let pg_in_url = encode(&pg_password, &['%', '@']);
    let registration_secret = format!("Reg-Secret-{:08x}", rand::random::<u32>());
    let db_proxy = Proxy::start("127.0.0.1:5432".parse().unwrap()).await;
    let mq_proxy = Proxy::start("127.0.0.1:5672".parse().unwrap()).await;
    // PostgreSQL trusts local connections, so any password is accepted and carried along.
    let database_url = env.database_url.replace(
        "postgres@127.0.0.1:5432",
        &format!("postgres:{pg_in_url}@{}", db_proxy.addr),
    );
    let amqp_url = format!(
        "amqp://{}:{}@{}/%2f",
        user.name,
        encode(&user.password, &['%', '/', '@', ':', ' ']),
        mq_proxy.addr
    );
    let http = format!("127.0.0.1:{}", free_port());
    let mut worker = tokio::process::Command::new(binary("omsc-inventory"))
        .env("DATABASE_URL", &database_url)
        .env("AMQP_URL", &amqp_url)
        .env("OMSC_PREFIX", &env.prefix)
        .env("OMSC_HTTP_ADDR", &http)
        .env("OMSC_REGISTRATION_SECRET", &registration_secret)
        .env("RUST_LOG", "trace")
        .env("RUST_BACKTRACE", "1")
        .stderr(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Read what the worker writes as it writes it (a full pipe would stall it).
    let mut stderr = worker.stderr.take().unwrap();
    let mut stdout = worker.stdout.take().unwrap();
    let stderr_reader = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    });
    let stdout_reader = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text).await;
        text
    });
    let address: std::net::SocketAddr = http.parse().unwrap();
    wait_until("the worker to be ready", PATIENCE, || async {
        http_get(address, "/readyz").await.0 == 200
    })
    .await;

    let publisher = env.publisher().await;
    publisher
        .publish_raw(
            "magento.inventory.aggregate_stock_management.updated",
            b"not json, to be dead-lettered",
        )
        .await
        .unwrap();
    env.expect_dead_letters(1).await;

    let mut said = Vec::new();
    // Outages make the worker log its errors.
    for proxy in [&db_proxy, &mq_proxy] {
        proxy.set(Mode::Cut);
        wait_until("the worker to notice", PATIENCE, || async {
            http_get(address, "/readyz").await.0 == 503
        })
        .await;
        said.push(http_get(address, "/readyz").await.1);
        said.push(http_get(address, "/metrics").await.1);
        proxy.set(Mode::Open);
        wait_until("the worker to recover", PATIENCE, || async {
            http_get(address, "/readyz").await.0 == 200
        })
        .await;
    }
    said.push(http_get(address, "/metrics").await.1);
    said.push(http_get(address, "/healthz").await.1);

    // Commands that fail on a bad URL say so without the secret.
    let refused = tokio::process::Command::new(binary("omsc"))
        .args(["migrate"])
        .env(
            "DATABASE_URL",
            format!("postgres://postgres:{pg_in_url}@127.0.0.1:1/nowhere"),
        )
        .output()
        .await
        .unwrap();
    assert!(!refused.status.success());
    said.push(String::from_utf8_lossy(&refused.stderr).into_owned());
    let report = tokio::process::Command::new(binary("omsc"))
        .args(["report", "--since", "1h", "--json"])
        .env("DATABASE_URL", &database_url)
        .output()
        .await
        .unwrap();
    said.push(String::from_utf8_lossy(&report.stdout).into_owned());
    said.push(String::from_utf8_lossy(&report.stderr).into_owned());
    let status = tokio::process::Command::new(binary("omsc"))
        .args(["status"])
        .env("DATABASE_URL", &database_url)
        .env("OMSC_REGISTRATION_SECRET", &registration_secret)
        .output()
        .await
        .unwrap();
    said.push(String::from_utf8_lossy(&status.stdout).into_owned());
    said.push(String::from_utf8_lossy(&status.stderr).into_owned());
    let stored: Vec<String> = env
        .db
        .query(
            "SELECT row_to_json(r)::text FROM connector_registration r",
            &[],
        )
        .await
        .map(|rows| rows.iter().map(|r| r.get(0)).collect())
        .unwrap_or_default();
    said.extend(stored);

    crate::helpers::sigterm(&mut worker, Duration::from_secs(20)).await;
    let logs = stderr_reader.await.unwrap() + &stdout_reader.await.unwrap();
    assert!(
        logs.contains("database unavailable"),
        "the outage was logged"
    );
    said.push(logs);

    // The registration went unroutable (no OMS is bound here), and a library may print a
    // returned message's body as a list of bytes: look for that spelling too.
    assert!(
        logs_mention_registration(&said),
        "the registration was attempted, so its body had a chance to be logged"
    );
    for (i, text) in said.iter().enumerate() {
        for (what, secret) in [
            ("the database password", &pg_password),
            ("the broker password", &user.password),
            ("the registration secret", &registration_secret),
        ] {
            let as_bytes = secret
                .bytes()
                .map(|b| b.to_string())
                .collect::<Vec<_>>()
                .join(", ");
            assert!(
                !text.contains(secret.as_str()) && !text.contains(&as_bytes),
                "output #{i} reveals {what} ({}):\n{text}",
                if text.contains(secret.as_str()) {
                    "as text"
                } else {
                    "as a list of bytes"
                }
            );
            // Any piece of it, however the URL was cut.
            for piece in secret.split(['/', '@', ':', '%', ' ']) {
                assert!(
                    !text.contains(piece),
                    "output #{i} reveals {piece:?}, a piece of {what}:\n{text}"
                );
            }
        }
    }
    env.teardown().await;
}

fn logs_mention_registration(said: &[String]) -> bool {
    said.iter().any(|text| text.contains("register"))
}
