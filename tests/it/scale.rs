//! Scale-out: three replicas of the inventory worker as separate processes on one queue,
//! under a shuffled, partly duplicated stock storm; then a rolling restart of all three
//! while the storm keeps coming. Both end at the model's state with nothing dead-lettered.
//! (`make scale-out` runs the same scenarios on release builds for the figures of
//! docs/scale-out.md.)

use chrono::{TimeZone, Utc};
use omsc::scale::{self, Arrival, Load, Target};
use omsc::simulate::stock::StormSpec;

use crate::helpers::{AMQP_URL, TestEnv, binary};

const REPLICAS: usize = 3;

fn target(env: &TestEnv, worker_env: &[(&str, &str)]) -> Target {
    Target {
        database_url: env.database_url.clone(),
        amqp_url: AMQP_URL.to_owned(),
        prefix: env.prefix.clone(),
        binary: binary("omsc-inventory"),
        worker_env: worker_env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    }
}

/// FULL, NONZERO and DELTA exports over four aggregates, shuffled, a fifth delivered twice.
fn mixed_load(seed: u64, skus: usize, exports: usize, mix: (u32, u32, u32)) -> Load {
    Load {
        storm: StormSpec {
            seed,
            aggregates: 4,
            skus,
            exports,
            mix,
            chunk_size: 250,
            delta_skus: 10,
            start: Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap(),
            ..StormSpec::default()
        },
        duplicates: 0.2,
    }
}

#[tokio::test]
async fn three_replicas_share_a_shuffled_duplicated_storm_and_reach_the_model() {
    let env = TestEnv::new().await;
    let run = scale::drain(
        &target(&env, &[]),
        &mixed_load(21, 2_000, 300, (1, 1, 8)),
        REPLICAS,
    )
    .await
    .unwrap();
    assert_eq!(run.per_replica.len(), REPLICAS);
    for replica in &run.per_replica {
        assert!(
            replica.messages > 0.0,
            "every replica takes a share of the queue: {:?}",
            run.per_replica
        );
    }
    let handled: f64 = run.per_replica.iter().map(|r| r.messages).sum();
    assert!(
        handled >= run.messages as f64,
        "{handled} < {}",
        run.messages
    );
    eprintln!(
        "{REPLICAS} replicas: {} messages in {:.2}s ({:.0}/s); {:?}",
        run.messages,
        run.secs,
        run.messages_per_sec(),
        run.per_replica
    );
    env.teardown().await;
}

#[tokio::test]
async fn a_rolling_restart_under_load_loses_nothing() {
    let env = TestEnv::new().await;
    // A prefetch of 50 keeps most of each wave in the queue rather than in the replicas'
    // hands, so every SIGTERM comes with messages both in hand and waiting.
    let target = target(&env, &[("OMSC_PREFETCH", "50")]);
    let run = scale::rolling_restart(&target, &mixed_load(22, 1_000, 6_000, (1, 1, 18)), REPLICAS)
        .await
        .unwrap();
    assert_eq!(run.stopped.len(), REPLICAS, "every replica was replaced");
    for stopped in &run.stopped {
        assert!(
            stopped.figures.messages > 0.0,
            "{} was working when it got SIGTERM",
            stopped.figures.name
        );
        assert!(
            stopped.status.success(),
            "{} exited with {} after SIGTERM",
            stopped.figures.name,
            stopped.status
        );
        // OMSC_DRAIN_TIMEOUT_SECS (10) plus the runtime's 2 s margin: inside the 30 s grace
        // period of the Kubernetes Deployment.
        assert!(
            stopped.drain.as_secs_f64() < 12.5,
            "{} took {:?} to drain",
            stopped.figures.name,
            stopped.drain
        );
    }
    assert!(
        run.depth_at_sigterm.iter().all(|&depth| depth > 0),
        "each SIGTERM must come with messages waiting, or the test proves nothing: {:?}",
        run.depth_at_sigterm
    );
    eprintln!(
        "rolling restart of {REPLICAS} replicas under {} messages: {:.2}s, depths at SIGTERM {:?}, drains {:?}",
        run.messages,
        run.secs,
        run.depth_at_sigterm,
        run.stopped.iter().map(|s| s.drain).collect::<Vec<_>>()
    );
    env.teardown().await;
}
