//! Any body, as a message of every method: the envelope parser and every typed parser must
//! answer with a value or a rejection, never panic, loop or exhaust memory.

#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::inventory::{self, StockScope};
use protocol::{Limits, catalog, logistics, postsales, sales};

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    let Ok(envelope) = protocol::Envelope::parse(data, &limits) else {
        return;
    };
    let Some(params) = envelope.params else {
        return;
    };
    let _ = inventory::parse_stock_snapshot(params, StockScope::Aggregate, &limits);
    let _ = inventory::parse_stock_snapshot(params, StockScope::Source, &limits);
    let _ = inventory::parse_source(params);
    let _ = inventory::parse_source_deleted(params);
    let _ = sales::parse_order_update(params);
    let _ = sales::parse_line_cancelled(params);
    let _ = sales::parse_attributes_update(params, sales::AttributesOf::Order);
    let _ = sales::parse_attributes_update(params, sales::AttributesOf::Line);
    let _ = logistics::parse_shipment(params);
    let _ = postsales::parse_return_event(params, postsales::ReturnEventKind::Updated);
    let _ = postsales::parse_return_event(params, postsales::ReturnEventKind::Received);
    let _ = postsales::parse_return_attributes(params, postsales::ReturnAttributesOf::Return);
    let _ = postsales::parse_return_attributes(params, postsales::ReturnAttributesOf::Line);
    let _ = postsales::parse_refund(params);
    let _ = postsales::parse_refund_attributes(params);
    let _ = catalog::parse_export_full(params);
});
