//! `omsc-bench`: see the `bench` library. A binary of its own, beside the workers in the
//! target directory but not in the image: it starts `omsc-inventory` and the others as
//! processes and measures them, which no production deployment wants.

use std::path::PathBuf;

use bench::{Setup, Sizes};
use clap::Parser;

/// Measure the connector against the machine's ceilings (writes docs/benchmarks.md).
#[derive(Parser)]
#[command(name = "omsc-bench", version)]
struct BenchArgs {
    /// A short run (small sizes) for smoke tests.
    #[arg(long)]
    quick: bool,
    /// Instead of the ceilings: replicas of the worker on one queue under load, and a
    /// rolling restart (writes docs/scale-out.md with --out).
    #[arg(long)]
    scale_out: bool,
    /// Replicas in the scale-out runs.
    #[arg(long, default_value_t = 3)]
    replicas: usize,
    /// Where to write the report (Markdown).
    #[arg(long)]
    out: Option<PathBuf>,
    /// The worker binary to measure (default: omsc-inventory next to this binary).
    #[arg(long)]
    worker: Option<PathBuf>,
    #[arg(
        long,
        env = "AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f",
        hide_env_values = true
    )]
    /// The broker to measure (it gets queues under a prefix of its own, removed after).
    amqp_url: String,
    /// Run only these scenarios (broker, postgres, naive, delta, full, mixed, latency,
    /// orders, order-latency, postsales, catalog, gateway).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// The PostgreSQL server; every scenario creates and drops its own database on it.
    #[arg(
        long,
        env = "OMSC_BENCH_DATABASE_SERVER",
        default_value = "postgres://postgres@127.0.0.1:5432"
    )]
    database_server: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = BenchArgs::parse();
    let worker = match args.worker {
        Some(w) => w,
        None => std::env::current_exe()?
            .parent()
            .map(|d| d.join("omsc-inventory"))
            .ok_or_else(|| anyhow::anyhow!("cannot locate omsc-inventory"))?,
    };
    anyhow::ensure!(
        worker.exists(),
        "{} does not exist: build it first (make bench does)",
        worker.display()
    );
    let setup = Setup {
        amqp_url: args.amqp_url,
        database_server: args.database_server,
        worker,
        sizes: if args.quick {
            Sizes::quick()
        } else {
            Sizes::full()
        },
        only: args.only,
    };
    let markdown = if args.scale_out {
        let report = bench::scale_out::run(&setup, args.replicas, args.quick).await?;
        report.markdown("make scale-out")
    } else {
        let report = bench::run(&setup).await?;
        let command = if args.quick {
            "make bench-quick"
        } else {
            "make bench"
        };
        report.markdown(command)
    };
    println!("{markdown}");
    if let Some(out) = args.out {
        let mut written = markdown;
        if !args.scale_out
            && let Some(scale_out) = scale_out_section(&out)
        {
            written.push_str(&scale_out);
        }
        std::fs::write(&out, &written)?;
        eprintln!("wrote {}", out.display());
    }
    Ok(())
}

/// The last `make scale-out` report (`scale-out.md` beside `out`), as a section of the
/// benchmark report: its own date and command stay with it, its headings one level down.
fn scale_out_section(out: &std::path::Path) -> Option<String> {
    let text = std::fs::read_to_string(out.with_file_name("scale-out.md")).ok()?;
    let mut section = String::from("\n## Replicas on one queue (from the last `make scale-out`)\n");
    for line in text.lines().skip_while(|l| l.starts_with("# ")) {
        if line.starts_with('#') {
            section.push('#');
        }
        section.push_str(line);
        section.push('\n');
    }
    Some(section)
}
