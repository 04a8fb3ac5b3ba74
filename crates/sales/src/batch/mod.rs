//! Applying a batch of sales messages in a constant number of round trips.
//!
//! One message at a time costs about three round trips (its lines, its writes, its
//! invoices), and those, not the broker, set the pace of a sales worker. A batch instead:
//!
//! 1. reads, in one round trip: its orders, locked in id order, with everything its messages
//!    decide on (lines with their status versions, invoices and invoiced lines, shipment
//!    keys and shipped lines, attributes, addresses, whether the export is confirmed), one
//!    query over all the batch's orders each ([`load`]); the ids its new invoices and
//!    shipments will take are reserved in the same trip;
//! 2. decides every message in memory, in the batch's order, with the rules of the one by
//!    one path ([`crate::apply`], kept as the model: [`crate::SalesHandler::apply_one_by_one`]):
//!    each compare-and-set against the state the earlier messages of the batch left, so a
//!    message's outcome and its retry or dead-letter reason are the ones it gets applied alone;
//! 3. writes the end state of every row the batch changed with set-based statements
//!    (`unnest` arrays), all sent in one round trip ([`write`]).
//!
//! The batch's result equals applying its messages one by one in the same order
//! (`tests/it/sales_batch.rs` checks it on shuffled, repeated lifecycles). A message that is
//! retried or dead-lettered changes nothing in memory, so it leaves no trace.

mod load;
mod write;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use chrono::{DateTime, SubsecRound, Utc};
use deadpool_postgres::Transaction;
use orders::SalesChannel;
use orders::lines::{NamedLine, resolve};
use protocol::logistics::Shipment;
use protocol::sales::{
    AttributesUpdate, LineCancelled, LineRef, NewShippingAddress, OrderUpdate, PaymentAmounts,
    ShippingAddressUpdate, StatusChange,
};
use runtime::Outcome;

use crate::SalesMessage;
use crate::apply::updates::UpdateKind;
use crate::status::{is_capture, lifecycle_rank, payment_rank};
use crate::version::{NO_STATUS, Version};

/// The reference of the shipping address split from a shared billing address (as
/// `apply::address`).
const SPLIT_REFERENCE: &str = "oms-shipping";

/// Applies `batch` in `tx`: the outcome of each message, in order.
pub async fn apply(
    tx: &Transaction<'_>,
    channel: &SalesChannel,
    batch: &[&SalesMessage],
) -> Result<Vec<Outcome>, tokio_postgres::Error> {
    let wanted = wanted(channel, batch);
    let loaded = load::load(tx, &wanted).await?;
    let mut state = Batch {
        now: loaded.now,
        orders: loaded.orders,
        invoice_ids: loaded.invoice_ids.into_iter(),
        shipment_ids: loaded.shipment_ids.into_iter(),
        foreign: BTreeMap::new(),
        shipments: Vec::new(),
    };
    let mut keys = loaded.shipment_keys.into_iter();
    let mut outcomes = Vec::with_capacity(batch.len());
    for message in batch {
        // Every shipment message has its key, whatever becomes of it.
        let key = matches!(message, SalesMessage::Shipment(_))
            .then(|| keys.next().expect("a key per shipment message"));
        let order_id = message.order_id();
        let outcome = match state.orders.get(order_id) {
            Some(order) if channel.is_foreign(message.channel(), &order.store) => {
                state.foreign(order_id, message.channel())
            }
            Some(_) => state.decide(message, key),
            None => match message.channel() {
                Some(said)
                    if channel
                        .configured()
                        .map_or(loaded.stores.contains(said), |c| c == said) =>
                {
                    Outcome::Retry(format!(
                        "order {order_id} of sales channel {said} is not in this Commerce yet; waiting for it"
                    ))
                }
                _ => state.foreign(order_id, message.channel()),
            },
        };
        outcomes.push(outcome);
    }
    write::write(tx, &state).await?;
    Ok(outcomes)
}

/// What the batch's messages need read.
fn wanted<'a>(channel: &SalesChannel, batch: &[&'a SalesMessage]) -> load::Wanted<'a> {
    let mut w = load::Wanted::default();
    let mut stores = BTreeSet::new();
    for message in batch {
        let id = message.order_id();
        w.orders.push(id);
        if channel.configured().is_none()
            && let Some(said) = message.channel()
        {
            stores.insert(said);
        }
        match message {
            SalesMessage::Created(u) | SalesMessage::Updated(u) => {
                w.invoices.push(id);
                let dates: BTreeSet<Option<DateTime<Utc>>> = u
                    .lines
                    .iter()
                    .filter_map(|l| l.payment.as_ref())
                    .filter(|p| is_capture(&p.status))
                    .map(|p| p.date)
                    .collect();
                // One invoice per capture date at most.
                w.invoice_ids = w
                    .invoice_ids
                    .saturating_add(i32::try_from(dates.len()).unwrap_or(i32::MAX));
            }
            SalesMessage::LineCancelled(_) => w.invoices.push(id),
            SalesMessage::AttributesUpdated(a) if a.line.is_some() => w.line_attributes.push(id),
            SalesMessage::AttributesUpdated(_) => w.order_attributes.push(id),
            SalesMessage::ShippingAddressUpdated(_) => w.addresses.push(id),
            SalesMessage::Shipment(s) => {
                w.shipped.push(id);
                w.shipments.push((
                    id,
                    s.shipment_id.as_deref(),
                    s.shipment_request_id.as_deref(),
                    s.content(),
                ));
            }
        }
    }
    for ids in [
        &mut w.orders,
        &mut w.invoices,
        &mut w.shipped,
        &mut w.order_attributes,
        &mut w.line_attributes,
        &mut w.addresses,
    ] {
        ids.sort_unstable();
        ids.dedup();
    }
    w.stores = stores.into_iter().collect();
    w
}

/// A stored status: its version and the values written.
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    version: Version,
    status: Option<String>,
    reason: Option<String>,
}

impl Default for Stored {
    fn default() -> Self {
        Self {
            version: Version::new(None, NO_STATUS, "", None),
            status: None,
            reason: None,
        }
    }
}

impl Stored {
    fn of(change: &StatusChange, version: Version) -> Self {
        Self {
            version,
            status: Some(change.status.clone()),
            reason: change.reason.clone(),
        }
    }
}

/// An order as the batch sees it: read, then changed by each message in turn. The `*_changed`
/// marks say what to write.
#[derive(Debug, Default)]
pub(crate) struct OrderState {
    store: String,
    status: Stored,
    status_changed: bool,
    accepted: Acceptance,
    shipping_reference: Option<String>,
    billing_reference: String,
    /// The shipping reference this batch set (to a split address row).
    new_shipping_reference: Option<String>,
    export_pending: bool,
    lines: Vec<LineState>,
    invoices: Vec<Invoice>,
    /// Invoiced lines, each with its invoice.
    invoiced: HashMap<String, i64>,
    /// Lines invoiced by this batch: line, invoice, amounts the OMS captured.
    new_invoice_lines: Vec<(String, i64, Option<PaymentAmounts>)>,
    /// Shipped lines, each with its shipment.
    shipped: HashMap<String, i64>,
    /// The keys of the shipments this batch stores.
    shipment_keys: HashSet<String>,
    cancelled: Vec<String>,
    attributes: HashMap<String, String>,
    attributes_changed: BTreeSet<String>,
    line_attributes: HashMap<(String, String), String>,
    line_attributes_changed: BTreeSet<(String, String)>,
    addresses: HashMap<String, Address>,
}

/// Whether the OMS said it accepted the order (`oms_accepted_at`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Acceptance {
    #[default]
    Not,
    Stored,
    /// By a `created` of this batch: to write.
    ByBatch,
}

#[derive(Debug)]
pub(crate) struct LineState {
    line_id: String,
    line_number: i32,
    product_type: String,
    sku: String,
    cancelled: bool,
    status: Stored,
    status_changed: bool,
    payment: Stored,
    payment_changed: bool,
}

impl LineState {
    fn is_shipping(&self) -> bool {
        self.product_type == protocol::sales::product_types::SHIPPING
    }
}

impl NamedLine for LineState {
    fn line_id(&self) -> &str {
        &self.line_id
    }
    fn line_number(&self) -> i32 {
        self.line_number
    }
}

#[derive(Debug)]
pub(crate) struct Invoice {
    id: i64,
    first_line_id: String,
    captured_at: DateTime<Utc>,
    /// Made by this batch.
    new: bool,
    /// Stored, and dated back by this batch.
    dated_back: bool,
}

/// An order address row (`sales_order_addresses`).
#[derive(Debug, Clone)]
pub(crate) struct Address {
    address_type: String,
    first_name: String,
    last_name: String,
    address1: String,
    address2: Option<String>,
    city: String,
    state: Option<String>,
    zip: Option<String>,
    country_code: String,
    phone: Option<String>,
    email: Option<String>,
    /// Who changed it (the OMS `user`), once this batch changed it.
    updated_by: Option<String>,
    changed: bool,
}

impl Address {
    fn same_as(&self, a: &NewShippingAddress) -> bool {
        self.first_name == a.first_name
            && self.last_name == a.last_name
            && self.address1 == a.address1
            && self.address2 == a.address2
            && self.city == a.city
            && self.state == a.state
            && self.zip == a.zip
            && self.country_code == a.country_code
            && self.phone == a.phone
            && self.email == a.email
    }

    fn from_update(address_type: String, a: &NewShippingAddress, user: Option<&str>) -> Self {
        Self {
            address_type,
            first_name: a.first_name.clone(),
            last_name: a.last_name.clone(),
            address1: a.address1.clone(),
            address2: a.address2.clone(),
            city: a.city.clone(),
            state: a.state.clone(),
            zip: a.zip.clone(),
            country_code: a.country_code.clone(),
            phone: a.phone.clone(),
            email: a.email.clone(),
            updated_by: user.map(str::to_owned),
            changed: true,
        }
    }
}

/// A shipment the batch stores.
pub(crate) struct NewShipment<'m> {
    id: i64,
    key: String,
    shipment: &'m Shipment,
    line_ids: Vec<String>,
}

/// The batch's state while its messages are decided.
pub(crate) struct Batch<'m> {
    /// The transaction's `now()`: the date of a capture reported without one.
    now: DateTime<Utc>,
    orders: HashMap<String, OrderState>,
    invoice_ids: std::vec::IntoIter<i64>,
    shipment_ids: std::vec::IntoIter<i64>,
    /// Messages about other channels' orders, counted per order and channel.
    foreign: BTreeMap<(String, String), i64>,
    shipments: Vec<NewShipment<'m>>,
}

impl<'m> Batch<'m> {
    fn foreign(&mut self, order_id: &str, channel: Option<&str>) -> Outcome {
        *self
            .foreign
            .entry((order_id.to_owned(), channel.unwrap_or("").to_owned()))
            .or_default() += 1;
        Outcome::Ignored("foreign_order")
    }

    fn decide(&mut self, message: &'m SalesMessage, key: Option<(String, bool)>) -> Outcome {
        match message {
            SalesMessage::Created(u) => self.update(u, UpdateKind::Created),
            SalesMessage::Updated(u) => self.update(u, UpdateKind::Updated),
            SalesMessage::LineCancelled(c) => self.cancel_line(c),
            SalesMessage::AttributesUpdated(a) => self.attributes(a),
            SalesMessage::ShippingAddressUpdated(a) => self.address(a),
            SalesMessage::Shipment(s) => {
                let (key, stored) = key.expect("a shipment message has its key");
                self.shipment(s, key, stored)
            }
        }
    }

    fn order(&mut self, order_id: &str) -> &mut OrderState {
        self.orders.get_mut(order_id).expect("a known order")
    }

    /// As `apply::updates::apply`.
    fn update(&mut self, update: &'m OrderUpdate, kind: UpdateKind) -> Outcome {
        let order_id = update.order_id.as_str();
        let now = self.now;
        let order = self.orders.get_mut(order_id).expect("a known order");
        let named = match positions(&order.lines, order_id, update.lines.iter().map(|l| &l.line)) {
            Ok(named) => named,
            Err(outcome) => return outcome,
        };
        // One change per line: the newest, when a message names a line twice.
        let mut line_status: BTreeMap<usize, (Version, &StatusChange)> = BTreeMap::new();
        let mut payment_status: BTreeMap<usize, (Version, &StatusChange)> = BTreeMap::new();
        let mut captured: Vec<Capture> = Vec::new();
        for (line, &i) in update.lines.iter().zip(&named) {
            if let Some(s) = &line.status {
                newest(&mut line_status, i, s, lifecycle_rank(&s.status));
            }
            if let Some(p) = &line.payment {
                newest(&mut payment_status, i, p, payment_rank(&p.status));
                if is_capture(&p.status)
                    && !order.lines[i].is_shipping()
                    && !captured.iter().any(|c| c.line == i)
                {
                    captured.push(Capture {
                        line: i,
                        date: p.date,
                        amounts: line.payment_amounts,
                    });
                }
            }
        }
        let mut changed = false;
        if kind == UpdateKind::Created && order.accepted == Acceptance::Not {
            order.accepted = Acceptance::ByBatch;
            changed = true;
        }
        if let Some(s) = &update.status {
            let version = Version::new(
                s.date,
                lifecycle_rank(&s.status),
                &s.status,
                s.reason.as_deref(),
            );
            if version.supersedes(&order.status.version) {
                order.status = Stored::of(s, version);
                order.status_changed = true;
                changed = true;
            }
        }
        for (i, (version, s)) in line_status {
            let line = &mut order.lines[i];
            if version.supersedes(&line.status.version) {
                line.status = Stored::of(s, version);
                line.status_changed = true;
                changed = true;
            }
        }
        for (i, (version, p)) in payment_status {
            let line = &mut order.lines[i];
            if version.supersedes(&line.payment.version) {
                line.payment = Stored {
                    version,
                    status: Some(p.status.clone()),
                    reason: None,
                };
                line.payment_changed = true;
                changed = true;
            }
        }
        changed |= record_captures(order, &captured, now, &mut self.invoice_ids);
        applied_if(changed)
    }

    /// As `apply::attributes::cancel_line`.
    fn cancel_line(&mut self, message: &LineCancelled) -> Outcome {
        let order_id = message.order_id.as_str();
        let order = self.order(order_id);
        let line_ref = LineRef::Id(message.line_id.clone());
        let i = match positions(&order.lines, order_id, [&line_ref]) {
            Ok(found) => found[0],
            Err(outcome) => return outcome,
        };
        if order.lines[i].cancelled {
            return Outcome::Stale;
        }
        order.lines[i].cancelled = true;
        let line_id = order.lines[i].line_id.clone();
        order.cancelled.push(line_id);
        // The cancelled line may have been the last one keeping the shipping from being invoiced.
        settle_shipping(order);
        Outcome::Applied
    }

    /// As `apply::attributes::update`.
    fn attributes(&mut self, message: &AttributesUpdate) -> Outcome {
        let order_id = message.order_id.as_str();
        let order = self.order(order_id);
        let mut written = false;
        match &message.line {
            None => {
                for (code, value) in &message.attributes {
                    if order.attributes.get(code) != Some(value) {
                        order.attributes.insert(code.clone(), value.clone());
                        order.attributes_changed.insert(code.clone());
                        written = true;
                    }
                }
            }
            Some(line_ref) => {
                let i = match positions(&order.lines, order_id, [line_ref]) {
                    Ok(found) => found[0],
                    Err(outcome) => return outcome,
                };
                let line_id = order.lines[i].line_id.clone();
                for (code, value) in &message.attributes {
                    let key = (line_id.clone(), code.clone());
                    if order.line_attributes.get(&key) != Some(value) {
                        order.line_attributes.insert(key.clone(), value.clone());
                        order.line_attributes_changed.insert(key);
                        written = true;
                    }
                }
            }
        }
        applied_if(written)
    }

    /// As `apply::address::apply`.
    fn address(&mut self, message: &ShippingAddressUpdate) -> Outcome {
        let order_id = message.order_id.as_str();
        let order = self.order(order_id);
        if order.export_pending {
            return Outcome::Retry(format!(
                "order {order_id}: its export is not confirmed yet, so its address changes wait"
            ));
        }
        if let Some(number) = message.line_number
            && let Err(outcome) = positions(&order.lines, order_id, [&LineRef::Number(number)])
        {
            return outcome;
        }
        let Some(shipping) = order.shipping_reference.clone() else {
            return Outcome::Reject(format!(
                "order {order_id} ships nothing (it has no shipping address), so its shipping address cannot change"
            ));
        };
        let user = message.user.as_deref();
        if shipping != order.billing_reference {
            return match order.addresses.get_mut(&shipping) {
                Some(row) if !row.same_as(&message.address) => {
                    *row = Address::from_update(row.address_type.clone(), &message.address, user);
                    Outcome::Applied
                }
                _ => Outcome::Stale,
            };
        }
        // One row for billing and shipping: the new shipping address gets its own.
        let split = if order.billing_reference == SPLIT_REFERENCE {
            format!("{SPLIT_REFERENCE}-1")
        } else {
            SPLIT_REFERENCE.to_owned()
        };
        // A split row that is there keeps its type; a new one takes the billing address's.
        let address_type = order
            .addresses
            .get(&split)
            .or_else(|| order.addresses.get(&order.billing_reference))
            .map(|a| a.address_type.clone());
        if let Some(address_type) = address_type {
            order.addresses.insert(
                split.clone(),
                Address::from_update(address_type, &message.address, user),
            );
        }
        order.shipping_reference = Some(split.clone());
        order.new_shipping_reference = Some(split);
        Outcome::Applied
    }

    /// As `apply::shipments::apply`.
    fn shipment(&mut self, shipment: &'m Shipment, key: String, stored: bool) -> Outcome {
        let order_id = shipment.order_id.as_str();
        let order = self.orders.get_mut(order_id).expect("a known order");
        let shipped = match positions(
            &order.lines,
            order_id,
            shipment.lines.iter().map(|l| &l.line),
        ) {
            Ok(found) => found,
            Err(outcome) => return outcome,
        };
        if let Some((i, &line)) = shipped
            .iter()
            .enumerate()
            .find(|(i, l)| shipped[..*i].contains(l))
        {
            return Outcome::Reject(format!(
                "shipment.items[{i}]: line {:?} is listed twice; a line is one unit and ships once",
                order.lines[line].line_id
            ));
        }
        if stored || order.shipment_keys.contains(&key) {
            return Outcome::Stale;
        }
        if let Some((line, earlier)) = shipped
            .iter()
            .filter_map(|&i| {
                let line = &order.lines[i];
                Some((line, *order.shipped.get(&line.line_id)?))
            })
            .min_by(|a, b| a.0.line_id.cmp(&b.0.line_id))
        {
            return Outcome::Reject(format!(
                "order {order_id}: line {:?} ({}) already shipped in shipment {earlier}; \
                 this shipment ships more units than were ordered",
                line.line_id, line.sku
            ));
        }
        let id = self
            .shipment_ids
            .next()
            .expect("an id per shipment message");
        let line_ids: Vec<String> = shipped
            .iter()
            .map(|&i| order.lines[i].line_id.clone())
            .collect();
        for line in &line_ids {
            order.shipped.insert(line.clone(), id);
        }
        order.shipment_keys.insert(key.clone());
        self.shipments.push(NewShipment {
            id,
            key,
            shipment,
            line_ids,
        });
        Outcome::Applied
    }
}

/// One line's capture as an update reports it (as `apply::invoices::Capture`).
struct Capture {
    line: usize,
    date: Option<DateTime<Utc>>,
    amounts: Option<PaymentAmounts>,
}

/// As `apply::invoices::record`: true if an invoice was made, added to or dated back.
fn record_captures(
    order: &mut OrderState,
    captured: &[Capture],
    now: DateTime<Utc>,
    ids: &mut std::vec::IntoIter<i64>,
) -> bool {
    if captured.is_empty() {
        return false;
    }
    let mut changed = false;
    // An earlier capture report of lines already invoiced dates their invoice back.
    let mut earliest: BTreeMap<i64, DateTime<Utc>> = BTreeMap::new();
    for c in captured {
        if let (Some(&invoice), Some(date)) =
            (order.invoiced.get(&order.lines[c.line].line_id), c.date)
        {
            let date = at_database_precision(date);
            earliest
                .entry(invoice)
                .and_modify(|d| *d = (*d).min(date))
                .or_insert(date);
        }
    }
    for (id, date) in earliest {
        if let Some(invoice) = order.invoices.iter_mut().find(|i| i.id == id)
            && invoice.captured_at > date
        {
            invoice.captured_at = date;
            invoice.dated_back = true;
            changed = true;
        }
    }
    let mut captures: BTreeMap<Option<DateTime<Utc>>, Vec<&Capture>> = BTreeMap::new();
    for c in captured {
        if !order.invoiced.contains_key(&order.lines[c.line].line_id) {
            captures.entry(c.date).or_default().push(c);
        }
    }
    if captures.is_empty() {
        return changed;
    }
    for (date, group) in captures {
        let id = ids.next().expect("an id per capture date");
        let first_line_id = group
            .iter()
            .map(|c| order.lines[c.line].line_id.as_str())
            .min()
            .unwrap_or_default()
            .to_owned();
        order.invoices.push(Invoice {
            id,
            first_line_id,
            captured_at: date.map_or(now, at_database_precision),
            new: true,
            dated_back: false,
        });
        for c in group {
            let line_id = order.lines[c.line].line_id.clone();
            order.invoiced.insert(line_id.clone(), id);
            order.new_invoice_lines.push((line_id, id, c.amounts));
        }
    }
    settle_shipping(order);
    true
}

/// As `apply::invoices::settle_shipping`: once every line but the shipping is invoiced or
/// cancelled, the shipping line joins the latest invoice.
fn settle_shipping(order: &mut OrderState) -> bool {
    let open = order
        .lines
        .iter()
        .any(|l| !l.is_shipping() && !l.cancelled && !order.invoiced.contains_key(&l.line_id));
    let shipping: Vec<String> = order
        .lines
        .iter()
        .filter(|l| l.is_shipping() && !order.invoiced.contains_key(&l.line_id))
        .map(|l| l.line_id.clone())
        .collect();
    if open || shipping.is_empty() {
        return false;
    }
    let Some(latest) = order
        .invoices
        .iter()
        .max_by_key(|i| (i.captured_at, i.id))
        .map(|i| i.id)
    else {
        return false;
    };
    for line_id in shipping {
        order.invoiced.insert(line_id.clone(), latest);
        order.new_invoice_lines.push((line_id, latest, None));
    }
    true
}

/// The positions in `lines` of the lines a message names ([`resolve`]'s rules and outcomes).
fn positions<'l>(
    lines: &'l [LineState],
    order_id: &str,
    refs: impl IntoIterator<Item = &'l LineRef>,
) -> Result<Vec<usize>, Outcome> {
    let found = resolve(lines, order_id, refs)?;
    Ok(found
        .iter()
        .map(|f| {
            lines
                .iter()
                .position(|l| std::ptr::eq(l, *f))
                .expect("a line of the order")
        })
        .collect())
}

fn newest<'a>(
    map: &mut BTreeMap<usize, (Version, &'a StatusChange)>,
    line: usize,
    change: &'a StatusChange,
    rank: i16,
) {
    let version = Version::new(change.date, rank, &change.status, change.reason.as_deref());
    match map.get(&line) {
        Some((existing, _)) if !version.supersedes(existing) => {}
        _ => {
            map.insert(line, (version, change));
        }
    }
}

fn applied_if(changed: bool) -> Outcome {
    if changed {
        Outcome::Applied
    } else {
        Outcome::Stale
    }
}

/// A date as the database keeps it (microseconds), so that comparisons in memory agree with
/// the ones the database would make.
fn at_database_precision(date: DateTime<Utc>) -> DateTime<Utc> {
    date.trunc_subsecs(6)
}
