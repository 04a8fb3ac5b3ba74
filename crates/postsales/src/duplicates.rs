//! `return_management.duplicated`: the OMS reports a return as a duplicate. The
//! specification says only "Notify when a return is duplicated" (order, sales channel and an
//! optional rma) and nothing of what the shop should do, so no return changes: neither its
//! state nor its lines (the OMS's own return updates say what becomes of it). The report is
//! recorded and counted in `postsales_return_duplicates` for the merchant to look at, under
//! the order and the rma it names (`''` when it names none); a repeat counts again.

use deadpool_postgres::Transaction;
use protocol::postsales::ReturnDuplicated;
use runtime::Outcome;

const RECORD: &str = "
    INSERT INTO postsales_return_duplicates (order_id, rma) VALUES ($1, $2)
    ON CONFLICT (order_id, rma) DO UPDATE
       SET messages = postsales_return_duplicates.messages + 1, last_seen = now()";

pub async fn record(
    tx: &Transaction<'_>,
    message: &ReturnDuplicated,
) -> Result<Outcome, tokio_postgres::Error> {
    let statement = tx.prepare_cached(RECORD).await?;
    tx.execute(
        &statement,
        &[&message.order_id, &message.rma.as_deref().unwrap_or("")],
    )
    .await?;
    Ok(Outcome::Applied)
}
