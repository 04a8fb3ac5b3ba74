//! `omsc-bench --scale-out`: the scale-out runs of [`test_support::scale`] on the shipped binaries,
//! with their figures: throughput of one replica and of several on the same queue, what each
//! replica used (messages, CPU, memory), and a rolling restart under load. Writes
//! docs/scale-out.md (`make scale-out`).

use std::fmt::Write as _;

use chrono::{TimeZone, Utc};
use protocol::inventory::StockScope;

use super::support::Scratch;
use simulate::stock::StormSpec;
use test_support::fleet::ReplicaFigures;
use test_support::scale::{self, Arrival, Drain, Load, Rolling, Target};

/// A load and what the runs measured under it.
#[derive(Debug, Clone)]
pub struct LoadRuns {
    pub title: &'static str,
    pub what: String,
    /// Each run with the share of the whole machine's CPU that was busy during it.
    pub runs: Vec<(Drain, f64)>,
}

#[derive(Debug, Clone)]
pub struct ScaleReport {
    pub replicas: usize,
    pub cores: usize,
    pub loads: Vec<LoadRuns>,
    pub rolling: Rolling,
    pub quick: bool,
}

/// Small messages, the bulk of a busy day: one-to-five-SKU DELTAs, a few exports between.
fn deltas(quick: bool) -> Load {
    Load {
        storm: StormSpec {
            seed: 31,
            aggregates: 8,
            skus: 5_000,
            exports: if quick { 3_000 } else { 40_000 },
            mix: (1, 0, 199),
            chunk_size: 10_000,
            delta_skus: 5,
            start: Utc.with_ymd_and_hms(2026, 5, 1, 0, 0, 0).unwrap(),
            scope: StockScope::Aggregate,
            ..StormSpec::default()
        },
        duplicates: 0.2,
    }
}

/// A catalog-wide stock sync: FULL and NONZERO exports in 10,000-SKU messages (the OMS's
/// largest) among DELTAs.
fn exports(quick: bool) -> Load {
    Load {
        storm: StormSpec {
            seed: 32,
            aggregates: 8,
            skus: 20_000,
            exports: if quick { 60 } else { 400 },
            mix: (2, 1, 7),
            chunk_size: 10_000,
            delta_skus: 20,
            start: Utc.with_ymd_and_hms(2026, 5, 2, 0, 0, 0).unwrap(),
            scope: StockScope::Aggregate,
            ..StormSpec::default()
        },
        duplicates: 0.2,
    }
}

async fn with_target<T, F, Fut>(setup: &super::Setup, label: &str, run: F) -> anyhow::Result<T>
where
    F: FnOnce(Target) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let scratch = Scratch::new(setup, label).await?;
    let target = Target {
        database_url: scratch.database_url.clone(),
        amqp_url: scratch.amqp_url.clone(),
        prefix: scratch.prefix.clone(),
        binary: setup.worker.clone(),
        worker_env: Vec::new(),
    };
    let result = run(target).await;
    scratch.drop_all().await;
    result
}

/// One replica, then `replicas`, under each load; then a rolling restart of `replicas`.
pub async fn run(
    setup: &super::Setup,
    replicas: usize,
    quick: bool,
) -> anyhow::Result<ScaleReport> {
    let mut loads = Vec::new();
    for (title, load) in [
        ("DELTA stream", deltas(quick)),
        ("Exports in 10,000-SKU messages", exports(quick)),
    ] {
        let mut runs = Vec::new();
        for n in [1, replicas] {
            eprintln!("scale-out: {title}, {n} replica(s) …");
            let drain = with_target(setup, "scale", |t| {
                let load = load.clone();
                async move {
                    let before = MachineCpu::read()?;
                    let drain = scale::drain(&t, &load, n, Arrival::Queued).await?;
                    Ok((drain, MachineCpu::read()?.busy_since(&before)))
                }
            })
            .await?;
            runs.push(drain);
        }
        loads.push(LoadRuns {
            title,
            what: describe(&load),
            runs,
        });
    }
    eprintln!("scale-out: rolling restart of {replicas} replicas …");
    let rolling_load = deltas(quick);
    let rolling = with_target(setup, "rolling", |t| async move {
        scale::rolling_restart(&t, &rolling_load, replicas).await
    })
    .await?;
    Ok(ScaleReport {
        replicas,
        cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
        loads,
        rolling,
        quick,
    })
}

/// The whole machine's CPU time from the first line of /proc/stat: every process counts,
/// also those that exit during the run (PostgreSQL's backends do).
struct MachineCpu {
    busy: u64,
    total: u64,
}

impl MachineCpu {
    fn read() -> anyhow::Result<Self> {
        let stat = std::fs::read_to_string("/proc/stat")?;
        let line = stat.lines().next().unwrap_or_default();
        let ticks: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|t| t.parse().ok())
            .collect();
        anyhow::ensure!(ticks.len() >= 5, "unexpected /proc/stat: {line}");
        // user nice system idle iowait irq softirq steal …: idle and iowait are not busy.
        let total: u64 = ticks.iter().take(8).sum();
        Ok(Self {
            busy: total - ticks[3] - ticks[4],
            total,
        })
    }

    /// Busy share (0–1) of every core since `before`.
    fn busy_since(&self, before: &MachineCpu) -> f64 {
        let total = self.total.saturating_sub(before.total).max(1);
        self.busy.saturating_sub(before.busy) as f64 / total as f64
    }
}

fn describe(load: &Load) -> String {
    let s = &load.storm;
    format!(
        "{} exports over {} aggregates of {} SKUs (FULL:NONZERO:DELTA = {}:{}:{}, up to {} SKUs a DELTA, {} SKUs a chunk), shuffled, {:.0}% delivered twice",
        s.exports,
        s.aggregates,
        s.skus,
        s.mix.0,
        s.mix.1,
        s.mix.2,
        s.delta_skus,
        s.chunk_size,
        load.duplicates * 100.0
    )
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn replica_row(out: &mut String, run: &Drain, r: &ReplicaFigures) {
    let cores = r.cpu_secs / run.secs;
    let _ = writeln!(
        out,
        "| {} | {} | {:.0} | {:.2} | {:.2} | {:.0} | {:.0} |",
        run.replicas,
        r.name,
        r.messages,
        r.cpu_secs,
        cores,
        r.messages / r.cpu_secs.max(1e-9),
        mib(r.peak_rss_bytes),
    );
}

impl ScaleReport {
    pub fn markdown(&self, command: &str) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# Scale-out\n\n\
             Written by `{command}` ({}). Replicas of `omsc-inventory` run as separate processes on \
             one queue, as Kubernetes runs them, on this machine ({} cores, shared with the broker \
             and the database). Every run ends with the stock equal to the model \
             (`stock_filter::Model`), nothing queued and nothing dead-lettered, or the command fails.\n\n\
             How it is measured: the load is queued first, then the replicas start; the time runs \
             from their start to the moment their `omsc_messages_total` add up to every message \
             sent (so it includes their start-up, about a tenth of a second). Machine CPU: the \
             busy share of all cores over the whole run (publishing included), from `/proc/stat`; \
             the broker and PostgreSQL take most of it. Per replica: messages from its own \
             `omsc_messages_total`, CPU seconds from `/proc/<pid>/stat` (user + system), peak \
             resident memory from `/proc/<pid>/status` (VmHWM). Cores = CPU seconds / wall seconds.\n\n\
             The same scenarios, smaller, run in `make test` on debug builds as \
             `tests/it/scale.rs` (correctness only), with the sales, post-sales and catalog modules as well.",
            if self.quick {
                "quick sizes: figures indicative only"
            } else {
                "full sizes"
            },
            self.cores
        );
        for load in &self.loads {
            let _ = writeln!(out, "\n## {}\n\n{}.\n", load.title, load.what);
            let _ = writeln!(
                out,
                "| replicas | messages | SKU updates | seconds | messages/s | SKU updates/s | machine CPU busy |\n|---|---|---|---|---|---|---|"
            );
            for (run, cpu) in &load.runs {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {:.2} | {:.0} | {:.0} | {:.0}% |",
                    run.replicas,
                    run.messages,
                    run.sku_updates,
                    run.secs,
                    run.messages_per_sec(),
                    run.sku_updates as f64 / run.secs,
                    cpu * 100.0
                );
            }
            let _ = writeln!(
                out,
                "\nPer replica:\n\n| replicas | replica | messages | CPU s | cores | messages per CPU s | peak RSS MiB |\n|---|---|---|---|---|---|---|"
            );
            for (run, _) in &load.runs {
                for r in &run.per_replica {
                    replica_row(&mut out, run, r);
                }
            }
        }
        let r = &self.rolling;
        let _ = writeln!(
            out,
            "\n## Rolling restart under load\n\n\
             {} replicas; half of {} messages (the DELTA stream above) queued first, the rest \
             published in waves, one during each replacement: while the wave goes out, SIGTERM \
             the oldest replica once the queue holds messages, wait for its exit, start a new \
             one, wait until it is ready. End state equal to the model \
             after {:.2}s; nothing lost, nothing dead-lettered.\n\n\
             | replica | messages handled | ready messages at SIGTERM | SIGTERM to exit | exit |\n|---|---|---|---|---|",
            r.replicas, r.messages, r.secs
        );
        for (stopped, depth) in r.stopped.iter().zip(&r.depth_at_sigterm) {
            let _ = writeln!(
                out,
                "| {} | {:.0} | {} | {:.0} ms | {} |",
                stopped.figures.name,
                stopped.figures.messages,
                depth,
                stopped.drain.as_secs_f64() * 1000.0,
                stopped.status
            );
        }
        out
    }
}
