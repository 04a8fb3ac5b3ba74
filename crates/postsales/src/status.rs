//! From the OMS's return and refund statuses to what Commerce does with them.
//!
//! Statuses are compared in their normalized form ([`protocol::sales::normalize_status`]) and
//! stored as sent; a status this table does not know shows as `processing` and never makes a
//! message fail. docs/schema.md lists the mapping.

use protocol::sales::normalize_status;

/// Return states (`postsales_returns.state`), in the order a return goes through them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReturnState {
    /// Asked for; the OMS has not answered yet, or says it has the request.
    Requested,
    /// The OMS authorized it: the customer may send the goods.
    Authorized,
    /// Anything in between or a status this table does not know.
    Processing,
    Received,
    Rejected,
    Canceled,
    /// Done (received and refunded, or closed by an agent).
    Closed,
}

impl ReturnState {
    /// The state as stored in `postsales_returns.state` (docs/schema.md).
    pub fn as_str(self) -> &'static str {
        match self {
            ReturnState::Requested => "requested",
            ReturnState::Authorized => "authorized",
            ReturnState::Processing => "processing",
            ReturnState::Received => "received",
            ReturnState::Rejected => "rejected",
            ReturnState::Canceled => "canceled",
            ReturnState::Closed => "closed",
        }
    }

    /// The state's place in a return's lifecycle: the second part of a return's version
    /// (the sales module's `version`, the rule the order statuses follow), which decides
    /// between updates of equal dates: requested (1) < authorized (2) < anything in between
    /// or unknown (3) < received (4) < rejected or cancelled (5) < closed (6). Return dates
    /// are often plain dates, so a return authorized and received the same day needs this.
    pub fn rank(self) -> i16 {
        match self {
            ReturnState::Requested => 1,
            ReturnState::Authorized => 2,
            ReturnState::Processing => 3,
            ReturnState::Received => 4,
            ReturnState::Rejected | ReturnState::Canceled => 5,
            ReturnState::Closed => 6,
        }
    }
}

/// The Commerce state of a return with this OMS status.
pub fn return_state(status: &str) -> ReturnState {
    match normalize_status(status).as_str() {
        "NEW" | "REQUESTED" | "PENDING" | "PENDINGAPPROVAL" => ReturnState::Requested,
        "APPROVED" | "AUTHORIZED" | "AUTHORISED" => ReturnState::Authorized,
        "RECEIVED" | "PARTIALLYRECEIVED" | "INSPECTED" => ReturnState::Received,
        "REJECTED" | "DENIED" | "DECLINED" => ReturnState::Rejected,
        "CANCELLED" | "CANCELED" => ReturnState::Canceled,
        "CLOSED" | "COMPLETE" | "COMPLETED" | "REFUNDED" => ReturnState::Closed,
        _ => ReturnState::Processing,
    }
}

/// A return's (or a returned line's) status's rank: its state's ([`ReturnState::rank`]).
pub fn return_rank(status: &str) -> i16 {
    return_state(status).rank()
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
            ("REQUESTED", ReturnState::Requested),
            ("APPROVED", ReturnState::Authorized),
            ("RECEIVED", ReturnState::Received),
            ("CLOSED", ReturnState::Closed),
            ("REJECTED", ReturnState::Rejected),
            ("Cancelled", ReturnState::Canceled),
            ("SOMETHING_NEW", ReturnState::Processing),
        ] {
            assert_eq!(return_state(status), state, "{status}");
        }
    }

    #[test]
    fn states_are_stored_as_docs_schema_lists_them() {
        let stored: Vec<&str> = [
            ReturnState::Requested,
            ReturnState::Authorized,
            ReturnState::Processing,
            ReturnState::Received,
            ReturnState::Rejected,
            ReturnState::Canceled,
            ReturnState::Closed,
        ]
        .map(ReturnState::as_str)
        .to_vec();
        assert_eq!(
            stored,
            [
                "requested",
                "authorized",
                "processing",
                "received",
                "rejected",
                "canceled",
                "closed"
            ]
        );
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
