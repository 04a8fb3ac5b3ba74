//! `omsc probe`: is the connection to the service bus sound, both ways? What an operator
//! checks after pointing the connector at a bus, as one command instead of a recipe.
//!
//! 1. The bus answers a query that changes nothing (`source_repository.search`, one source):
//!    its URL, TLS and the OAuth credentials work from here.
//! 2. The gateway answers the bus's probe (`OPTIONS` on the callback URL with
//!    `X-Magento-Service-Bus: *`): the URL the bus delivers to reaches the gateway.
//! 3. A signed delivery of a method no module consumes is answered `-32601`: the signature
//!    (the same secret here and in the gateway), the gateway and the broker work. Its dead
//!    letter is then discarded, so the probe leaves nothing for a person.

use std::time::Duration;

use bus_client::{Answer, BusClient, BusConfig};
use clap::Args;
use runtime::config::Secret;

/// The method of the signed test delivery: no module consumes it.
pub const PROBE_METHOD: &str = "magento.connector.probe";

/// How long the probe waits for its delivery's dead letter to be stored.
const DEAD_LETTER_PATIENCE: Duration = Duration::from_secs(15);

#[derive(Args)]
pub struct ProbeArgs {
    #[command(flatten)]
    db: runtime::DatabaseArgs,
    #[command(flatten)]
    bus: BusConfig,
    /// The URL the bus delivers to (the gateway, through its ingress).
    #[arg(long, env = "OMSC_CALLBACK_URL", default_value = "")]
    callback_url: String,
    /// The secret the gateway checks signatures with; unsigned when empty.
    #[arg(
        long,
        env = "OMSC_REGISTRATION_SECRET",
        default_value = "",
        hide_env_values = true,
        hide_default_value = true
    )]
    registration_secret: Secret,
}

/// One check's outcome.
struct Check {
    what: &'static str,
    passed: bool,
    said: String,
}

/// Runs the checks that apply and prints one line for each; `Ok(false)` when one failed.
pub async fn run(args: ProbeArgs) -> anyhow::Result<bool> {
    anyhow::ensure!(
        args.bus.enabled() || !args.callback_url.trim().is_empty(),
        "nothing to probe: set OMSC_OMS_URL (the bus) or OMSC_CALLBACK_URL (the gateway), or both"
    );
    let mut checks = Vec::new();
    if args.bus.enabled() {
        checks.push(bus_answers(&args.bus).await?);
    }
    if !args.callback_url.trim().is_empty() {
        let gateway = BusClient::new(&BusConfig {
            oms_url: args.callback_url.clone(),
            oauth_client_id: String::new(),
            oauth_client_secret: Secret::new(""),
            oauth_url: String::new(),
            ..args.bus.clone()
        })?;
        checks.push(gateway_answers_the_probe(&gateway).await);
        let delivery = signed_delivery(&gateway, args.registration_secret.expose()).await;
        let delivered = delivery.passed;
        checks.push(delivery);
        if delivered {
            checks.push(discard_the_dead_letter(&args.db.database_url).await?);
        }
    }
    for check in &checks {
        let mark = if check.passed { "ok  " } else { "FAIL" };
        println!("{mark} {}: {}", check.what, check.said);
    }
    Ok(checks.iter().all(|c| c.passed))
}

async fn bus_answers(config: &BusConfig) -> anyhow::Result<Check> {
    let client = BusClient::new(config)?;
    let query = serde_json::json!({"query": {"offset": 0, "size": 1}});
    let answer = client
        .request(
            "/remote/oms",
            protocol::inventory::methods::SOURCE_SEARCH,
            query,
        )
        .await;
    let (passed, said) = match answer {
        Ok(Answer::Taken(result)) => (
            true,
            format!(
                "{} answered a source query ({} sources known)",
                client.url("/remote/oms"),
                result["total"]
                    .as_u64()
                    .map_or_else(|| "an unstated number of".to_owned(), |n| n.to_string())
            ),
        ),
        Ok(Answer::Refused(reason)) | Err(bus_client::Unavailable(reason)) => (false, reason),
    };
    Ok(Check {
        what: "the bus",
        passed,
        said,
    })
}

async fn gateway_answers_the_probe(gateway: &BusClient) -> Check {
    let (passed, said) = match gateway.options("").await {
        Ok((status, Some(header))) if status.is_success() && header == "*" => (
            true,
            format!(
                "{} answered OPTIONS with X-Magento-Service-Bus: *",
                gateway.url("")
            ),
        ),
        Ok((status, header)) => (
            false,
            format!(
                "{} answered OPTIONS with {status} and X-Magento-Service-Bus {header:?}: is this URL the gateway?",
                gateway.url("")
            ),
        ),
        Err(e) => (false, e.0),
    };
    Check {
        what: "the gateway's probe",
        passed,
        said,
    }
}

async fn signed_delivery(gateway: &BusClient, secret: &str) -> Check {
    let id = format!("probe-{:016x}", rand::random::<u64>());
    let body =
        serde_json::json!({"jsonrpc": "2.0", "id": id, "method": PROBE_METHOD, "params": {}})
            .to_string();
    let mut headers = Vec::new();
    if !secret.is_empty() {
        headers.push((
            gateway::signature::HEADER,
            gateway::signature::sign(secret.as_bytes(), body.as_bytes()),
        ));
    }
    let answer = gateway.call_with_headers("", body.into(), &headers).await;
    let (passed, said) = match answer {
        Ok(Answer::Refused(reason)) if reason.contains("-32601") => (
            true,
            format!(
                "a {} delivery of {PROBE_METHOD} reached the broker and was dead-lettered, as no module consumes it",
                if secret.is_empty() {
                    "unsigned"
                } else {
                    "signed"
                }
            ),
        ),
        Ok(Answer::Refused(reason)) => (false, reason),
        Ok(Answer::Taken(_)) => (
            false,
            format!("{PROBE_METHOD} was taken: something consumes it, so the probe cannot tell"),
        ),
        Err(bus_client::Unavailable(reason)) if reason.contains("401") => (
            false,
            format!(
                "the gateway refused the signature ({reason}): OMSC_REGISTRATION_SECRET here differs from the gateway's"
            ),
        ),
        Err(bus_client::Unavailable(reason)) => (false, reason),
    };
    Check {
        what: "a test delivery",
        passed,
        said,
    }
}

/// The test delivery's dead letter, once the keeper stored it, is discarded.
async fn discard_the_dead_letter(database_url: &str) -> anyhow::Result<Check> {
    let client = runtime::db::connect(database_url, "omsc-cli").await?;
    let selection = runtime::dead_letters::Selection {
        ids: Vec::new(),
        queue: None,
        endpoint: Some(PROBE_METHOD.to_owned()),
        reason: None,
        status: Some("open".into()),
        limit: 1_000,
    };
    let deadline = tokio::time::Instant::now() + DEAD_LETTER_PATIENCE;
    loop {
        let discarded = runtime::dead_letters::discard(&client, &selection).await?;
        if discarded > 0 {
            return Ok(Check {
                what: "its dead letter",
                passed: true,
                said: format!("stored and discarded ({discarded})"),
            });
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(Check {
                what: "its dead letter",
                passed: false,
                said: format!(
                    "not stored within {}s: is the gateway's dead-letter keeper running (its /readyz)?",
                    DEAD_LETTER_PATIENCE.as_secs()
                ),
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
