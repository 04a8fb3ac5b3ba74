//! The status version rule as the database applies it, and the upgrade path for the updates
//! the earlier rule refused.

use chrono::{DateTime, Duration, Utc};
use protocol::sales::methods::UPDATED;
use sales::version::Version;
use serde_json::json;

use crate::conformance_support::{Shop, item, money, origin, simulator_echo, table};
use crate::helpers::{AMQP_URL, PATIENCE, binary, wait_until};

/// Versions as the columns the database reads: dates, ranks, statuses, reasons.
type Columns = (
    Vec<Option<DateTime<Utc>>>,
    Vec<i16>,
    Vec<String>,
    Vec<String>,
);

/// Every pair of a grid of versions: what `omsc_status_supersedes` (every compare-and-set's
/// rule) says is what `Version::supersedes` says, missing dates, ranks, statuses and
/// reasons included.
#[tokio::test]
async fn the_database_orders_versions_as_the_rule_does() {
    let shop = Shop::open().await;
    let dates = [
        None,
        Some(origin()),
        Some(origin() + Duration::microseconds(1)),
    ];
    let mut grid = Vec::new();
    for date in dates {
        for rank in [0i16, 1, 3] {
            for status in ["", "LOGISTICS", "ONHOLD", "Ünknown"] {
                for reason in [None, Some("PAYMENT"), Some("PENDINGREMORSETIME")] {
                    grid.push(Version::new(date, rank, status, reason));
                }
            }
        }
    }
    let (mut new, mut old) = (Vec::new(), Vec::new());
    for a in &grid {
        for b in &grid {
            new.push(a);
            old.push(b);
        }
    }
    let column = |vs: &[&Version]| -> Columns {
        (
            vs.iter().map(|v| v.date).collect(),
            vs.iter().map(|v| v.rank).collect(),
            vs.iter().map(|v| v.status.clone()).collect(),
            vs.iter().map(|v| v.reason.clone()).collect(),
        )
    };
    let (nd, nr, ns, nn) = column(&new);
    let (od, or, os, on) = column(&old);
    let row = shop
        .env
        .db
        .query_one(
            "SELECT array_agg(omsc_status_supersedes(nd, nr, ns, nullif(nn, ''),
                                                     od, orank, os, nullif(onr, ''))
                              ORDER BY n)
               FROM unnest($1::timestamptz[], $2::int2[], $3::text[], $4::text[],
                           $5::timestamptz[], $6::int2[], $7::text[], $8::text[])
                    WITH ORDINALITY AS p(nd, nr, ns, nn, od, orank, os, onr, n)",
            &[&nd, &nr, &ns, &nn, &od, &or, &os, &on],
        )
        .await
        .unwrap();
    let database: Vec<bool> = row.get(0);
    let rule: Vec<bool> = new.iter().zip(&old).map(|(a, b)| a.supersedes(b)).collect();
    assert_eq!(database.len(), grid.len() * grid.len());
    let disagreements: Vec<String> = database
        .iter()
        .zip(&rule)
        .enumerate()
        .filter(|(_, (d, r))| d != r)
        .map(|(i, (d, _))| format!("{:?} over {:?}: database says {d}", new[i], old[i]))
        .take(5)
        .collect();
    assert!(disagreements.is_empty(), "{disagreements:#?}");
    shop.close().await;
}

/// The reason the earlier rule gave, word for word.
const EARLIER_REASON: &str = "order: status \"COMPLETE\" has no \"status_date\"; without it an update cannot be ordered against others";

#[tokio::test]
async fn updates_the_earlier_rule_dead_lettered_apply_when_replayed() {
    let mut shop = Shop::open().await;
    let exported = shop
        .place("REFUSED-BEFORE", vec![item(1, "MUG", 1, money(1200))])
        .await;
    // What the keeper stored when the earlier version dead-lettered the simulator's update.
    let body = json!({"jsonrpc": "2.0", "id": "sim-5", "method": UPDATED,
                      "params": simulator_echo(&exported, "COMPLETE", "FULLYSHIPPED")})
    .to_string()
    .into_bytes();
    shop.env
        .db
        .execute(
            "INSERT INTO dead_letters (queue, module, endpoint, reason, routing_key, message_id,
                                       attempts, headers, content_type, body, dead_at, fingerprint)
             VALUES ('connector.sales', 'sales', $1, $2, $1, 'sim-5', 0,
                     jsonb_build_object('x-omsc-reason', $2::text), 'application/json', $3,
                     now(), 'before-the-upgrade')",
            &[&UPDATED, &EARLIER_REASON, &body],
        )
        .await
        .unwrap();

    let output = tokio::process::Command::new(binary("omsc"))
        .args([
            "dead-letters",
            "replay",
            "--reason",
            "has no \"status_date\"",
        ])
        .env("DATABASE_URL", &shop.env.database_url)
        .env("AMQP_URL", AMQP_URL)
        .env("OMSC_PREFIX", &shop.env.prefix)
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.starts_with("replayed 1 dead letter(s)"), "{stdout}");
    let worker = &shop.worker;
    wait_until("the replayed update to apply", PATIENCE, || async {
        crate::sales_support::outcomes(worker, "applied").await == 1.0
    })
    .await;
    assert_eq!(
        shop.orders().await,
        table(
            "
            | order          | state    | OMS status | reason       | status date |
            | REFUSED-BEFORE | complete | COMPLETE   | FULLYSHIPPED | ∅           |
            "
        )
    );
    shop.close().await;
}
