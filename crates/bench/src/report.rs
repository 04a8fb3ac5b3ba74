//! The figures, their ratios to the ceilings, the targets, and `docs/benchmarks.md`.

use std::fmt::Write as _;

use super::ceilings::{BrokerCeiling, PostgresCeiling};
use super::connector::{FullSnapshot, Latency, Mixed, Throughput};
use super::modules::{Catalog, Orders};
use super::naive::Naive;

pub struct Report {
    pub machine: String,
    pub date: String,
    pub quick: bool,
    pub broker: Option<BrokerCeiling>,
    pub postgres: Option<PostgresCeiling>,
    pub naive: Option<Naive>,
    pub delta: Option<Throughput>,
    pub full: Option<FullSnapshot>,
    pub mixed: Option<Mixed>,
    pub latency: Option<Latency>,
    pub orders: Option<Orders>,
    pub order_latency: Option<super::order_latency::OrderLatency>,
    pub catalog: Option<Catalog>,
    pub postsales: Option<super::postsales::Postsales>,
    pub gateway: Option<super::gateway::Gateway>,
    /// PostgreSQL's `autovacuum` setting during the run (`SHOW autovacuum`).
    pub autovacuum: Option<String>,
}

/// A target of the connector and whether this run met it.
pub struct Verdict {
    pub what: &'static str,
    pub target: String,
    pub measured: String,
    pub met: bool,
}

const MIB: f64 = 1024.0 * 1024.0;

fn cpu(t: &Throughput) -> String {
    let per = |secs: f64| secs / t.messages as f64 * 1e6;
    format!(
        "CPU per message: connector {:.1} µs, broker {:.1} µs, PostgreSQL {:.1} µs",
        per(t.cpu.worker),
        per(t.cpu.broker),
        per(t.cpu.database)
    )
}

/// What the machine's cores allow at the CPU the three parties spent per message: the rate
/// at which they would keep every core busy, and how close the run came to it.
fn cpu_bound(t: &Throughput, broker: Option<&BrokerCeiling>) -> String {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let per_message = (t.cpu.worker + t.cpu.broker + t.cpu.database) / t.messages as f64;
    if per_message <= 0.0 {
        return String::new();
    }
    let bound = cores / per_message;
    let ceiling = broker
        .map(|b| format!(" ({:.2} × the broker ceiling)", bound / b.rate))
        .unwrap_or_default();
    let others = (t.cpu.broker + t.cpu.database) / t.messages as f64;
    let without_worker = broker
        .filter(|_| others > 0.0)
        .map(|b| {
            format!(
                " The broker and PostgreSQL alone spent {:.1} µs: even a worker that cost nothing would be held to {:.0} messages/s ({:.2} × the broker ceiling) on these cores.",
                others * 1e6,
                cores / others,
                cores / others / b.rate
            )
        })
        .unwrap_or_default();
    format!(
        "Together {:.1} µs of CPU per message: {cores:.0} cores kept fully busy at that cost would pass at most {bound:.0} messages/s{ceiling}; the stream reached {:.0} % of that bound.{without_worker}",
        per_message * 1e6,
        t.messages_per_sec() / bound * 100.0
    )
}

fn shape(batches: Option<super::connector::BatchShape>) -> String {
    batches
        .map(|b| {
            format!(
                "; {:.0} batches of {:.1} messages on average, {:.2} ms per transaction",
                b.count,
                b.mean_messages,
                b.mean_apply_secs * 1000.0
            )
        })
        .unwrap_or_default()
}

impl Report {
    pub fn new(setup: &super::Setup) -> Self {
        Self {
            machine: machine(),
            date: chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
            quick: setup.sizes.delta_messages < super::Sizes::full().delta_messages,
            broker: None,
            postgres: None,
            naive: None,
            delta: None,
            full: None,
            mixed: None,
            latency: None,
            orders: None,
            order_latency: None,
            catalog: None,
            postsales: None,
            gateway: None,
            autovacuum: None,
        }
    }

    pub fn verdicts(&self) -> Vec<Verdict> {
        let mut v = Vec::new();
        if let (Some(delta), Some(broker)) = (&self.delta, &self.broker) {
            let ratio = delta.messages_per_sec() / broker.rate;
            v.push(Verdict {
                what: "DELTA stream vs the broker ceiling",
                target: "≥ 0.70 ×".into(),
                measured: format!("{ratio:.2} ×"),
                met: ratio >= 0.7,
            });
        }
        if let (Some(full), Some(pg)) = (&self.full, &self.postgres) {
            let initial = full.initial.rows_per_sec() / pg.insert_rate;
            let resync = full.resync.rows_per_sec() / pg.update_rate;
            v.push(Verdict {
                what: "FULL snapshot vs the PostgreSQL ceiling (first load / re-sync)",
                target: "≥ 0.50 ×".into(),
                measured: format!("{initial:.2} × / {resync:.2} ×"),
                met: initial >= 0.5 && resync >= 0.5,
            });
            v.push(Verdict {
                what: "Peak RSS of the worker during the FULL",
                target: "≤ 64 MiB".into(),
                measured: format!("{:.1} MiB", full.peak_rss as f64 / MIB),
                met: (full.peak_rss as f64) <= 64.0 * MIB,
            });
        }
        if let (Some(delta), Some(naive)) = (&self.delta, &self.naive) {
            let ratio = delta.messages_per_sec() / naive.rate;
            v.push(Verdict {
                what: "DELTA stream vs the naive peer",
                target: "≥ 10 ×".into(),
                measured: format!("{ratio:.1} ×"),
                met: ratio >= 10.0,
            });
        }
        if let Some(l) = &self.latency {
            let p99 = l.p99 * 1000.0;
            v.push(Verdict {
                what: "p99 publish → commit at 2,000 messages/s",
                target: "≤ 20 ms".into(),
                measured: format!("{p99:.1} ms"),
                met: p99 <= 20.0,
            });
        }
        if let (Some(o), Some(delta)) = (&self.orders, &self.delta) {
            let delta = delta.messages_per_sec();
            let applied = o.lifecycle_rate / delta;
            v.push(Verdict {
                what: "Order-lifecycle messages applied vs the DELTA stream (one worker)",
                target: "≥ 0.20 ×".into(),
                measured: format!("{applied:.2} ×"),
                met: applied >= 0.2,
            });
            let exported = o.export_rate / delta;
            v.push(Verdict {
                what: "Orders exported with confirms vs the DELTA stream",
                target: "≥ 0.10 ×".into(),
                measured: format!("{exported:.3} ×"),
                met: exported >= 0.1,
            });
        }
        if let Some(o) = &self.order_latency {
            let p99 = o.p99 * 1000.0;
            v.push(Verdict {
                what: "Order updates: p99 publish → commit at 2,000 messages/s",
                target: "≤ 20 ms".into(),
                measured: format!("{p99:.1} ms"),
                met: p99 <= 20.0,
            });
        }
        let sales_rss = [
            self.orders.as_ref().map(|o| o.peak_rss),
            self.order_latency.as_ref().map(|o| o.peak_rss),
        ]
        .into_iter()
        .flatten()
        .max();
        if let Some(rss) = sales_rss {
            v.push(Verdict {
                what: "Peak RSS of the sales worker (exporting, draining, steady)",
                target: "≤ 64 MiB".into(),
                measured: format!("{:.1} MiB", rss as f64 / MIB),
                met: (rss as f64) <= 64.0 * MIB,
            });
        }
        if let (Some(p), Some(delta)) = (&self.postsales, &self.delta) {
            let ratio = p.rate / delta.messages_per_sec();
            v.push(Verdict {
                what: "Post-sales messages applied vs the DELTA stream (one worker)",
                target: "≥ 0.10 ×".into(),
                measured: format!("{ratio:.2} ×"),
                met: ratio >= 0.1,
            });
        }
        if let Some(g) = &self.gateway {
            v.extend(super::gateway::verdicts(g));
        }
        v
    }

    pub fn markdown(&self, command: &str) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# Benchmarks\n");
        let _ = writeln!(
            out,
            "Measured by `{command}`{} on {}, {}. Every figure below comes from that one run; \
             the ceilings were measured in the same run on the same machine.\n",
            if self.quick { " (quick sizes)" } else { "" },
            self.machine,
            self.date
        );
        let _ = writeln!(
            out,
            "## Targets\n\n| | target | measured | |\n|---|---|---|---|"
        );
        for v in self.verdicts() {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} |",
                v.what,
                v.target,
                v.measured,
                if v.met { "met" } else { "**missed**" }
            );
        }
        let _ = writeln!(out, "\n## Ceilings of the machine\n");
        if let Some(b) = &self.broker {
            let _ = writeln!(
                out,
                "- **Broker**, raw consume + ack of {} persistent {}-byte messages (one-SKU DELTAs) from a queue declared like `connector.inventory` (quorum, same arguments): **{:.0} messages/s** (best of {}). Filling the queue with confirmed publishes ran at {:.0} messages/s.",
                b.messages,
                b.body_bytes,
                b.rate,
                b.trials
                    .iter()
                    .map(|(p, a, r)| format!("prefetch {p} / ack every {a}: {r:.0}"))
                    .collect::<Vec<_>>()
                    .join("; "),
                b.publish_rate
            );
        }
        if let Some(p) = &self.postgres {
            let _ = writeln!(
                out,
                "- **PostgreSQL**, batched compare-and-set of {} rows in {}-row transactions with hand-written statements on a table shaped like `stock_items`: **{:.0} rows/s** writing new rows, **{:.0} rows/s** overwriting every row with a newer version (best of {}).",
                p.rows,
                p.batch_rows,
                p.insert_rate,
                p.update_rate,
                p.trials
                    .iter()
                    .map(|(w, c, r)| format!("{w} on {c} connection(s): {r:.0}"))
                    .collect::<Vec<_>>()
                    .join("; ")
            );
        }
        let _ = writeln!(out, "\n## The naive peer (for comparison)\n");
        if let Some(n) = &self.naive {
            let _ = writeln!(
                out,
                "One transaction per message, `SELECT … FOR UPDATE` then `UPDATE`/`INSERT` per SKU, one acknowledgement per message (prefetch 50): **{:.0} messages/s** over {} one-SKU DELTAs.",
                n.rate, n.messages
            );
        }
        let _ = writeln!(out, "\n## The connector (`omsc-inventory` as shipped)\n");
        if let Some(d) = &self.delta {
            let _ = writeln!(
                out,
                "- **a. DELTA stream**: {} one-SKU DELTAs, each updating an existing row, drained from a filled queue: **{:.0} messages/s** ({:.2} s from the first to the last committed batch{}).",
                d.messages,
                d.messages_per_sec(),
                d.secs,
                shape(d.batches)
            );
            let _ = writeln!(out, "  {}.", cpu(d));
            let _ = writeln!(out, "  {}", cpu_bound(d, self.broker.as_ref()));
        }
        if let Some(f) = &self.full {
            let _ = writeln!(
                out,
                "- **b. FULL snapshot** of {} SKUs in {} messages of 10,000, published to a running worker: first load **{:.0} rows/s** ({:.2} s); daily re-sync over every row **{:.0} rows/s** ({:.2} s{}).",
                f.initial.rows,
                f.initial.messages,
                f.initial.rows_per_sec(),
                f.initial.secs,
                f.resync.rows_per_sec(),
                f.resync.secs,
                shape(f.resync.batches)
            );
            let _ = writeln!(
                out,
                "  Re-sync {} (per 10,000-SKU message).",
                cpu(&f.resync)
            );
            let _ = writeln!(
                out,
                "- **e. Peak resident memory** of the worker over both FULLs: **{:.1} MiB** (VmHWM{}).",
                f.peak_rss as f64 / MIB,
                f.prefetch
                    .map(|p| format!("; prefetch settled at {p:.0}"))
                    .unwrap_or_default()
            );
        }
        if let Some(m) = &self.mixed {
            let _ = writeln!(
                out,
                "- **c. Mixed storm**: {} messages ({} SKU updates: FULL, NONZERO and DELTA exports over several aggregates, shuffled, 5 % delivered twice) ended equal to the model ({} rows) **{:.1} s** after the worker started (NONZERO settle period {:.0} s).",
                m.messages, m.sku_updates, m.rows, m.secs, m.settle_secs
            );
        }
        if let Some(l) = &self.latency {
            let _ = writeln!(
                out,
                "- **d. Latency** at an offered {} messages/s ({:.0} achieved, {} messages): publish → commit p50 **{:.1} ms**, p99 **{:.1} ms**, max {:.1} ms (commits observed by a listener). The worker's transactions (its histogram, bucket upper bounds): p50 ≤ {:.1} ms, p99 ≤ {:.1} ms. The machine's floors: publish → delivery to a plain consumer at the same load p50 {:.1} ms, p99 {:.1} ms; a one-row transaction committed alone p50 {:.1} ms, p99 {:.1} ms.",
                l.offered_rate,
                l.achieved_rate,
                l.messages,
                l.p50 * 1000.0,
                l.p99 * 1000.0,
                l.max * 1000.0,
                l.apply_p50 * 1000.0,
                l.apply_p99 * 1000.0,
                l.delivery_floor_p50 * 1000.0,
                l.delivery_floor_p99 * 1000.0,
                l.commit_floor_p50 * 1000.0,
                l.commit_floor_p99 * 1000.0
            );
        }
        if self.orders.is_some()
            || self.order_latency.is_some()
            || self.catalog.is_some()
            || self.postsales.is_some()
        {
            let _ = writeln!(out, "\n## The other modules\n");
        }
        if let Some(o) = &self.orders {
            let (worker, broker, database) = o.export_cpu.per_item_micros(o.orders);
            let _ = writeln!(
                out,
                "- **Orders exported** by `omsc-sales` through the outbox, each published with a broker confirm and then marked sent: **{:.0} orders/s** ({} orders placed by {} storefront sessions at {:.0} orders/s while the worker was down, exported in {:.2} s from the first to the last marked sent). CPU per order: connector {worker:.1} µs, broker {broker:.1} µs, PostgreSQL {database:.1} µs.",
                o.export_rate, o.orders, o.storefront_sessions, o.place_rate, o.export_secs
            );
            let (worker, broker, database) = o.lifecycle_cpu.per_item_micros(o.lifecycle_messages);
            let _ = writeln!(
                out,
                "- **Order updates applied** by `omsc-sales`: **{:.0} messages/s** ({} OMS messages — created, five status updates with line statuses and payment captures, the shipment — for those orders, drained from a filled queue in {:.2} s from the worker ready; {:.0} retried or dead-lettered; every order ended COMPLETE). CPU per message: connector {worker:.1} µs, broker {broker:.1} µs, PostgreSQL {database:.1} µs.",
                o.lifecycle_rate, o.lifecycle_messages, o.lifecycle_secs, o.lifecycle_not_applied
            );
        }
        if let Some(o) = &self.order_latency {
            let _ = writeln!(
                out,
                "- **Order-update latency** at an offered {} messages/s ({:.0} achieved; {} OMS messages about {} placed and exported orders, 200 orders' lifecycles interleaved; {} status updates timed): publish → commit of the status p50 **{:.1} ms**, p99 **{:.1} ms**, max {:.1} ms (commits observed by a listener). The worker's transactions: p50 ≤ {:.1} ms, p99 ≤ {:.1} ms. Peak RSS of the worker {:.1} MiB.",
                o.offered_rate,
                o.achieved_rate,
                o.messages,
                o.orders,
                o.timed,
                o.p50 * 1000.0,
                o.p99 * 1000.0,
                o.max * 1000.0,
                o.apply_p50 * 1000.0,
                o.apply_p99 * 1000.0,
                o.peak_rss as f64 / MIB
            );
        }
        if let Some(p) = &self.postsales {
            let (worker, broker, database) = p.cpu_per_message();
            let _ = writeln!(
                out,
                "- **Returns and refunds applied** by `omsc-postsales`: **{:.0} messages/s** ({} OMS messages — each return updated REQUESTED and APPROVED, received, its refund PENDINGRELEASE then RELEASED — for {} returns requested by the storefront, the returns interleaved, drained from a filled queue in {:.2} s from the worker ready{}; {:.0} retried or dead-lettered; every return ended approved and received, every refund released with one credit memo). CPU per message: connector {worker:.1} µs, broker {broker:.1} µs, PostgreSQL {database:.1} µs.",
                p.rate,
                p.messages,
                p.returns,
                p.secs,
                shape(p.batches),
                p.not_applied
            );
        }
        if let Some(c) = &self.catalog {
            let _ = writeln!(
                out,
                "- **Full catalog export** by `omsc-catalog`: **{:.0} products/s** ({} products in chunks of {}, {:.2} s by the run's own record; peak resident memory {:.1} MiB).",
                c.rate,
                c.products,
                c.chunk_size,
                c.secs,
                c.peak_rss as f64 / MIB
            );
        }
        if let Some(g) = &self.gateway {
            out.push_str(&super::gateway::markdown(g));
        }
        let _ = writeln!(out, "\n## Method\n");
        let _ = writeln!(
            out,
            "Each scenario runs in its own database and queue prefix. The connector's processing window is read from the rows it wrote (`updated_at` is the start of the committing transaction), so worker start-up is not counted and nothing is estimated. Broker ceiling and DELTA stream both drain a queue filled beforehand, so they compare like with like. The latency scenario publishes at a steady rate to an idle, ready worker; a commit is observed by a session that listens for the notification a statement trigger (added to that scenario's database only) sends with its transaction id, which PostgreSQL delivers only once the transaction committed. Its floors are measured in the same scenario before the worker starts. CPU per message is read from /proc for the worker, the broker and every PostgreSQL process over the scenario's window. Before each scenario the bench asks PostgreSQL for a CHECKPOINT, so that no scenario pays for the dirty pages of the one before."
        );
        if let Some(autovacuum) = &self.autovacuum {
            let _ = writeln!(
                out,
                "\nPostgreSQL's `autovacuum` was `{autovacuum}` during this run. The bench analyzes only the tables it fills before a scenario (the stock rows, the catalog), never those a scenario grows: where autovacuum is off, those (invoices, shipments, returns) are planned without statistics, and the drains of the sales and post-sales scenarios vary from run to run by up to three times."
            );
        }
        out
    }
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<f64>().ok())
        })
        .map(|kib| format!("{:.0} GiB", kib / 1024.0 / 1024.0))
        .unwrap_or_default();
    format!("{cores} cores ({model}), {memory}")
}
