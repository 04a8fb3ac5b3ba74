//! From the OMS's order status to the Commerce order state shown to the customer.
//!
//! Statuses are compared in their normalized form ([`protocol::sales::normalize_status`]):
//! senders write `PENDING_REMORSE_TIME` and `PENDINGREMORSETIME` for the same thing. A status
//! this table does not know is stored as sent and shows as `processing` (the OMS has the
//! order and is doing something with it), so the shown state depends only on the newest
//! status, never on the order in which updates arrived. docs/schema.md lists the mapping.

use protocol::sales::normalize_status;

/// Commerce order states (`sales_orders.state`).
pub mod states {
    pub const NEW: &str = "new";
    pub const PROCESSING: &str = "processing";
    pub const HOLDED: &str = "holded";
    pub const COMPLETE: &str = "complete";
    pub const CANCELED: &str = "canceled";
    pub const CLOSED: &str = "closed";
}

/// The Commerce state for an OMS status and reason.
pub fn commerce_state(status: &str, reason: Option<&str>) -> &'static str {
    let reason = reason.map(normalize_status);
    match normalize_status(status).as_str() {
        "NEW" | "RECEIVED" | "PENDING" => states::NEW,
        // The remorse period is routine: the customer may still cancel; nothing is on hold.
        "ONHOLD" if reason.as_deref() == Some("PENDINGREMORSETIME") => states::NEW,
        "ONHOLD" | "HOLD" | "ERROR" | "FRAUDREVIEW" => states::HOLDED,
        "COMPLETE" | "COMPLETED" => states::COMPLETE,
        "CANCELLED" | "CANCELED" | "REJECTED" => states::CANCELED,
        "CLOSED" | "REFUNDED" => states::CLOSED,
        // LOGISTICS, LOGISTICSCOMPLETE, BACKORDER, SOURCING … and anything new.
        _ => states::PROCESSING,
    }
}

/// An order's or a line's status's place in the lifecycle: the second part of its version
/// ([`crate::version`]), which decides between updates of equal dates or without dates.
///
/// `RECEIVED` (1) < holds (2) < `LOGISTICS` and anything unknown (3) < `LOGISTICSCOMPLETE`,
/// `SHIPPED` (4) < `COMPLETE` (5) < cancelled, rejected or in error (6) < `CLOSED` (7).
///
/// A hold ranks before logistics whatever its reason: at the same date (or with no date)
/// an order that has reached logistics has left any hold, and the remorse period
/// (`ONHOLD/PENDINGREMORSETIME`) comes before logistics by definition. A hold after
/// logistics needs a later date to win, which is what a sender that dates its updates gives.
/// The final statuses outrank everything: nothing follows them but a closing.
pub fn lifecycle_rank(status: &str) -> i16 {
    match normalize_status(status).as_str() {
        "NEW" | "RECEIVED" | "PENDING" | "IMPORTED" => 1,
        "ONHOLD" | "HOLD" | "FRAUDREVIEW" => 2,
        "LOGISTICSCOMPLETE" | "SHIPPED" | "DELIVERED" | "FULLYSHIPPED" => 4,
        "COMPLETE" | "COMPLETED" => 5,
        "CANCELLED" | "CANCELED" | "REJECTED" | "ERROR" => 6,
        "CLOSED" | "REFUNDED" => 7,
        // LOGISTICS, BACKORDER, SOURCING … and anything new: the order is being worked on.
        _ => 3,
    }
}

/// A line payment status's place in its lifecycle, for its version: authorized (or
/// unknown, 1) < capture requested (2) < captured (3) < refund requested (4) < refunded (5)
/// < failed, declined, voided or cancelled (6).
pub fn payment_rank(status: &str) -> i16 {
    match normalize_status(status).as_str() {
        "CAPTUREREQUESTED" | "CAPTURE" => 2,
        "CAPTURED" | "PAID" | "SETTLED" => 3,
        "REFUNDREQUESTED" => 4,
        "REFUNDED" | "PARTIALLYREFUNDED" => 5,
        "FAILED" | "DECLINED" | "VOIDED" | "VOID" | "CANCELLED" | "CANCELED" => 6,
        _ => 1,
    }
}

/// Whether a line payment status means the OMS captured the payment, or asked Commerce to
/// (the OMS requests payment actions; Commerce records them as an invoice).
pub fn is_capture(payment_status: &str) -> bool {
    matches!(
        normalize_status(payment_status).as_str(),
        "CAPTUREREQUESTED" | "CAPTURED" | "CAPTURE" | "PAID" | "SETTLED"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_usual_path_maps_to_the_states_a_customer_expects() {
        let path = [
            ("RECEIVED", "IMPORTED", states::NEW),
            ("ONHOLD", "PENDINGREMORSETIME", states::NEW),
            ("ONHOLD", "PENDING_REMORSE_TIME", states::NEW),
            ("LOGISTICS", "READYTOSHIP", states::PROCESSING),
            ("LOGISTICSCOMPLETE", "FULLYSHIPPED", states::PROCESSING),
            ("COMPLETE", "FULLYSHIPPED", states::COMPLETE),
        ];
        for (status, reason, state) in path {
            assert_eq!(
                commerce_state(status, Some(reason)),
                state,
                "{status}/{reason}"
            );
        }
    }

    #[test]
    fn terminal_and_unknown_statuses() {
        assert_eq!(commerce_state("CANCELLED", None), states::CANCELED);
        assert_eq!(commerce_state("REJECTED", Some("FRAUD")), states::CANCELED);
        assert_eq!(commerce_state("ONHOLD", Some("PAYMENT")), states::HOLDED);
        assert_eq!(commerce_state("ERROR", None), states::HOLDED);
        assert_eq!(commerce_state("SOMETHING_NEW", None), states::PROCESSING);
    }

    #[test]
    fn the_usual_paths_rank_in_the_order_they_happen() {
        let order = [
            "RECEIVED",
            "ONHOLD",
            "LOGISTICS",
            "LOGISTICSCOMPLETE",
            "COMPLETE",
            "CANCELLED",
            "CLOSED",
        ];
        let ranks: Vec<i16> = order.iter().map(|s| lifecycle_rank(s)).collect();
        assert!(ranks.windows(2).all(|w| w[0] < w[1]), "{ranks:?}");
        assert_eq!(lifecycle_rank("ON_HOLD"), lifecycle_rank("ONHOLD"));
        assert_eq!(lifecycle_rank("SOMETHING_NEW"), lifecycle_rank("LOGISTICS"));
        let payments = ["AUTHORIZED", "CAPTURE_REQUESTED", "CAPTURED", "REFUNDED"];
        let ranks: Vec<i16> = payments.iter().map(|s| payment_rank(s)).collect();
        assert!(ranks.windows(2).all(|w| w[0] < w[1]), "{ranks:?}");
        assert!(
            ranks.iter().all(|&r| r > crate::version::NO_STATUS),
            "every status outranks none"
        );
    }

    #[test]
    fn captures_are_recognised_however_they_are_spelled() {
        assert!(is_capture("CAPTURE_REQUESTED"));
        assert!(is_capture("captured"));
        assert!(!is_capture("AUTHORIZED"));
    }
}
