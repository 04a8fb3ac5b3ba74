//! `omsc report`: the system report (crate `report`) printed as a table or JSON, or served
//! as a web page.

use std::net::SocketAddr;

use anyhow::Context as _;
use chrono::{TimeDelta, Utc};
use clap::Args;
use report::{Report, check_exposure, parse_span, serve, text};

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// How far back: `90s`, `15m`, `1h`, `24h`, `7d`, `30d` …
    #[arg(long, default_value = "1h", value_parser = parse_span)]
    pub since: TimeDelta,
    /// Print JSON instead of a table.
    #[arg(long, conflicts_with = "serve")]
    pub json: bool,
    /// Serve the report as a web page (with charts) instead of printing it.
    #[arg(long)]
    pub serve: bool,
    /// Where `--serve` listens. Only this machine by default: put it behind a proxy, or set
    /// a token, before opening it wider.
    #[arg(long, env = "OMSC_REPORT_LISTEN", default_value = "127.0.0.1:9465")]
    pub listen: SocketAddr,
    /// A bearer token `--serve` requires (`Authorization: Bearer …`, or `?token=…` in a
    /// browser).
    #[arg(long, env = "OMSC_REPORT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Serve on an address other machines reach (`--listen 0.0.0.0:9465`) without a token:
    /// refused unless this is set (behind a proxy that authenticates, say).
    #[arg(long, env = "OMSC_REPORT_ALLOW_WITHOUT_TOKEN")]
    pub allow_without_token: bool,
}

/// Runs `omsc report`.
pub async fn run(database_url: &str, args: ReportArgs) -> anyhow::Result<()> {
    if args.serve {
        let token = args.token.filter(|t| !t.is_empty());
        check_exposure(args.listen, token.as_deref(), args.allow_without_token)?;
        let pool = runtime::db::pool(database_url, "omsc-report", 4)?;
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("listening on {}", args.listen))?;
        let shown = listener.local_addr()?;
        println!("serving the system report on http://{shown}/ (Ctrl-C stops)");
        let app = serve::router(pool, token, args.since);
        return axum::serve(listener, app)
            .with_graceful_shutdown(runtime::shutdown_signal())
            .await
            .context("serving the report");
    }
    let client = runtime::db::connect(database_url, "omsc-report").await?;
    let report = Report::load(&client, args.since, Utc::now()).await?;
    if args.json {
        println!("{}", text::json(&report)?);
    } else {
        print!("{}", text::table(&report));
    }
    Ok(())
}
