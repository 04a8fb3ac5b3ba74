//! Samples the depth of each consumed queue and of its dead-letter queue, for
//! `omsc_queue_messages` and the report: a backlog that grows, or dead letters that pile up,
//! show without access to the broker's own console.

use std::time::Duration;

use lapin::options::QueueDeclareOptions;
use lapin::types::{FieldTable, ShortString};
use tokio_util::sync::CancellationToken;

use super::gauges;
use crate::Shared;
use crate::amqp;
use crate::topology::QueueSpec;

/// How often the depths are read (a passive declare per queue: cheap for the broker).
pub const SAMPLE_EVERY: Duration = Duration::from_secs(15);

/// Samples until `shutdown`, on a connection of its own; a broker outage only skips samples.
pub async fn run(
    shared: Shared,
    queues: Vec<(&'static str, QueueSpec)>,
    shutdown: CancellationToken,
) {
    let mut connection: Option<lapin::Connection> = None;
    // The first sample once the consumers have had a moment to declare their queues.
    let first = tokio::time::Instant::now() + Duration::from_secs(1);
    let mut tick = tokio::time::interval_at(first, SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        if let Err(e) = sample(&shared, &queues, &mut connection).await {
            tracing::debug!(error = %format!("{e:#}"), "cannot sample queue depths");
            connection = None;
        }
    }
    if let Some(connection) = connection {
        let _ = amqp::within("closing", connection.close(200, "sampler stops".into())).await;
    }
}

async fn sample(
    shared: &Shared,
    queues: &[(&'static str, QueueSpec)],
    connection: &mut Option<lapin::Connection>,
) -> anyhow::Result<()> {
    if !connection.as_ref().is_some_and(|c| c.status().connected()) {
        *connection =
            Some(amqp::connect(&shared.config.broker.amqp_url, "omsc-queue-depths").await?);
    }
    let connection = connection.as_ref().expect("connected above");
    let topology = &shared.topology;
    for &(module, spec) in queues {
        let sampled = [
            (
                topology.queue(&spec),
                spec.name.to_owned(),
                gauges::QUEUE_READY,
            ),
            (
                topology.dead_queue(&spec),
                format!("{}.dead", spec.name),
                gauges::QUEUE_DEAD,
            ),
        ];
        for (queue, label, gauge) in sampled {
            // A passive declare of a queue not there yet closes its channel: one per queue.
            let channel = amqp::within("opening a channel", connection.create_channel()).await?;
            let declare = channel.queue_declare(
                ShortString::from(queue.as_str()),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            );
            if let Ok(declared) = amqp::within("reading a queue depth", declare).await {
                let depth = i64::from(declared.message_count());
                shared
                    .metrics
                    .queue_messages
                    .with_label_values(&[module, &label])
                    .set(depth);
                // Dead letters wait for a person in the dead-letter store; the `.dead` queue
                // only holds the ones on their way there.
                let waiting = if gauge == gauges::QUEUE_DEAD {
                    depth + open_dead_letters(shared, spec.name).await
                } else {
                    depth
                };
                shared.stats.gauge(module, gauge, waiting);
                let _ = amqp::within("closing", channel.close(200, "sampled".into())).await;
            }
        }
    }
    Ok(())
}

/// Dead letters of a queue stored and neither replayed nor discarded.
async fn open_dead_letters(shared: &Shared, queue: &str) -> i64 {
    let Ok(client) = shared.pool.get().await else {
        return 0;
    };
    client
        .query_one(
            "SELECT count(*) FROM dead_letters WHERE queue = $1 AND status = 'open'",
            &[&queue],
        )
        .await
        .map_or(0, |row| row.get(0))
}
