//! The command line's conventions, run as an operator runs it: exit status 2 for an error,
//! 1 for a command's "no", 0 for "yes"; completions and the man page from the same
//! definitions as `--help`.

use std::process::Output;

use crate::helpers::{TestEnv, binary};

fn omsc(env: &[(&str, &str)], args: &[&str]) -> Output {
    std::process::Command::new(binary("omsc"))
        .args(args)
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

#[tokio::test]
async fn an_error_exits_2_and_a_no_exits_1() {
    let env = TestEnv::new().await;
    let db = [("DATABASE_URL", env.database_url.as_str())];
    let map = omsc(&db, &["aggregates", "map", "EU", "shop-eu"]);
    assert!(map.status.success(), "{map:?}");
    let full = serde_json::json!({"jsonrpc": "2.0", "id": "full-1",
        "method": protocol::inventory::methods::AGGREGATE_STOCK_UPDATED,
        "params": {"snapshot": {"aggregate_id": "EU", "mode": "FULL",
            "created_on": "2026-01-01 00:00:00", "stock": [{"sku": "sku-1", "quantity": 3}]}}});
    env.publisher()
        .await
        .publish_all(
            [(
                protocol::inventory::methods::AGGREGATE_STOCK_UPDATED,
                full.to_string().into_bytes(),
                "full-1".to_owned(),
            )],
            1,
        )
        .await
        .unwrap();

    // "No" is not an error: the answer is 1.
    let worker = env.start_worker().await;
    crate::helpers::wait_until("the stock", crate::helpers::PATIENCE, || async {
        env.sku("EU", "sku-1").await == Some((3, false))
    })
    .await;
    worker.stop().await;
    let yes = omsc(
        &db,
        &[
            "aggregates",
            "sellable",
            "shop-eu",
            "sku-1",
            "--quantity",
            "3",
        ],
    );
    assert_eq!(yes.status.code(), Some(0), "{yes:?}");
    let no = omsc(
        &db,
        &[
            "aggregates",
            "sellable",
            "shop-eu",
            "sku-1",
            "--quantity",
            "4",
        ],
    );
    assert_eq!(no.status.code(), Some(1), "{no:?}");

    // An error (nothing listens on port 1) is 2, with the reason on stderr.
    let unreachable = [("DATABASE_URL", "postgres://postgres@127.0.0.1:1/omsc")];
    let failed = omsc(&unreachable, &["status"]);
    assert_eq!(failed.status.code(), Some(2), "{failed:?}");
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(stderr.starts_with("Error: "), "{stderr}");
    // As is a usage error (clap's own).
    let usage = omsc(&[], &["aggregates", "sellable"]);
    assert_eq!(usage.status.code(), Some(2), "{usage:?}");
    env.teardown().await;
}

#[test]
fn completions_and_the_man_page_come_from_the_command_definitions() {
    let bash = omsc(&[], &["completions", "bash"]);
    assert!(bash.status.success(), "{bash:?}");
    let script = String::from_utf8_lossy(&bash.stdout);
    assert!(script.contains("complete -F _omsc"), "{script}");
    assert!(
        script.contains("dead-letters"),
        "every command is completed"
    );
    let zsh = omsc(&[], &["completions", "zsh"]);
    assert!(String::from_utf8_lossy(&zsh.stdout).starts_with("#compdef omsc"));
    let refused = omsc(&[], &["completions", "cmd.exe"]);
    assert_eq!(
        refused.status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );

    let man = omsc(&[], &["man"]);
    assert!(man.status.success(), "{man:?}");
    let page = String::from_utf8_lossy(&man.stdout);
    assert!(
        page.starts_with(".ie") || page.contains(".TH omsc"),
        "{page}"
    );
    assert!(
        page.contains("dead\\-letters"),
        "the subcommands are listed: {page}"
    );
}
