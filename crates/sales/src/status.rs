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
    fn captures_are_recognised_however_they_are_spelled() {
        assert!(is_capture("CAPTURE_REQUESTED"));
        assert!(is_capture("captured"));
        assert!(!is_capture("AUTHORIZED"));
    }
}
