//! Where refunded money goes back: the order's payment, store credit, or neither.
//!
//! The OMS knows one payment per order, and the lines keep their prices: a gift card or store
//! credit spent on the order is an order-level discount the payment did not carry (see the
//! sales export). So when the OMS refunds lines, the payment can give back at most what it
//! paid. The rule ([`split_refund`], PROTOCOL.md "Returns and refunds"):
//!
//! - a refund goes back to the payment first, up to what the payment paid and earlier credit
//!   memos did not already give back: a partial return refunds the paid amount and creates no
//!   store credit;
//! - what is left once the payment is fully refunded (a full refund of what the other tender
//!   paid) was paid by gift card or store credit, and comes back as store credit, up to what
//!   they paid;
//! - an order the payment paid nothing of (paid wholly by gift card or store credit) never
//!   gives store credit: the OMS cannot refund a zero total, and the merchant settles such a
//!   refund outside the OMS;
//! - store credit needs a customer account: a guest's share stays unrefunded, for the
//!   merchant to settle.
//!
//! What neither the payment nor store credit gives back is `unrefunded` on the credit memo.

use deadpool_postgres::Transaction;
use rust_decimal::Decimal;

/// What an order's tenders paid, and what its earlier credit memos gave back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OrderTenders {
    /// The order's lines, shipping included: what the OMS can refund.
    pub lines_total: Decimal,
    /// Paid with gift cards (`sales_orders.gift_card_amount`).
    pub gift_card: Decimal,
    /// Paid with store credit (`sales_orders.store_credit_amount`).
    pub store_credit: Decimal,
    /// The order has a customer account (not a guest's).
    pub has_customer: bool,
    /// Earlier credit memos: given back to the payment, and as store credit.
    pub refunded_to_payment: Decimal,
    pub store_credited: Decimal,
}

impl OrderTenders {
    /// What the order's one payment transaction carried (as exported).
    pub fn paid_by_payment(&self) -> Decimal {
        (self.lines_total - self.gift_card - self.store_credit).max(Decimal::ZERO)
    }
}

/// Where one credit memo's money goes. The parts add up to the refunded amount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RefundSplit {
    pub to_payment: Decimal,
    pub store_credit: Decimal,
    pub unrefunded: Decimal,
}

/// Splits a refund of `amount` by the rule of the module documentation.
pub fn split_refund(amount: Decimal, order: &OrderTenders) -> RefundSplit {
    let paid = order.paid_by_payment();
    if paid.is_zero() {
        // Paid wholly by gift card or store credit: never store credit.
        return RefundSplit {
            unrefunded: amount,
            ..RefundSplit::default()
        };
    }
    let payment_left = (paid - order.refunded_to_payment).max(Decimal::ZERO);
    let to_payment = amount.min(payment_left);
    let beyond_payment = amount - to_payment;
    let creditable = if order.has_customer {
        (order.gift_card + order.store_credit - order.store_credited).max(Decimal::ZERO)
    } else {
        Decimal::ZERO
    };
    let store_credit = beyond_payment.min(creditable);
    RefundSplit {
        to_payment,
        store_credit,
        unrefunded: beyond_payment - store_credit,
    }
}

/// Credits a customer's store credit for a released refund, once per credit note: the
/// transaction's natural key is `refund:<credit note number>`. True if it was credited now.
const CREDIT: &str = "
    INSERT INTO store_credit_transactions (customer_id, natural_key, kind, amount, order_id,
                                           credit_note_number)
    VALUES ($1, 'refund:' || $2, 'refund', $3, $4, $2)
    ON CONFLICT (customer_id, natural_key) DO NOTHING";

pub async fn credit(
    tx: &Transaction<'_>,
    customer_id: &str,
    credit_note_number: &str,
    order_id: &str,
    amount: Decimal,
) -> Result<bool, tokio_postgres::Error> {
    let statement = tx.prepare_cached(CREDIT).await?;
    Ok(tx
        .execute(
            &statement,
            &[&customer_id, &credit_note_number, &amount, &order_id],
        )
        .await?
        > 0)
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    /// Lines of 100, of which a gift card paid 30 and the card 70.
    fn part_gift_card() -> OrderTenders {
        OrderTenders {
            lines_total: d("100"),
            gift_card: d("30"),
            has_customer: true,
            ..OrderTenders::default()
        }
    }

    fn split(to_payment: &str, store_credit: &str, unrefunded: &str) -> RefundSplit {
        RefundSplit {
            to_payment: d(to_payment),
            store_credit: d(store_credit),
            unrefunded: d(unrefunded),
        }
    }

    #[test]
    fn a_partial_return_refunds_the_payment_and_creates_no_store_credit() {
        assert_eq!(
            split_refund(d("50"), &part_gift_card()),
            split("50", "0", "0")
        );
    }

    #[test]
    fn a_full_refund_gives_back_the_payment_and_the_gift_card_part_as_store_credit() {
        assert_eq!(
            split_refund(d("100"), &part_gift_card()),
            split("70", "30", "0")
        );
    }

    #[test]
    fn store_credit_comes_once_the_payment_is_fully_refunded_over_several_credit_notes() {
        let mut order = part_gift_card();
        let first = split_refund(d("60"), &order);
        assert_eq!(first, split("60", "0", "0"));
        order.refunded_to_payment += first.to_payment;
        let second = split_refund(d("40"), &order);
        assert_eq!(second, split("10", "30", "0"));
    }

    #[test]
    fn an_order_paid_wholly_by_gift_card_never_gives_store_credit() {
        let order = OrderTenders {
            lines_total: d("40"),
            gift_card: d("40"),
            has_customer: true,
            ..OrderTenders::default()
        };
        assert_eq!(split_refund(d("40"), &order), split("0", "0", "40"));
    }

    #[test]
    fn an_order_without_gift_card_or_store_credit_is_refunded_to_its_payment_only() {
        let order = OrderTenders {
            lines_total: d("80"),
            has_customer: true,
            ..OrderTenders::default()
        };
        assert_eq!(split_refund(d("80"), &order), split("80", "0", "0"));
    }

    #[test]
    fn store_credit_spent_on_the_order_comes_back_as_store_credit() {
        let order = OrderTenders {
            lines_total: d("100"),
            gift_card: d("10"),
            store_credit: d("15"),
            has_customer: true,
            ..OrderTenders::default()
        };
        assert_eq!(split_refund(d("100"), &order), split("75", "25", "0"));
    }

    #[test]
    fn a_guest_has_no_store_credit_account_so_its_share_stays_unrefunded() {
        let order = OrderTenders {
            has_customer: false,
            ..part_gift_card()
        };
        assert_eq!(split_refund(d("100"), &order), split("70", "0", "30"));
    }

    #[test]
    fn store_credit_never_exceeds_what_gift_cards_and_store_credit_paid() {
        let mut order = part_gift_card();
        order.refunded_to_payment = d("70");
        order.store_credited = d("20");
        assert_eq!(split_refund(d("15"), &order), split("0", "10", "5"));
    }
}
