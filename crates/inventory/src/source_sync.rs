//! Every source the OMS knows, read from its service bus: `omsc sources sync`, and once when
//! an inventory worker starts with `OMSC_OMS_URL` set, so that sources created before the
//! connector registered (whose `source_management.created` it never received) are known.
//!
//! `source_repository.search` is a synchronous query (`{base}/remote/oms`, TRANSPORT.md):
//! pages of `magento.inventory.source_collection` in id order, each saved in one transaction
//! with the same statements as a `source_management.updated` message ([`sources::save`]).
//! A sync adds and updates sources, never deletes one: a page read while sources are deleted
//! may shift past a source, and deletions arrive as `source_management.deleted` anyway. Like
//! those messages, a sync carries no version: the last write wins.

use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use bus_client::{Answer, BusClient, Unavailable};
use deadpool_postgres::Pool;
use protocol::inventory::{self, Source, methods};
use runtime::backoff::Backoff;
use tokio_util::sync::CancellationToken;

use crate::sources;

/// Where the bus answers synchronous queries to the OMS.
pub const REMOTE_PATH: &str = "/remote/oms";
/// Sources asked for per page.
pub const PAGE_SIZE: u64 = 100;
/// A bus that never says it is done is not followed for ever: a million sources.
const MAX_PAGES: usize = 10_000;
/// Waits between attempts of the sync at start while the bus (or the database) is away.
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(300);

/// What a sync did.
#[derive(Debug, Default)]
pub struct SyncReport {
    pub pages: usize,
    pub saved: usize,
    /// How many sources the bus said it has, when it said.
    pub total: Option<u64>,
    /// The sources the bus sent that are not valid, each with its reason; the others are
    /// saved all the same.
    pub refused: Vec<String>,
}

/// Reads every source from the bus, `page_size` a page, and saves them.
pub async fn sync(pool: &Pool, client: &BusClient, page_size: u64) -> anyhow::Result<SyncReport> {
    let page_size = page_size.max(1);
    let mut report = SyncReport::default();
    let mut offset = 0u64;
    let mut previous_first: Option<String> = None;
    loop {
        let params = inventory::source_search_params(offset, page_size);
        let result = match client
            .request(REMOTE_PATH, methods::SOURCE_SEARCH, params)
            .await
        {
            Ok(Answer::Taken(result)) => result,
            Ok(Answer::Refused(reason)) => bail!(
                "the bus refused {} (sources from offset {offset}): {reason}",
                methods::SOURCE_SEARCH
            ),
            Err(Unavailable(reason)) => bail!("{reason}"),
        };
        let page = inventory::parse_source_page(&result).map_err(|r| {
            anyhow!(
                "the bus's answer to {} (sources from offset {offset}) is not usable: {}",
                methods::SOURCE_SEARCH,
                r.reason()
            )
        })?;
        if let Some(at) = page.offset
            && at != offset
        {
            bail!(
                "asked for the sources from offset {offset}, the bus answered from offset {at}: \
                 it does not page as the specification says"
            );
        }
        let count = page.items.len() as u64;
        let mut valid: Vec<Source> = Vec::with_capacity(page.items.len());
        for (i, item) in page.items.into_iter().enumerate() {
            match item {
                Ok(source) => valid.push(source),
                Err(rejection) => report.refused.push(format!(
                    "source {} of the bus's list: {}",
                    offset + i as u64,
                    rejection.reason()
                )),
            }
        }
        // A bus that does not read the query answers the first page again and again.
        let first = valid.first().map(|s| s.id.clone());
        if offset > 0 && first.is_some() && first == previous_first {
            bail!(
                "the bus answered the sources from offset {offset} with the same page as before: \
                 it ignores the query's offset"
            );
        }
        previous_first = first;
        save(pool, &valid)
            .await
            .with_context(|| format!("saving the sources from offset {offset}"))?;
        report.pages += 1;
        report.saved += valid.len();
        report.total = page.total.or(report.total);
        offset += count;
        let done = count == 0
            || page
                .total
                .map_or(count < page_size, |total| offset >= total);
        if done {
            return Ok(report);
        }
        if report.pages >= MAX_PAGES {
            bail!("the bus kept answering pages of sources: stopped after {MAX_PAGES}");
        }
    }
}

/// One page in one transaction.
async fn save(pool: &Pool, page: &[Source]) -> anyhow::Result<()> {
    if page.is_empty() {
        return Ok(());
    }
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    for source in page {
        sources::save(&tx, source).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// The sync at start: tried until it succeeds (with a growing wait, logged each time) or
/// the worker stops; the consumer does not wait for it.
pub async fn run_at_start(pool: Pool, client: BusClient, shutdown: CancellationToken) {
    let mut backoff = Backoff::new(RETRY_MIN, RETRY_MAX);
    loop {
        let attempt = tokio::select! {
            attempt = sync(&pool, &client, PAGE_SIZE) => attempt,
            () = shutdown.cancelled() => return,
        };
        match attempt {
            Ok(report) => {
                for reason in &report.refused {
                    tracing::warn!(%reason, "a source from the bus was refused");
                }
                tracing::info!(
                    saved = report.saved,
                    refused = report.refused.len(),
                    pages = report.pages,
                    "sources read from the bus"
                );
                return;
            }
            Err(e) => {
                let wait = backoff.next_delay();
                tracing::warn!(
                    error = %format!("{e:#}"),
                    retry_in = ?wait,
                    "cannot read the sources from the bus yet; retrying"
                );
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = shutdown.cancelled() => return,
                }
            }
        }
    }
}
