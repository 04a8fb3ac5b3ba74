//! From the OMS's return and refund statuses to what Commerce does with them.
//!
//! Statuses are compared in their normalized form ([`protocol::sales::normalize_status`]) and
//! stored as sent; a status this table does not know shows as `processing` and never makes a
//! message fail. docs/schema.md lists the mapping.

use protocol::sales::normalize_status;

/// Return states (`postsales_returns.state`).
pub mod states {
    /// Asked for; the OMS has not answered yet, or says it has the request.
    pub const REQUESTED: &str = "requested";
    /// The OMS authorized it: the customer may send the goods.
    pub const AUTHORIZED: &str = "authorized";
    pub const RECEIVED: &str = "received";
    pub const REJECTED: &str = "rejected";
    pub const CANCELED: &str = "canceled";
    /// Done (received and refunded, or closed by an agent).
    pub const CLOSED: &str = "closed";
    pub const PROCESSING: &str = "processing";
}

/// The Commerce state of a return with this OMS status.
pub fn return_state(status: &str) -> &'static str {
    match normalize_status(status).as_str() {
        "NEW" | "REQUESTED" | "PENDING" | "PENDINGAPPROVAL" => states::REQUESTED,
        "APPROVED" | "AUTHORIZED" | "AUTHORISED" => states::AUTHORIZED,
        "RECEIVED" | "PARTIALLYRECEIVED" | "INSPECTED" => states::RECEIVED,
        "REJECTED" | "DENIED" | "DECLINED" => states::REJECTED,
        "CANCELLED" | "CANCELED" => states::CANCELED,
        "CLOSED" | "COMPLETE" | "COMPLETED" | "REFUNDED" => states::CLOSED,
        _ => states::PROCESSING,
    }
}

/// A return's (or a returned line's) status's place in its lifecycle: the second part of
/// its version (`sales::version`, the rule the order statuses follow), which decides
/// between updates of equal dates: requested (1) < authorized (2) < anything in between or
/// unknown (3) < received (4) < rejected or cancelled (5) < closed (6). Return dates are
/// often plain dates, so a return authorized and received the same day needs this.
pub fn return_rank(status: &str) -> i16 {
    match return_state(status) {
        states::REQUESTED => 1,
        states::AUTHORIZED => 2,
        states::RECEIVED => 4,
        states::REJECTED | states::CANCELED => 5,
        states::CLOSED => 6,
        _ => 3,
    }
}

/// The rank of "no status yet" (a returned line the OMS has not given a status): every
/// return status outranks it, as every order status outranks the sales module's.
pub const NO_STATUS: i16 = 0;

/// Whether a refund status is the release: Commerce issues the credit memo.
pub fn is_released(status: &str) -> bool {
    normalize_status(status) == "RELEASED"
}

/// The second part of a refund's version, after its status date: at equal dates a final
/// status (2) wins over a pending one (1). The OMS may date `PENDINGRELEASE` and `RELEASED`
/// the same day (refund dates are plain dates), and the release must win whatever the order
/// of arrival.
pub fn refund_rank(status: &str) -> i16 {
    match normalize_status(status).as_str() {
        "RELEASED" | "REFUNDED" | "CANCELLED" | "CANCELED" | "REJECTED" | "FAILED" | "DECLINED" => {
            2
        }
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_return_path_maps_to_states_a_customer_understands() {
        for (status, state) in [
            ("REQUESTED", states::REQUESTED),
            ("APPROVED", states::AUTHORIZED),
            ("RECEIVED", states::RECEIVED),
            ("CLOSED", states::CLOSED),
            ("REJECTED", states::REJECTED),
            ("Cancelled", states::CANCELED),
            ("SOMETHING_NEW", states::PROCESSING),
        ] {
            assert_eq!(return_state(status), state, "{status}");
        }
    }

    #[test]
    fn a_return_ranks_in_the_order_it_happens() {
        let path = [
            "REQUESTED",
            "APPROVED",
            "SOMETHING_NEW",
            "RECEIVED",
            "CLOSED",
        ];
        let ranks: Vec<i16> = path.iter().map(|s| return_rank(s)).collect();
        assert!(ranks.windows(2).all(|w| w[0] < w[1]), "{ranks:?}");
        assert!(return_rank("REJECTED") > return_rank("APPROVED"));
    }

    #[test]
    fn the_release_outranks_the_pending_release_at_equal_dates() {
        assert!(refund_rank("RELEASED") > refund_rank("PENDINGRELEASE"));
        assert!(refund_rank("PENDING_RELEASE") < refund_rank("released"));
        assert!(is_released("Released"));
        assert!(!is_released("PENDINGRELEASE"));
    }
}
